"""The ``kairos`` command: its parser (``main``), the commands that call a running engine, and
the progress bar long commands draw."""

from edge.cli.main import main

__all__ = ["main"]
