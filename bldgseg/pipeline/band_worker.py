"""The helper process of :mod:`bldgseg.pipeline.bands`: ``python -m bldgseg.pipeline.band_worker``.

It reads pickled argument tuples of :func:`bldgseg.pipeline.measure.buildings_in_window` from stdin and writes
``("ok", buildings)`` or ``("error", exception)`` back to stdout, one answer per request, until stdin closes.
A subprocess of this module (not ``multiprocessing``) so that the user's main script is never imported again; it
ignores Ctrl-C (the run in the main process handles it) and ends when stdin closes, also when the run dies.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys


def serve() -> None:
    # Ctrl-C reaches the whole process group: the run handles it, and this helper ends when its stdin closes
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests = os.fdopen(os.dup(0), "rb")
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the answers
    from bldgseg.pipeline.measure import buildings_in_window

    while True:
        try:
            args = pickle.load(requests)
        except EOFError:
            return
        try:
            answer = ("ok", buildings_in_window(*args))
        except Exception as exc:  # noqa: BLE001 (sent back and raised in the run)
            answer = ("error", exc)
        try:
            data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 (an exception that does not pickle)
            data = pickle.dumps(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
        answers.write(data)
        answers.flush()


if __name__ == "__main__":
    sys.exit(serve())
