"""Ground truth for transferability scores: how well each model does once trained on the target task.

Protocols (each accuracy is stored with the protocol that produced it; correlations never mix protocols silently):

- ``full`` (the default): fine-tune the whole pre-trained network with a new linear head. The field's protocol
  (Kornblith et al., 2019; You et al., 2021; Shao et al., 2022): for each point of a learning-rate × weight-decay grid,
  train on 80 % of the training split and score the other 20 % (stratified); retrain on all of train with the best
  pair; score the test split. Images: SGD with Nesterov momentum 0.9 and a cosine schedule, random-translation
  augmentation. Text encoders: AdamW with linear warm-up (10 % of the steps) and linear decay, gradient norm clipped
  at 1, no weight decay on biases and norms.
- ``frozen_head``: the backbone stays frozen; a multinomial logistic-regression head is trained on its features of
  the training split (standardised on that split), its L2 strength chosen from ``C_GRID`` on the same 20 %
  validation split, then retrained on all of train and scored on the test split. The documented fallback for models
  that cannot be trained end to end (ONNX graphs ``onnx2torch`` cannot convert, static or quantised embeddings),
  and the cheap first look.
- ``auto``: ``full`` where the model is trainable (:meth:`ModelAdapter.trainable`), else ``frozen_head``; the
  protocol actually used is what is recorded.

:class:`Budget` holds what makes ``full`` feasible on a CPU and exact on a GPU: steps, batch size, input resolution
(images) or token length (text), the grid, and a stratified train subset. Runs are seeded; on a CPU re-running one
configuration reproduces its accuracy (the tests check it). Images train in channels-last memory where that is faster
(timed per model, resolution and batch size on a throwaway copy of the network: 1.3x for MobileNetV2 at 64 px on
the CPU, slower for EfficientNet-Lite's depthwise blocks), the same maths in another memory order. The metrics: accuracy and mean per-class accuracy
(balanced accuracy) on the test split.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler
from torch import nn

from facezoo.data.base import Dataset
from facezoo.errors import FaceZooError
from facezoo.models.base import ModelAdapter, NotTrainable
from facezoo.progress import task as track

__all__ = ["C_GRID", "GRIDS", "PROTOCOLS", "Budget", "FineTuneResult", "budget_key", "frozen_head", "full",
           "resolve_protocol"]

C_GRID = (0.01, 0.1, 1.0, 10.0)
PROTOCOLS = ("full", "frozen_head")
# The default grids of ``full`` per modality: the field's image grid (narrowed to three rates around the usual
# optimum of SGD fine-tuning at batch 32) and the usual AdamW rates of BERT-style encoders.
GRIDS = {
    "image": {"lr": (0.1, 0.01, 0.001), "weight_decay": (1e-4, 0.0)},
    "text": {"lr": (1e-4, 3e-5, 1e-5), "weight_decay": (0.01,)},
}


@dataclass
class FineTuneResult:
    """One model's ground truth: test ``accuracy``, ``mean_class_accuracy``, the ``protocol``, its ``budget``
    (the settings that define it), what was selected (``selected``, with the grid's validation scores) and ``curve``
    (the learning curve of the final run, or the validation score per grid point)."""

    accuracy: float
    mean_class_accuracy: float
    protocol: str
    budget: dict[str, Any]
    selected: dict[str, Any] = field(default_factory=dict)
    curve: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Budget:
    """What a ``full`` fine-tuning may spend (every field enters the cache key of its results).

    Attributes:
        steps: optimiser steps per run (each grid point and the final retraining).
        batch_size: samples per step.
        resolution: image side in pixels, at most the model's own (``None``: the model's own).
        max_length: text tokens, at most the model's own (``None``: the model's own).
        lr_grid, weight_decay_grid: the grid (``None``: :data:`GRIDS` of the modality).
        train_subset: at most this many training samples, stratified (``None``: all).
        validation_fraction: the held-out part of train used to choose the grid point.
        augment: images only: random translation by up to 1/8 of the side (``"crop"``), plus horizontal flips
            (``"crop+flip"``), or none.
        seed: seeds the split, the subset, the head's initialisation and the batch order.
    """

    steps: int = 500
    batch_size: int = 32
    resolution: int | None = None
    max_length: int | None = 128
    lr_grid: tuple[float, ...] | None = None
    weight_decay_grid: tuple[float, ...] | None = None
    train_subset: int | None = None
    validation_fraction: float = 0.2
    augment: str = "crop"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise FaceZooError(f"budget: steps and batch_size must be positive, got {self.steps}, {self.batch_size}")
        if self.augment not in ("none", "crop", "crop+flip"):
            raise FaceZooError(f"budget: augment must be 'none', 'crop' or 'crop+flip', got {self.augment!r}")
        if not 0 < self.validation_fraction < 1:
            raise FaceZooError(f"budget: validation_fraction must be in (0, 1), got {self.validation_fraction}")
        for name in ("lr_grid", "weight_decay_grid"):
            value = getattr(self, name)
            if value is not None:
                if not value or any(not math.isfinite(v) or v < 0 for v in value):
                    raise FaceZooError(f"budget: {name} must be non-empty and non-negative, got {value}")
                object.__setattr__(self, name, tuple(float(v) for v in value))

    def grid(self, modality: str) -> list[tuple[float, float]]:
        default = GRIDS[modality]
        return [(lr, wd) for lr in (self.lr_grid or default["lr"])
                for wd in (self.weight_decay_grid if self.weight_decay_grid is not None else default["weight_decay"])]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def budget_key(protocol: str, budget: dict[str, Any]) -> str:
    """A short stable key of a protocol and its budget: cached ground truth is reused only for the same settings."""
    return hashlib.sha256(json.dumps({"protocol": protocol, **budget}, sort_keys=True).encode()).hexdigest()[:16]


def resolve_protocol(model: ModelAdapter, protocol: str, dense: bool = False) -> tuple[str, str | None]:
    """``(protocol to run, why it differs from the request or None)``; ``auto`` falls back to ``frozen_head`` for
    models that are not trainable, an explicit ``full`` on such a model is an error. Segmentation (``dense``) has
    no fallback: mIoU needs a network that predicts every pixel."""
    if protocol not in (*PROTOCOLS, "auto"):
        raise FaceZooError(f"unknown protocol {protocol!r}; known: auto, {', '.join(PROTOCOLS)}")
    if protocol == "frozen_head":
        if dense:
            raise FaceZooError("frozen_head is a classification protocol; segmentation is validated with full")
        return protocol, None
    try:
        model.trainable(dense=dense)
    except NotTrainable as e:
        if protocol == "full" or dense:
            raise
        return "frozen_head", str(e)
    return "full", None


def _validation_split(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a stratified validation subset (at least one sample of every class with 2 or more)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        if len(idx) >= 2:
            mask[idx[: max(1, int(round(fraction * len(idx))))]] = True
    return mask


def _check_splits(train_labels: np.ndarray, test_labels: np.ndarray, protocol: str) -> None:
    if len(np.unique(train_labels)) < 2:
        raise FaceZooError(f"{protocol} needs at least 2 classes in the training split")
    if len(test_labels) == 0:
        raise FaceZooError(f"{protocol} needs a non-empty held-out (evaluation) split")


# ---------------------------------------------------------------------------------------------------- frozen_head

def _fit(x: np.ndarray, y: np.ndarray, c: float, max_iter: int) -> tuple[StandardScaler, LogisticRegression]:
    scaler = StandardScaler().fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is the budget
        head = LogisticRegression(C=c, max_iter=max_iter).fit(scaler.transform(x), y)
    return scaler, head


def frozen_head(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    c_grid: tuple[float, ...] = C_GRID,
    validation_fraction: float = 0.2,
    max_iter: int = 1000,
    seed: int = 0,
) -> FineTuneResult:
    """The ``frozen_head`` protocol on stored features (see the module docstring)."""
    _check_splits(train_labels, test_labels, "frozen_head")
    val = _validation_split(train_labels, validation_fraction, seed)
    curve = []
    for c in c_grid:
        scaler, head = _fit(train_features[~val], train_labels[~val], c, max_iter)
        curve.append({"C": c, "validation_accuracy": float(head.score(scaler.transform(train_features[val]),
                                                                       train_labels[val]))})
    best = max(curve, key=lambda point: (point["validation_accuracy"], -point["C"]))  # ties: stronger L2
    scaler, head = _fit(train_features, train_labels, best["C"], max_iter)
    predicted = head.predict(scaler.transform(test_features))
    budget = {"c_grid": list(c_grid), "validation_fraction": validation_fraction, "max_iter": max_iter, "seed": seed}
    return FineTuneResult(
        accuracy=float(np.mean(predicted == test_labels)),
        mean_class_accuracy=float(balanced_accuracy_score(test_labels, predicted)),
        protocol="frozen_head", budget=budget, selected={"C": best["C"]}, curve=curve,
    )


# ----------------------------------------------------------------------------------------------------------- full

_IGNORE = -100  # cross_entropy's ignore_index: the mask pixels a segmentation set marks as "ignore"


class _Inputs:
    """A split's samples as model inputs and targets.

    Images are preprocessed once (at the budget's resolution, float16 to halve the memory); segmentation images
    with ``preprocess_dense`` (the whole image, no crop) and their masks resized by nearest neighbour to the same
    side, ignored pixels set to ``-100``. Texts stay strings, tokenised per batch.
    """

    def __init__(self, model: ModelAdapter, data: Dataset, budget: Budget, dense: bool = False):
        self.model, self.modality, self.budget, self.dense = model, model.modality, budget, dense
        self.memory_format = torch.contiguous_format  # full() may switch images to channels-last (_memory_format)
        if self.modality == "image":
            prepare = model.preprocess_dense if dense else model.preprocess
            first = data.load(0)
            x0 = prepare(first[0] if dense else first)
            side = min(budget.resolution or x0.shape[-1], x0.shape[-1])
            self.resolution = side
            self.samples = torch.empty((len(data), *x0.shape[:-2], side, side), dtype=torch.float16)
            masks = torch.empty((len(data), side, side), dtype=torch.long) if dense else None
            for i in range(len(data)):
                sample = first if i == 0 else data.load(i)
                x = x0 if i == 0 else prepare(sample[0] if dense else sample)
                if x.shape[-1] != side or x.shape[-2] != side:
                    x = F.interpolate(x[None], size=(side, side), mode="bilinear", antialias=True)[0]
                self.samples[i] = x
                if dense:
                    masks[i] = _resize_mask(np.asarray(sample[1]), side, data.ignore_index)
            self.targets = masks if dense else torch.as_tensor(np.asarray(data.labels), dtype=torch.long)
        else:
            self.samples = [data.load(i) for i in range(len(data))]
            self.targets = torch.as_tensor(np.asarray(data.labels), dtype=torch.long)
            self.tokeniser, limit = model, getattr(model, "max_length", None)
            if limit and budget.max_length and budget.max_length < limit:
                # the adapter tokenises in collate; a shallow copy of it carries the budget's token limit
                self.tokeniser = copy.copy(model)
                self.tokeniser.max_length = budget.max_length

    def batch(self, index: np.ndarray, device: torch.device,
              generator: torch.Generator | None = None) -> tuple[Any, torch.Tensor]:
        """``(inputs, targets)`` at ``index`` on ``device``; augmented when a ``generator`` is given (training)."""
        y = self.targets[torch.as_tensor(index)]
        if self.modality == "image":
            x = self.samples[torch.as_tensor(index)].float()
            if generator is not None and self.budget.augment != "none":
                x, masks = _translate(x, generator, self.budget.augment == "crop+flip", y if self.dense else None)
                y = masks if self.dense else y
            return x.to(device, memory_format=self.memory_format), y.to(device)
        batch = self.tokeniser.collate([self.samples[i] for i in index])
        return ({k: v.to(device) for k, v in batch.items()} if hasattr(batch, "items") else batch), y.to(device)


def _resize_mask(mask: np.ndarray, side: int, ignore_index: int | None) -> torch.Tensor:
    """``(H, W)`` class indices → ``(side, side)`` by nearest neighbour, the ignore value as ``-100``."""
    m = torch.as_tensor(mask.astype(np.int64))
    if ignore_index is not None:
        m = torch.where(m == ignore_index, torch.full_like(m, _IGNORE), m)
    return F.interpolate(m[None, None].float(), size=(side, side), mode="nearest")[0, 0].long()


def _translate(x: torch.Tensor, generator: torch.Generator, flip: bool,
               masks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random translation by up to 1/8 of the side (reflection-padded crop; masks padded with "ignore"), and random
    horizontal flips; masks move with their images."""
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy, dx = (torch.randint(0, 2 * pad + 1, (2, n), generator=generator)).tolist()
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if masks is not None:
        padded_masks = F.pad(masks, (pad, pad, pad, pad), value=_IGNORE)
        masks = torch.stack([padded_masks[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if flip:
        mirror = torch.rand(n, generator=generator) < 0.5
        out[mirror] = out[mirror].flip(-1)
        if masks is not None:
            masks[mirror] = masks[mirror].flip(-1)
    return out, masks


def _autocast(device: torch.device) -> torch.autocast:
    """bf16 mixed precision on CUDA (the field's default for fine-tuning on a GPU); exact float32 on a CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


class _Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, dim: int, classes: int):
        super().__init__()
        self.backbone, self.head = backbone, nn.Linear(dim, classes)

    def forward(self, batch: Any) -> torch.Tensor:
        return self.head(self.backbone(batch))


class _Segmenter(nn.Module):
    """Backbone feature maps → an FCN head (3×3 conv to C/4 channels, BN, ReLU, dropout, 1×1 conv to K classes;
    torchvision's ``FCNHead``) → bilinear upsampling to the input's size (FCN-32s, Long et al. 2015)."""

    def __init__(self, backbone: nn.Module, channels: int, classes: int):
        from torchvision.models.segmentation.fcn import FCNHead

        super().__init__()
        self.backbone, self.head = backbone, FCNHead(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.head(self.backbone(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)


def _optimiser(net: nn.Module, modality: str, lr: float, weight_decay: float, steps: int):
    """SGD + Nesterov + cosine for images; AdamW + linear warm-up and decay (no decay on biases, norms) for text."""
    if modality == "image":
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    decay = [p for p in net.parameters() if p.ndim >= 2]
    rest = [p for p in net.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=lr)
    warmup = max(1, steps // 10)
    return opt, torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup)))


_MEMORY_FORMATS: dict[tuple[Any, ...], torch.memory_format] = {}  # per process: timed once per model and shape


def _memory_format(model: ModelAdapter, build: Callable[[], nn.Module], inputs: _Inputs, budget: Budget,
                   device: torch.device) -> torch.memory_format:
    """Channels-last if a training step runs faster in it, for image networks: timed on a throwaway copy of the
    network and one batch of training samples, three steps in each format, alternating (the best of the last two),
    before any seeded run starts (the runs' own random streams are untouched). Decided once per process for a model, its
    input shape and device; texts stay as they are."""
    if model.modality != "image" or not isinstance(inputs.samples, torch.Tensor):
        return torch.contiguous_format
    key = (model.source, model.digest, tuple(inputs.samples.shape[1:]), budget.batch_size, str(device))
    if key not in _MEMORY_FORMATS:
        net = build().to(device).train()
        x, y = inputs.batch(np.arange(min(len(inputs.targets), budget.batch_size)), device)
        opt = torch.optim.SGD(net.parameters(), lr=0.0)
        seconds: dict[torch.memory_format, list[float]] = {torch.contiguous_format: [], torch.channels_last: []}
        for memory_format in (torch.contiguous_format, torch.channels_last) * 3:
            net, x = net.to(memory_format=memory_format), x.contiguous(memory_format=memory_format)
            seconds[memory_format].append(_step_seconds(net, opt, x, y, device))
        faster = min(seconds[torch.channels_last][1:]) < min(seconds[torch.contiguous_format][1:])  # [0]: warm-up
        _MEMORY_FORMATS[key] = torch.channels_last if faster else torch.contiguous_format
    return _MEMORY_FORMATS[key]


def _step_seconds(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                  device: torch.device) -> float:
    """Seconds of one training step (forward, loss, backward, optimiser)."""
    start = time.perf_counter()
    with _autocast(device):
        loss = F.cross_entropy(net(x).float(), y, ignore_index=_IGNORE)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _train(
    build: Callable[[], nn.Module], modality: str, inputs: _Inputs, index: np.ndarray, lr: float,
    weight_decay: float, budget: Budget, device: torch.device, seed: int, description: str = "fine-tuning",
    progress: bool = False,
) -> tuple[nn.Module | None, list[dict[str, float]]]:
    """One fine-tuning run on the samples at ``index``; ``(network, curve)``, network ``None`` when it diverged.
    With ``progress``, says ``description: step s/S (loss ...)`` as it runs (:mod:`facezoo.progress`)."""
    torch.manual_seed(seed)
    net = build().to(device, memory_format=inputs.memory_format).train()
    opt, schedule = _optimiser(net, modality, lr, weight_decay, budget.steps)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    order, position, curve, window = rng.permutation(index), 0, [], []
    every = max(1, budget.steps // 25)
    with track(budget.steps, description, unit="step", enabled=progress) as meter:
        for step in range(budget.steps):
            if position + budget.batch_size > len(order):  # a new epoch: reshuffle, drop the ragged rest
                order, position = rng.permutation(index), 0
            x, y = inputs.batch(order[position:position + budget.batch_size], device, generator)
            position += budget.batch_size
            with _autocast(device):
                logits = net(x)
            loss = F.cross_entropy(logits.float(), y, ignore_index=_IGNORE)
            if not torch.isfinite(loss):
                meter.close(note=f"diverged at step {step + 1}")
                return None, curve
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if modality == "text":
                nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            schedule.step()
            window.append(loss.item())
            meter.update(1, note=f"loss {np.mean(window):.3f}")
            if (step + 1) % every == 0 or step + 1 == budget.steps:
                curve.append({"step": step + 1, "loss": float(np.mean(window)), "lr": opt.param_groups[0]["lr"]})
                window = []
        meter.close(note=f"loss {curve[-1]['loss']:.3f}")
    _recalibrate_batch_norm(net, inputs, index, budget.batch_size, device)
    return net, curve


@torch.no_grad()
def _recalibrate_batch_norm(net: nn.Module, inputs: _Inputs, index: np.ndarray, batch_size: int,
                            device: torch.device, max_samples: int = 2048) -> None:
    """Re-estimate BatchNorm's running statistics on the training samples ("precise BN", Wu & Johnson 2021).

    A short fine-tuning at a new resolution leaves them stale: EfficientNets' TF-style momentum of 0.01 keeps ~2/3 of
    the ImageNet statistics after 40 steps, and the network then scores near chance in eval mode although its
    training loss fell. A cumulative average over up to ``max_samples`` un-augmented training samples fixes that.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    net.train()
    chosen = np.random.default_rng(0).permutation(index)[:max_samples]
    for i in range(0, len(chosen), batch_size):
        net(inputs.batch(chosen[i:i + batch_size], device)[0])
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


@torch.inference_mode()
def _predict(net: nn.Module, inputs: _Inputs, index: np.ndarray, batch_size: int,
             device: torch.device, features: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(predicted, target)`` class indices (per sample, or per pixel for segmentation). A classifier's backbone
    features are appended to ``features`` when given (the same pass)."""
    net.eval()
    predicted, targets = [], []
    with _autocast(device):
        for i in range(0, len(index), batch_size):
            x, y = inputs.batch(index[i:i + batch_size], device)
            if features is not None and isinstance(net, _Classifier):
                h = net.backbone(x)
                features.append(h.float().cpu().numpy())
                predicted.append(net.head(h).argmax(1).cpu())
            else:
                predicted.append(net(x).argmax(1).cpu())
            targets.append(y.cpu())
    if not predicted:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return torch.cat(predicted).numpy(), torch.cat(targets).numpy()


def _collapse(features: list[np.ndarray], labels: np.ndarray) -> dict[str, float] | None:
    """FaCe's terms (NC1, C, F at the metric's defaults) of the fine-tuned network's test features: the paper's
    premise is that the pre-trained features' collapse predicts this one, over the classes with 2+ test samples. None
    without two such classes to compare."""
    from facezoo.metrics.face import face_terms
    from facezoo.metrics.stats import FeatureStats, single_sample_classes

    keep = ~np.isin(labels, single_sample_classes(labels))  # a class with one test sample has no spread to measure
    if not features or len(np.unique(labels[keep])) < 2:
        return None
    terms = face_terms(FeatureStats(np.concatenate(features)[keep], labels[keep]))
    return {k: float(terms[k]) for k in ("nc1", "variance_collapse", "class_fairness")}


def _scores(predicted: np.ndarray, target: np.ndarray, classes: int, dense: bool) -> dict[str, float]:
    """Classification: accuracy and mean per-class accuracy. Segmentation (pixels, ignored ones left out): mIoU
    (IoU = TP / (TP + FP + FN) averaged over the classes present in the target or the prediction), pixel accuracy
    and mean per-class pixel accuracy (over the classes present in the target)."""
    if not dense:
        return {"accuracy": float(np.mean(predicted == target)),
                "mean_class_accuracy": float(balanced_accuracy_score(target, predicted))}
    keep = target.reshape(-1) != _IGNORE
    p, t = predicted.reshape(-1)[keep], target.reshape(-1)[keep]
    confusion = np.bincount(t * classes + p, minlength=classes * classes).reshape(classes, classes)
    tp = np.diag(confusion).astype(float)
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = confusion.sum(1) > 0
    return {"miou": float(np.mean(tp[union > 0] / union[union > 0])),
            "pixel_accuracy": float(tp.sum() / max(1, confusion.sum())),
            "mean_class_accuracy": float(np.mean(tp[present] / confusion.sum(1)[present]))}


def _stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of at most ``size`` samples, classes in proportion (at least 2 per class that has them)."""
    if size >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        quota = max(min(2, len(idx)), int(round(size * len(idx) / len(labels))))
        chosen.append(rng.choice(idx, size=min(quota, len(idx)), replace=False))
    return np.sort(np.concatenate(chosen))


def full(
    model: ModelAdapter,
    train: Dataset,
    test: Dataset,
    budget: Budget | None = None,
    *,
    device: str | torch.device = "auto",
    log: Callable[[str], None] | None = None,
    progress: bool = True,
) -> FineTuneResult:
    """The ``full`` protocol (see the module docstring): grid search on a validation split of ``train``, retraining on
    all of ``train`` with the best point, accuracy on ``test``. Raises :class:`NotTrainable` for models without a
    differentiable form.

    For a segmentation dataset (``train.task == "segmentation"``) the network is the backbone's feature maps and an
    FCN head, trained per pixel; the grid is chosen by validation mIoU, and ``accuracy`` is the test **mIoU**
    (``selected`` also holds the pixel accuracy), ``mean_class_accuracy`` the mean per-class pixel accuracy.

    ``selected["fine_tuned_collapse"]`` holds FaCe's terms (``nc1``, ``variance_collapse``, ``class_fairness``) of the
    fine-tuned backbone's test features, from the same pass that scores the test split (classification only): what
    the paper's premise, that pre-trained collapse predicts fine-tuned collapse, is checked against.

    ``log`` receives one line per grid point (its validation score); ``progress`` reports every run's steps and
    loss (a bar on a terminal, timed lines elsewhere: :mod:`facezoo.progress`).
    """
    from facezoo.extract import pick_device

    budget = budget or Budget()
    device = pick_device(device) if isinstance(device, str) else device
    say = log or (lambda _message: None)
    dense = train.task == "segmentation"
    probe = model.trainable(dense=dense)  # fails fast (NotTrainable) before preprocessing anything
    classes = len(train.class_names)
    if dense:
        if len(train) < 2 or len(test) == 0:
            raise FaceZooError(f"full fine-tuning for segmentation needs 2+ training images and a test split, got "
                               f"{len(train)} and {len(test)}")
        keep = np.arange(min(len(train), budget.train_subset or len(train)))
        strata = np.zeros(len(keep), dtype=np.int64)  # images have no single class: a plain random split
    else:
        train_labels = np.asarray(train.labels)
        _check_splits(train_labels, np.asarray(test.labels), "full")
        keep = (_stratified_subset(train_labels, budget.train_subset, budget.seed) if budget.train_subset
                else np.arange(len(train_labels)))
        strata = train_labels[keep]
    train = train.take(keep)
    started = time.perf_counter()
    inputs, test_inputs = _Inputs(model, train, budget, dense), _Inputs(model, test, budget, dense)
    if dense:
        with torch.no_grad():
            channels = probe.eval()(inputs.batch(np.arange(1), torch.device("cpu"))[0]).shape[1]
        build = lambda: _Segmenter(model.trainable(dense=True), channels, classes)  # noqa: E731
    else:
        build = lambda: _Classifier(model.trainable(), model.dim, classes)  # noqa: E731
    del probe  # a whole copy of the network: not held through training
    inputs.memory_format = test_inputs.memory_format = _memory_format(model, build, inputs, budget, device)
    figure = "miou" if dense else "accuracy"
    val = _validation_split(strata, budget.validation_fraction, budget.seed)
    fit_index, val_index = np.flatnonzero(~val), np.flatnonzero(val)
    grid, points = [], budget.grid(model.modality)
    if len(points) == 1:  # nothing to choose: no search runs, the budget goes to the one that counts
        grid.append({"lr": points[0][0], "weight_decay": points[0][1], f"validation_{figure}": float("nan"),
                     "diverged": False})
        points = []
    for point, (lr, wd) in enumerate(points):
        net, _ = _train(build, model.modality, inputs, fit_index, lr, wd, budget, device, budget.seed + point,
                        f"fine-tuning {model.name} (lr {lr:g}, wd {wd:g}; grid point {point + 1}/{len(points)})",
                        progress)
        score = (_scores(*_predict(net, inputs, val_index, 2 * budget.batch_size, device), classes, dense)[figure]
                 if net is not None else float("nan"))
        grid.append({"lr": lr, "weight_decay": wd, f"validation_{figure}": score, "diverged": net is None})
        say(f"{model.name}: lr={lr:g} wd={wd:g} validation {figure} {score:.4f}")
    usable = [g for g in grid if not g["diverged"]]
    if not usable:
        raise FaceZooError(f"{model.name}: fine-tuning diverged at every grid point {budget.grid(model.modality)}")
    # Best validation first (ties: the gentler rate). A point that diverges when retrained on all of train is not
    # usable either: the next best is, so one unlucky retraining does not drop the model from the ground truth.
    for best in sorted(usable, key=lambda g: (-g[f"validation_{figure}"], g["lr"])):
        net, curve = _train(build, model.modality, inputs, np.arange(len(train)), best["lr"], best["weight_decay"],
                            budget, device, budget.seed,
                            f"fine-tuning {model.name} (lr {best['lr']:g}, wd {best['weight_decay']:g}; all of train)",
                            progress)
        if net is not None:
            break
        best["final_diverged"] = True
        say(f"{model.name}: the final run at lr={best['lr']:g} wd={best['weight_decay']:g} diverged")
    else:
        raise FaceZooError(f"{model.name}: the final fine-tuning run diverged at every usable grid point "
                           f"{[(g['lr'], g['weight_decay']) for g in usable]}")
    test_features: list[np.ndarray] = []
    predicted, target = _predict(net, test_inputs, np.arange(len(test)), 2 * budget.batch_size, device, test_features)
    scores = _scores(predicted, target, classes, dense)
    return FineTuneResult(
        accuracy=scores[figure],
        mean_class_accuracy=scores["mean_class_accuracy"],
        protocol="full",
        budget={**budget.to_dict(), "effective_resolution": getattr(inputs, "resolution", None),
                "n_train": int(len(train)), "task": train.task},
        selected={"lr": best["lr"], "weight_decay": best["weight_decay"], "grid": grid, **scores,
                  "seconds": time.perf_counter() - started,
                  "memory_format": "channels_last" if inputs.memory_format == torch.channels_last else "contiguous",
                  "fine_tuned_collapse": None if dense else _collapse(test_features, target)},
        curve=curve,
    )
