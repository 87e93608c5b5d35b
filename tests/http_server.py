"""A loopback HTTP file server for tests: byte ranges, ETag/Last-Modified, a request log, injected failures."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    status: int


@dataclass
class FileServer:
    """Serves the files under ``root`` at :attr:`url`; :attr:`log` lists every request answered."""

    root: Path
    url: str = ""
    log: list[Request] = field(default_factory=list)
    #: URL paths answered once with this status (e.g. 503) before being served normally.
    fail_once: dict[str, int] = field(default_factory=dict)

    def requests_for(self, name: str) -> list[Request]:
        return [r for r in self.log if r.path.split("?", 1)[0] == f"/{name}"]


class RangeHandler(BaseHTTPRequestHandler):
    """GET/HEAD of files under the server's root; ``Range: bytes=a-b`` answered with 206."""

    protocol_version = "HTTP/1.1"
    files: FileServer  # set on the subclass made for each server

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _serve(self, body: bool) -> None:
        files = self.files
        byte_range = self.headers.get("Range")
        path = files.root / unquote(urlsplit(self.path).path).lstrip("/")
        status = files.fail_once.pop(self.path, None)
        if status is None and not path.is_file():
            status = 404
        if status is not None:
            files.log.append(Request(self.command, self.path, byte_range, status))
            self._empty(status)
            return
        data = path.read_bytes()
        size, status, start, end = len(data), 200, 0, len(data) - 1
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", byte_range or "")
        if match and body:
            start = int(match[1])
            end = min(int(match[2]) if match[2] else size - 1, size - 1)
            if start >= size:
                files.log.append(Request(self.command, self.path, byte_range, 416))
                self._empty(416)
                return
            status = 206
        files.log.append(Request(self.command, self.path, byte_range, status))
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        mtime = path.stat().st_mtime
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{path.stat().st_mtime_ns:x}-{size:x}"')
        self.send_header("Last-Modified", formatdate(mtime, usegmt=True))
        self.send_header("Content-Type", "application/json" if path.suffix == ".json" else "image/tiff")
        self.end_headers()
        if body:
            self.wfile.write(data[start : end + 1])

    def _empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextmanager
def serve_folder(root: Path) -> Iterator[FileServer]:
    """Serve ``root`` on 127.0.0.1 (a free port) in a background thread while the block runs."""
    files = FileServer(Path(root))
    handler = type("Handler", (RangeHandler,), {"files": files})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    files.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield files
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
