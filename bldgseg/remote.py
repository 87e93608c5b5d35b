"""Remote rasters: URLs (http(s)://, s3://, gs://) and GDAL /vsi paths, their GDAL paths, HTTP retry defaults
and the identity a resumed run compares.

A remote input is a :class:`RemotePath`: the text the user gave (so ``source_image`` and error messages name the
URL), read by GDAL through :attr:`RemotePath.gdal_path` (``/vsicurl/``, ``/vsis3/``, ``/vsigs/``; credentials
and endpoints come from GDAL's own configuration: ``AWS_*``, ``GS_*``, ``GDAL_HTTP_*``...).
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = [
    "HTTP_DEFAULTS",
    "RemotePath",
    "as_raster_path",
    "gdal_path",
    "http_env",
    "is_remote",
    "remote_identity",
]

#: URL schemes and the GDAL virtual file system each one is read through.
SCHEMES = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/"}
#: GDAL settings used while reading a remote raster, unless the environment (or an enclosing
#: ``rasterio.Env``) sets them: retry transient HTTP errors (429, 5xx) with a growing delay, and never list the
#: remote folder looking for side-car files (one request per raster saved, and no directory listings).
HTTP_DEFAULTS = {
    "GDAL_HTTP_MAX_RETRY": "4",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
}
#: Seconds a HEAD request for a remote input's identity may take.
HEAD_TIMEOUT_S = 15


class RemotePath(str):
    """A remote raster as the user named it (``https://host/scene.tif``, ``s3://bucket/key.tif``, ``/vsi...``).

    A ``str`` (so it pickles to Dask workers and compares as its text) with the few ``Path``-like properties the
    pipeline uses to name outputs: :attr:`name`, :attr:`stem`, :attr:`suffix`, :attr:`parent`.
    """

    __slots__ = ()

    @property
    def gdal_path(self) -> str:
        """The path GDAL opens: ``/vsicurl/<url>``, ``/vsis3/<bucket>/<key>``..., or a /vsi path as given."""
        scheme = self.split("://", 1)[0].lower() if "://" in self else ""
        if scheme in ("http", "https"):
            return SCHEMES[scheme] + self
        if scheme in SCHEMES:
            return SCHEMES[scheme] + self.split("://", 1)[1]
        return str(self)

    @property
    def _segments(self) -> list[str]:
        path = urlsplit(self).path if "://" in self else self
        return [unquote(s) for s in path.split("/") if s]

    @property
    def name(self) -> str:
        """The last segment of the URL's path (query and fragment left out)."""
        segments = self._segments
        return segments[-1] if segments else str(self)

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    @property
    def parent(self) -> RemotePath:
        """The URL of the folder holding this file (its ``name`` names the folder)."""
        base = self.split("?", 1)[0].split("#", 1)[0].rstrip("/")
        return RemotePath(base.rsplit("/", 1)[0]) if "/" in base else self

    def is_relative_to(self, *_other: Any) -> bool:
        """Never under a local folder."""
        return False

    def exists(self) -> bool:
        """Not checked here: a missing remote file is reported when it is opened."""
        return True


def is_remote(path: object) -> bool:
    """Whether ``path`` names a remote raster: a :class:`RemotePath`, or text starting with a known URL scheme
    or a GDAL virtual file system (``/vsi...``; ``/vsimem/`` included)."""
    if isinstance(path, RemotePath):
        return True
    if not isinstance(path, str):
        return False
    if path.startswith("/vsi"):
        return True
    scheme, sep, _rest = path.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def as_raster_path(path: str | os.PathLike[str]) -> Path | RemotePath:
    """A :class:`RemotePath` for a URL or /vsi path given as text, else a local ``Path``."""
    if isinstance(path, RemotePath):
        return path
    if isinstance(path, str) and is_remote(path):
        return RemotePath(path)
    return Path(path)


def gdal_path(path: str | os.PathLike[str]) -> str | os.PathLike[str]:
    """What to pass to ``rasterio.open``: a remote raster's GDAL path, a local path unchanged."""
    return path.gdal_path if isinstance(path, RemotePath) else path


@contextlib.contextmanager
def http_env(path: object) -> Iterator[None]:
    """Inside, reads of ``path`` retry transient HTTP errors (:data:`HTTP_DEFAULTS`, where neither the
    environment nor an enclosing ``rasterio.Env`` sets them). A local path changes nothing."""
    if not is_remote(path):
        yield
        return
    import rasterio
    from rasterio.env import getenv, hasenv

    current = getenv() if hasenv() else {}
    options = {k: v for k, v in HTTP_DEFAULTS.items() if k not in os.environ and k not in current}
    with rasterio.Env(**options):
        yield


def remote_identity(path: str) -> str:
    """What a resumed run compares to tell that a remote raster changed: for http(s), the URL with the size and
    the ``ETag`` (else ``Last-Modified``) of a HEAD request; for other schemes, or when the HEAD fails (a server
    that refuses HEAD, a URL signed for GET only), the URL alone."""
    url = str(path)
    if url.startswith("/vsicurl/"):
        url = url[len("/vsicurl/") :]
    if not url.lower().startswith(("http://", "https://")):
        return str(path)
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=HEAD_TIMEOUT_S) as response:
            headers = response.headers
    except (urllib.error.URLError, OSError, ValueError):
        return str(path)
    version = headers.get("ETag") or headers.get("Last-Modified") or ""
    return f"{path}|{headers.get('Content-Length', '')}|{version}"
