"""The writer (scribe): drafts cited answers from passages and revises them on feedback."""
