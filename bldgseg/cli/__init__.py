"""Command-line interface (``bldgseg``)."""

from bldgseg.cli.app import app

__all__ = ["app"]
