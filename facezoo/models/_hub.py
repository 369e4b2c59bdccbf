"""Offline detection for hub downloads: a cache miss fails in a fraction of a second instead of minutes of retries.

Without network, ``huggingface_hub`` (behind timm and transformers) retries for 25–200 s before failing; in offline
mode it fails in ~0.1 s. So before any hub load we decide once per process whether the Hub is reachable (an
``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` setting, else a TCP connect to the endpoint with a 1 s timeout). When it
is not, offline mode is switched on for the whole process (the network is unreachable anyway): cached files still
load, a miss raises at once, and :func:`hub_errors` turns that miss into a :class:`ModelUnavailableError` that says
how to provide the weights.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

from facezoo.models._registry import ModelUnavailableError

__all__ = ["PROBE_TIMEOUT_S", "hub_errors", "hub_offline"]

PROBE_TIMEOUT_S = 1.0
_TRUE = {"1", "true", "yes", "on"}
_log = logging.getLogger(__name__)
_lock = threading.Lock()
_reachable: bool | None = None  # the probe's result, once per process


def _endpoint() -> tuple[str, int]:
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def _probe(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection opens within ``timeout`` s; name resolution, which ignores socket timeouts, runs in a
    daemon thread so that a stalled DNS server cannot hold the caller either."""
    result: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def _offline_setting() -> bool:
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_offline() -> bool:
    """True when hub downloads are impossible or disabled; then offline mode is on (cache hits only)."""
    global _reachable
    if not _offline_setting():
        with _lock:
            if _reachable is None:
                _reachable = _probe(*_endpoint(), PROBE_TIMEOUT_S)
                if not _reachable:
                    _log.warning("the Hugging Face Hub (%s:%d) is unreachable: hub models load from the local cache "
                                 "only", *_endpoint())
        if _reachable:
            return False
    from huggingface_hub import constants

    # huggingface_hub reads HF_HUB_OFFLINE once, at import; its checks read this module attribute at each call.
    constants.HF_HUB_OFFLINE = True
    return True


@contextmanager
def hub_errors(what: str, how: str) -> Iterator[None]:
    """Turn a hub cache miss in offline mode into ``ModelUnavailableError(what cannot be fetched offline; how)``."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        yield
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, OSError) as e:
        if isinstance(e, (LocalEntryNotFoundError, OfflineModeIsEnabled)) or hub_offline():
            raise ModelUnavailableError(
                f"{what} cannot be fetched offline: the Hugging Face Hub is unreachable (or HF_HUB_OFFLINE is set) "
                f"and the files are not in the local cache. {how}"
            ) from None
        raise
