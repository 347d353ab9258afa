"""The plan: how a model is fed and read, as the engine needs it — without the onnx package.

:class:`ModelInterface` says which inputs get the features and the length, which
output is served and what it holds (``output_kind``, one of
:data:`sprintiface.scores.OUTPUT_KINDS`), and the bias of a final softmax cut
off the graph. :mod:`sprintiface.graph` makes it from an ``onnx.ModelProto``;
``sprintiface prepare`` records it in the model's metadata
(:func:`interface_to_metadata`, key :data:`PLAN_KEY`), from which a prepared
model loads with onnxruntime and numpy alone (:func:`interface_from_metadata`).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy

from sprintiface.errors import ModelError

#: onnx.TensorProto element types by enum value, named as ONNX names them (lower case).
ELEMENT_TYPES = {1: "float", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
                 9: "bool", 10: "float16", 11: "double", 12: "uint32", 13: "uint64", 16: "bfloat16"}
FLOAT32, INT32, INT64, FLOAT16, DOUBLE, BFLOAT16 = 1, 6, 7, 10, 11, 16
LENGTH_DTYPES = {INT32: numpy.int32, INT64: numpy.int64}
#: The final normalisations a model may end in, and what their output holds.
KIND_OF_OP = {"Softmax": "probs", "LogSoftmax": "log_probs"}

#: Names (lower-cased, shell patterns) that mark an int32/int64 input of shape [B] or [] as the
#: sequence length, fed T: RETURNN's ``data:size1``, RASR's ``features-size``, torch exports'
#: ``lengths``, i6-models' ``audio_features_len``, ``seq_len``, ``*_lens``, ``num_frames``.
LENGTH_NAME_PATTERNS = ("*length*", "*size*", "*len", "*lens", "*frames")
#: Words that name another size (a name holding one is not taken for the length, e.g. ``batch_size``).
NOT_LENGTH_WORDS = ("batch", "beam", "chunk", "window", "vocab")


def looks_like_length(name: str) -> bool:
    """Whether an integer input called ``name`` is, by its name, the sequence length
    (:data:`LENGTH_NAME_PATTERNS`, none of :data:`NOT_LENGTH_WORDS`; case-insensitive)."""
    import fnmatch

    lowered = name.lower()
    return any(fnmatch.fnmatchcase(lowered, pattern) for pattern in LENGTH_NAME_PATTERNS) and \
        not any(word in lowered for word in NOT_LENGTH_WORDS)


class TensorInfo(NamedTuple):
    """A graph input or output: name, element type (onnx.TensorProto enum value) and
    shape (per axis an int, a symbolic name, or None), or None for an unknown rank."""

    name: str
    elem_type: int
    shape: Optional[tuple[object, ...]]

    @property
    def rank(self) -> Optional[int]:
        return None if self.shape is None else len(self.shape)

    def describe(self) -> str:
        """E.g. ``'data' float [B, T, 40]``."""
        type_name = ELEMENT_TYPES.get(self.elem_type, f"type {self.elem_type}")
        shape = "?" if self.shape is None else "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"
        return f"{self.name!r} {type_name} {shape}"


class ModelInterface(NamedTuple):
    """How to feed a model and read it, and what its output holds.

    ``output_kind`` is what the model's own output holds; ``served_output`` and
    ``served_kind`` what the engine reads once a final Softmax/LogSoftmax is cut
    (else the output itself); ``logit_bias`` float32 (C,) is a bias Add cut with it.
    ``input_dim`` / ``output_dim`` are the static feature and class axes (None
    when dynamic).
    """

    path: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    feature_input: TensorInfo
    length_input: Optional[TensorInfo]
    output: TensorInfo
    output_op: Optional[str]
    output_kind: str
    served_output: str
    served_kind: str
    logit_bias: Optional[numpy.ndarray]
    input_dim: Optional[int]
    output_dim: Optional[int]

    @property
    def cut(self) -> bool:
        """Whether a final Softmax/LogSoftmax is applied by sprintiface instead of the graph."""
        return self.served_output != self.output.name


# -- what `sprintiface prepare` records in the model ---------------------------------

#: The metadata_props key of a prepared model's plan (a JSON ModelInterface).
PLAN_KEY = "sprintiface.plan"
#: 2: the length input is the one length_name names or whose name says it is a length
#: (:func:`looks_like_length`); version 1 took any lone integer input for it.
PLAN_VERSION = 2


def _tensor_to_json(tensor: TensorInfo) -> dict[str, Any]:
    return {"name": tensor.name, "elem_type": tensor.elem_type,
            "shape": None if tensor.shape is None else list(tensor.shape)}


def _tensor_from_json(value: dict[str, Any]) -> TensorInfo:
    shape = value["shape"]
    return TensorInfo(value["name"], int(value["elem_type"]), None if shape is None else tuple(shape))


def interface_to_metadata(interface: ModelInterface) -> dict[str, str]:
    """The metadata_props entries that let a prepared model load without the onnx package."""
    # json and base64 are imported here and in interface_from_metadata: a plain model's job
    # needs neither (a cold job's import is part of its cost).
    import base64
    import json

    bias = interface.logit_bias
    plan = {
        "version": PLAN_VERSION,
        "inputs": [_tensor_to_json(t) for t in interface.inputs],
        "outputs": [_tensor_to_json(t) for t in interface.outputs],
        "feature_input": interface.feature_input.name,
        "length_input": interface.length_input.name if interface.length_input else None,
        "output": interface.output.name, "output_op": interface.output_op, "output_kind": interface.output_kind,
        "served_output": interface.served_output, "served_kind": interface.served_kind,
        # float32, little-endian, base64: bit-exact
        "logit_bias": None if bias is None else base64.b64encode(bias.astype("<f4").tobytes()).decode("ascii"),
        "input_dim": interface.input_dim, "output_dim": interface.output_dim,
    }
    return {PLAN_KEY: json.dumps(plan, separators=(",", ":"))}


def interface_from_metadata(metadata: dict[str, str], path: str) -> ModelInterface:
    """The ModelInterface a prepared model records (see :func:`interface_to_metadata`)."""
    import base64
    import json

    try:
        plan = json.loads(metadata[PLAN_KEY])
        if plan.get("version") not in (1, PLAN_VERSION):
            raise ModelError(f"ONNX model {path!r} was prepared by a sprintiface with plan version "
                             f"{plan.get('version')}, this one reads version {PLAN_VERSION}: prepare it again")
        if plan["version"] == 1 and plan["length_input"] and not looks_like_length(plan["length_input"]):
            # Version 1 fed T to a lone integer input of any name (a speaker id scored as "speaker T").
            raise ModelError(
                f"ONNX model {path!r} was prepared by an older sprintiface, which took input "
                f"{plan['length_input']!r} for the sequence length by its type alone: prepare it again (with "
                f"--length-name {plan['length_input']} if it is the length)")
        inputs = tuple(_tensor_from_json(t) for t in plan["inputs"])
        outputs = tuple(_tensor_from_json(t) for t in plan["outputs"])
        by_name = {t.name: t for t in inputs + outputs}
        bias = plan["logit_bias"]
        return ModelInterface(
            path=path, inputs=inputs, outputs=outputs, feature_input=by_name[plan["feature_input"]],
            length_input=by_name[plan["length_input"]] if plan["length_input"] else None,
            output=by_name[plan["output"]], output_op=plan["output_op"], output_kind=plan["output_kind"],
            served_output=plan["served_output"], served_kind=plan["served_kind"],
            logit_bias=None if bias is None else numpy.frombuffer(base64.b64decode(bias), dtype="<f4").astype(
                numpy.float32),
            input_dim=plan["input_dim"], output_dim=plan["output_dim"])
    except ModelError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise ModelError(f"ONNX model {path!r}: its {PLAN_KEY} metadata is damaged ({type(error).__name__}: "
                         f"{error}); prepare it again with `sprintiface prepare`") from None
