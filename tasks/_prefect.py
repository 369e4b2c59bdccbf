"""Import Prefect through here: its settings are read from the environment when it is first imported, so the home
folder's Prefect settings (PREFECT_HOME under FACEZOO_HOME, no telemetry, patient ephemeral start-up) go in first.
Prefect creates its home folder at import, as it would ``~/.prefect``; the flows check the rest of the home when
they run.

Two things about Prefect's ephemeral API server are fixed here: it is started under :mod:`tasks._server_guard`, so
it exits with the process that started it even when that process is killed, and one process at a time starts it on
a home, so two jobs started together do not both migrate a new database (tests/test_reliability.py shows both)."""

from __future__ import annotations

import os

from facezoo.config import Home
from facezoo.errors import FaceZooError

_home = Home.resolve()
os.environ.setdefault("PREFECT_HOME", str(_home.prefect))
try:
    os.makedirs(os.environ["PREFECT_HOME"], exist_ok=True)
except OSError:
    pass  # an unwritable home is reported, in one line, by Home.ensure() when a flow starts
for _key, _value in Home.PREFECT_DEFAULTS.items():
    os.environ.setdefault(_key, _value)

import subprocess  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.server.api import server as _server  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from storage._process import exclusive  # noqa: E402


def _guarded_popen(args, **options):
    """Prefect's ``python -m uvicorn ...`` for the ephemeral server, run under :mod:`tasks._server_guard` so the
    server exits with this process even when this process is killed (its ``atexit`` stop then never runs)."""
    if list(args[1:3]) == ["-m", "uvicorn"]:
        args = [args[0], "-m", "tasks._server_guard", str(os.getpid()), *args[3:]]
    return subprocess.Popen(args, **options)


# prefect.server.api.server starts the server with subprocess.Popen: that module, and only it, gets the guarded one
_server.subprocess = SimpleNamespace(**{**vars(subprocess), "Popen": _guarded_popen})
_start_server = _server.SubprocessASGIServer.start


def _start_one_at_a_time(self, timeout=None):
    """Two jobs starting at once on a fresh home would both migrate Prefect's new SQLite file: one server starts
    (and migrates) at a time; ``start`` returns once the server answers, i.e. after its migrations."""
    with exclusive(os.path.join(os.environ["PREFECT_HOME"], ".server-start.lock")):
        return _start_server(self, timeout)


_server.SubprocessASGIServer.start = _start_one_at_a_time

__all__ = ["flow", "task", "get_run_logger", "ThreadPoolTaskRunner", "transient"]

_TRANSIENT = (OSError, TimeoutError, ConnectionError)


def transient(task_: object, task_run: object, state: object) -> bool:
    """Retry condition: I/O hiccups and time-outs retry; user errors (bad data, missing weights) and bugs do not."""
    try:
        state.result()  # type: ignore[attr-defined]
    except FaceZooError:
        return False
    except _TRANSIENT:
        return True
    except Exception:  # noqa: BLE001 - any other failure is not transient
        return False
    return False
