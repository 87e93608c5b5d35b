"""Overlapping stages: prefetch keeps order, bounds what is made ahead, hands errors over, leaves no thread."""

from __future__ import annotations

import threading
import time

import pytest

from bldgseg.overlap import prefetch, stage_gate


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("bldgseg-prefetch")]


def test_prefetch_yields_every_item_in_order_and_stops_its_thread():
    with prefetch(iter(range(50)), depth=2) as items:
        assert list(items) == list(range(50))
    assert not prefetch_threads()


@pytest.mark.parametrize("depth", [1, 3])
def test_prefetch_makes_at_most_depth_plus_one_items_ahead(depth):
    made: list[int] = []

    def produce():
        for i in range(20):
            made.append(i)
            yield i

    with prefetch(produce(), depth=depth) as items:
        for taken, _ in enumerate(items, start=1):
            time.sleep(0.02)  # let the producer run as far ahead as it may
            assert len(made) - taken <= depth + 1  # depth queued + the one it waits to put
    assert len(made) == 20


def test_an_error_while_producing_is_raised_by_the_consumer_at_its_place():
    def produce():
        yield 1
        yield 2
        raise OSError("read failed at item 3")

    seen = []
    with pytest.raises(OSError, match="item 3"), prefetch(produce(), depth=2) as items:
        for item in items:
            seen.append(item)
    assert seen == [1, 2]
    assert not prefetch_threads()


def test_leaving_early_or_failing_in_the_consumer_stops_the_producer():
    made: list[int] = []

    def endless():
        i = 0
        while True:
            made.append(i)
            yield i
            i += 1

    with pytest.raises(ValueError), prefetch(endless(), depth=2) as items:
        for item in items:
            if item == 3:
                raise ValueError("model failed")
    assert not prefetch_threads()
    count = len(made)
    time.sleep(0.1)
    assert len(made) == count <= 3 + 2 + 2  # nothing more is made once the block is left


def test_depth_zero_produces_in_the_callers_thread():
    where = []

    def produce():
        where.append(threading.current_thread())
        yield 1

    with prefetch(produce(), depth=0) as items:
        assert list(items) == [1]
    assert where == [threading.current_thread()]


def test_a_stage_gate_lets_in_at_most_its_slots():
    gate = stage_gate("test-stage", 1)
    assert stage_gate("test-stage", 1) is gate  # one per stage and size in the process
    inside, most = [0], [0]
    lock = threading.Lock()

    def work():
        with gate.held():
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.02)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1
