"""Project exceptions (one root, subclasses mixed with the matching builtins) and one-line error messages.

Messages say what went wrong, where, and how to fix it, on one line, e.g.
``scene.tif: expected 3 or more bands (RGB), found 1; use --bands to choose them``.
"""


def one_line(exc: BaseException) -> str:
    """The most informative message of ``exc`` (or its cause), squeezed onto one line for an error message."""
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and (not text or "previous exception" in text):
        text = str(cause) or text
    text = " ".join(text.split())
    return text or type(exc).__name__


class BldgsegError(Exception):
    """Root of every error bldgseg raises on purpose."""


class InputError(BldgsegError, ValueError):
    """An input file or argument cannot be used as given."""


class OutputExistsError(BldgsegError, FileExistsError):
    """The output exists and --overwrite was not given."""


class ModelError(BldgsegError, LookupError):
    """Unknown model name, or a checkpoint that cannot be loaded."""


class DeviceError(BldgsegError, RuntimeError):
    """The requested compute device is not available."""
