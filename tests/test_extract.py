"""The extraction engine: batching, workers, ordering, logits, and class-balanced pixel sampling for segmentation."""

import numpy as np
import pytest
import torch
from PIL import Image

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
    other = MeanColour()
    other.digest = "1"  # new weights: a new key
    assert feature_key(other, dataset, "train") != feature_key(model, dataset, "train")


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
