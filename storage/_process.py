"""Processes sharing one home: whether a writer still lives (a crashed writer's leftovers vs a live writer's work), and
an exclusive lock across processes."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator


def process_alive(pid: int) -> bool:
    """``True`` while process ``pid`` exists on this host (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    return True


@contextlib.contextmanager
def exclusive(lock_file: str | os.PathLike, *, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (created if needed) across processes: the first start of a database
    (MLflow's and Prefect's migrations) is not safe to run twice at once on one file.

    With ``wait=False`` a lock held by another process raises :class:`BlockingIOError` at once, its message naming
    the holder's pid (written into the file while it holds the lock)."""
    os.makedirs(os.path.dirname(os.fspath(lock_file)) or ".", exist_ok=True)
    with open(lock_file, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            raise BlockingIOError(f"{lock_file} is held by process {handle.read().strip() or '?'}") from None
        try:
            handle.truncate(0)
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)
