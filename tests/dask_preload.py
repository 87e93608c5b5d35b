"""Preload for Dask workers (and CLI subprocesses) started by the tests: registers the test-only models.

Workers are separate processes, so they do not see what ``tests/conftest.py`` registers in the pytest process.
Pass this file to them: ``dask worker ADDRESS --preload /path/to/tests/dask_preload.py``, or
``RunConfig(preload=("/path/to/tests/dask_preload.py",))`` / ``bldgseg run --preload ...``.

``red-roof-test`` is :class:`tests.conftest.RedRoofNet`; ``red-roof-slow-test`` is the same model sleeping
:data:`SLOW_SECONDS` per forward pass, so that a run lasts long enough to kill something in the middle of it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bldgseg.models import register_architecture  # noqa: E402
from tests.conftest import RedRoofNet  # noqa: E402  (registers "red-roof-test")

SLOW_SECONDS = 0.05


class SlowRedRoofNet(RedRoofNet):
    def forward(self, x):  # type: ignore[override]
        time.sleep(SLOW_SECONDS)
        return super().forward(x)


register_architecture("red-roof-slow-test", SlowRedRoofNet)
