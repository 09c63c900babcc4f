"""Runnable examples of Scriptorium used from other frameworks."""
