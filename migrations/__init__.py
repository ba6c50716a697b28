"""Numbered SQL migrations, applied in order, each once (see adapters.migrate)."""

from pathlib import Path

DIRECTORY = Path(__file__).resolve().parent
