"""Import Prefect through here: its settings are read from the environment when it is first imported, so the home
folder's Prefect settings (PREFECT_HOME under FACEZOO_HOME, no telemetry, patient ephemeral start-up) go in first.
Prefect creates its home folder at import, as it would ``~/.prefect``; the flows check the rest of the home when
they run."""

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

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

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
