"""Input resolution: files, folders (searched), URLs, STAC Items and list files -> the rasters of a run.

An input is, by its form:

- a URL (``http(s)://``, ``s3://``, ``gs://``) or a GDAL ``/vsi...`` path: one remote raster, never searched
  or grouped (:mod:`bldgseg.remote`);
- a STAC Item or ItemCollection (a ``.json``/``.geojson`` file or URL, or an http(s) URL whose last segment has
  no extension, as STAC APIs serve Items): its RGB image asset(s), with the Item's id and date
  (:mod:`bldgseg.stac`);
- a list file (``.txt``, ``.lst``, ``.list``): one input per line (any of these forms but another list),
  ``#`` starting a comment line; relative paths are relative to the list's folder (a list naming nothing is
  taken as a raster file, as before lists existed);
- a folder: searched recursively with the glob; anything else: a raster file.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bldgseg.errors import InputError
from bldgseg.remote import RemotePath, as_raster_path, is_remote
from bldgseg.stac import is_stac_href, read_stac_images

__all__ = [
    "DEFAULT_GLOB",
    "LIST_SUFFIXES",
    "InputRef",
    "SkippedInput",
    "discover_inputs",
    "resolve_inputs",
]

DEFAULT_GLOB = "*.tif*"
#: Extra patterns searched in folders when the glob is the default one.
EXTRA_DEFAULT_GLOBS = ("*.vrt", "*.jp2", "*.img")
#: GDAL side-car files that a folder glob such as ``*.tif*`` would otherwise pick up.
SIDECAR_SUFFIXES = (".aux.xml", ".ovr", ".msk", ".aux", ".xml", ".tfw", ".tifw", ".wld", ".lock")
#: Suffixes of a local text file that lists inputs.
LIST_SUFFIXES = (".txt", ".lst", ".list")
#: A URL whose ``//`` a ``Path`` collapsed (``Path("https://host/x.tif")`` is ``https:/host/x.tif``).
_COLLAPSED_URL = re.compile(r"^(https?|s3|gs):/(?!/)", re.IGNORECASE)

RasterPath = Path | RemotePath


@dataclass(frozen=True)
class SkippedInput:
    """An input left out by :func:`bldgseg.io.scan_inputs`, with the one-line reason."""

    path: RasterPath
    reason: str


@dataclass(frozen=True)
class InputRef:
    """A raster to read, with the acquisition date and STAC Item id when it came from a STAC Item."""

    path: RasterPath
    image_date: str | None = None
    stac_item: str | None = None


def discover_inputs(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], glob: str = DEFAULT_GLOB
) -> list[RasterPath]:
    """Expand inputs into a de-duplicated list of rasters: local files sorted (resolved paths), then remote
    rasters in the order given.

    Files are taken as given (any GDAL-readable extension). Folders are searched recursively for ``glob``
    (case-insensitive on the file name; also ``*.vrt``, ``*.jp2`` and ``*.img`` with the default glob); GDAL
    side-car files (``.aux.xml``, ``.ovr``, ``.msk`` ...) are left out. URLs, STAC Items and list files as in the
    module's docstring. A local path that does not exist, or a STAC Item that cannot be used, raises
    :class:`InputError`. An empty folder gives an empty list.
    """
    refs, skipped = resolve_inputs(paths, glob)
    if skipped:
        raise InputError(skipped[0].reason)
    return [ref.path for ref in refs]


def resolve_inputs(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], glob: str = DEFAULT_GLOB
) -> tuple[list[InputRef], list[SkippedInput]]:
    """:func:`discover_inputs` with each raster's STAC date and id; a STAC Item that cannot be read or has
    no usable asset is returned as a :class:`SkippedInput` (so a run goes on with the other inputs).

    A local path that does not exist raises :class:`InputError`.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    patterns = [glob, *EXTRA_DEFAULT_GLOBS] if glob == DEFAULT_GLOB else [glob]
    local: dict[Path, InputRef] = {}
    remote: dict[str, InputRef] = {}
    skipped: list[SkippedInput] = []
    for raw in _expand_lists(paths):
        if isinstance(raw, Path):
            _existing(raw)
        try:
            refs = _resolve_one(raw, patterns)
        except InputError as exc:  # a STAC Item that cannot be used: reported, the other inputs go on
            skipped.append(SkippedInput(raw, str(exc)))
            continue
        for ref in refs:
            if isinstance(ref.path, RemotePath):
                _keep(remote, str(ref.path), ref)
            else:
                _keep(local, ref.path, ref)
    return [local[p] for p in sorted(local)] + list(remote.values()), skipped


def _keep(found: dict, key: object, ref: InputRef) -> None:
    """Add ``ref`` unless its raster is there already (one found through a STAC Item wins, for its date)."""
    existing = found.get(key)
    if existing is None or (existing.stac_item is None and ref.stac_item is not None):
        found[key] = ref


def _as_input(raw: str | os.PathLike[str]) -> RasterPath:
    """A :class:`RemotePath` for a URL or /vsi path (also one a ``Path`` mangled), else a local path."""
    if isinstance(raw, RemotePath):
        return raw
    text = os.fspath(raw)
    if isinstance(raw, os.PathLike) and not Path(text).exists():
        if _COLLAPSED_URL.match(text):
            text = text.replace(":/", "://", 1)
        if is_remote(text):
            return RemotePath(text)
    return as_raster_path(text) if isinstance(raw, str) else Path(text).expanduser()


def _expand_lists(paths: Iterable[str | os.PathLike[str]]) -> list[RasterPath]:
    """Every input, with each list file replaced by the inputs it lists."""
    expanded: list[RasterPath] = []
    for raw in paths:
        path = _as_input(raw)
        entries = read_input_list(path) if _is_list(path) else []
        if entries:
            expanded += [_listed(entry, path) for entry in entries]
        else:  # an empty list file is taken as a file, as any file named directly was before lists existed
            expanded.append(path.expanduser() if isinstance(path, Path) else path)
    return expanded


def _is_list(path: RasterPath) -> bool:
    return isinstance(path, Path) and path.suffix.lower() in LIST_SUFFIXES and path.is_file()


def read_input_list(path: Path) -> list[str]:
    """The inputs a list file names: one a line, blank lines and lines starting with ``#`` left out."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: the input list cannot be read ({exc}); check the file") from exc
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _listed(entry: str, list_file: Path) -> RasterPath:
    """A list entry: remote as given, a local path relative to the list's folder; no nested lists."""
    path = as_raster_path(entry)
    if isinstance(path, Path):
        path = path.expanduser()
        path = path if path.is_absolute() else list_file.parent / path
        if path.suffix.lower() in LIST_SUFFIXES:
            raise InputError(f"{list_file}: lists another list file ({entry}); list its inputs instead")
    return path


def _resolve_one(path: RasterPath, patterns: Sequence[str]) -> list[InputRef]:
    """The rasters of one input (a list file already expanded)."""
    if _is_stac(path):
        href = str(path) if isinstance(path, RemotePath) else str(path.resolve())
        images = read_stac_images(href)
        return [InputRef(_stac_raster(i.href), i.image_date, i.item_id) for i in images]
    if isinstance(path, RemotePath):
        return [InputRef(path)]
    if path.is_dir():
        return [InputRef(p.resolve()) for p in _search_folder(path, patterns)]
    return [InputRef(path.resolve())]


def _is_stac(path: RasterPath) -> bool:
    if isinstance(path, Path):
        return is_stac_href(path.name)
    if is_stac_href(str(path)):
        return True
    return str(path).lower().startswith(("http://", "https://")) and "." not in path.name


def _stac_raster(href: str) -> RasterPath:
    """An asset href: remote as given (``file://`` URLs as local paths), local resolved."""
    if href.lower().startswith("file://"):
        href = href[len("file://") :]
    path = as_raster_path(href)
    return path.resolve() if isinstance(path, Path) else path


def _existing(path: Path) -> Path:
    if not path.exists():
        raise InputError(f"{path}: no such file or folder; check the path")
    return path


def _search_folder(folder: Path, patterns: Sequence[str]) -> list[Path]:
    """Files under ``folder`` (recursively) whose name matches one of ``patterns``, side-cars excluded."""
    hits: list[Path] = []
    name_patterns = [p.lower() for p in patterns if "/" not in p and os.sep not in p]
    path_patterns = [p for p in patterns if "/" in p or os.sep in p]
    for root, _dirs, files in os.walk(folder):
        for name in files:
            lower = name.lower()
            if lower.endswith(SIDECAR_SUFFIXES):
                continue
            if any(fnmatch.fnmatchcase(lower, p) for p in name_patterns):
                hits.append(Path(root) / name)
    for pattern in path_patterns:
        hits.extend(
            p for p in folder.rglob(pattern) if p.is_file() and not p.name.lower().endswith(SIDECAR_SUFFIXES)
        )
    return hits
