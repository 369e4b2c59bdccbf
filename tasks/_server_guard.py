"""Run Prefect's ephemeral API server (uvicorn) so that it exits when the process that started it is gone.

Prefect starts the server as a child process and stops it from an ``atexit`` hook; a parent killed by SIGKILL (the OOM
killer, a scheduler's time limit) never runs the hook, and the server would serve an orphaned SQLite file forever.
Usage (from :mod:`tasks._prefect`): ``python -m tasks._server_guard <parent pid> <uvicorn arguments...>``.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time


def _exit_with(parent: int, every: float = 1.0) -> None:
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(0)  # the parent is gone: nobody will ever call this server again


if __name__ == "__main__":
    parent = int(sys.argv[1])
    sys.argv = ["uvicorn", *sys.argv[2:]]
    threading.Thread(target=_exit_with, args=(parent,), name="exit-with-parent", daemon=True).start()
    runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)
