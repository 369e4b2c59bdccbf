"""The extraction engine: batching, workers, ordering, logits, class-balanced pixel sampling for segmentation, and
the inference backends (ONNX Runtime and channels-last proven equal to eager, fallbacks, export cache, cache keys)."""

import json
import os
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from facezoo import backends
from facezoo.data.base import Dataset, Fingerprint
from facezoo.errors import FaceZooError
from facezoo.extract import extract, pick_device, sample_pixels
from facezoo.models.base import ModelAdapter


class MeanColour(ModelAdapter):
    """A transparent 'model': features = per-channel means and a fixed random projection; logits = 3 scores."""

    name, source, modality, dim, num_logits, digest = "mean-colour", "test:mean", "image", 5, 3, "0"
    preprocessing = {"input_size": (3, 8, 8), "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}

    def preprocess(self, image):
        return torch.as_tensor(np.asarray(image.convert("RGB").resize((8, 8)), dtype=np.float32) / 255).permute(2, 0, 1)

    def forward(self, batch):
        means = batch.mean((2, 3))
        features = torch.cat([means, means[:, :1] * 2, means[:, 1:2] - means[:, 2:]], dim=1)
        return {"features": features, "logits": means * 10}

    def feature_maps(self, batch):
        return batch  # (B, 3, h, w): the image itself, so sampled features can be checked against the mask


class Solid:
    """A picklable loader (DataLoader workers start from a fork server and receive it pickled)."""

    def __init__(self, colours):
        self.colours = colours

    def __call__(self, i):
        return Image.fromarray(np.full((6, 9, 3), self.colours[i], dtype=np.uint8))


def colour_dataset(n=23):
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(n, 3))
    labels = np.arange(n) % 3
    ids = np.array([f"s{i:03d}" for i in range(n)])
    return Dataset("colours", "image", list(range(n)), labels, ("a", "b", "c"), np.array(["train"] * n), ids,
                   Fingerprint("t").update("colours").hexdigest(), Solid(colours)), colours


@pytest.mark.parametrize("workers", [0, 2])
def test_features_come_back_in_dataset_order_with_labels_ids_and_logits(workers):
    dataset, colours = colour_dataset()
    out = extract(MeanColour(), dataset, batch_size=4, num_workers=workers, device="cpu", progress=False)
    means = colours / 255
    np.testing.assert_allclose(out.features[:, :3], means, atol=1e-6)
    np.testing.assert_allclose(out.features[:, 3], means[:, 0] * 2, atol=1e-6)
    np.testing.assert_allclose(out.logits, means * 10, atol=1e-5)
    np.testing.assert_array_equal(out.labels, dataset.labels)
    np.testing.assert_array_equal(out.sample_ids, dataset.sample_ids)
    assert out.features.dtype == np.float32 and out.features.flags["C_CONTIGUOUS"]
    assert out.samples_per_second > 0


class TextLength(ModelAdapter):
    """Features = (length, first character code); records each batch's lengths (to see the batching order)."""

    name, source, modality, dim, num_logits, digest, preprocessing = "len", "test:len", "text", 2, None, "0", {}

    def __init__(self):
        self.batches = []

    def preprocess(self, text):
        return text

    def collate(self, items):
        return list(items)

    def forward(self, batch):
        self.batches.append([len(t) for t in batch])
        return {"features": torch.tensor([[len(t), ord(t[0]) if t else 0] for t in batch], dtype=torch.float32)}


def test_texts_are_batched_longest_first_and_come_back_in_dataset_order():
    rng = np.random.default_rng(1)
    texts = ["".join(rng.choice(list("abcdefgh"), size=k)) for k in rng.integers(0, 40, size=29)]
    dataset = Dataset("texts", "text", texts, np.arange(29) % 2, ("x", "y"), np.array(["train"] * 29),
                      np.array([f"t{i}" for i in range(29)]), "fp-texts", str)
    model = TextLength()
    out = extract(model, dataset, batch_size=8, num_workers=0, device="cpu", progress=False)
    lengths = [n for batch in model.batches for n in batch]
    assert lengths == sorted(lengths, reverse=True)  # little padding in any batch
    np.testing.assert_array_equal(out.features[:, 0], [len(t) for t in texts])
    np.testing.assert_array_equal(out.features[:, 1], [ord(t[0]) if t else 0 for t in texts])
    np.testing.assert_array_equal(out.sample_ids, dataset.sample_ids)
    np.testing.assert_array_equal(out.labels, dataset.labels)


class _Witness(MeanColour):
    """Records where each image is decoded and how many decodes are in flight whenever the model runs."""

    def __init__(self):
        self.decoded, self.in_flight, self.busy_during_forward = [], 0, []
        self.lock = threading.Lock()

    def preprocess(self, image):
        with self.lock:
            self.in_flight += 1
        time.sleep(0.02)  # long enough that a second thread takes the next image
        with self.lock:
            self.decoded.append((os.getpid(), threading.current_thread().name))
            self.in_flight -= 1
        return super().preprocess(image)

    def forward(self, batch):
        self.busy_during_forward.append(self.in_flight)
        return super().forward(batch)


def test_images_on_a_cpu_are_decoded_by_threads_in_turns_with_the_model():
    dataset, colours = colour_dataset(12)
    model = _Witness()
    out = extract(model, dataset, batch_size=4, device="cpu", threads=2, progress=False)
    np.testing.assert_allclose(out.features[:, :3], colours / 255, atol=1e-6)
    assert {pid for pid, _ in model.decoded} == {os.getpid()}  # no worker process
    threads = {name for _, name in model.decoded}
    assert len(threads) == 2 and all(name.startswith("facezoo-decode") for name in threads)
    assert model.busy_during_forward == [0, 0, 0]  # never overlapping a forward pass


def test_thread_count_is_restored():
    before = torch.get_num_threads()
    extract(MeanColour(), colour_dataset()[0], device="cpu", threads=1, num_workers=0, progress=False)
    assert torch.get_num_threads() == before


def test_device_selection():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(FaceZooError, match="no CUDA GPU"):
            pick_device("cuda")


def test_modality_mismatch_is_refused():
    dataset, _ = colour_dataset()
    text = Dataset("t", "text", ["a", "b"], np.array([0, 1]), ("x", "y"), np.array(["train"] * 2),
                   np.array(["0", "1"]), "f", lambda r: r)
    with pytest.raises(FaceZooError, match="reads image, dataset 't' is text"):
        extract(MeanColour(), text, progress=False)


# ---------------------------------------------------------------------------------------------- segmentation
def test_pixel_sampling_is_class_balanced_and_skips_the_ignore_label():
    mask = torch.zeros((20, 30), dtype=torch.long)
    mask[:2, :5] = 1  # class 1: 10 pixels only
    mask[10:, :] = 2  # class 2: 300 pixels
    mask[5:7, 10:20] = 255  # ignored
    fmap = torch.randn(4, 5, 6)
    g = torch.Generator().manual_seed(0)
    features, labels, index = sample_pixels(fmap, mask, 90, 255, g)
    counts = np.bincount(labels.numpy(), minlength=3)
    assert counts[1] == 10  # all of the small class; its unused share goes to the others
    assert counts[0] == counts[2] == 40
    assert 255 not in labels.tolist() and len(set(index.tolist())) == len(index)
    assert features.shape == (90, 4) and features.dtype == torch.float32


def test_pixel_features_equal_the_upsampled_map_at_those_pixels():
    fmap = torch.randn(3, 4, 5)
    mask = torch.randint(0, 3, (16, 20))
    features, labels, index = sample_pixels(fmap, mask, 60, None, torch.Generator().manual_seed(1))
    upsampled = torch.nn.functional.interpolate(fmap[None], size=(16, 20), mode="bilinear", align_corners=False)[0]
    ys, xs = index // 20, index % 20
    torch.testing.assert_close(features, upsampled[:, ys, xs].T, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(labels, mask.reshape(-1)[index])


def test_segmentation_extraction_aligns_dense_features_with_the_masks():
    # each image encodes its mask as colour: channel k is bright where the mask says class k
    rng = np.random.default_rng(2)
    masks = []
    for _ in range(5):
        m = np.zeros((24, 24), dtype=np.int64)
        y, x = rng.integers(0, 12, 2)
        m[y : y + 12, x : x + 12] = rng.integers(1, 3)
        m[0, :] = 255  # an ignored row
        masks.append(m)

    def load(i):
        m = masks[i]
        rgb = np.stack([(m == k) * 255 for k in range(3)], axis=-1).astype(np.uint8)
        return Image.fromarray(rgb), m

    ids = np.array([f"canvas{i}" for i in range(5)])
    dataset = Dataset("canvas", "segmentation", list(range(5)), np.full(5, -1), ("bg", "one", "two"),
                      np.array(["train"] * 5), ids, "fp", load, ignore_index=255)
    out = extract(MeanColour(), dataset, batch_size=2, num_workers=0, device="cpu", pixels_per_image=50,
                  progress=False)
    assert set(np.unique(out.labels)) <= {0, 1, 2}
    # the brightest channel of the sampled feature is the pixel's class, away from region borders
    predicted = out.features.argmax(1)
    assert (predicted == out.labels).mean() > 0.9
    again = extract(MeanColour(), dataset, batch_size=3, num_workers=0, device="cpu", pixels_per_image=50,
                    progress=False)
    np.testing.assert_array_equal(again.sample_ids, out.sample_ids)  # deterministic sampling
    assert out.sample_ids[0].startswith("canvas0@")


def test_a_second_request_for_the_same_key_reads_and_never_re_extracts(tmp_path):
    from storage.features import FeatureStore
    from tasks.extract import feature_key, stored_features

    class Counting(MeanColour):
        calls = 0

        def forward(self, batch):
            Counting.calls += 1
            return super().forward(batch)

    dataset, _ = colour_dataset()
    store = FeatureStore(tmp_path)
    model = Counting()
    first, hit = stored_features(model, dataset, "train", store, num_workers=0, device="cpu", progress=False)
    calls = Counting.calls
    assert not hit and calls > 0
    second, hit = stored_features(model, dataset, "train", store, num_workers=0, device="cpu", progress=False)
    assert hit and Counting.calls == calls
    np.testing.assert_array_equal(second.features, first.features)
    assert second.metadata["weights_digest"] == "0" and second.metadata["dataset_fingerprint"] == dataset.fingerprint
    assert second.metadata["backend"] == "eager"  # MeanColour exports nothing and has no convolutions
    other = MeanColour()
    other.digest = "1"  # new weights: a new key
    assert feature_key(other, dataset, "train", backend="eager") != feature_key(model, dataset, "train",
                                                                                backend="eager")


class RunsOutOfMemory(MeanColour):
    """Out of memory above ``limit`` samples per batch (a GPU too small for the batch size asked for)."""

    def __init__(self, limit):
        self.limit, self.batches = limit, []

    def forward(self, batch):
        self.batches.append(len(batch))
        if len(batch) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(batch)


def test_out_of_memory_halves_the_batch_and_gives_the_same_features():
    dataset, _ = colour_dataset()
    expected = extract(MeanColour(), dataset, batch_size=16, num_workers=0, device="cpu", progress=False)
    model = RunsOutOfMemory(limit=5)
    with pytest.warns(UserWarning, match="retrying at batch size 4"):
        out = extract(model, dataset, batch_size=16, num_workers=0, device="cpu", progress=False)
    assert model.batches[:2] == [16, 8] and set(model.batches[2:]) <= {4, 3}  # 23 = 5 · 4 + 3
    np.testing.assert_array_equal(out.features, expected.features)
    np.testing.assert_array_equal(out.sample_ids, dataset.sample_ids)


def test_out_of_memory_at_batch_size_one_is_one_clear_error():
    dataset, _ = colour_dataset()
    with pytest.warns(UserWarning), pytest.raises(FaceZooError, match="out of memory on cpu even at batch size 1"):
        extract(RunsOutOfMemory(limit=0), dataset, batch_size=4, num_workers=0, device="cpu", progress=False)
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other runtime errors are not taken for memory
        extract(_Broken(), dataset, batch_size=4, num_workers=0, device="cpu", progress=False)


class _Broken(MeanColour):
    def forward(self, batch):
        raise RuntimeError("shape mismatch")


# ---------------------------------------------------------------------------------------------- backends
def tiny_timm(arch="test_resnet"):
    from facezoo.models import create_model

    return create_model(f"timm:{arch}", pretrained=False)


def colour_images(n=12):
    """Smooth random images (not solid colours: a graph that ignored spatial structure must show)."""
    rng = np.random.default_rng(3)
    pictures = [np.clip(rng.normal(128, 60, (5, 7, 3)), 0, 255).astype(np.uint8) for _ in range(n)]
    labels = np.arange(n) % 2
    return Dataset("pictures", "image", list(range(n)), labels, ("a", "b"), np.array(["train"] * n),
                   np.array([f"p{i}" for i in range(n)]), "fp-pictures", _Pictures(pictures))


class _Pictures:
    def __init__(self, arrays):
        self.arrays = arrays

    def __call__(self, i):
        return Image.fromarray(self.arrays[i]).resize((40, 28), Image.BILINEAR)


def assert_equal_within_tolerance(reference, candidate):
    """The backends' rule, recomputed naively in float64: per-sample cosine and max difference over the scale."""
    for name in ("features", "logits"):
        a, b = getattr(reference, name).astype(np.float64), getattr(candidate, name).astype(np.float64)
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cos.min() >= backends.MIN_COSINE, name
        assert np.abs(a - b).max() <= backends.MAX_RELATIVE_DIFFERENCE * np.abs(a).max(), name


@pytest.mark.parametrize("arch", ["test_resnet", "test_efficientnet", "test_vit"])
def test_onnxruntime_features_equal_eager_for_tiny_timm_models(arch, tmp_path):
    model, dataset = tiny_timm(arch), colour_images()
    eager = extract(model, dataset, batch_size=8, num_workers=0, device="cpu", backend="eager", progress=False)
    ours = extract(model, dataset, batch_size=8, num_workers=0, device="cpu", backend="onnxruntime",
                   export_dir=tmp_path, progress=False)
    assert (eager.backend, ours.backend) == ("eager", "onnxruntime")
    assert_equal_within_tolerance(eager, ours)
    assert not np.array_equal(ours.features, eager.features)  # really another runtime, not eager again
    np.testing.assert_array_equal(ours.sample_ids, dataset.sample_ids)
    assert len(list(tmp_path.glob("*.onnx"))) == 1


def test_channels_last_is_the_cpu_fallback_of_convolutional_networks(tmp_path):
    model, dataset = tiny_timm(), colour_images(8)
    eager = extract(model, dataset, batch_size=4, num_workers=0, device="cpu", backend="eager", progress=False)
    out = extract(model, dataset, batch_size=4, num_workers=0, device="cpu", backend="channels-last",
                  export_dir=tmp_path, progress=False)
    assert out.backend == "channels-last"
    assert_equal_within_tolerance(eager, out)
    assert next(model.model.parameters()).is_contiguous(memory_format=torch.channels_last)
    assert backends.choose(MeanColour(), torch.device("cpu"), "auto") == "eager"  # neither exportable nor a CNN


def test_the_export_is_cached_and_checked_once(tmp_path, monkeypatch):
    exports, checks = [], []
    real_export, real_check = torch.onnx.export, backends.Runner.check
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: exports.append(1) or real_export(*a, **k))
    monkeypatch.setattr(backends.Runner, "check", lambda self, batch: checks.append(1) or real_check(self, batch))
    dataset = colour_images(6)
    options = {"batch_size": 4, "num_workers": 0, "device": "cpu", "backend": "onnxruntime", "progress": False}
    first = extract(tiny_timm(), dataset, export_dir=tmp_path, **options)
    second = extract(tiny_timm(), dataset, export_dir=tmp_path, **options)
    assert (first.backend, second.backend) == ("onnxruntime", "onnxruntime")
    assert (len(exports), len(checks)) == (1, 1)
    np.testing.assert_array_equal(first.features, second.features)
    verdict = json.loads(next(tmp_path.glob("*.onnxruntime.json")).read_text())
    assert verdict["ok"] and verdict["cosine"] >= backends.MIN_COSINE


def _timings(monkeypatch, *seconds: float) -> None:
    """Every check times eager first, then its backend: the checks' timings, in that order."""
    answers = iter(seconds)
    monkeypatch.setattr(backends, "_seconds", lambda forward, repeat=2: (forward(), next(answers))[1])


@pytest.mark.parametrize(("onnx_seconds", "expected"), [(0.5, "onnxruntime"), (2.0, "channels-last")])
def test_auto_keeps_a_backend_only_if_it_beat_eager_in_its_check(tmp_path, monkeypatch, onnx_seconds, expected):
    _timings(monkeypatch, 1.0, onnx_seconds, 1.0, 0.5)  # channels-last, checked after a slow ONNX Runtime: faster
    model, dataset = tiny_timm(), colour_images(6)
    options = {"batch_size": 4, "num_workers": 0, "device": "cpu", "export_dir": tmp_path, "progress": False}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # choosing the faster backend is not a rejection: no warning
        out = extract(model, dataset, **options)
    assert out.backend == expected
    verdict = json.loads(next(tmp_path.glob("*.onnxruntime.json")).read_text())
    assert verdict["ok"] and verdict["seconds"] == {"eager": 1.0, "onnxruntime": onnx_seconds}
    assert verdict["faster"] == (onnx_seconds < 1.0)
    # the verdict decides later runs without a new check; a backend asked for by name is kept, slower or not
    monkeypatch.setattr(backends, "_seconds", lambda forward, repeat=2: pytest.fail("checked again"))
    assert backends.choose(model, torch.device("cpu"), "auto", export_dir=tmp_path) == expected
    assert backends.choose(model, torch.device("cpu"), "onnxruntime", export_dir=tmp_path) == "onnxruntime"
    assert extract(model, dataset, backend="onnxruntime", **options).backend == "onnxruntime"


def test_auto_runs_eager_when_no_backend_beats_it(tmp_path, monkeypatch):
    _timings(monkeypatch, 1.0, 3.0, 1.0, 1.5)
    out = extract(tiny_timm(), colour_images(6), batch_size=4, num_workers=0, device="cpu", export_dir=tmp_path,
                  progress=False)
    assert out.backend == "eager"
    assert {p.name.split(".")[1] for p in tmp_path.glob("*.json")} == {"onnxruntime", "channels-last"}


def test_the_check_times_what_it_compares():
    calls = []
    assert backends._seconds(lambda: calls.append(1), repeat=3) < 0.1 and len(calls) == 3


class _NumpyInside(MeanColour):
    """Exportable in form, but its forward leaves torch: the trace bakes the example's outputs in as constants."""

    def export_example(self):
        return torch.zeros(2, 3, 8, 8)

    def forward(self, batch):
        means = torch.from_numpy(batch.mean((2, 3)).numpy())
        return {"features": torch.cat([means, means[:, :2]], 1), "logits": means * 10}


class _BranchInside(_NumpyInside):
    """Python control flow on the data: the trace keeps the branch of its blank example (the sign flips)."""

    def forward(self, batch):
        out = MeanColour.forward(self, batch)
        sign = 1.0 if float(batch.sum()) > 0 else -1.0
        return {"features": out["features"] * sign, "logits": out["logits"]}


def test_a_backend_whose_outputs_differ_falls_back_to_eager_with_one_warning(tmp_path):
    dataset, colours = colour_dataset()
    with pytest.warns(UserWarning, match=r"backend onnxruntime rejected \(features cosine -1.0000000 < 0.99999"):
        extract(_BranchInside(), dataset, batch_size=8, num_workers=0, device="cpu", progress=False)
    with pytest.warns(UserWarning, match=r"backend onnxruntime rejected \(features shape \(2, 5\) != \(8, 5\)") \
            as caught:
        out = extract(_NumpyInside(), dataset, batch_size=8, num_workers=0, device="cpu", export_dir=tmp_path,
                      progress=False)
    assert len([w for w in caught if "rejected" in str(w.message)]) == 1
    assert out.backend == "eager"
    np.testing.assert_allclose(out.features[:, :3], colours / 255, atol=1e-6)  # eager's values
    assert not json.loads(next(tmp_path.glob("*.onnxruntime.json")).read_text())["ok"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the recorded verdict: straight to eager, no second warning, no re-export
        assert backends.choose(_NumpyInside(), torch.device("cpu"), "auto", export_dir=tmp_path) == "eager"


def test_a_model_that_fails_to_export_falls_back_with_one_warning(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::frobnicate' to ONNX opset version 17 is not supported")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    model, dataset = tiny_timm(), colour_images(4)
    with pytest.warns(UserWarning, match="export failed: RuntimeError: Exporting the operator") as caught:
        out = extract(model, dataset, batch_size=4, num_workers=0, device="cpu", export_dir=tmp_path, progress=False)
    assert len([w for w in caught if "rejected" in str(w.message)]) == 1
    assert out.backend == "channels-last"
    assert backends.choose(model, torch.device("cpu"), "auto", export_dir=tmp_path) == "channels-last"


def test_the_backend_is_part_of_the_cache_key_and_recorded(tmp_path):
    from storage.features import FeatureStore
    from tasks.extract import feature_key, stored_features

    model, dataset = tiny_timm(), colour_images(6)
    keys = {b: feature_key(model, dataset, "train", backend=b) for b in ("eager", "channels-last", "onnxruntime")}
    assert len(set(keys.values())) == 3
    store = FeatureStore(tmp_path / "features")
    options = {"num_workers": 0, "device": "cpu", "progress": False, "export_dir": str(tmp_path / "onnx")}
    ort, hit = stored_features(model, dataset, "train", store, backend="onnxruntime", **options)
    assert not hit and ort.metadata["backend"] == "onnxruntime" and ort.metadata["cache_key"] == keys["onnxruntime"]
    eager, hit = stored_features(model, dataset, "train", store, backend="eager", **options)
    assert not hit and eager.metadata["backend"] == "eager" and eager.metadata["cache_key"] == keys["eager"]
    again, hit = stored_features(model, dataset, "train", store, backend="onnxruntime", **options)
    assert hit and again.metadata["cache_key"] == keys["onnxruntime"]


def test_a_rejected_backend_stores_its_features_under_the_backend_that_ran(tmp_path):
    from storage.features import FeatureStore
    from tasks.extract import feature_key, stored_features

    dataset, _ = colour_dataset()
    store = FeatureStore(tmp_path / "features")
    options = {"num_workers": 0, "device": "cpu", "progress": False, "export_dir": str(tmp_path / "onnx")}
    with pytest.warns(UserWarning, match="rejected"):
        first, hit = stored_features(_NumpyInside(), dataset, "train", store, **options)
    assert not hit and first.metadata["cache_key"] == feature_key(_NumpyInside(), dataset, "train", backend="eager")
    second, hit = stored_features(_NumpyInside(), dataset, "train", store, **options)
    assert hit  # the verdict sends the lookup to eager's key at once


def test_backend_names_and_devices_are_checked():
    with pytest.raises(FaceZooError, match="unknown backend 'tensorrt'; choose one of auto, eager"):
        backends.choose(tiny_timm(), torch.device("cpu"), "tensorrt")
    with pytest.raises(FaceZooError, match="backend 'onnxruntime' runs on the CPU"):
        backends.choose(tiny_timm(), torch.device("cuda"), "onnxruntime")
    assert backends.choose(tiny_timm(), torch.device("cuda"), "auto") == "eager"
    with pytest.warns(UserWarning, match="backend onnxruntime not used .the model does not support it.; running eager"):
        assert backends.choose(MeanColour(), torch.device("cpu"), "onnxruntime") == "eager"


def test_compare_applies_the_cosine_and_scale_tolerances():
    rng = np.random.default_rng(0)
    ref = torch.from_numpy(rng.normal(size=(6, 50)).astype(np.float32))
    scale = float(ref.abs().max())
    assert backends.compare({"features": ref}, {"features": ref.clone()})["ok"]
    small = ref.clone()
    small[2, 3] += 0.5e-4 * scale
    assert backends.compare({"features": ref}, {"features": small})["ok"]
    large = ref.clone()
    large[2, 3] += 2e-4 * scale
    verdict = backends.compare({"features": ref}, {"features": large})
    assert not verdict["ok"] and "differ by 2.0e-04" in verdict["reason"]
    flipped = ref.clone()
    flipped[4] = -flipped[4]
    verdict = backends.compare({"features": ref}, {"features": flipped})
    assert not verdict["ok"] and verdict["cosine"] == pytest.approx(-1.0)
    assert not backends.compare({"features": ref, "logits": ref}, {"features": ref})["ok"]  # logits missing


def test_a_model_on_its_own_runtime_goes_through_the_feature_task(tmp_path):
    """WordLlama, fastText and ONNX files run on their own runtime: the task chose it, then passed that name on to
    the engine, which refused it as an unknown backend (every static text encoder failed in rank_zoo)."""
    from storage.features import FeatureStore
    from tasks.extract import stored_features

    class OwnRuntime(MeanColour):
        runtime = "numpy-vectors"

    dataset, _ = colour_dataset()
    options = {"num_workers": 0, "device": "cpu", "progress": False, "export_dir": str(tmp_path / "onnx")}
    stored, hit = stored_features(OwnRuntime(), dataset, "train", FeatureStore(tmp_path / "features"), **options)
    assert not hit and stored.metadata["backend"] == "numpy-vectors"
    with pytest.raises(FaceZooError, match="unknown backend 'tensorrt'"):
        backends.choose(OwnRuntime(), torch.device("cpu"), "tensorrt")
