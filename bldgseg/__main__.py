"""``python -m bldgseg``."""

from bldgseg.cli import app

if __name__ == "__main__":  # not when a helper process (spawn) imports this module
    app()
