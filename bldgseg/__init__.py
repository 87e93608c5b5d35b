"""bldgseg: building inventories from aerial imagery."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bldgseg")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
