"""Preload (``bldgseg run --preload``) that freezes the final merge half-way, so a test can SIGKILL it there.

The merge streams the parts into a hidden temporary GeoPackage in batches; here every part is its own batch
(``MERGE_BATCH_ROWS = 1``) and, once the second batch has been appended to any file in the output's folder,
the process creates the file named by ``$BLDGSEG_TEST_MERGE_PAUSED`` and sleeps: it is then in the middle of
writing the output, with part of the buildings on disk.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pyogrio

from bldgseg import runstate

PAUSED_ENV = "BLDGSEG_TEST_MERGE_PAUSED"


class _PausingPyogrio:
    """``pyogrio`` as the merge sees it, pausing after the second batch of buildings is appended."""

    def __getattr__(self, name: str) -> Any:
        return getattr(pyogrio, name)

    def write_dataframe(self, frame, path, **kwargs) -> None:
        pyogrio.write_dataframe(frame, path, **kwargs)
        if kwargs.get("layer") == "buildings" and kwargs.get("append"):
            Path(os.environ[PAUSED_ENV]).write_text(str(path))
            time.sleep(600)


if not isinstance(runstate.pyogrio, _PausingPyogrio):
    runstate.MERGE_BATCH_ROWS = 1
    runstate.pyogrio = _PausingPyogrio()
