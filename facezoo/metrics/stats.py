"""Sufficient statistics of (features, labels), shared by every metric.

Nearly every transferability metric is a function of the class counts ``n_k``, the class sums ``S_k`` and the Gram
``Σ_i x_i x_iᵀ``, plus at most one extra pass over the features that projects them onto a few directions. This
module computes those once, in one chunked pass:

- rows are visited in class order (one ``argsort`` of the labels), so every per-class reduction is a contiguous
  segment sum and per-class blocks are slices;
- each chunk is shifted by a rough mean (the mean of a strided sample of rows, rounded to the compute dtype so the
  float64 bookkeeping adds back exactly what was subtracted) before any product, projections included, so a large
  common offset does not cancel digits away;
- products run in float32 for float32 (or lower) input and in float64 for float64 input; sums accumulate in
  float64;
- the input is never copied whole nor modified; a ``torch.Tensor`` is processed on its own device (GPU included) and
  only the small results come back to the CPU as float64 NumPy arrays.

Cost: O(N·D) for counts and sums, + O(N·D²) for the Gram when asked for (``gram=True`` or first use), + O(N·D·r)
per projection onto r directions. Memory: O(chunk·D + D²), never O(N·D).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Callable, Iterator

import numpy as np

from facezoo.errors import FaceZooError
from facezoo.metrics._eigen import top_eigh

__all__ = ["FeatureStats", "check_labels", "single_sample_classes"]

_CHUNK_ELEMENTS = 1 << 25  # 32 M values per chunk (128 MB in float32): few, large Gram updates run near BLAS speed
_BLOCK_ELEMENTS = 1 << 20  # 1 M values: the O(N·D) statistics run on blocks that stay in cache
_SHIFT_SAMPLE = 1024


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def check_labels(labels: Any, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels and relabel them ``0..K-1`` in sorted order of their values.

    Returns:
        ``(classes, codes)``: the distinct label values ``(K,)`` and the code of every sample ``(N,)`` (int64).
    """
    if _is_torch(labels):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise FaceZooError(f"labels must be 1-D (N,), got shape {labels.shape}")
    if n is not None and labels.shape[0] != n:
        raise FaceZooError(f"labels has {labels.shape[0]} rows, features has {n}")
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise FaceZooError(f"labels contain NaN or inf (first at row {int(np.flatnonzero(~np.isfinite(labels))[0])})")
    if labels.dtype.kind == "O":
        if any(v is None for v in labels):
            raise FaceZooError(f"labels contain None (first at row {[v is None for v in labels].index(True)})")
        labels = labels.astype(str)
    classes, codes = np.unique(labels, return_inverse=True)
    return classes, codes.astype(np.int64).reshape(-1)


def single_sample_classes(labels: np.ndarray) -> np.ndarray:
    """The label values held by a single sample: :class:`FeatureStats` refuses them (no within-class spread), so a
    caller that must score a long tail leaves them out first."""
    present, counts = np.unique(labels, return_counts=True)
    return present[counts < 2]


class _NumpyOps:
    """Array operations on NumPy input (float64 results)."""

    def __init__(self, features: np.ndarray):
        self.double = features.dtype == np.float64
        self.compute_dtype = np.float64 if self.double else np.float32

    def rows(self, features, index: np.ndarray):
        return np.asarray(features[index], dtype=self.compute_dtype)

    def view(self, features, a: int, b: int):
        return np.asarray(features[a:b], dtype=self.compute_dtype)

    def empty(self, rows: int, cols: int):
        return np.empty((rows, cols), dtype=self.compute_dtype)

    def const(self, a: np.ndarray):
        return np.asarray(a, dtype=self.compute_dtype)

    def all_finite(self, x) -> bool:
        return bool(np.isfinite(x).all())

    def first_nonfinite(self, x) -> tuple[int, int]:
        r, c = np.argwhere(~np.isfinite(x))[0]
        return int(r), int(c)

    def gram(self, x) -> np.ndarray:
        return np.asarray(x.T @ x, dtype=np.float64)

    def matmul(self, x, w) -> np.ndarray:
        return np.asarray(x @ w, dtype=np.float64)

    def row_sq_norms(self, x) -> np.ndarray:
        return np.einsum("ij,ij->i", x, x).astype(np.float64)

    def row_logsumexp(self, x) -> np.ndarray:
        m = x.max(1, keepdims=True)
        e = np.subtract(x, m)
        np.exp(e, out=e)
        return np.log(e.sum(1)).astype(np.float64) + m[:, 0]  # terms in (0, 1]: a float32 sum is accurate

    def column_sums(self, x) -> np.ndarray:
        return x.sum(0, dtype=np.float64)

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)


class _TorchOps:
    """The same operations on a ``torch.Tensor``, run on its device; results come back as float64 NumPy."""

    def __init__(self, features):
        import torch

        self.torch = torch
        self.device = features.device
        self.double = features.dtype == torch.float64
        self.compute_dtype = torch.float64 if self.double else torch.float32

    def rows(self, features, index: np.ndarray):
        idx = self.torch.as_tensor(index, device=self.device)
        return features.index_select(0, idx).to(self.compute_dtype)

    def view(self, features, a: int, b: int):
        return features[a:b].to(self.compute_dtype)

    def empty(self, rows: int, cols: int):
        return self.torch.empty((rows, cols), dtype=self.compute_dtype, device=self.device)

    def const(self, a: np.ndarray):
        # contiguous: torch refuses NumPy's negative strides (eigenvectors in descending order are a reversed view)
        return self.torch.as_tensor(np.ascontiguousarray(a), device=self.device, dtype=self.compute_dtype)

    def all_finite(self, x) -> bool:
        return bool(self.torch.isfinite(x).all())

    def first_nonfinite(self, x) -> tuple[int, int]:
        r, c = self.torch.nonzero(~self.torch.isfinite(x))[0].tolist()
        return int(r), int(c)

    def gram(self, x) -> np.ndarray:
        return self.to_numpy(x.T @ x)

    def matmul(self, x, w) -> np.ndarray:
        return self.to_numpy(x @ w)

    def row_sq_norms(self, x) -> np.ndarray:
        return self.to_numpy((x * x).sum(1))

    def row_logsumexp(self, x) -> np.ndarray:
        return self.to_numpy(self.torch.logsumexp(x, 1))

    def column_sums(self, x) -> np.ndarray:
        return self.to_numpy(x.sum(0, dtype=self.torch.float64))

    def to_numpy(self, x) -> np.ndarray:
        return x.detach().to(self.torch.float64).cpu().numpy()


class FeatureStats:
    """Class counts, class sums, Gram and derived quantities of ``features`` grouped by ``labels``.

    Args:
        features: ``(N, D)`` array of a real dtype, NumPy (memory-mapped included) or ``torch.Tensor`` (any
            device). Never modified, never copied whole.
        labels: ``(N,)`` class labels of any hashable, sortable type; relabelled ``0..K-1`` in sorted order.
        gram: compute the Gram in the first pass (otherwise on first use).
        chunk_rows: rows per chunk (default: 32 M values per chunk, 128 MB in float32).

    Raises:
        FaceZooError: features not 2-D, empty, NaN/inf (with the first row and column), length mismatch, fewer
            than 2 classes, or a class with a single sample.

    Every ``(N, ·)`` result of this object (``project``, ``sorted_codes``) is in *class order*: the rows of class 0,
    then class 1, ...; each class's rows in their original order. ``order`` maps it back to the input rows.
    """

    def __init__(
        self,
        features: Any,
        labels: Any,
        *,
        gram: bool = False,
        chunk_rows: int | None = None,
        state: dict[str, np.ndarray] | None = None,
    ):
        if not _is_torch(features) and not isinstance(features, np.ndarray):
            features = np.asarray(features)
        if features.ndim != 2:
            raise FaceZooError(f"features must be 2-D (N, D), got shape {tuple(features.shape)}")
        self.n, self.dim = (int(s) for s in features.shape)
        if self.n == 0 or self.dim == 0:
            raise FaceZooError(f"features are empty, shape {tuple(features.shape)}")
        self.features = features
        if _is_torch(features):
            if features.is_complex():
                raise FaceZooError(f"features must be real numbers, got {features.dtype}")
            self._ops: _NumpyOps | _TorchOps = _TorchOps(features)
        else:
            if features.dtype.kind not in "fiub":
                raise FaceZooError(f"features must be real numbers, got dtype {features.dtype}")
            self._ops = _NumpyOps(features)

        self.double = self._ops.double  # float64 input: float64 arithmetic throughout (else float32 products)
        # relative precision of the Gram's entries: spectra below eps·D of their largest value are rounding noise
        self.eps = float(np.finfo(np.float64 if self.double else np.float32).eps)
        self.classes, self.codes = check_labels(labels, self.n)
        self.n_classes = len(self.classes)
        if self.n_classes < 2:
            raise FaceZooError(f"need at least 2 classes, got {self.n_classes} ({self.classes.tolist()!r})")
        self.counts = np.bincount(self.codes, minlength=self.n_classes).astype(np.int64)
        if (self.counts < 2).any():
            k = int(np.argmin(self.counts))
            raise FaceZooError(
                f"class {self.classes[k].item()!r} has a single sample; every class needs at least 2 "
                "(drop the class or add samples)"
            )
        self.order = np.argsort(self.codes, kind="stable")
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])
        self.chunk_rows = max(1, chunk_rows or _CHUNK_ELEMENTS // self.dim)

        self._gram: np.ndarray | None = None
        self._memo: dict[Any, Any] = {}
        if state is not None:
            self._restore(state)
            return
        sample = np.sort(self.order[:: max(1, self.n // _SHIFT_SAMPLE)])
        sample = self._ops.to_numpy(self._ops.rows(self.features, sample))
        self.shift = self._representable(np.where(np.isfinite(sample), sample, 0.0).mean(0))  # NaN/inf: the pass
        self._first_pass(gram)

    def _representable(self, shift: np.ndarray) -> np.ndarray:
        """``shift`` rounded to the compute dtype, as float64: the passes subtract it in that dtype, so the float64
        bookkeeping (``mean = shift + shifted mean``, LogME's raw Gram) must add back exactly what was subtracted;
        float32 rounding of a 1e4 offset is ~5e-4, as large as a small feature's spread."""
        return np.asarray(shift, dtype=np.float64 if self.double else np.float32).astype(np.float64)

    # ------------------------------------------------------------------ persistence
    _STATE_ARRAYS = ("shift", "class_sums", "_sq_norm_weighted_sum")
    _STATE_SCALARS = ("sq_norm_sum", "_sq_norm_sq_sum")

    def state(self) -> dict[str, np.ndarray]:
        """The first pass's results as plain arrays (``np.savez`` stores them without pickle), to keep beside the
        features: ``FeatureStats(features, labels, state=...)`` then skips the pass, and the Gram."""
        out = {name: np.asarray(getattr(self, name)) for name in self._STATE_ARRAYS + self._STATE_SCALARS}
        out.update(classes=np.asarray(self.classes), counts=self.counts, shape=np.array([self.n, self.dim]))
        if self._gram is not None:
            out["gram"] = self._gram
        return out

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        shape = tuple(int(v) for v in state["shape"])
        same = (
            shape == (self.n, self.dim)
            and np.array_equal(np.asarray(state["classes"]).astype(str), self.classes.astype(str))
            and np.array_equal(state["counts"], self.counts)
        )
        if not same:
            raise FaceZooError("stored statistics do not belong to these features (shape, classes or counts differ)")
        for name in self._STATE_ARRAYS:
            setattr(self, name, np.array(state[name], dtype=np.float64))
        self.shift = self._representable(self.shift)  # states stored before the rounding: what their pass subtracted
        for name in self._STATE_SCALARS:
            setattr(self, name, float(state[name]))
        self._gram = np.array(state["gram"], dtype=np.float64) if "gram" in state else None

    # ------------------------------------------------------------------ passes over the features
    def _class_chunks(
        self, center: str = "shift", per_block: Callable[[int, int, Any], None] | None = None
    ) -> Iterator[tuple[int, int, Any]]:
        """Yield ``(a, b, x)``: a copy of rows ``order[a:b]`` (class order) in the compute dtype, minus ``shift``
        (``center="shift"``) or minus their class mean (``"class"``).

        The chunk is filled block by block (a few MB each); ``per_block(lo, hi, block)`` runs on each block while
        it is still in cache, so O(N·D) statistics cost little beyond the copy; the chunk then goes to BLAS whole.
        """
        ops = self._ops
        shift = ops.const(self.shift)
        class_means = ops.const(self._class_means_shifted) if center == "class" else None
        block = max(1, min(self.chunk_rows, _BLOCK_ELEMENTS // self.dim))
        buffer = ops.empty(min(self.chunk_rows, self.n), self.dim)  # one allocation per pass: no page faults
        for a in range(0, self.n, self.chunk_rows):
            b = min(a + self.chunk_rows, self.n)
            x = buffer[: b - a]
            for lo in range(a, b, block):
                hi = min(lo + block, b)
                xb = x[lo - a : hi - a]
                xb[...] = ops.rows(self.features, self.order[lo:hi])
                xb -= shift
                if class_means is not None:
                    for k, s, e in self._segments(lo, hi):
                        xb[s:e] -= class_means[k]
                if per_block is not None:
                    per_block(lo, hi, xb)
            yield a, b, x

    def _input_chunks(self) -> Iterator[tuple[int, int, Any]]:
        """Yield ``(a, b, x)``: rows ``a:b`` in input order, raw, in the compute dtype (a view when it already is)."""
        for a in range(0, self.n, self.chunk_rows):
            b = min(a + self.chunk_rows, self.n)
            yield a, b, self._ops.view(self.features, a, b)

    def _shifted_input_blocks(self) -> Iterator[tuple[int, int, Any]]:
        """Yield ``(a, b, x)``: rows ``a:b`` in input order minus ``shift``, in the compute dtype, in cache-sized
        blocks of one reused buffer (contiguous reads: cheaper than the class-ordered gather of a chunk)."""
        ops = self._ops
        shift = ops.const(self.shift)
        rows = max(1, min(self.chunk_rows, _BLOCK_ELEMENTS // self.dim))
        buffer = ops.empty(min(rows, self.n), self.dim)
        for a in range(0, self.n, rows):
            b = min(a + rows, self.n)
            x = buffer[: b - a]
            x[...] = ops.view(self.features, a, b)
            x -= shift
            yield a, b, x

    def _segments(self, a: int, b: int) -> Iterator[tuple[int, int, int]]:
        """``(k, lo, hi)``: class k occupies rows ``lo:hi`` of the class-ordered chunk ``[a, b)``."""
        k0 = int(np.searchsorted(self.starts, a, side="right")) - 1
        for k in range(k0, self.n_classes):
            if self.starts[k] >= b:
                break
            yield k, max(int(self.starts[k]), a) - a, min(int(self.starts[k + 1]), b) - a

    def _first_pass(self, gram: bool) -> None:
        ops = self._ops
        self.class_sums = np.zeros((self.n_classes, self.dim))
        self.sq_norm_sum = 0.0  # Σ a_i with a_i = ‖x_i − shift‖²
        self._sq_norm_sq_sum = 0.0  # Σ a_i²                 } for the fourth moment (Ledoit–Wolf shrinkage), in
        self._sq_norm_weighted_sum = np.zeros(self.dim)  # Σ a_i (x_i − shift)  } the pass that makes the Gram

        def block_stats(lo: int, hi: int, xb: Any) -> None:
            sq = ops.row_sq_norms(xb)
            if not np.isfinite(sq).all():  # NaN and inf reach the row norms: one cheap check
                self._raise_nonfinite(xb, lo)
            for k, s, e in self._segments(lo, hi):
                self.class_sums[k] += ops.column_sums(xb[s:e])
            self.sq_norm_sum += float(sq.sum())
            if gram:
                self._fourth_moment_update(xb, sq)

        g = np.zeros((self.dim, self.dim)) if gram else None
        for _, _, x in self._class_chunks("shift", block_stats):
            if g is not None:
                g += ops.gram(x)
        self._gram = g
        if self.total_variance <= 0.0:
            raise FaceZooError("features are constant (zero variance): every metric is undefined")

    def _raise_nonfinite(self, x: Any, a: int) -> None:
        if self._ops.all_finite(x):
            r = int(np.flatnonzero(~np.isfinite(self._ops.row_sq_norms(x)))[0])
            raise FaceZooError(f"features too large for {self._ops.compute_dtype} arithmetic (row "
                               f"{int(self.order[a + r])}: its squared norm overflows); rescale them")
        r, c = self._ops.first_nonfinite(x)
        raise FaceZooError(f"features contain NaN or inf (row {int(self.order[a + r])}, column {c})")

    def _fourth_moment_update(self, x: Any, sq: np.ndarray) -> None:
        self._sq_norm_sq_sum += float(sq @ sq)
        self._sq_norm_weighted_sum += self._ops.matmul(self._ops.const(sq[None, :]), x)[0]

    @property
    def gram(self) -> np.ndarray:
        """``Σ_i (x_i − shift)(x_i − shift)ᵀ``, ``(D, D)`` float64 (computed by one more pass if not yet)."""
        if self._gram is None:
            g = np.zeros((self.dim, self.dim))
            shift = self._ops.const(self.shift)
            for _, _, x in self._input_chunks():
                x = x - shift
                self._fourth_moment_update(x, self._ops.row_sq_norms(x))
                g += self._ops.gram(x)
            self._gram = g
        return self._gram

    def project(self, directions: np.ndarray, center: str = "class") -> np.ndarray:
        """Project the features onto ``directions`` ``(D, r)``: ``(N, r)`` float64, rows in class order.

        Args:
            center: ``"class"`` subtracts each row's class mean (within-class residuals), ``"global"`` the global
                mean. The centring happens in the r-dimensional space, after one pass of products. The pass reads
                the rows in place, unless the common offset is larger than the spread: then it subtracts ``shift``
                first (a copy, block by block), as the raw rows' products would carry the offset's rounding (eps ×
                offset: 1e-3 of the result in float32 for an offset of 1e4 × the spread).
        """
        if center not in ("class", "global"):
            raise ValueError(f"center must be 'class' or 'global', got {center!r}")
        w = self._ops.const(directions)
        out = np.empty((self.n, directions.shape[1]))
        shifted = float(self.shift @ self.shift) > self.total_variance
        for a, b, x in self._shifted_input_blocks() if shifted else self._input_chunks():
            out[a:b] = self._ops.matmul(x, w)
        out = out[self.order]
        centre = self._class_means_shifted @ directions if center == "class" else self._mean_shifted @ directions
        if not shifted:
            centre = centre + self.shift @ directions
        out -= centre[self.sorted_codes] if center == "class" else centre
        return out

    def class_residuals(self, key: Any, directions: np.ndarray) -> np.ndarray:
        """``project(directions, "class")`` cached under ``key`` (see :meth:`prefetch_class_residuals`)."""
        return self.memo(("class_residuals", key), lambda: self.project(directions, "class"))

    def prefetch_class_residuals(self, requests: dict[Any, np.ndarray]) -> None:
        """Compute several :meth:`class_residuals` in one pass over the features (one wider matrix product)."""
        missing = {k: d for k, d in requests.items() if ("class_residuals", k) not in self._memo}
        if not missing:
            return
        z = self.project(np.hstack(list(missing.values())), "class")
        edges = np.cumsum([0] + [d.shape[1] for d in missing.values()])
        for key, lo, hi in zip(missing, edges[:-1], edges[1:], strict=True):
            self._memo[("class_residuals", key)] = z[:, lo:hi]

    def weighted_residual_moments(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Moments of the class-centred residuals ``r_i = x_i − μ_{y_i}`` under per-sample ``weights`` (class order).

        Returns ``Σ_i w_i² r_i r_iᵀ`` ``(D, D)``, and per class ``Σ w_i r_i`` and ``Σ w_i² r_i`` ``(K, D)``: one
        weighted Gram pass (SFDA's second Fisher fit).
        """
        ops = self._ops
        gram = np.zeros((self.dim, self.dim))
        sums_w = np.zeros((self.n_classes, self.dim))
        sums_w2 = np.zeros((self.n_classes, self.dim))

        def weigh(lo: int, hi: int, rb: Any) -> None:
            w = weights[lo:hi]
            for k, s, e in self._segments(lo, hi):
                both = ops.matmul(ops.const(np.stack([w[s:e], w[s:e] ** 2])), rb[s:e])
                sums_w[k] += both[0]
                sums_w2[k] += both[1]
            rb *= ops.const(w[:, None])

        for _, _, x in self._class_chunks("class", weigh):
            gram += ops.gram(x)
        return gram, sums_w, sums_w2

    def row_logsumexp(self) -> np.ndarray:
        """``log Σ_d exp(x_id)`` of every row ``(N,)`` (of the raw features), rows in class order."""
        out = np.empty(self.n)
        for a, b, x in self._input_chunks():
            out[a:b] = self._ops.row_logsumexp(x)
        return out[self.order]

    def class_blocks(self, center: str = "class") -> Iterator[tuple[int, Any]]:
        """Yield ``(k, X_k − c)`` per class, ``c`` the class mean (``"class"``) or the global mean (``"global"``).

        Blocks are in the compute dtype and on the features' device; use ``small_gram`` on them.
        """
        for k in range(self.n_classes):
            x = self._ops.rows(self.features, self.order[self.starts[k] : self.starts[k + 1]])
            centre = self._class_means_shifted[k] if center == "class" else self._mean_shifted
            x -= self._ops.const(self.shift)  # two steps: float32(shift + centre) would round the centre away
            x -= self._ops.const(centre)
            yield k, x

    def small_gram(self, block: Any) -> np.ndarray:
        """``BᵀB`` or ``BBᵀ`` of a block, whichever is smaller (same non-zero spectrum), float64."""
        return self._ops.gram(block) if block.shape[0] >= block.shape[1] else self._ops.gram(block.T)

    def centred_small_gram(self) -> np.ndarray:
        """:meth:`small_gram` of all rows centred on the global mean: ``N·Σ_T`` ``(D, D)`` for N ≥ D, else the
        ``(N, N)`` sample Gram ``Z Zᵀ`` (rows in class order), which has Σ_T's non-zero spectrum without the D − N
        null directions that a float32 D×D Gram fills with rounding noise (~eps × its scale). N < D: one gather of
        the rows, O(N·D) memory, less than the D×D Gram's."""
        if self.n >= self.dim:
            return self.n * self.covariance
        z = self._ops.rows(self.features, self.order)
        z -= self._ops.const(self.shift)  # two steps, as in class_blocks
        z -= self._ops.const(self._mean_shifted)
        g = self.small_gram(z)
        r = g.mean(0)  # centred rows: Z Zᵀ 1 = 0 exactly; project out the rounding in that one null direction too
        return g - r[:, None] - r[None, :] + r.mean()

    def memo(self, key: Any, compute: Any) -> Any:
        """Return ``compute()``, cached under ``key``: how metrics share intermediate results (projections, fits)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """The feature rows at class-order ``positions`` ``(len, D)``, as NumPy in the compute dtype (for the
        sample-level baselines, which work on a bounded subsample)."""
        rows = self._ops.to_numpy(self._ops.rows(self.features, self.order[positions]))
        return rows if self.double else rows.astype(np.float32)

    def class_sums_of(self, values: np.ndarray) -> np.ndarray:
        """Per-class sums ``(K, ...)`` of per-sample ``values`` given in class order."""
        return np.add.reduceat(values, self.starts[:-1], axis=0)

    # ------------------------------------------------------------------ derived quantities (cached)
    @cached_property
    def sorted_codes(self) -> np.ndarray:
        """Class code of every row, in class order ``(N,)``."""
        return np.repeat(np.arange(self.n_classes), self.counts)

    @cached_property
    def priors(self) -> np.ndarray:
        """Class frequencies ``n_k / N`` ``(K,)``."""
        return self.counts / self.n

    @cached_property
    def _mean_shifted(self) -> np.ndarray:
        return self.class_sums.sum(0) / self.n

    @cached_property
    def _class_means_shifted(self) -> np.ndarray:
        return self.class_sums / self.counts[:, None]

    @cached_property
    def mean(self) -> np.ndarray:
        """Global sample mean ``(D,)``."""
        return self.shift + self._mean_shifted

    @cached_property
    def class_means(self) -> np.ndarray:
        """Class means ``(K, D)``."""
        return self.shift + self._class_means_shifted

    @cached_property
    def class_deviations(self) -> np.ndarray:
        """``μ_k − μ`` ``(K, D)``, computed from the shifted sums (no cancellation under a large offset)."""
        return self._class_means_shifted - self._mean_shifted

    @cached_property
    def total_variance(self) -> float:
        """``tr Σ_T``, the total variance about the global mean (1/N normalisation)."""
        d = self._mean_shifted
        return max(self.sq_norm_sum / self.n - float(d @ d), 0.0)

    @cached_property
    def centered_fourth_moment(self) -> float:
        """``Σ_i ‖x_i − μ‖⁴`` (Ledoit–Wolf shrinkage needs it), from first-pass sums and the Gram: no extra pass."""
        gram = self.gram  # first: the pass that makes it also sums what follows
        d = self._mean_shifted
        e = float(d @ d)
        return float(
            self._sq_norm_sq_sum + 4 * d @ gram @ d - 4 * self._sq_norm_weighted_sum @ d
            + 2 * e * self.sq_norm_sum - 3 * self.n * e * e
        )

    @cached_property
    def covariance(self) -> np.ndarray:
        """Total covariance ``Σ_T = (1/N) Σ_i (x_i − μ)(x_i − μ)ᵀ`` ``(D, D)``."""
        d = self._mean_shifted
        return self.gram / self.n - np.outer(d, d)

    @cached_property
    def covariance_eigh(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigen-decomposition of ``Σ_T``: eigenvalues ``(D,)`` in *descending* order (clipped at 0), vectors."""
        w, v = np.linalg.eigh(self.covariance)
        return np.clip(w[::-1], 0.0, None), v[:, ::-1]

    def pca(self, n_components: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Top principal directions of the features ``(D, d)`` and their variances ``(d,)``, from the Gram.

        ``n_components=None`` or ``>= D`` keeps all D directions. When ``4·d < D``, subspace iteration
        (:func:`facezoo.metrics._eigen.top_eigh`: products with the covariance, at the compute dtype's precision)
        instead of LAPACK, whose tridiagonal reduction of the whole matrix cost more than the Gram at D = 1024; else
        the full float64 decomposition. The choice depends only on shapes and dtype, so every metric and every call
        sees the same basis.
        """
        d = self.dim if n_components is None else min(int(n_components), self.dim)
        if 4 * d >= self.dim:
            w, v = self.covariance_eigh
            return v[:, :d], w[:d]
        w, v = top_eigh(self.covariance, d, np.float64 if self.double else np.float32)
        return v, w

    def within_scatter(self) -> np.ndarray:
        """Sample-weighted within-class covariance ``(1/N) Σ_k Σ_{i∈k} (x_i − μ_k)(x_i − μ_k)ᵀ`` ``(D, D)``."""
        m = self._class_means_shifted
        return (self.gram - (m.T * self.counts) @ m) / self.n
