"""Helper processes for a run's post-processing (:mod:`bldgseg.pipeline.bands`), started early and cheaply.

Light on purpose (no GIS or model imports): ``bldgseg run`` starts the helpers before it imports the pipeline, so
that their own imports (``python -m bldgseg.pipeline.band_worker``: the pipeline's modules) use the core the
main process leaves idle while it imports. Plain subprocesses reading pickled requests on stdin, so the user's
``__main__`` is never imported again (as ``multiprocessing``'s spawn would).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["MAX_HELPERS", "WORKER_MODULE", "HelperGone", "Helpers", "running_helpers", "spare_cores",
           "start_helpers", "stop_helpers"]  # fmt: skip

#: The module the helper processes run (``python -m``).
WORKER_MODULE = "bldgseg.pipeline.band_worker"

#: Seconds a stopped helper may take to exit before it is killed.
EXIT_SECONDS = 30.0

#: Most helper processes of a run (each holds ~250 MB of imports and one band).
MAX_HELPERS = 3

_helpers: Helpers | None = None
_helpers_lock = threading.Lock()


class HelperGone(RuntimeError):
    """A helper process exited or its pipe broke."""


class _Helper:
    """One ``python -m bldgseg.pipeline.band_worker`` process, answering one request at a time."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    def call(self, args: tuple) -> Any:
        try:
            pickle.dump(args, self.process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.process.stdin.flush()
            status, value = pickle.load(self.process.stdout)
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            raise HelperGone(f"exit code {self.process.poll()}: {type(exc).__name__}") from exc
        if status == "error":
            raise value
        return value

    def close(self) -> None:
        """Close its stdin (it exits on its own) and reap it in a daemon thread: its interpreter's teardown
        (~0.4 s) then does not hold up the run; one that has not exited after :data:`EXIT_SECONDS` is killed."""
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        threading.Thread(target=self._reap, name="bldgseg-band-reaper", daemon=True).start()

    def _reap(self) -> None:
        try:
            self.process.wait(timeout=EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


class Helpers:
    """``count`` helper processes; each band goes to the next free one (sent from a thread of this process)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.all = [_Helper() for _ in range(count)]
        self.free: queue.Queue[_Helper] = queue.Queue()
        for helper in self.all:
            self.free.put(helper)
        self.sender = ThreadPoolExecutor(count, thread_name_prefix="bldgseg-band")
        self.warned = False

    def submit(self, args: tuple) -> Future:
        return self.sender.submit(self._call, args)

    def _call(self, args: tuple) -> Any:
        helper = self.free.get()
        try:
            return helper.call(args)  # a dead helper goes back too: its next call fails at once
        finally:
            self.free.put(helper)

    def close(self) -> None:
        self.sender.shutdown(wait=True)
        for helper in self.all:
            helper.close()


def spare_cores() -> int:
    """Helpers a local run starts: one fewer than the cores (each helper is capped at :data:`MAX_HELPERS`)."""
    return max(0, (os.cpu_count() or 1) - 1)


def running_helpers() -> Helpers | None:
    """The helpers of the run in progress, or None."""
    with _helpers_lock:
        return _helpers


def start_helpers(count: int) -> None:
    """Start ``count`` helper processes now (capped at :data:`MAX_HELPERS`); they import while the first unit
    is on the model."""
    global _helpers
    with _helpers_lock:
        if _helpers is None and count > 0:  # started already (by the CLI): those serve the run
            _helpers = Helpers(min(int(count), MAX_HELPERS))


def stop_helpers() -> None:
    """Stop the helper processes (at the end of a run); the next run starts new ones."""
    global _helpers
    with _helpers_lock:
        helpers, _helpers = _helpers, None
    if helpers is not None:
        helpers.close()


