"""Run the bldgseg executable: its command line, progress lines, cancelling and one-line errors (no QGIS here)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shlex
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Sequence

__all__ = [
    "BldgsegCancelled",
    "BldgsegFailed",
    "error_message",
    "executable_command",
    "parse_progress",
    "run_bldgseg",
]

#: What bldgseg reads to print progress as JSON lines (``bldgseg.cli.common.PROGRESS_ENV``).
PROGRESS_ENV = "BLDGSEG_PROGRESS"
#: Lines of output kept to find the error message in.
TAIL_LINES = 200
#: QGIS's own Python and GDAL/PROJ settings (OSGeo4W and the macOS bundle set them): bldgseg runs in its own
#: environment with its own Python and its wheels' GDAL/PROJ data, which these would point elsewhere.
QGIS_ONLY_VARIABLES = ("PYTHONHOME", "PYTHONPATH", "GDAL_DATA", "GDAL_DRIVER_PATH", "PROJ_LIB", "PROJ_DATA")


class BldgsegFailed(Exception):
    """bldgseg exited with a non-zero status; the message is its one-line error."""

    def __init__(self, message: str, returncode: int):
        super().__init__(message)
        self.returncode = returncode


class BldgsegCancelled(Exception):
    """The user cancelled; the process was stopped."""


def executable_command(setting: str) -> list[str]:
    """The command line that starts bldgseg, from the plugin setting.

    An existing file is the executable as it is (spaces and all); anything else is split like a shell
    would (``/opt/venv/bin/python -m bldgseg``); empty means ``bldgseg`` on the PATH.
    """
    setting = (setting or "").strip()
    if not setting:
        return ["bldgseg"]
    if os.path.isfile(setting):
        return [setting]
    return shlex.split(setting, posix=os.name != "nt")


def parse_progress(line: str) -> tuple[str, int, int] | None:
    """``(stage, done, total)`` from one of bldgseg's ``BLDGSEG_PROGRESS=json`` lines, else ``None``."""
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("event") != "progress":
        return None
    try:
        return str(event["stage"]), int(event["done"]), int(event["total"])
    except (KeyError, TypeError, ValueError):
        return None


def error_message(lines: Sequence[str], returncode: int) -> str:
    """bldgseg's one-line error (``error: …``), else the text of the command-line parser's "Error" box (a
    usage error), else the last line it printed, else the exit status."""
    for line in reversed(lines):
        if line.startswith("error:"):
            return line[len("error:") :].strip()
    frame = "│╭╮╰╯─ "
    boxes = [i for i, line in enumerate(lines) if line.startswith("╭") and " Error " in line]
    if boxes:
        inside = []
        for line in lines[boxes[-1] + 1 :]:
            if line.startswith("╰"):
                break
            inside.append(line.strip(frame))
        if any(inside):
            return " ".join(part for part in inside if part)
    for line in reversed(lines):
        if line.strip(frame):
            return f"{line.strip(frame)} (exit status {returncode})"
    return f"bldgseg stopped with exit status {returncode}"


def run_bldgseg(
    command: Sequence[str],
    arguments: Sequence[str],
    on_progress: Callable[[str, int, int], None],
    on_line: Callable[[str], None],
    is_cancelled: Callable[[], bool],
    poll_seconds: float = 0.2,
) -> int:
    """Run ``command + arguments`` to the end; progress lines go to ``on_progress``, other output lines
    (stdout and stderr together) to ``on_line``.

    Raises :class:`BldgsegCancelled` (after stopping the process and its children) once ``is_cancelled()``
    is true, :class:`BldgsegFailed` with bldgseg's one-line error on a non-zero exit or when the executable
    cannot be started. Returns the exit status (0).
    """
    process = _start(list(command) + list(arguments))
    with process.stdout:
        tail = _follow(process, on_progress, on_line, is_cancelled, poll_seconds)
    returncode = process.wait()
    if returncode != 0:
        raise BldgsegFailed(error_message(list(tail), returncode), returncode)
    return returncode


def _follow(process, on_progress, on_line, is_cancelled, poll_seconds: float) -> deque[str]:
    """Pass the process's lines on until its output ends (or stop it when cancelled); the last lines."""
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(process, lines), daemon=True)
    reader.start()
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    while True:
        if is_cancelled():
            _stop(process)
            reader.join(timeout=5)  # the pipe is at its end once the process is gone
            raise BldgsegCancelled("cancelled; bldgseg was stopped")
        try:
            line = lines.get(timeout=poll_seconds)
        except queue.Empty:
            continue
        if line is None:
            break
        progress = parse_progress(line)
        if progress is not None:
            on_progress(*progress)
        elif line.strip():
            tail.append(line)
            on_line(line)
    reader.join(timeout=5)
    return tail


def child_environment() -> dict[str, str]:
    """This process's environment without QGIS's own Python/GDAL/PROJ settings, with machine-readable
    progress, no colours and wide lines."""
    env = {key: value for key, value in os.environ.items() if key not in (*QGIS_ONLY_VARIABLES, "FORCE_COLOR")}
    env.update({PROGRESS_ENV: "json", "NO_COLOR": "1", "COLUMNS": "240", "PYTHONUNBUFFERED": "1"})
    return env


def _start(argv: list[str]) -> subprocess.Popen:
    kwargs: dict = {}
    if os.name == "nt":
        kwargs["creationflags"] = subprocess.CREATE_NO_WINDOW | subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        kwargs["start_new_session"] = True  # its own process group: cancelling stops its workers too
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=child_environment(),
            **kwargs,
        )
    except OSError as exc:
        raise BldgsegFailed(
            f"cannot start {argv[0]!r} ({exc.strerror or exc}); set the bldgseg executable in Processing "
            "options (Settings > Options > Processing > Providers > bldgseg)",
            127,
        ) from exc


def _read_lines(process: subprocess.Popen, lines: queue.Queue) -> None:
    for line in process.stdout:
        lines.put(line.rstrip("\r\n"))
    lines.put(None)


def _stop(process: subprocess.Popen, grace_seconds: float = 10.0) -> None:
    """Terminate the process (and its process group on POSIX), killing it when it does not end in time."""
    if process.poll() is not None:
        return
    _signal(process, signal.SIGTERM)
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        _signal(process, getattr(signal, "SIGKILL", signal.SIGTERM))
        process.wait(timeout=grace_seconds)


def _signal(process: subprocess.Popen, sig: int) -> None:
    if os.name == "nt":
        if sig == signal.SIGTERM:
            process.terminate()
        else:
            process.kill()
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
