"""``python -m bldgseg``."""

from bldgseg.cli import app

app()
