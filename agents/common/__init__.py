"""Code more than one agent runs in-process: embeddings and grounding (never A2A plumbing)."""
