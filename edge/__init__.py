"""Kairos edge: the HTTP face, the CLI and process supervision."""
