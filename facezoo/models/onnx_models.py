"""``onnx:<path>``: an ONNX image classifier run by ONNX Runtime on CPU, with its penultimate features exposed.

The penultimate features are the data input of the last ``MatMul``/``Gemm`` on the path to the graph's output (the
classifier); the graph is edited with the ``onnx`` package to make that tensor an extra output, so one run gives
features and logits. Logits are the graph's output, or the input of its final ``Softmax`` when it ends in one (the
metrics apply softmax themselves). A graph without a classifier (a detector's backbone) names its feature tensor
instead (option ``features``), usually a ``(N, C, H, W)`` map averaged over H and W (``pooling: avg``); its output is
then kept as logits only when it is a ``(N, C)`` matrix.
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

__all__ = ["OnnxAdapter", "expose_penultimate", "expose_tensor", "onnx_adapter", "onnx_model"]

Layout = Literal["auto", "NCHW", "NHWC"]
Pooling = Literal["flatten", "avg"]
POOLINGS = ("flatten", "avg")


def _logits_of(graph: Any) -> str:
    """The graph's first output, or the input of the ``Softmax`` that ends it (through trailing ``Identity`` nodes)."""
    producer = {o: n for n in graph.node for o in n.output}
    name = graph.output[0].name
    while (node := producer.get(name)) is not None and node.op_type == "Identity":
        name = node.input[0]
    return node.input[0] if node is not None and node.op_type == "Softmax" else graph.output[0].name


def _with_outputs(model: Any, names: list[str]) -> Any:
    """``model`` with the tensors ``names`` added to its outputs (typed by shape inference where it can)."""
    import onnx

    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(model).graph
    known = {v.name: v for v in (*inferred.value_info, *inferred.input, *inferred.output)}
    present = {o.name for o in graph.output}
    for name in names:
        if name not in present:
            info = known.get(name) or onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            graph.output.append(info)
            present.add(name)
    return model


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
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    logits = _logits_of(graph)
    needed, classifier = {graph.output[0].name}, None
    for node in reversed(graph.node):  # ONNX graphs are topologically sorted: consumers come after producers
        if needed.isdisjoint(node.output):
            continue
        if node.op_type in ("MatMul", "Gemm"):
            classifier = node
            break
        needed.update(node.input)
    if classifier is None:
        raise FaceZooError("the ONNX graph has no MatMul/Gemm before its output: no penultimate features to expose; "
                           "name a feature tensor with the option features (and pooling: avg for a feature map)")
    features = next((i for i in classifier.input if i not in constants), classifier.input[0])
    return _with_outputs(model, [features, logits]), features, logits


def expose_tensor(model: Any, features: str) -> tuple[Any, str, str | None]:
    """Add the tensor named ``features`` (and the graph's pre-softmax output, when it is a ``(N, C)`` matrix) as
    graph outputs.

    Returns:
        (the edited copy, ``features``, the logits tensor's name or None when the output is no class matrix).

    Raises:
        FaceZooError: no node of the graph produces ``features``.
    """
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    if features not in {o for n in graph.node for o in n.output}:
        raise FaceZooError(f"the ONNX graph has no tensor {features!r} (option features): name a node output, "
                           f"e.g. one listed by [o for n in onnx.load(path).graph.node for o in n.output]")
    # the declared output, not the softmax input: shape inference often leaves the latter untyped (tf2onnx graphs)
    output_type = graph.output[0].type.tensor_type
    logits = _logits_of(graph) if output_type.HasField("shape") and len(output_type.shape.dim) == 2 else None
    return _with_outputs(model, [features, *([logits] if logits else [])]), features, logits


class OnnxAdapter(DetachableAdapter):
    """An ONNX image classifier; ``preprocess`` gives CHW tensors, ``forward`` transposes to NHWC if the graph wants."""

    modality = "image"
    runtime = "onnxruntime"
    _detached = ("session",)

    def __init__(self, *, name: str, source: str, session: Any, transform: ImagePreprocessing, layout: str,
                 features_name: str, logits_name: str | None, digest: str, path: Path | None = None,
                 named_features: bool = False, pooling: Pooling = "flatten"):
        self.name, self.source, self.digest, self.path = name, source, digest, path
        self.session, self.transform, self.layout = session, transform, layout
        self.input_name = session.get_inputs()[0].name
        self.features_name, self.logits_name = features_name, logits_name
        self.named_features, self.pooling = named_features, pooling
        # the tensor choice only enters the description when it is not the default one: older caches keep their keys
        chosen = {"features": features_name, "pooling": pooling} if named_features else {}
        self.preprocessing = {**transform.describe(), "layout": layout, **chosen}
        probe = self.forward(torch.zeros(1, 3, transform.size, transform.size))
        self.dim = probe["features"].shape[1]
        self.num_logits = probe["logits"].shape[1] if "logits" in probe else None

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
        proto = _constants_as_initializers(onnx.load(str(self.path)))
        if self.named_features:  # only the backbone up to the named tensor: a detector's head would run for nothing
            graph = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(proto)).extract_model(
                [self.input_name], [self.features_name])
            index = None
        else:
            graph, features, _ = expose_penultimate(proto)
            index = [o.name for o in graph.graph.output].index(features)
        try:
            module = convert(graph)
        except Exception as e:  # noqa: BLE001 - any converter failure means: not trainable, with its reason
            raise NotTrainable(f"model {self.name!r}: onnx2torch cannot convert it ({type(e).__name__}: "
                               f"{' '.join(str(e).split())[:200]})") from None
        # onnx2torch's Slice indexes with a list, which torch deprecates with a warning on every call: noise here
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence", module=r"onnx2torch\.")
        return _ConvertedOnnx(module, index, self.layout, self.pooling).train().requires_grad_(True)

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        x = batch.detach().to("cpu", torch.float32)
        if self.layout == "NHWC":
            x = x.permute(0, 2, 3, 1)
        names = [self.features_name, *([self.logits_name] if self.logits_name else [])]
        outputs = self._require("session").run(names, {self.input_name: np.ascontiguousarray(x.numpy())})
        features = torch.from_numpy(np.asarray(outputs[0], np.float32))
        out = {"features": _pool(features, self.pooling, f"model {self.name!r}").reshape(len(x), -1)}
        if self.logits_name:
            out["logits"] = torch.from_numpy(np.asarray(outputs[1], np.float32).reshape(len(x), -1))
        return out


def _constants_as_initializers(model: Any) -> Any:
    """``model`` with every floating-point ``Constant`` node's tensor moved to the initializers: Paddle2ONNX stores the
    weights as Constant nodes, which onnx2torch cannot convert (it reads Conv weights from initializers) nor would
    train. Integer constants (shape arithmetic of exported graphs) stay as they are."""
    import onnx

    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
    graph = model.graph
    constants = [n for n in graph.node if n.op_type == "Constant" and [a.name for a in n.attribute] == ["value"]
                 and n.attribute[0].t.data_type in floats]
    for node in constants:
        tensor = node.attribute[0].t
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        graph.node.remove(node)
    return model


def _pool(features: torch.Tensor, pooling: Pooling, what: str) -> torch.Tensor:
    """``avg``: a ``(N, C, H, W)`` map averaged over H and W; ``flatten``: unchanged (flattened by the caller)."""
    if pooling == "flatten":
        return features
    if features.ndim != 4:
        raise FaceZooError(f"{what}: pooling 'avg' needs a (N, C, H, W) feature tensor, got shape "
                           f"{tuple(features.shape)}")
    return features.mean((2, 3))


class _ConvertedOnnx(torch.nn.Module):
    """An ONNX graph converted to PyTorch: ``(B, 3, H, W)`` in (transposed if the graph wants NHWC), features out
    (output ``features_index`` of several, or the only one when None; pooled as the adapter pools them)."""

    def __init__(self, module: torch.nn.Module, features_index: int | None, layout: str, pooling: Pooling = "flatten"):
        super().__init__()
        self.module, self.features_index, self.layout, self.pooling = module, features_index, layout, pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.module(x.permute(0, 2, 3, 1) if self.layout == "NHWC" else x)
        features = outputs if self.features_index is None else outputs[self.features_index]
        return _pool(features, self.pooling, "converted ONNX graph").reshape(len(x), -1)


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
                 preprocessing: dict[str, Any] | None = None, layout: Layout = "auto", features: str | None = None,
                 pooling: Pooling = "flatten") -> OnnxAdapter:
    """The adapter of the ONNX file ``path``; ``defaults`` are the recipe's, ``preprocessing`` the user's overrides;
    ``features`` names the feature tensor (default: the classifier's input), ``pooling`` how it becomes a vector."""
    import onnx
    import onnxruntime as ort
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise FaceZooError(f"ONNX file {str(path)!r} does not exist")
    try:
        proto = onnx.load(str(path))
    except DecodeError as e:
        raise FaceZooError(f"{str(path)!r} is not an ONNX model: {e}") from None
    if pooling not in POOLINGS:
        raise FaceZooError(f"{source}: pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    try:
        model, tensor, logits = expose_tensor(proto, features) if features else expose_penultimate(proto)
    except FaceZooError as e:
        raise FaceZooError(f"{source}: {e}") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # ORT warns about the unused initialisers of every exported graph
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    layout, side = _input_geometry(session, layout, source)
    transform = ImagePreprocessing.build({"size": side or 224, **(defaults or {})}, preprocessing, source)
    return OnnxAdapter(name=name, source=source, session=session, transform=transform, layout=layout,
                       features_name=tensor, logits_name=logits, digest=file_digest(path), path=path,
                       named_features=features is not None, pooling=pooling)


@register_source("onnx", syntax="onnx:<path to .onnx>",
                 description="an ONNX image classifier (penultimate features = the input of its last MatMul/Gemm, "
                             "or a named tensor, average-pooled)")
def onnx_model(ref: str, *, name: str, source: str, preprocessing: dict[str, Any] | None = None,
               layout: Layout = "auto", features: str | None = None, pooling: Pooling = "flatten") -> OnnxAdapter:
    """``onnx:<path>``. Options: ``preprocessing`` (fields of :class:`ImagePreprocessing`: size, resize, resize_mode,
    interpolation, jpeg_roundtrip, pixel_max, channel_order, mean, std; default: ImageNet's recipe at the graph's input
    size), ``layout`` (``NCHW``/``NHWC``; default: read from the input shape), ``features`` (the name of the tensor to
    use as features, for a graph without a classifier; default: the input of the last MatMul/Gemm), ``pooling``
    (``flatten``, or ``avg``: a ``(N, C, H, W)`` feature map averaged over H and W)."""
    if layout not in ("auto", "NCHW", "NHWC"):
        raise FaceZooError(f"{source}: layout must be 'auto', 'NCHW' or 'NHWC', got {layout!r}")
    if features is not None and (not isinstance(features, str) or not features):
        raise FaceZooError(f"{source}: features must be the name of a tensor of the graph, got {features!r}")
    return onnx_adapter(Path(ref).expanduser(), name=name, source=source, preprocessing=preprocessing, layout=layout,
                        features=features, pooling=pooling)
