"""The two commands that run in the foreground until stopped, ``facezoo serve`` and ``facezoo ui``, and the process
trees they own.

``serve`` needs a Prefect server whose scheduler turns the deployment's schedule into flow runs: the ephemeral API a
flow starts on its own runs without the scheduler, so a schedule served on it never fires. :class:`PrefectServer`
starts a real one on the home's Prefect database (loopback, a free port, under :mod:`tasks._server_guard` so it
dies with this process even when this process is killed, and in a session of its own so a Ctrl-C in the terminal
reaches only this process, which then stops everything in order). :func:`serve_schedule` registers the deployment
on it, runs Prefect's runner, says when the next run is due, and on SIGINT or SIGTERM stops the runs in flight,
closes them (Prefect: ``Cancelled``; the jobs table: ``interrupted``; MLflow: ``KILLED``) and stops the server, in
a few seconds. :func:`serve_ui` runs the MLflow UI the same way: its server and workers in a session of their own,
all stopped when this process is asked to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import psutil

from facezoo.config import Home
from facezoo.errors import FaceZooError, first_line

__all__ = ["PrefectServer", "adopt_orphans", "serve_schedule", "serve_ui", "stop_processes"]

# after SIGTERM, before SIGKILL: enough for a server to close its database; a run killed outright loses nothing
# (writes are atomic, its job is closed as interrupted below), and the whole stop must fit in 10 s on a busy machine
GRACE_SECONDS = 2.0
STARTUP_SECONDS = 90.0  # a first start migrates a new database: ~10-15 s on 2 cores, more on a busy machine
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


class Stopped(Exception):
    """SIGINT or SIGTERM arrived: unwind and stop everything this process started."""


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Stopped` (SIGTERM's default would end this process without stopping its
    children)."""

    def stop(signum: int, frame: Any) -> None:
        for sig in _SIGNALS:  # once: a second Ctrl-C must not interrupt the stopping of the children
            signal.signal(sig, signal.SIG_IGN)
        raise Stopped(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def adopt_orphans() -> None:
    """Make this process the reaper of its orphaned descendants (Linux): a run's worker whose parent was killed
    first stays a descendant of this process, where :func:`stop_processes` still finds it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _descendants(spare: frozenset[int] = frozenset()) -> list[psutil.Process]:
    """Every live descendant of this process but those in ``spare``."""
    return [p for p in psutil.Process().children(recursive=True) if p.pid not in spare]


def _tree(pid: int) -> list[psutil.Process]:
    """Process ``pid`` and its descendants, while it lives."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop_processes(listing: Callable[[], list[psutil.Process]], grace: float = GRACE_SECONDS) -> None:
    """Stop the processes ``listing()`` names, listed again and again: SIGTERM to each, SIGKILL to whatever is still
    there after ``grace`` seconds, including processes started meanwhile (a run that was starting its workers)."""
    deadline = time.monotonic() + grace
    signalled: set[int] = set()
    while time.monotonic() < deadline:
        processes = listing()
        if not processes:
            return
        for process in processes:
            if process.pid not in signalled:
                with contextlib.suppress(psutil.Error):
                    process.terminate()
                signalled.add(process.pid)
        psutil.wait_procs(processes, timeout=min(0.2, max(0.0, deadline - time.monotonic())))
    for _ in range(10):  # SIGKILL cannot be refused; a few rounds catch children forked in between
        processes = listing()
        if not processes:
            return
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(processes, timeout=1.0)


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrefectServer:
    """A local Prefect server with its services (the scheduler among them) on the home's Prefect database, for as
    long as the ``with`` block lasts; ``api_url`` is its API."""

    def __init__(self, home: Home, *, startup_seconds: float = STARTUP_SECONDS):
        self.home = home
        self.startup_seconds = startup_seconds
        self.port = _free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.process: subprocess.Popen | None = None

    def _command(self) -> list[str]:
        import prefect

        return [sys.executable, "-m", "tasks._server_guard", str(os.getpid()),
                "--app-dir", str(Path(prefect.__file__).resolve().parents[1]),
                "--factory", "prefect.server.api.server:create_app",
                "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error"]

    def _environment(self) -> dict[str, str]:
        env = {**os.environ, "PREFECT_HOME": str(self.home.prefect), "PREFECT_UI_ENABLED": "false",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "true",
               "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "true"}
        for ephemeral in ("PREFECT__SERVER_EPHEMERAL", "PREFECT__SERVER_FINAL", "PREFECT_API_URL"):
            env.pop(ephemeral, None)
        return env

    def __enter__(self) -> Self:
        from storage._process import exclusive

        # one server start at a time on a home: a first start migrates the database (tasks/_prefect.py does the same)
        with exclusive(self.home.prefect / ".server-start.lock"):
            for attempt in range(3):  # the free port was taken between choosing it and the server binding it
                if attempt:
                    self.port = _free_port()
                    self.api_url = f"http://127.0.0.1:{self.port}/api"
                with open(self.home.prefect / "server.log", "ab") as log:  # the child keeps its own copy
                    self.process = subprocess.Popen(self._command(), env=self._environment(), stdout=log,
                                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                    start_new_session=True)
                try:
                    if self._wait_until_healthy():
                        return self
                except BaseException:
                    self.stop()
                    raise
        raise FaceZooError(f"the Prefect server exited with status {self.process.returncode} while starting; "
                           f"see {self.home.prefect / 'server.log'}")

    def _wait_until_healthy(self) -> bool:
        """``True`` once the server answers; ``False`` when it exited instead."""
        deadline = time.monotonic() + self.startup_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return True
            time.sleep(0.2)
        raise FaceZooError(f"the Prefect server did not answer within {self.startup_seconds:g} s; "
                           f"see {self.home.prefect / 'server.log'}")

    def stop(self) -> None:
        if self.process is not None:
            stop_processes(lambda: _tree(self.process.pid))
            self.process.wait()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _when(moment: datetime) -> str:
    seconds = (moment - datetime.now(UTC)).total_seconds()
    wait = (f"in {seconds:.0f} s" if seconds < 120 else f"in {seconds / 60:.0f} min" if seconds < 7200
            else f"in {seconds / 3600:.1f} h")
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC ({wait if seconds > 0 else 'now'})"


async def _runs(client: Any, *, deployment_id: Any = None, states: tuple[str, ...] = (), sort: Any = None,
                limit: int | None = None, **where: Any) -> list[Any]:
    """Flow runs of the deployment (any, without one) in ``states`` (any, without them), filtered further by the
    ``FlowRunFilter`` fields in ``where``."""
    from prefect.client.schemas import filters
    from prefect.client.schemas.objects import StateType

    if states:
        where["state"] = filters.FlowRunFilterState(
            type=filters.FlowRunFilterStateType(any_=[StateType(state) for state in states]))
    deployments = (filters.DeploymentFilter(id=filters.DeploymentFilterId(any_=[deployment_id]))
                   if deployment_id is not None else None)
    return await client.read_flow_runs(deployment_filter=deployments, flow_run_filter=filters.FlowRunFilter(**where),
                                       sort=sort, limit=limit)


async def _next_run(client: Any, deployment_id: Any) -> datetime | None:
    from prefect.client.schemas.sorting import FlowRunSort

    runs = await _runs(client, deployment_id=deployment_id, states=("SCHEDULED",),
                       sort=FlowRunSort.NEXT_SCHEDULED_START_TIME_ASC, limit=1)
    return runs[0].next_scheduled_start_time if runs else None


async def _announce(client: Any, deployment_id: Any, echo: Callable[[str], None], every: float = 2.0) -> None:
    """Say when the next run is due, once the scheduler has created it, and again whenever it changes."""
    said = None
    while True:
        with contextlib.suppress(Exception):  # the server is busy or stopping: say it on the next round
            due = await _next_run(client, deployment_id)
            if due is not None and due != said:
                echo(f"next run due {_when(due)}")
                said = due
        await asyncio.sleep(every)


_UNFINISHED = ("RUNNING", "PENDING", "CANCELLING")


async def _close_runs(client: Any, deployment_id: Any, since: datetime | None = None) -> int:
    """Mark ``Cancelled`` the runs of the deployment left pending or running by a process that was stopped (this
    one's, or a killed ``serve`` before it), and the flow runs nested in them (``rank_zoo`` of each dataset):
    those started ``since``, or every unfinished one."""
    from prefect.client.schemas.filters import FlowRunFilterParentFlowRunId, FlowRunFilterStartTime
    from prefect.states import Cancelled

    if since is None:
        runs = await _runs(client, deployment_id=deployment_id, states=_UNFINISHED)
    else:
        runs = await _runs(client, deployment_id=deployment_id, start_time=FlowRunFilterStartTime(after_=since))
    closing = [run for run in runs if run.state_type.value in _UNFINISHED]
    parents = [run.id for run in runs]
    while parents:
        nested = await _runs(client, states=_UNFINISHED, parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=parents))
        closing += nested
        parents = [run.id for run in nested]
    for run in closing:
        await client.set_flow_run_state(run.id, Cancelled(message="facezoo serve was stopped"), force=True)
    return len(closing)


async def _drop_missed_runs(client: Any, deployment_id: Any) -> int:
    """Delete the deployment's scheduled runs whose time passed while nothing served it: each would re-evaluate
    the same zoo on the same datasets, one after the other."""
    from prefect.client.schemas.filters import FlowRunFilterExpectedStartTime

    missed = await _runs(client, deployment_id=deployment_id, states=("SCHEDULED",),
                         expected_start_time=FlowRunFilterExpectedStartTime(before_=datetime.now(UTC)))
    for run in missed:
        await client.delete_flow_run(run.id)
    return len(missed)


def _close_jobs(home: Home) -> list[str]:
    """Close as ``interrupted`` (DuckDB) and ``KILLED`` (MLflow) the jobs of the runs that were stopped."""
    from storage.results import ResultsStore
    from storage.tracking import Tracker

    stale = ResultsStore(home.results_db, lock_timeout=GRACE_SECONDS).close_interrupted()
    if stale:
        Tracker(home.tracking_uri, home.artifacts).close_interrupted(stale)
    return stale


async def _serve(schedule: Any, home: Home, server: PrefectServer, echo: Callable[[str], None]) -> None:
    from prefect import get_client
    from prefect.runner import Runner

    from flows.reevaluate import prefect_schedule, reevaluate

    runner = Runner(name=f"facezoo-serve-{os.getpid()}", pause_on_shutdown=False, limit=1)
    deployment_id = await runner.aadd_flow(
        reevaluate, name=schedule.name, schedule=prefect_schedule(schedule),
        parameters={"zoo": schedule.zoo, "device": schedule.device, "home": str(home.root)})
    async with get_client() as client:
        stale = await _close_runs(client, deployment_id)  # this home's serve lock is ours: those runs have no process
        missed = await _drop_missed_runs(client, deployment_id)
        if stale or missed:
            echo(f"closed {stale} run(s) a stopped serve left running; dropped {missed} run(s) missed while not "
                 "serving (the next run re-evaluates everything anyway)")
        since = datetime.now(UTC)
        stop = asyncio.Event()
        serving = asyncio.create_task(runner.start())
        await asyncio.sleep(0)  # runner.start() installs its own SIGTERM handler first thing: ours replace it
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        echo("serving: scheduled runs start in this process; Ctrl-C or SIGTERM stops")
        announcing = asyncio.create_task(_announce(client, deployment_id, echo))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for sig in _SIGNALS:  # a second Ctrl-C must not interrupt the stopping below, which takes seconds
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
        announcing.cancel()
        runner.stopping = True  # submits nothing more while the runs in flight are stopped
        if getattr(runner, "_scheduled_run_poller", None) is not None:
            runner._scheduled_run_poller.stopping = True
        spare = frozenset(p.pid for p in _tree(server.process.pid))  # stopped last: the runs are closed through it
        await asyncio.to_thread(stop_processes, lambda: _descendants(spare))
        serving.cancel()
        await asyncio.wait({serving}, timeout=GRACE_SECONDS)
        closed = await asyncio.wait_for(_close_runs(client, deployment_id, since), timeout=GRACE_SECONDS)
    jobs = _close_jobs(home)
    if closed or jobs:
        echo(f"stopped {closed} flow run(s) in flight; closed job(s) {', '.join(jobs) or 'none'} as interrupted")
    if serving.done() and not serving.cancelled() and serving.exception() is not None:
        raise FaceZooError(f"the runner stopped: {first_line(serving.exception())}")


def serve_schedule(schedule: Any, home: Home, echo: Callable[[str], None] = print) -> None:
    """Serve the re-evaluation deployment of ``schedule`` (a :class:`flows.reevaluate.Schedule`) on ``home`` until
    SIGINT or SIGTERM; returns once every process it started has stopped.

    Raises:
        FaceZooError: another ``facezoo serve`` serves this home, or the Prefect server did not start.
    """
    from storage._process import exclusive

    adopt_orphans()
    with _stop_on_signals(), contextlib.ExitStack() as held:
        try:
            held.enter_context(exclusive(home.prefect / "serve.lock", wait=False))
        except BlockingIOError as error:
            raise FaceZooError(f"another facezoo serve already serves {home.root} ({error}); stop it first") from None
        try:
            with PrefectServer(home) as server:
                from prefect.settings import PREFECT_API_URL, temporary_settings

                # the runs' processes inherit the environment; this process reads the settings
                held.enter_context(_environment(PREFECT_API_URL=server.api_url))
                with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
                    asyncio.run(_serve(schedule, home, server, echo))
        except Stopped:
            pass  # stopped while the server was starting: leaving the block stopped it
    echo("stopped")


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def serve_ui(argv: list[str]) -> int:
    """Run the MLflow UI command ``argv`` until it exits, or until this process gets SIGINT or SIGTERM; then no
    process of its tree is left. Returns its exit status (0 when stopped by a signal)."""
    adopt_orphans()
    with _stop_on_signals():
        process = subprocess.Popen(argv, start_new_session=True)  # a terminal's Ctrl-C reaches this process only
        try:
            return process.wait()
        except Stopped:
            return 0
        finally:
            stop_processes(_descendants)
            process.wait()
