"""Scriptorium's agents. Each subpackage is one A2A server; they talk over A2A only."""
