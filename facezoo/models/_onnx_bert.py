"""A BERT encoder exported to ONNX by sentence-transformers, read back into transformers' ``BertModel``.

The ONNX file is only a container of weights here: rebuilt as a ``BertModel`` the encoder is fine-tuned, exported and
pooled exactly like any ``hf:`` encoder. Named initialisers (embeddings, biases, LayerNorms) keep their PyTorch names
under the exporter's prefix; the exporter renamed the linear layers' weights (``onnx::MatMul_470``) and stored them
transposed, so each is named after the bias its ``MatMul`` output is added to.
"""

from __future__ import annotations

from pathlib import Path

import torch

from facezoo.errors import FaceZooError

__all__ = ["bert_from_onnx"]


def _state_dict(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    state = {k.removeprefix(prefix): torch.from_numpy(v.copy()) for k, v in weights.items() if k.startswith(prefix)}
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights or node.input[1].startswith(prefix):
            continue
        bias = next((i for c in consumers.get(node.output[0], ()) if c.op_type == "Add"
                     for i in c.input if i.startswith(prefix) and i.endswith(".bias")), None)
        if bias is None:
            raise FaceZooError(f"{path}: MatMul {node.name!r} adds no named bias: not a sentence-transformers BERT "
                               f"export")
        weight = bias.removeprefix(prefix).removesuffix(".bias") + ".weight"
        state[weight] = torch.from_numpy(weights[node.input[1]].T.copy())
    return state


def bert_from_onnx(path: Path, *, layers: int, heads: int, prefix: str = "model.0.auto_model.") -> torch.nn.Module:
    """The ``BertModel`` (no pooler) whose weights the ONNX file ``path`` holds; ``layers``/``heads`` are the model
    card's (the head count is not recoverable from weight shapes). Every parameter must come from the file."""
    from transformers import BertConfig, BertModel

    state = _state_dict(path, prefix)
    vocab, hidden = state["embeddings.word_embeddings.weight"].shape
    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=state["encoder.layer.0.intermediate.dense.weight"].shape[0],
                        max_position_embeddings=state["embeddings.position_embeddings.weight"].shape[0],
                        type_vocab_size=state["embeddings.token_type_embeddings.weight"].shape[0])
    model = BertModel(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "embeddings.position_ids"]  # a buffer, not a weight
    if missing or unexpected:
        raise FaceZooError(f"{path}: the ONNX weights do not fill a {layers}-layer BERT (missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]})")
    return model.eval()
