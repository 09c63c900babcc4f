"""Shared contracts of Scriptorium: settings, agent cards, client helper and typed payloads.

This package imports nothing else of ours, so every other package may depend on it.
"""
