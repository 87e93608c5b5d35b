"""Overlapping stages: items produced ahead in a background thread through a bounded queue, and stage gates."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["StageGate", "prefetch", "stage_gate"]

T = TypeVar("T")

_DONE = object()
#: Seconds between checks of the stop flag while the producer waits for room in the queue.
_POLL_S = 0.05


class _Failure:
    """An exception raised by the producer, handed to the consumer in the queue's order."""

    def __init__(self, exc: BaseException):
        self.exc = exc


@contextmanager
def prefetch(items: Iterable[T], depth: int = 1, name: str = "bldgseg-prefetch") -> Iterator[Iterator[T]]:
    """Iterate over ``items`` while a background thread produces up to ``depth`` of them ahead.

    Memory stays bounded: the thread holds at most ``depth`` finished items plus the one it is making. An
    exception raised while producing is raised by the consumer's ``next()`` at the item's place. Leaving the
    ``with`` block (finished, ``break`` or an error in the consumer) stops the thread and waits for it, so no
    thread outlives the block; ``depth`` 0 produces in the caller's thread (no overlap).
    """
    if depth <= 0:
        yield iter(items)
        return
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # handed over: the consumer re-raises it
            put(_Failure(exc))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()

    def consume() -> Iterator[T]:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    try:
        yield consume()
    finally:
        stop.set()
        thread.join()


class StageGate:
    """At most ``slots`` threads of this process in a stage at once (e.g. one unit on the model while the
    next one reads and the previous one is vectorized); ``slots`` None lets every thread in."""

    def __init__(self, slots: int | None):
        self.slots = slots
        self._semaphore = threading.Semaphore(slots) if slots else None

    @contextmanager
    def held(self) -> Iterator[None]:
        if self._semaphore is None:
            yield
            return
        with self._semaphore:
            yield


_GATES: dict[tuple[str, int | None], StageGate] = {}
_GATES_LOCK = threading.Lock()


def stage_gate(stage: str, slots: int | None) -> StageGate:
    """The process-wide gate of ``stage`` with ``slots`` (one per stage and size, shared by every caller)."""
    with _GATES_LOCK:
        return _GATES.setdefault((stage, slots), StageGate(slots))
