"""The inference agent: serves the language model through vLLM."""
