"""What long work says while it runs, on standard error.

On a terminal: progress bars (tqdm). Anywhere else (a file, a CI log, a process supervisor): plain lines, one when a
stage starts, one every ``interval`` seconds while it runs and one when it ends, so a log shows what the job is doing
and how fast without carriage returns. ``FACEZOO_PROGRESS`` forces a mode: ``bar``, ``lines`` or ``off``.

    >>> with progress.task(1000, "extracting mobilenet_v2", unit="img") as p:
    ...     for batch in batches:
    ...         p.update(len(batch))
    extracting mobilenet_v2: 1000 img in 12.3 s (81.3 img/s)
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

__all__ = ["Progress", "mode", "stage", "task"]

_INTERVAL = float(os.environ.get("FACEZOO_PROGRESS_INTERVAL", "15"))


def mode(stream: TextIO | None = None) -> str:
    """``bar`` on a terminal, ``lines`` elsewhere, or what ``FACEZOO_PROGRESS`` says."""
    forced = os.environ.get("FACEZOO_PROGRESS", "").strip().lower()
    if forced in {"bar", "lines", "off"}:
        return forced
    stream = stream or sys.stderr
    return "bar" if getattr(stream, "isatty", lambda: False)() else "lines"


def stage(message: str) -> None:
    """One line that says what starts now (``scoring 6 models``); above the bars on a terminal, not through them."""
    current = mode()
    if current == "bar":
        from tqdm.auto import tqdm

        tqdm.write(message, file=sys.stderr)
    elif current == "lines":
        print(message, file=sys.stderr, flush=True)


class Progress:
    """Counts done units of one stage; a bar on a terminal, timed lines elsewhere."""

    def __init__(self, total: int | None, description: str, unit: str = "it", interval: float = _INTERVAL,
                 enabled: bool = True) -> None:
        self.total, self.description, self.unit, self.interval = total, description, unit, interval
        self.done = 0
        self._mode = mode() if enabled else "off"
        self._start = self._last = time.perf_counter()
        self._bar: Any = None
        if self._mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=description, unit=unit, leave=False, dynamic_ncols=True,
                             file=sys.stderr)
        elif self._mode == "lines":
            todo = f"{total} {unit}" if total is not None else "started"
            print(f"{description}: {todo}", file=sys.stderr, flush=True)

    @property
    def rate(self) -> float:
        elapsed = time.perf_counter() - self._start
        return self.done / elapsed if elapsed > 0 else 0.0

    def update(self, n: int = 1, note: str | None = None) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            if note:
                self._bar.set_postfix_str(note, refresh=False)
        elif self._mode == "lines" and time.perf_counter() - self._last >= self.interval:
            self._last = time.perf_counter()
            total = f"/{self.total}" if self.total is not None else ""
            extra = f", {note}" if note else ""
            print(f"{self.description}: {self.done}{total} {self.unit} ({self.rate:.1f} {self.unit}/s{extra})",
                  file=sys.stderr, flush=True)

    def close(self, note: str | None = None) -> None:
        """End the stage with one line (count, time, rate, ``note``); a bar is cleared first, so that a terminal
        keeps the outcome of every stage and not a stack of finished bars. Closing twice says nothing more."""
        if self._mode not in ("bar", "lines"):
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elapsed = time.perf_counter() - self._start
        extra = f"; {note}" if note else ""
        print(f"{self.description}: {self.done} {self.unit} in {elapsed:.1f} s ({self.rate:.1f} {self.unit}/s)"
              f"{extra}", file=sys.stderr, flush=True)
        self._mode = "closed"

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def task(total: int | None, description: str, unit: str = "it", enabled: bool = True) -> Progress:
    """A :class:`Progress` for one stage; ``enabled=False`` says nothing (library calls that asked for silence)."""
    return Progress(total, description, unit, enabled=enabled)
