"""The public entry point of a user's tasks.py: `from nixtasks.tasks import ns`."""

from .cli.tasks import ns

__all__ = ["ns"]
