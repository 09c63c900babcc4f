"""``python -m scriptorium`` runs the CLI."""

from scriptorium.cli import app

app()
