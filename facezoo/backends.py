"""Inference backends: how the extraction engine runs a model's forward pass, chosen per model and device.

- ``eager``: the adapter's own ``forward`` (PyTorch as written; on CUDA with bf16 autocast and channels-last memory).
- ``channels-last``: PyTorch on the CPU with the network and the batch in channels-last memory (convolutions ~2x).
- ``onnxruntime``: the adapter's ``forward`` exported once to ONNX (TorchScript exporter) and run by ONNX Runtime's
  CPU provider (6-8x eager on 2 cores for MobileNetV2 / EfficientNet-Lite, ~2x for MiniLM).

``auto`` picks, on the CPU, ``onnxruntime`` for models that can be exported, else ``channels-last`` for convolutional
networks, else ``eager``, each kept only if it also ran faster than eager in its check (ONNX Runtime is no faster than
eager PyTorch for MiniLM on short sentences: measured, not assumed); on CUDA it is ``eager`` (today's path). Models with a runtime of their own (ONNX files,
static embeddings) always run on it, whatever is asked.

Equality is proven, not assumed: the first time a backend other than ``eager`` runs a model (per weights digest,
preprocessing and library versions), its outputs on the first batch are compared with eager fp32 ones; below
:data:`MIN_COSINE` or above :data:`MAX_RELATIVE_DIFFERENCE` it is rejected with one warning and the next backend of
the chain ``onnxruntime → channels-last → eager`` takes over. The same check times both on those samples (best of
two, after one run each); ``auto`` moves on along the chain, quietly, from a backend that was slower than eager,
while a backend asked for by name is kept when it is equal, whatever its speed. Exports and verdicts are cached in ``export_dir``
(``<home>/onnx``), so a model is exported and checked once; without ``export_dir`` both stay in memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from facezoo.errors import FaceZooError, first_line
from facezoo.models.base import ModelAdapter

__all__ = ["BACKENDS", "MAX_RELATIVE_DIFFERENCE", "MIN_COSINE", "Runner", "check_name", "choose", "compare", "runner"]

BACKENDS = ("auto", "eager", "channels-last", "onnxruntime")
MIN_COSINE = 0.99999  # per sample, between the backend's and eager's features (and logits)
MAX_RELATIVE_DIFFERENCE = 1e-4  # largest |difference| over the largest |eager value| of the same output
_FORMAT = "1"  # part of every export's and verdict's cache name: bump when the export or the check changes
_CHECK_SAMPLES = 16  # the first batch's samples compared with eager: enough to see a wrong graph, cheap in eager
_FALLBACK = {"onnxruntime": "channels-last", "channels-last": "eager"}


def check_name(backend: str) -> str:
    """``backend`` if it names one of :data:`BACKENDS`, else a one-line error."""
    if backend not in BACKENDS:
        raise FaceZooError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend


def choose(model: ModelAdapter, device: torch.device, requested: str = "auto", *, dense: bool = False,
           export_dir: str | Path | None = None) -> str:
    """The backend that will run ``model`` on ``device``: ``requested``, or its fallback when the model cannot use it
    (not exportable, not convolutional, or rejected by an earlier check recorded in ``export_dir``).

    Cheap (reads at most a few small verdict files): the feature cache key needs it before any extraction.
    """
    if model.runtime != "torch":  # its own runtime; the name it returns comes back here as ``requested``
        if requested not in (*BACKENDS, model.runtime):
            check_name(requested)
        return model.runtime
    check_name(requested)
    if device.type != "cpu":
        if requested not in ("auto", "eager"):
            raise FaceZooError(f"backend {requested!r} runs on the CPU; on {device} use auto or eager")
        return "eager"
    backend = "onnxruntime" if requested == "auto" else requested
    if dense and backend == "onnxruntime":  # the exported graph gives pooled features, not feature maps
        backend = "channels-last"
    why = None
    while backend != "eager":
        usable = model.export_example() is not None if backend == "onnxruntime" else model.supports_channels_last
        verdict = _read_verdict(export_dir, model, backend)
        if usable and (verdict is None or (verdict["ok"] and (requested != "auto" or verdict.get("faster", True)))):
            break
        why = why or (verdict["reason"] if usable else "the model does not support it")
        backend = _fallback(model, backend)
    if requested not in ("auto", backend):
        warnings.warn(f"{model.name}: backend {requested} not used ({why}); running {backend}", stacklevel=2)
    return backend


def _fallback(model: ModelAdapter, backend: str) -> str:
    """The next backend of the chain ``onnxruntime → channels-last → eager`` that ``model`` supports."""
    backend = _FALLBACK[backend]
    return "eager" if backend == "channels-last" and not model.supports_channels_last else backend


class Runner:
    """Runs one backend's forward pass: ``forward(batch)`` → ``{"features", "logits"?}`` as CPU or device tensors.

    ``checked`` is False until the backend's outputs have been compared with eager on real inputs; the engine then
    calls :meth:`check` on its first batch, which returns this runner or, if rejected (or, with ``auto``, slower
    than eager), the fallback's.
    """

    def __init__(self, model: ModelAdapter, device: torch.device, backend: str, export_dir: Path | None,
                 threads: int, auto: bool = False):
        self.model, self.device, self.backend = model, device, backend
        self.export_dir, self.threads, self.auto = export_dir, threads, auto
        self.channels_last = backend == "channels-last" or (device.type == "cuda" and model.supports_channels_last)
        verdict = _read_verdict(export_dir, model, backend)
        self.checked = backend in ("eager", model.runtime) or (verdict is not None and verdict["ok"])
        self._session: Any = None
        if backend == "onnxruntime" and model.runtime == "torch":  # an ONNX file's adapter runs its session itself
            model.to(device)
            self._session = _session(_export(model, export_dir), threads)
        else:
            model.to(device, channels_last=self.channels_last)

    def format(self, batch: Any) -> Any:
        """The batch on the runner's device, in its memory format."""
        return _to_device(batch, self.device, self.channels_last)

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        if self._session is None:
            return self.model.forward(batch)
        names = [o.name for o in self._session.get_outputs()]
        wanted = {i.name for i in self._session.get_inputs()}  # an input the outputs do not depend on is pruned
        feeds = {k: v.numpy() for k, v in _named_inputs(batch).items() if k in wanted}
        return {name: torch.from_numpy(value) for name, value in zip(names, self._session.run(names, feeds),
                                                                     strict=True)}

    def check(self, batch: Any) -> Runner:
        """Compare with eager fp32 on the first samples of ``batch`` (a collated CPU batch); record the verdict; on
        rejection warn once and return the fallback's runner (itself checked on the same batch); with ``auto``, a
        backend slower than eager on those samples hands over to its fallback without a warning."""
        sample = _head(batch, _CHECK_SAMPLES)
        reference_input = _to_device(sample, self.device, False)
        self.model.to(self.device, channels_last=False)
        try:
            reference = self.model.forward(reference_input)
            eager_seconds = _seconds(lambda: self.model.forward(reference_input))
        finally:
            self.model.to(self.device, channels_last=self.channels_last)
        try:
            mine = self.format(sample)
            verdict = compare(reference, self.forward(mine))
            seconds = _seconds(lambda: self.forward(mine))
            verdict.update(seconds={"eager": eager_seconds, self.backend: seconds}, faster=seconds < eager_seconds)
        except Exception as error:  # noqa: BLE001 - a graph that cannot run real inputs is rejected like a wrong one
            verdict = {"ok": False, "cosine": None, "max_relative_difference": None,
                       "reason": f"{type(error).__name__}: {first_line(error)[:200]}"}
        _write_verdict(self.export_dir, self.model, self.backend, verdict)
        self.checked = True
        if verdict["ok"] and (verdict["faster"] or not self.auto):
            return self
        fallback = self._reject(verdict["reason"]) if not verdict["ok"] else self._hand_over()
        return fallback if fallback.checked else fallback.check(batch)

    def _reject(self, reason: str) -> Runner:
        fallback = _fallback(self.model, self.backend)
        warnings.warn(f"{self.model.name}: backend {self.backend} rejected ({reason}); running {fallback}",
                      stacklevel=3)
        return self._hand_over()

    def _hand_over(self) -> Runner:
        self._session = None
        return Runner(self.model, self.device, _fallback(self.model, self.backend), self.export_dir, self.threads,
                      self.auto)


def runner(model: ModelAdapter, device: torch.device, backend: str, *, export_dir: str | Path | None = None,
           threads: int = 1, auto: bool = False) -> Runner:
    """A :class:`Runner` for ``backend`` (as returned by :func:`choose`; ``auto``: chosen for, not asked for, so kept
    only if faster than eager); a model that fails to export falls back to the next backend with one warning (the
    failure is recorded, so it is not tried again)."""
    export_dir = Path(export_dir).expanduser() if export_dir is not None else None
    try:
        return Runner(model, device, backend, export_dir, threads, auto)
    except _ExportError as error:
        verdict = {"ok": False, "reason": f"export failed: {error}"}
        _write_verdict(export_dir, model, backend, verdict)
        fallback = _fallback(model, backend)
        warnings.warn(f"{model.name}: backend {backend} rejected ({verdict['reason']}); running {fallback}",
                      stacklevel=2)
        return runner(model, device, fallback, export_dir=export_dir, threads=threads, auto=auto)


def compare(reference: Mapping[str, torch.Tensor], candidate: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The verdict on a backend's outputs against eager's: ``{"ok", "cosine", "max_relative_difference",
    "reason"}``, over every output eager gives (features, and logits when the model has them).

    ``cosine`` is the smallest per-sample cosine similarity, ``max_relative_difference`` the largest absolute
    difference over the largest absolute eager value of the same output (the features' scale).
    """
    worst_cos, worst_rel, reasons = 1.0, 0.0, []
    for name, ref in reference.items():
        if name not in candidate:
            return {"ok": False, "cosine": None, "max_relative_difference": None, "reason": f"no {name} output"}
        a = ref.detach().float().cpu().reshape(len(ref), -1).double()
        b = candidate[name].detach().float().cpu().reshape(len(ref), -1).double() if \
            candidate[name].numel() == ref.numel() else None
        if b is None:
            return {"ok": False, "cosine": None, "max_relative_difference": None,
                    "reason": f"{name} shape {tuple(candidate[name].shape)} != {tuple(ref.shape)}"}
        if not torch.isfinite(b).all():
            return {"ok": False, "cosine": None, "max_relative_difference": None, "reason": f"non-finite {name}"}
        norms = a.norm(dim=1) * b.norm(dim=1)
        both_zero = (a.norm(dim=1) == 0) & (b.norm(dim=1) == 0)
        cos = torch.where(both_zero, torch.ones_like(norms), (a * b).sum(1) / norms.clamp_min(1e-300))
        rel = float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))
        worst_cos, worst_rel = min(worst_cos, float(cos.min())), max(worst_rel, rel)
        if float(cos.min()) < MIN_COSINE:
            reasons.append(f"{name} cosine {float(cos.min()):.7f} < {MIN_COSINE}")
        if rel > MAX_RELATIVE_DIFFERENCE:
            reasons.append(f"{name} differ by {rel:.1e} of their scale > {MAX_RELATIVE_DIFFERENCE:.0e}")
    return {"ok": not reasons, "cosine": worst_cos, "max_relative_difference": worst_rel,
            "reason": "; ".join(reasons) or None}


def _seconds(forward: Callable[[], Any], repeat: int = 2) -> float:
    """The best of ``repeat`` timed calls (the caller has run ``forward`` once already: warm caches, built kernels)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        forward()
        best = min(best, time.perf_counter() - start)
    return best


# --- exports and verdicts on disk ------------------------------------------------------------------------------


class _ExportError(Exception):
    """The model cannot be exported to ONNX (the message says why)."""


def _versions() -> dict[str, str]:
    import onnxruntime

    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "format": _FORMAT}


def _identity(model: ModelAdapter) -> str:
    """What determines an export and its verdicts: weights, source and preprocessing (a text model's pooling is part
    of the graph), library versions."""
    text = json.dumps([model.source, model.digest, model.preprocessing, _versions()], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _verdict_path(export_dir: Path | None, model: ModelAdapter, backend: str) -> Path | None:
    return export_dir / f"{_identity(model)}.{backend}.json" if export_dir is not None else None


def _read_verdict(export_dir: str | Path | None, model: ModelAdapter, backend: str) -> dict[str, Any] | None:
    path = _verdict_path(Path(export_dir).expanduser() if export_dir is not None else None, model, backend)
    if path is None or not path.is_file():
        return None
    try:
        verdict = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # damaged: check again
    return verdict if isinstance(verdict, dict) and isinstance(verdict.get("ok"), bool) else None


def _write_verdict(export_dir: Path | None, model: ModelAdapter, backend: str, verdict: dict[str, Any]) -> None:
    path = _verdict_path(export_dir, model, backend)
    if path is not None:
        _atomic_write(path, json.dumps({**verdict, "model": model.source, "backend": backend, **_versions()},
                                       indent=1).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)  # concurrent writers of the same export write the same bytes: the last rename wins
    finally:
        tmp.unlink(missing_ok=True)


def _export(model: ModelAdapter, export_dir: Path | None) -> bytes | Path:
    """The model's ONNX graph: the cached file, else exported now (and cached when there is a folder)."""
    path = export_dir / f"{_identity(model)}.onnx" if export_dir is not None else None
    if path is not None and path.is_file():
        return path
    example = model.export_example()
    if example is None:
        raise _ExportError("the model gives no example batch to trace")
    names = list(_named_inputs(example))
    outputs = ["features", "logits"] if model.num_logits else ["features"]
    axes = {**{n: dict(model.export_axes) for n in names}, **{o: {0: model.export_axes[0]} for o in outputs}}
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes: not the user's
            # eval(): the exporter restores the wrapper's training flag afterwards, recursively into the adapter's model
            torch.onnx.export(_Exported(model, names, example, outputs).eval(), tuple(_named_inputs(example).values()),
                              buffer, dynamo=False, input_names=names, output_names=outputs, dynamic_axes=axes,
                              opset_version=17, do_constant_folding=True)
    except Exception as error:  # noqa: BLE001 - any exporter failure means: not exportable, for this reason
        raise _ExportError(f"{type(error).__name__}: {first_line(error)[:200]}") from None
    if path is None:
        return buffer.getvalue()
    _atomic_write(path, buffer.getvalue())
    return path


def _session(graph: bytes | Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the exported graphs' unused-initialiser warnings are noise
    # idle threads sleep instead of spinning: the DataLoader worker decoding the next batch needs those cycles
    # (+10 % images/s end to end on 2 cores, measured alternating)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(graph if isinstance(graph, bytes) else str(graph), options,
                                    providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - a damaged cache file or an unsupported operator: not usable
        raise _ExportError(f"ONNX Runtime cannot load the export: {first_line(error)[:200]}") from None


class _Exported(torch.nn.Module):
    """The adapter's own ``forward`` with positional tensor inputs and tuple outputs, as the exporter traces it."""

    def __init__(self, model: ModelAdapter, names: list[str], example: Any, outputs: list[str]):
        super().__init__()
        self.adapter, self.names, self.outputs = model, names, outputs
        self.mapping = isinstance(example, Mapping)
        self.net = getattr(model, "model", None)  # registered, so its weights become initialisers

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batch = dict(zip(self.names, tensors, strict=True)) if self.mapping else tensors[0]
        out = self.adapter.forward(batch)
        return tuple(out[o] for o in self.outputs)


def _named_inputs(batch: Any) -> dict[str, torch.Tensor]:
    """A collated batch as the exported graph's named inputs: a tensor is ``images``, a mapping keeps its keys."""
    if isinstance(batch, torch.Tensor):
        return {"images": batch.detach().cpu().contiguous()}
    if isinstance(batch, Mapping):
        return {k: v.detach().cpu() for k, v in batch.items()}
    raise FaceZooError(f"cannot feed a batch of type {type(batch).__name__} to an exported graph")


def _head(batch: Any, n: int) -> Any:
    """The first ``n`` samples of a collated batch (tensor, mapping of tensors, or list)."""
    if isinstance(batch, Mapping):
        return {k: v[:n] for k, v in batch.items()}
    return batch[:n]


def _to_device(batch: Any, device: torch.device, channels_last: bool) -> Any:
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        return batch.contiguous(memory_format=torch.channels_last) if channels_last and batch.ndim == 4 else batch
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device, False) for k, v in batch.items()}
    return batch  # e.g. a list of strings for models that tokenise themselves
