"""Preload for Dask workers (and CLI subprocesses) started by the tests: registers the test-only models.

Workers are separate processes, so they do not see what ``tests/conftest.py`` registers in the pytest process.
Pass this file to them: ``dask worker ADDRESS --preload /path/to/tests/dask_preload.py``, or
``RunConfig(preload=("/path/to/tests/dask_preload.py",))`` / ``bldgseg run --preload ...``.

``red-roof-test`` is :class:`tests.conftest.RedRoofNet`, ``context-test`` and ``context-instance-test`` are the
context-dependent models of :mod:`tests.context_models`; ``red-roof-slow-test`` is the same model sleeping
:data:`SLOW_SECONDS` per forward pass, so that a run lasts long enough to kill something in the middle of it;
``red-roof-poison-test`` kills the worker process that runs it on a window holding blue pixels (a unit that
kills every worker it is tried on, as one that runs out of memory would).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bldgseg import precision  # noqa: E402
from bldgseg.models import DEFAULT_MODEL, register_architecture  # noqa: E402
from bldgseg.pipeline import unit as pipeline_unit  # noqa: E402
from tests import context_models  # noqa: E402, F401  (registers "context-test", "context-instance-test")
from tests.conftest import RedRoofNet  # noqa: E402  (registers "red-roof-test")

SLOW_SECONDS = 0.05


class SlowRedRoofNet(RedRoofNet):
    def forward(self, x):  # type: ignore[override]
        time.sleep(SLOW_SECONDS)
        return super().forward(x)


register_architecture("red-roof-slow-test", SlowRedRoofNet)

# Workers run on the same "generic CPU" as the pytest process (tests/conftest.py: generic_cpu): auto -> fp32
# torch (spawned LocalCluster workers import pytest with the parent's main module, hence the process name).
# Not in the pytest process itself, where the fixture patches (and restores) the probes per test.
if "pytest" not in sys.modules or multiprocessing.current_process().name != "MainProcess":
    precision.read_cpu_flags = lambda *a, **k: frozenset()
    precision.openvino_available = lambda: False

#: File that :class:`PoisonRedRoofNet` appends the pid of each worker it kills to (set by the test).
DEATHS_ENV = "BLDGSEG_TEST_DEATHS_FILE"


class PoisonRedRoofNet(RedRoofNet):
    """RedRoofNet that SIGKILLs its Dask worker process on a window holding pure blue (0, 0, 255) pixels."""

    def forward(self, x):  # type: ignore[override]
        if bool((x[:, 2] > 2.0).any()):  # blue, ImageNet-normalised: (1 - 0.406) / 0.225 = 2.64
            from distributed import get_worker

            get_worker()  # raises outside a Dask worker: never kill the test process itself
            with open(os.environ[DEATHS_ENV], "a") as fh:
                fh.write(f"{os.getpid()}\n")
            os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(x)


register_architecture("red-roof-poison-test", PoisonRedRoofNet)


def worker_name(_item):
    """The name of the Dask worker running this task (for resource-routing tests)."""
    from distributed import get_worker

    return get_worker().name


# Count model loads (a predictor reads the card once) per process, so tests can check that a worker loads each
# model once, not once per task.
# Idempotent: the file may be executed more than once in one process (a worker preload, then an import).
def _install_load_counter() -> Counter:
    current = pipeline_unit.load_card
    if hasattr(current, "model_loads"):
        return current.model_loads
    counts: Counter[str] = Counter()

    def counting_load_card(name_or_path=DEFAULT_MODEL):
        counts[str(name_or_path)] += 1
        return current(name_or_path)

    counting_load_card.model_loads = counts  # type: ignore[attr-defined]
    pipeline_unit.load_card = counting_load_card
    return counts


_install_load_counter()


def model_loads() -> dict[str, int]:
    """How many times this process loaded each model (run on workers with ``client.run``)."""
    return dict(pipeline_unit.load_card.model_loads)  # type: ignore[attr-defined]
