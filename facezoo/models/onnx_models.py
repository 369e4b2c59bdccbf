"""``onnx:<path>``: an ONNX image classifier run by ONNX Runtime on CPU, with its penultimate features exposed.

The penultimate features are the data input of the last ``MatMul``/``Gemm`` on the path to the graph's output (the
classifier); the graph is edited with the ``onnx`` package to make that tensor an extra output, so one run gives
features and logits. Logits are the graph's output, or the input of its final ``Softmax`` when it ends in one (the
metrics apply softmax themselves).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from facezoo.errors import FaceZooError
from facezoo.models._common import DetachableAdapter
from facezoo.models._registry import register_source
from facezoo.models._transforms import ImagePreprocessing
from facezoo.models.base import NotTrainable, file_digest

__all__ = ["OnnxAdapter", "expose_penultimate", "onnx_adapter", "onnx_model"]

Layout = Literal["auto", "NCHW", "NHWC"]


def expose_penultimate(model: Any) -> tuple[Any, str, str]:
    """Add the classifier's input (and the pre-softmax logits) as graph outputs.

    Args:
        model: an ``onnx.ModelProto`` whose first output is the classifier's.

    Returns:
        (the edited copy, the features tensor's name, the logits tensor's name).
    """
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    output = graph.output[0].name
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n for n in graph.node for o in n.output}
    last = producer.get(output)
    logits = last.input[0] if last is not None and last.op_type == "Softmax" else output
    needed, classifier = {output}, None
    for node in reversed(graph.node):  # ONNX graphs are topologically sorted: consumers come after producers
        if needed.isdisjoint(node.output):
            continue
        if node.op_type in ("MatMul", "Gemm"):
            classifier = node
            break
        needed.update(node.input)
    if classifier is None:
        raise FaceZooError("the ONNX graph has no MatMul/Gemm before its output: no penultimate features to expose")
    features = next((i for i in classifier.input if i not in constants), classifier.input[0])
    inferred = onnx.shape_inference.infer_shapes(model).graph
    known = {v.name: v for v in (*inferred.value_info, *inferred.input, *inferred.output)}
    present = {o.name for o in graph.output}
    for name in (features, logits):
        if name not in present:
            info = known.get(name) or onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            graph.output.append(info)
            present.add(name)
    return model, features, logits


class OnnxAdapter(DetachableAdapter):
    """An ONNX image classifier; ``preprocess`` gives CHW tensors, ``forward`` transposes to NHWC if the graph wants."""

    modality = "image"
    runtime = "onnxruntime"
    _detached = ("session",)

    def __init__(self, *, name: str, source: str, session: Any, transform: ImagePreprocessing, layout: str,
                 features_name: str, logits_name: str, digest: str, path: Path | None = None):
        self.name, self.source, self.digest, self.path = name, source, digest, path
        self.session, self.transform, self.layout = session, transform, layout
        self.input_name = session.get_inputs()[0].name
        self.features_name, self.logits_name = features_name, logits_name
        self.preprocessing = {**transform.describe(), "layout": layout}
        probe = self.forward(torch.zeros(1, 3, transform.size, transform.size))
        self.dim, self.num_logits = probe["features"].shape[1], probe["logits"].shape[1]

    def preprocess(self, sample: Any) -> torch.Tensor:
        """PIL image → ``(3, H, W)`` float tensor."""
        if not hasattr(sample, "convert"):
            raise FaceZooError(f"image model {self.name!r} takes PIL images, got {type(sample).__name__}")
        return self.transform(sample)

    def preprocess_dense(self, image: Any) -> torch.Tensor:
        return self.transform.dense(image)

    def trainable(self, dense: bool = False) -> torch.nn.Module:
        """The graph converted to PyTorch by ``onnx2torch`` (the field's converter), returning the features output."""
        import onnx

        if dense:
            raise NotTrainable(f"ONNX model {self.name!r} gives no dense feature maps")

        try:
            from onnx2torch import convert
        except ImportError:
            raise NotTrainable(f"model {self.name!r}: fine-tuning an ONNX model needs onnx2torch "
                               f"(pip install onnx2torch)") from None
        if self.path is None:
            raise NotTrainable(f"model {self.name!r}: built from an ONNX graph in memory, with no file to convert")
        graph, features, _ = expose_penultimate(onnx.load(str(self.path)))
        try:
            module = convert(graph)
        except Exception as e:  # noqa: BLE001 - any converter failure means: not trainable, with its reason
            raise NotTrainable(f"model {self.name!r}: onnx2torch cannot convert it ({type(e).__name__}: "
                               f"{' '.join(str(e).split())[:200]})") from None
        # onnx2torch's Slice indexes with a list, which torch deprecates with a warning on every call: noise here
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence", module=r"onnx2torch\.")
        index = [o.name for o in graph.graph.output].index(features)
        return _ConvertedOnnx(module, index, self.layout).train().requires_grad_(True)

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        x = batch.detach().to("cpu", torch.float32)
        if self.layout == "NHWC":
            x = x.permute(0, 2, 3, 1)
        features, logits = self._require("session").run(
            [self.features_name, self.logits_name], {self.input_name: np.ascontiguousarray(x.numpy())})
        return {"features": torch.from_numpy(np.asarray(features, np.float32).reshape(len(x), -1)),
                "logits": torch.from_numpy(np.asarray(logits, np.float32).reshape(len(x), -1))}


class _ConvertedOnnx(torch.nn.Module):
    """An ONNX graph converted to PyTorch: ``(B, 3, H, W)`` in (transposed if the graph wants NHWC), features out."""

    def __init__(self, module: torch.nn.Module, features_index: int, layout: str):
        super().__init__()
        self.module, self.features_index, self.layout = module, features_index, layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.module(x.permute(0, 2, 3, 1) if self.layout == "NHWC" else x)
        return outputs[self.features_index].reshape(len(x), -1)


def _input_geometry(session: Any, layout: Layout, what: str) -> tuple[str, int | None]:
    """(layout, input side or None when dynamic) read from the graph's first input ``(N, 3, H, W)``/``(N, H, W, 3)``."""
    shape = session.get_inputs()[0].shape
    if len(shape) != 4:
        raise FaceZooError(f"{what}: the ONNX input has shape {shape}, not an image batch")
    if layout == "auto":
        if shape[1] == 3:
            layout = "NCHW"
        elif shape[3] == 3:
            layout = "NHWC"
        else:
            raise FaceZooError(f"{what}: cannot tell the layout of input shape {shape}; give options: {{layout: NCHW}}")
    side = shape[2] if layout == "NCHW" else shape[1]
    return layout, side if isinstance(side, int) else None


def onnx_adapter(path: Path, *, name: str, source: str, defaults: dict[str, Any] | None = None,
                 preprocessing: dict[str, Any] | None = None, layout: Layout = "auto") -> OnnxAdapter:
    """The adapter of the ONNX file ``path``; ``defaults`` are the recipe's, ``preprocessing`` the user's overrides."""
    import onnx
    import onnxruntime as ort
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise FaceZooError(f"ONNX file {str(path)!r} does not exist")
    try:
        proto = onnx.load(str(path))
    except DecodeError as e:
        raise FaceZooError(f"{str(path)!r} is not an ONNX model: {e}") from None
    model, features, logits = expose_penultimate(proto)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # ORT warns about the unused initialisers of every exported graph
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    layout, side = _input_geometry(session, layout, source)
    transform = ImagePreprocessing.build({"size": side or 224, **(defaults or {})}, preprocessing, source)
    return OnnxAdapter(name=name, source=source, session=session, transform=transform, layout=layout,
                       features_name=features, logits_name=logits, digest=file_digest(path), path=path)


@register_source("onnx", syntax="onnx:<path to .onnx>",
                 description="an ONNX image classifier (penultimate features = the input of its last MatMul/Gemm)")
def onnx_model(ref: str, *, name: str, source: str, preprocessing: dict[str, Any] | None = None,
               layout: Layout = "auto") -> OnnxAdapter:
    """``onnx:<path>``. Options: ``preprocessing`` (fields of :class:`ImagePreprocessing`: size, resize, resize_mode,
    interpolation, jpeg_roundtrip, pixel_max, channel_order, mean, std; default: ImageNet's recipe at the graph's input
    size), ``layout`` (``NCHW``/``NHWC``; default: read from the input shape)."""
    if layout not in ("auto", "NCHW", "NHWC"):
        raise FaceZooError(f"{source}: layout must be 'auto', 'NCHW' or 'NHWC', got {layout!r}")
    return onnx_adapter(Path(ref).expanduser(), name=name, source=source, preprocessing=preprocessing, layout=layout)
