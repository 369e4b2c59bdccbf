"""The results store: every job's datasets, models, feature sets, scores, failures and ground truth in one DuckDB file.

    >>> store = ResultsStore(home.results_db)
    >>> job = store.start_job("rank", zoo="small", dataset="cifar10", params={"metrics": ["face", "logme"]})
    >>> store.write_scores(job, "cifar10", metrics.rank_zoo(raw))
    >>> store.finish_job(job, "completed")
    >>> store.leaderboard("cifar10")
    >>> store.query("SELECT model, avg(rank) FROM leaderboard WHERE metric = ? GROUP BY model", ["face"])

Every value reaches DuckDB as a bound parameter; only this module's own table and column names are written into SQL.
Rows are bound column-wise as lists and unnested (``INSERT ... SELECT unnest(?) AS col, ...``): one statement per
table instead of one per row (750 score rows: ~25 ms instead of ~1 s with ``executemany``). Upserts use
``ON CONFLICT (primary key) DO UPDATE``, so re-writing a job's rows after a crash or a re-run never duplicates them.

Concurrency. DuckDB lets one process at a time open a file for writing; another process gets an ``IOException``
("Could not set lock on file"), and a read-only connection cannot open beside a read-write one, not even in the same
process. So every operation opens a short-lived connection and closes it (~15 ms), opening is retried with jittered
exponential backoff for up to ``lock_timeout`` seconds (two jobs on one home queue instead of crashing), and within a
process a lock per database file serialises the store's connections (Prefect runs tasks in threads). One logical
write (all scores of a job) is one transaction.

Timestamps are UTC (``TIMESTAMP`` without zone). JSON columns are ``VARCHAR`` holding JSON text; the methods that
return a dict decode them, those that return a DataFrame leave the text.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pandas as pd

from facezoo.errors import FaceZooError, first_line
from storage._process import exclusive, process_alive

if TYPE_CHECKING:
    from facezoo.data import Dataset

__all__ = ["JOB_KINDS", "JOB_STATUSES", "SCHEMA", "ResultsStore"]

JOB_KINDS = ("rank", "validate", "onboard", "reevaluate")
JOB_STATUSES = ("running", "completed", "partial", "failed", "interrupted")
_FINISHED = JOB_STATUSES[1:]
_DATASET_JSON = ("options", "class_names", "splits")
_CORRELATION_STATS = (
    "weighted_tau", "kendall_tau", "pearson", "spearman", "top1_regret", "ci_low", "ci_high", "n_models",
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (            -- one row per version: a new fingerprint is a new version
    name          VARCHAR,
    fingerprint   VARCHAR,
    source        VARCHAR,                       -- how to load it again: builtin:animal-mnist, folder:/data/x, ...
    options       VARCHAR,                       -- JSON: the loader's options
    max_samples   BIGINT,                        -- a deterministic stratified sample of that many, or NULL
    task          VARCHAR,                       -- image | text | segmentation
    n_samples     BIGINT,
    n_classes     INTEGER,
    class_names   VARCHAR,                       -- JSON list, index = class code
    splits        VARCHAR,                       -- JSON {split: number of samples}
    registered_at TIMESTAMP NOT NULL,
    PRIMARY KEY (name, fingerprint)
);
CREATE TABLE IF NOT EXISTS models (
    name          VARCHAR,
    source        VARCHAR,
    digest        VARCHAR,                       -- weights digest
    modality      VARCHAR,
    dim           INTEGER,                       -- feature dimension
    num_logits    INTEGER,                       -- source classes, NULL without a classifier head
    preprocessing VARCHAR,                       -- JSON
    first_seen    TIMESTAMP NOT NULL,
    PRIMARY KEY (name, digest)
);
CREATE TABLE IF NOT EXISTS feature_sets (        -- one extraction in the feature store
    cache_key           VARCHAR PRIMARY KEY,
    model               VARCHAR,
    dataset             VARCHAR,
    split               VARCHAR,
    dataset_fingerprint VARCHAR,
    path                VARCHAR,
    n                   BIGINT,
    dim                 INTEGER,
    extraction_seconds  DOUBLE,
    created_at          TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id        VARCHAR PRIMARY KEY,           -- uuid4
    kind          VARCHAR NOT NULL,              -- rank | validate | onboard | reevaluate
    zoo           VARCHAR,
    dataset       VARCHAR,
    status        VARCHAR NOT NULL,              -- running | completed | partial | failed | interrupted
    params        VARCHAR,                       -- JSON
    message       VARCHAR,
    mlflow_run_id VARCHAR,
    started_at    TIMESTAMP NOT NULL,
    finished_at   TIMESTAMP,
    host          VARCHAR,                       -- where the job's process runs: a job whose process is gone
    pid           INTEGER                        -- (killed, power cut) is closed as interrupted by the next job
);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS host VARCHAR;  -- results files written before these columns existed
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS pid INTEGER;
CREATE TABLE IF NOT EXISTS scores (              -- metrics.rank_zoo output of one job; NULL = failed
    job_id  VARCHAR,
    model   VARCHAR,
    dataset VARCHAR,
    metric  VARCHAR,
    raw     DOUBLE,                              -- single-model value
    score   DOUBLE,                              -- zoo-normalised where the metric is
    rank    DOUBLE,                              -- 1 = predicted best
    tied    INTEGER,                             -- models sharing this rank on this metric: 1 = no tie, 0 = failed
    seconds DOUBLE,                              -- time to compute this metric for this model
    PRIMARY KEY (job_id, model, metric)
);
ALTER TABLE scores ADD COLUMN IF NOT EXISTS tied INTEGER;  -- scores written before ties were counted: count them
UPDATE scores SET tied = (
    SELECT count(*) FROM scores AS o
    WHERE o.job_id = scores.job_id AND o.dataset = scores.dataset AND o.metric = scores.metric AND o.rank = scores.rank
) WHERE tied IS NULL;
CREATE TABLE IF NOT EXISTS failures (
    job_id VARCHAR,
    model  VARCHAR,
    stage  VARCHAR,                              -- extract | score | finetune | ...
    error  VARCHAR,
    recorded_at TIMESTAMP NOT NULL,
    PRIMARY KEY (job_id, model, stage)
);
CREATE TABLE IF NOT EXISTS finetune (            -- ground truth, reused by every job that needs it
    model               VARCHAR,
    dataset             VARCHAR,
    dataset_fingerprint VARCHAR,
    protocol            VARCHAR,
    budget_key          VARCHAR,                 -- hash of the budget: epochs, steps, learning rate, ...
    accuracy            DOUBLE,
    mean_class_accuracy DOUBLE,
    seconds             DOUBLE,
    budget              VARCHAR,                 -- JSON
    seed                BIGINT,
    job_id              VARCHAR,                 -- the job that fine-tuned it
    recorded_at         TIMESTAMP NOT NULL,
    PRIMARY KEY (model, dataset_fingerprint, protocol, budget_key)
);
CREATE TABLE IF NOT EXISTS correlations (        -- ranking quality of one metric against fine-tuned accuracy
    job_id       VARCHAR,
    dataset      VARCHAR,
    protocol     VARCHAR,
    metric       VARCHAR,
    weighted_tau DOUBLE,
    kendall_tau  DOUBLE,
    pearson      DOUBLE,
    spearman     DOUBLE,
    top1_regret  DOUBLE,
    ci_low       DOUBLE,                         -- bootstrap interval of weighted_tau
    ci_high      DOUBLE,
    n_models     INTEGER,
    PRIMARY KEY (job_id, metric, protocol)
);
-- For every dataset, the scores of the latest finished (completed or partial) job that ranked it. Jobs are matched
-- per dataset of their scores, so a re-evaluation job covering many datasets counts for each of them.
CREATE OR REPLACE VIEW leaderboard AS
WITH ranked AS (
    SELECT DISTINCT s.dataset, j.job_id, j.finished_at
    FROM scores s JOIN jobs j USING (job_id)
    WHERE j.kind IN ('rank', 'onboard', 'reevaluate') AND j.status IN ('completed', 'partial')
), latest AS (
    SELECT * FROM ranked
    QUALIFY row_number() OVER (PARTITION BY dataset ORDER BY finished_at DESC, job_id) = 1
)
SELECT dataset, model, metric, score, rank, tied, raw, job_id, finished_at
FROM latest JOIN scores USING (dataset, job_id);
"""

# One lock per database file for every store in this process: DuckDB refuses a read-only connection beside an open
# read-write one, and two writing connections of one process would conflict at commit instead of queueing.
_FILE_LOCKS: dict[str, threading.RLock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def _file_lock(path: Path) -> threading.RLock:
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(str(path), threading.RLock())


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=lambda o: o.item() if hasattr(o, "item") else str(o))


def _float(value: Any) -> float | None:
    """A DOUBLE parameter: NaN and missing values become NULL (SQL aggregates skip NULL, not NaN)."""
    return None if value is None or pd.isna(value) else float(value)


def _int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _is_lock_conflict(error: duckdb.Error) -> bool:
    return isinstance(error, duckdb.IOException) and "lock" in str(error).lower()


def _upsert(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: Mapping[str, list[Any]],
    keys: Sequence[str],
    *,
    on_conflict: str = "update",
    keep: Sequence[str] = (),
) -> None:
    """Insert rows given column-wise (equal-length lists), one statement; on a primary-key conflict update every
    column but ``keys`` and ``keep`` (``on_conflict="update"``) or leave the stored row (``"nothing"``).

    ``table`` and the column names are this module's identifiers; every value is bound as a list parameter."""
    names = list(columns)
    select = ", ".join(f'unnest(?) AS "{name}"' for name in names)
    if on_conflict == "update":
        action = "DO UPDATE SET " + ", ".join(f'"{n}" = excluded."{n}"' for n in names if n not in (*keys, *keep))
    else:
        action = "DO NOTHING"
    sql = f"INSERT INTO {table} BY NAME SELECT {select} ON CONFLICT ({', '.join(keys)}) {action}"
    con.execute(sql, [columns[name] for name in names])


def _row(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any]) -> dict[str, Any] | None:
    cursor = con.execute(sql, params)
    values = cursor.fetchone()
    return None if values is None else dict(zip([d[0] for d in cursor.description], values, strict=True))


def _decode(row: dict[str, Any] | None, *columns: str) -> dict[str, Any] | None:
    if row is not None:
        for column in columns:
            if row[column] is not None:
                row[column] = json.loads(row[column])
    return row


def _check_columns(table: pd.DataFrame, required: Sequence[str], what: str) -> None:
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise FaceZooError(f"{what} lacks column(s) {', '.join(missing)}; it has {', '.join(map(str, table.columns))}")


def _check_unique(table: pd.DataFrame, keys: list[str], what: str) -> None:
    duplicated = table.duplicated(keys)
    if duplicated.any():
        first = table.loc[duplicated, keys].iloc[0].tolist()
        raise FaceZooError(f"{what} has more than one row for {dict(zip(keys, first, strict=True))}")


class ResultsStore:
    """The DuckDB results database (usually ``Home.results_db``), created on first use.

    Args:
        path: the database file; its folder is created on first use.
        lock_timeout: seconds to keep retrying while another process holds the file, before a
            :class:`FaceZooError`.
    """

    def __init__(self, path: str | Path, *, lock_timeout: float = 60.0):
        self.path = Path(path).expanduser().resolve()
        self.lock_timeout = lock_timeout
        self._lock = _file_lock(self.path)
        self._schema_ready = False

    # -- connections -------------------------------------------------------------------------------------------

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """A connection, retried with jittered backoff while another process holds the file's lock."""
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.01
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.Error as error:
                if not _is_lock_conflict(error):
                    raise FaceZooError(f"cannot open results database {self.path}: {first_line(error)}") from None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise FaceZooError(
                        f"results database {self.path} stayed locked by another process for {self.lock_timeout:g} s "
                        f"({first_line(error)}); wait for that job to finish or raise lock_timeout"
                    ) from None
            # jitter: two waiting processes do not retry in lockstep; the last try falls on the deadline
            time.sleep(min(remaining, delay * random.uniform(0.5, 1.5)))
            delay = min(delay * 2, 0.5)

    @contextmanager
    def _connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection, the schema created first; the file is free again when the block ends."""
        with self._lock:
            if not self._schema_ready:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # one process at a time creates the file: another opening it before its header is written reads
                # "not a valid DuckDB database file" (jobs started together on a new home)
                with exclusive(self.path.with_name(self.path.name + ".init-lock")):
                    if self.path.is_file() and self.path.stat().st_size == 0:
                        self.path.unlink()  # a creation that lost that race before this lock: no data, no header
                    con = self._open(read_only=False)
                    try:
                        con.execute(SCHEMA)
                    finally:
                        con.close()
                self._schema_ready = True
            con = self._open(read_only)
            try:
                yield con
            finally:
                con.close()

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One read-write transaction: everything in the block is committed together or not at all."""
        with self._connect() as con:
            con.begin()
            try:
                yield con
            except BaseException:
                con.rollback()
                raise
            con.commit()

    @staticmethod
    def _require_job(con: duckdb.DuckDBPyConnection, job_id: str) -> None:
        if con.execute("SELECT 1 FROM jobs WHERE job_id = ?", [job_id]).fetchone() is None:
            raise FaceZooError(f"unknown job {job_id!r}: start it with start_job first")

    # -- datasets and models -----------------------------------------------------------------------------------

    def register_dataset(
        self,
        dataset: Dataset,
        source: str,
        options: Mapping[str, Any] | None = None,
        max_samples: int | None = None,
    ) -> bool:
        """Record a version of ``dataset`` (name, fingerprint, task, size, classes, split sizes) and how to load it
        again: ``source``, the loader's ``options`` and ``max_samples`` (a stratified sample of that many).

        Returns ``True`` for a new (name, fingerprint), ``False`` when it was registered already (a no-op: the
        first registration stays)."""
        split_names, split_counts = np.unique(np.asarray(dataset.splits, dtype=str), return_counts=True)
        with self._transaction() as con:
            known = con.execute(
                "SELECT 1 FROM datasets WHERE name = ? AND fingerprint = ?", [dataset.name, dataset.fingerprint]
            ).fetchone()
            _upsert(con, "datasets", {
                "name": [dataset.name], "fingerprint": [dataset.fingerprint], "source": [source],
                "options": [_json(dict(options or {}))], "max_samples": [_int(max_samples)], "task": [dataset.task],
                "n_samples": [len(dataset)], "n_classes": [len(dataset.class_names)],
                "class_names": [_json(list(dataset.class_names))],
                "splits": [_json(dict(zip(split_names.tolist(), split_counts.tolist(), strict=True)))],
                "registered_at": [_utcnow()],
            }, ["name", "fingerprint"], on_conflict="nothing")
        return known is None

    def get_dataset(self, name: str) -> dict[str, Any] | None:
        """Every column of the latest registered version of ``name`` (JSON decoded), or ``None``."""
        with self._connect() as con:
            row = _row(con, "SELECT * FROM datasets WHERE name = ? ORDER BY registered_at DESC LIMIT 1", [name])
        return _decode(row, *_DATASET_JSON)

    def list_datasets(self) -> list[dict[str, Any]]:
        """One dict per dataset name, sorted: its latest version (as :meth:`get_dataset`) plus ``versions`` (how many
        fingerprints it has had)."""
        with self._connect() as con:
            cursor = con.execute(
                "SELECT *, count(*) OVER (PARTITION BY name) AS versions FROM datasets "
                "QUALIFY row_number() OVER (PARTITION BY name ORDER BY registered_at DESC) = 1 ORDER BY name"
            )
            columns = [d[0] for d in cursor.description]
            rows = [dict(zip(columns, values, strict=True)) for values in cursor.fetchall()]
        return [_decode(row, *_DATASET_JSON) for row in rows]

    def upsert_model(
        self,
        name: str,
        *,
        source: str,
        digest: str,
        modality: str,
        dim: int | None,
        num_logits: int | None,
        preprocessing: Mapping[str, Any],
    ) -> None:
        """Record a model (name + weights digest); seen again, its details are updated and ``first_seen`` kept."""
        with self._transaction() as con:
            _upsert(con, "models", {
                "name": [name], "source": [source], "digest": [digest], "modality": [modality],
                "dim": [_int(dim)], "num_logits": [_int(num_logits)], "preprocessing": [_json(dict(preprocessing))],
                "first_seen": [_utcnow()],
            }, ["name", "digest"], keep=["first_seen"])

    def record_feature_set(
        self,
        cache_key: str,
        *,
        model: str,
        dataset: str,
        split: str,
        dataset_fingerprint: str,
        path: str | Path,
        n: int,
        dim: int,
        extraction_seconds: float | None,
    ) -> None:
        """Record (or re-record, after a re-extraction) one feature-store file."""
        with self._transaction() as con:
            _upsert(con, "feature_sets", {
                "cache_key": [cache_key], "model": [model], "dataset": [dataset], "split": [split],
                "dataset_fingerprint": [dataset_fingerprint], "path": [str(path)], "n": [int(n)], "dim": [int(dim)],
                "extraction_seconds": [_float(extraction_seconds)], "created_at": [_utcnow()],
            }, ["cache_key"])

    # -- jobs ----------------------------------------------------------------------------------------------------

    def start_job(self, kind: str, zoo: str | None, dataset: str | None, params: Mapping[str, Any]) -> str:
        """Record a running job of this process; returns its id (a uuid4 string)."""
        if kind not in JOB_KINDS:
            raise FaceZooError(f"job kind {kind!r} is not one of {', '.join(JOB_KINDS)}")
        job_id = str(uuid.uuid4())
        with self._transaction() as con:
            _upsert(con, "jobs", {
                "job_id": [job_id], "kind": [kind], "zoo": [zoo], "dataset": [dataset], "status": ["running"],
                "params": [_json(dict(params))], "message": [None], "mlflow_run_id": [None],
                "started_at": [_utcnow()], "finished_at": [None], "host": [socket.gethostname()],
                "pid": [os.getpid()],
            }, ["job_id"], on_conflict="nothing")
        return job_id

    def close_interrupted(self) -> list[str]:
        """Mark ``interrupted`` every ``running`` job of this host whose process no longer exists (SIGKILL, OOM
        killer, power cut: nothing in the process could close it); returns their ids. Jobs of other hosts are left
        alone: this host cannot tell whether their processes live."""
        host = socket.gethostname()
        with self._transaction() as con:
            running = con.execute("SELECT job_id, pid FROM jobs WHERE status = 'running' AND host = ?",
                                  [host]).fetchall()
            gone = [(job_id, pid) for job_id, pid in running if pid is not None and not process_alive(pid)]
            for job_id, pid in gone:
                con.execute("UPDATE jobs SET status = 'interrupted', finished_at = ?, message = ? WHERE job_id = ?",
                            [_utcnow(), f"process {pid} on {host} ended before the job finished (killed?); "
                             "finished models are cached, re-run the job to complete it", job_id])
        return [job_id for job_id, _ in gone]

    def finish_job(
        self, job_id: str, status: str, message: str | None = None, mlflow_run_id: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        """Mark a job ``completed``, ``partial`` (some models failed) or ``failed``; an ``mlflow_run_id`` of
        ``None`` keeps the one stored, and so do ``params`` of ``None`` (else they replace the job's)."""
        if status not in _FINISHED:
            raise FaceZooError(f"a job finishes as one of {', '.join(_FINISHED)}, not {status!r}")
        with self._transaction() as con:
            self._require_job(con, job_id)
            con.execute(
                "UPDATE jobs SET status = ?, message = ?, mlflow_run_id = coalesce(?, mlflow_run_id), finished_at = ?, "
                "params = coalesce(?, params) WHERE job_id = ?",
                [status, message, mlflow_run_id, _utcnow(), None if params is None else _json(dict(params)), job_id],
            )

    def latest_job(self, kind: str, dataset: str | None = None, zoo: str | None = None) -> str | None:
        """The id of the latest finished job (``completed`` or ``partial``) of ``kind``, for ``dataset`` and ``zoo``
        when given; ``None`` when there is none."""
        with self._connect() as con:
            row = con.execute(
                "SELECT job_id FROM jobs WHERE kind = ? AND status IN ('completed', 'partial') "
                "AND (? IS NULL OR dataset = ?) AND (? IS NULL OR zoo = ?) ORDER BY finished_at DESC LIMIT 1",
                [kind, dataset, dataset, zoo, zoo],
            ).fetchone()
        return None if row is None else row[0]

    def job(self, job_id: str) -> dict[str, Any]:
        """Every column of one job (``params`` decoded)."""
        with self._connect() as con:
            row = _row(con, "SELECT * FROM jobs WHERE job_id = ?", [job_id])
        if row is None:
            raise FaceZooError(f"unknown job {job_id!r}")
        return _decode(row, "params")

    # -- scores and failures -------------------------------------------------------------------------------------

    def write_scores(
        self,
        job_id: str,
        dataset: str,
        table: pd.DataFrame,
        seconds: Mapping[tuple[str, str], float] | None = None,
    ) -> int:
        """Upsert one job's scores in one transaction; returns the number of rows written.

        Args:
            table: :func:`facezoo.metrics.rank_zoo` output, one row per (metric, model) with ``metric``, ``model``,
                ``raw``, ``score``, ``rank``, ``tied``. NaN (a failed model or metric) is stored as NULL.
            seconds: ``{(model, metric): seconds}`` it took to compute each score; missing pairs are NULL.
        """
        _check_columns(table, ["metric", "model", "raw", "score", "rank", "tied"], "scores table")
        _check_unique(table, ["model", "metric"], "scores table")
        seconds = seconds or {}
        models, metrics = [str(m) for m in table["model"]], [str(m) for m in table["metric"]]
        with self._transaction() as con:
            self._require_job(con, job_id)
            _upsert(con, "scores", {
                "job_id": [job_id] * len(table), "model": models, "dataset": [dataset] * len(table), "metric": metrics,
                "raw": [_float(v) for v in table["raw"]], "score": [_float(v) for v in table["score"]],
                "rank": [_float(v) for v in table["rank"]], "tied": [_int(v) for v in table["tied"]],
                "seconds": [_float(seconds.get(pair)) for pair in zip(models, metrics, strict=True)],
            }, ["job_id", "model", "metric"])
        return len(table)

    def scores(self, job_id: str) -> pd.DataFrame:
        """One job's scores in :func:`~facezoo.metrics.rank_zoo`'s shape plus ``seconds``: ``metric``, ``model``,
        ``raw``, ``score``, ``rank``, ``tied``, ``seconds``, sorted by metric and rank (failed models last)."""
        with self._connect() as con:
            return con.execute(
                "SELECT metric, model, raw, score, rank, tied, seconds FROM scores WHERE job_id = ? "
                "ORDER BY metric, rank NULLS LAST, model",
                [job_id],
            ).df()

    def record_failure(self, job_id: str, model: str, stage: str, error: str) -> None:
        """Record why ``model`` failed at ``stage`` of a job (a second failure at the same stage replaces it)."""
        with self._transaction() as con:
            self._require_job(con, job_id)
            _upsert(con, "failures", {
                "job_id": [job_id], "model": [model], "stage": [stage], "error": [str(error)],
                "recorded_at": [_utcnow()],
            }, ["job_id", "model", "stage"])

    # -- ground truth and ranking quality -----------------------------------------------------------------------

    def write_finetune(
        self,
        model: str,
        dataset: str,
        dataset_fingerprint: str,
        protocol: str,
        budget_key: str,
        *,
        accuracy: float,
        budget: Mapping[str, Any],
        mean_class_accuracy: float | None = None,
        seconds: float | None = None,
        seed: int | None = None,
        job_id: str | None = None,
    ) -> None:
        """Store one fine-tuning result, the ground truth later jobs reuse for the same data, protocol and budget."""
        with self._transaction() as con:
            _upsert(con, "finetune", {
                "model": [model], "dataset": [dataset], "dataset_fingerprint": [dataset_fingerprint],
                "protocol": [protocol], "budget_key": [budget_key], "accuracy": [_float(accuracy)],
                "mean_class_accuracy": [_float(mean_class_accuracy)], "seconds": [_float(seconds)],
                "budget": [_json(dict(budget))], "seed": [_int(seed)], "job_id": [job_id], "recorded_at": [_utcnow()],
            }, ["model", "dataset_fingerprint", "protocol", "budget_key"])

    def get_finetune(
        self, model: str, dataset_fingerprint: str, protocol: str, budget_key: str
    ) -> dict[str, Any] | None:
        """The stored fine-tuning result (``budget`` decoded), or ``None`` when it has to be run."""
        with self._connect() as con:
            row = _row(
                con,
                "SELECT * FROM finetune "
                "WHERE model = ? AND dataset_fingerprint = ? AND protocol = ? AND budget_key = ?",
                [model, dataset_fingerprint, protocol, budget_key],
            )
        return _decode(row, "budget")

    def write_correlations(self, job_id: str, dataset: str, protocol: str, table: pd.DataFrame) -> int:
        """Upsert a job's ranking quality under one fine-tuning ``protocol`` in one transaction; returns the number
        of rows written.

        Args:
            table: one row per metric with ``metric`` and any of ``weighted_tau``, ``kendall_tau``, ``pearson``,
                ``spearman``, ``top1_regret``, ``ci_low``, ``ci_high`` (the interval of ``weighted_tau``),
                ``n_models``; absent columns and NaN are stored as NULL.
        """
        _check_columns(table, ["metric"], "correlations table")
        _check_unique(table, ["metric"], "correlations table")
        missing = [None] * len(table)
        columns: dict[str, list[Any]] = {
            "job_id": [job_id] * len(table), "dataset": [dataset] * len(table), "protocol": [protocol] * len(table),
            "metric": [str(m) for m in table["metric"]],
        }
        for stat in _CORRELATION_STATS:
            convert = _int if stat == "n_models" else _float
            columns[stat] = [convert(v) for v in table[stat]] if stat in table.columns else missing
        with self._transaction() as con:
            self._require_job(con, job_id)
            _upsert(con, "correlations", columns, ["job_id", "metric", "protocol"])
        return len(table)

    # -- reading -------------------------------------------------------------------------------------------------

    def leaderboard(self, dataset: str | None = None) -> pd.DataFrame:
        """The ``leaderboard`` view (every dataset, or one): ``dataset``, ``model``, ``metric``, ``score``, ``rank``,
        ``tied`` (models sharing that rank), ``raw``, ``job_id``, ``finished_at``, sorted by dataset, metric and rank
        (failed models last)."""
        with self._connect() as con:
            return con.execute(
                "SELECT * FROM leaderboard WHERE ? IS NULL OR dataset = ? "
                "ORDER BY dataset, metric, rank NULLS LAST, model",
                [dataset, dataset],
            ).df()

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run a user's SQL (``?`` or ``$name`` placeholders bound from ``params``) on a read-only connection, so
        it can read every table and the ``leaderboard`` view but never change them.

        Raises:
            FaceZooError: with DuckDB's one-line message, for any error in the SQL or an attempted write.
        """
        with self._connect(read_only=True) as con:
            try:
                result = con.execute(sql, params)
                return result.df() if result.description else pd.DataFrame()
            except duckdb.Error as error:
                raise FaceZooError(f"query failed: {first_line(error)}") from None

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"
