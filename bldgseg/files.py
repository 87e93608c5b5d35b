"""Output files: atomic replacement through a hidden sibling, the "output exists" refusal, content digests.

A writer builds its output in a hidden temporary file next to the destination (same folder, so the final
rename is atomic on one filesystem) and removes it on any failure, Ctrl-C included: the destination is either
untouched or complete, never half-written.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from bldgseg.errors import InputError, OutputExistsError

__all__ = [
    "FOLDER_HINT",
    "GPKG_SIDECARS",
    "OVERWRITE_HINT",
    "atomic_replace",
    "atomic_write",
    "file_digest",
    "fsync_file",
    "hidden_temp_path",
    "refuse_existing",
    "refuse_existing_any",
    "remove_stale_temps",
    "require_gpkg",
]

#: How to get past an existing output file (the tail of the refusal message).
OVERWRITE_HINT = "pass --overwrite to replace it or choose another -o"
#: The same for outputs written into a folder.
FOLDER_HINT = "pass --overwrite or choose another folder"
#: Side-car files SQLite/GDAL may leave next to a GeoPackage being written.
GPKG_SIDECARS = ("-journal", "-wal", "-shm")


def refuse_existing(
    path: str | os.PathLike[str],
    overwrite: bool,
    hint: str = OVERWRITE_HINT,
    *,
    label: str | None = None,
    file: bool = False,
) -> None:
    """Raise ``OutputExistsError("<label>: already exists; <hint>")`` when ``path`` exists and not ``overwrite``.

    ``label`` names the output in the message (default: ``path`` as given). With ``file`` a folder at ``path``
    is refused even with ``overwrite`` (``<label>: is a folder; choose a file name with -o``).
    """
    path = Path(path)
    name = str(path) if label is None else label
    if file and path.is_dir():
        raise OutputExistsError(f"{name}: is a folder; choose a file name with -o")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{name}: already exists; {hint}")


def refuse_existing_any(
    paths: Iterable[str | os.PathLike[str]], overwrite: bool, hint: str = FOLDER_HINT, *, count: bool = False
) -> None:
    """:func:`refuse_existing` for several outputs: the first existing one is named (``count``: and how many)."""
    existing = [Path(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        more = f" ({len(existing)} in all)" if count else ""
        raise OutputExistsError(f"{existing[0]}: already exists{more}; {hint}")


def require_gpkg(path: str | os.PathLike[str], example: str = "buildings.gpkg") -> None:
    """Raise ``InputError`` unless ``path`` ends in ``.gpkg``."""
    if Path(path).suffix.lower() != ".gpkg":
        raise InputError(f"{path}: the output must be a GeoPackage (.gpkg); use e.g. -o {example}")


def hidden_temp_path(dest: Path, suffix: str = "") -> Path:
    """A hidden, unique sibling of ``dest`` ending in ``suffix`` (so GDAL still recognises the format)."""
    return dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}")


@contextlib.contextmanager
def atomic_write(
    dest: str | os.PathLike[str],
    suffix: str = "",
    *,
    overwrite: bool = True,
    sidecars: Iterable[str] = (),
    sync: bool = True,
    sync_folder: bool | None = None,
) -> Iterator[Path]:
    """Yield a hidden temporary path next to ``dest``; when the block ends, move it onto ``dest``.

    The file written to the yielded path is fsynced (``sync``), renamed onto ``dest`` and the rename made
    durable by syncing the folder (``sync_folder``, default ``sync``). Without
    ``overwrite`` an existing ``dest`` is never replaced, not even one that appeared while the file was
    written (``OutputExistsError``). On any exception the temporary file and its ``sidecars`` (suffixes
    appended to its name, e.g. ``-journal``) are removed and the exception propagates.
    """
    dest, sidecars = Path(dest), tuple(sidecars)
    remove_stale_temps(dest)
    tmp = hidden_temp_path(dest, suffix)
    try:
        yield tmp
        if sync:
            fsync_file(tmp)
        _publish(tmp, dest, overwrite)
    except BaseException:
        _remove(tmp, sidecars)
        raise
    _remove(tmp, sidecars, keep_main=True)
    if sync if sync_folder is None else sync_folder:
        _fsync_dir(dest.parent)


def remove_stale_temps(dest: str | os.PathLike[str]) -> list[Path]:
    """Remove the hidden temporaries of ``dest`` (and their side-cars) whose writing process is gone.

    A writer killed outright (``kill -9``, power loss) cannot clean up; the next write of ``dest`` does. Only
    files named by :func:`hidden_temp_path` with the id of a process that no longer runs on this machine are
    touched. Returns the removed paths.
    """
    dest = Path(dest)
    prefix = f".{dest.name}."
    removed = []
    with contextlib.suppress(OSError):
        for path in dest.parent.iterdir():
            pid = path.name[len(prefix) :].split(".", 1)[0] if path.name.startswith(prefix) else ""
            if ".tmp" in path.name and pid.isdigit() and not _process_alive(int(pid)):
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (one of another user counts as running; on Windows,
    where signal 0 would terminate it, every process does)."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def atomic_replace(
    dest: str | os.PathLike[str],
    build: Callable[[Path], object],
    suffix: str = "",
    *,
    overwrite: bool = True,
    sidecars: Iterable[str] = (),
    sync: bool = True,
    sync_folder: bool | None = None,
) -> Path:
    """``build(tmp)`` a hidden sibling of ``dest`` and move it into place (see :func:`atomic_write`)."""
    with atomic_write(
        dest, suffix, overwrite=overwrite, sidecars=sidecars, sync=sync, sync_folder=sync_folder
    ) as tmp:
        build(tmp)
    return Path(dest)


def fsync_file(path: Path) -> None:
    """Flush ``path``'s data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, dest: Path, overwrite: bool) -> None:
    """Move ``tmp`` to ``dest``; without ``overwrite`` never clobber a file that appeared meanwhile."""
    if overwrite:
        os.replace(tmp, dest)
        return
    try:
        os.link(tmp, dest)  # atomic, fails if dest exists
    except FileExistsError:
        raise OutputExistsError(f"{dest.name}: already exists; {OVERWRITE_HINT}") from None
    except OSError:  # filesystem without hard links
        refuse_existing(dest, overwrite, label=dest.name, file=True)
        os.replace(tmp, dest)
    else:
        tmp.unlink()


def _remove(tmp: Path, sidecars: Iterable[str], keep_main: bool = False) -> None:
    """Remove ``tmp`` (unless ``keep_main``: it was renamed) and its side-cars, ignoring what is absent."""
    leftovers = [] if keep_main else [tmp]
    leftovers += [tmp.with_name(tmp.name + extra) for extra in sidecars]
    for leftover in leftovers:
        with contextlib.suppress(OSError):
            leftover.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX; a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def file_digest(path: Path) -> str:
    """sha256 (16 hex digits) of a file's bytes (model weights, cards), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
