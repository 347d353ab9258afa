"""int8 that pays, or says it does not (``sprintiface prepare MODEL -o OUT --quantize``).

:func:`quantize` builds several int8 variants of a (prepared, float32) model,
measures each against the float model on the same frames, and picks one:

- ``dynamic-all``: ONNX Runtime's dynamic quantization of every op type it
  supports (per channel, int8 weights);
- ``dynamic-weights``: dynamic quantization of the MatMul/Gemm nodes whose one
  input is a constant weight only — activation-by-activation MatMuls (attention's
  QK^T and AV) stay float;
- ``dynamic-<Op>`` for each op type of MatMul, Gemm, LSTM, Conv, Attention
  the graph has;
- with ``--features``: ``static-weights`` and ``static-all``, QDQ quantization
  (uint8 activations, int8 per-channel weights) calibrated on the user's frames.

Variants that would quantize the same nodes, or come out of ONNX Runtime's
quantizer with the same int8 nodes, are measured once. Speed is a
measurement, not one run: rounds of interleaved cycles (float, variant 1,
variant 2, ..., float, ...), one intra-op thread as the scorer runs, medians per
round; rounds are repeated until the last two agree within :data:`STABLE_WITHIN`
for every variant (at most :data:`MAX_ROUNDS`), and both are reported. Accuracy
is best-class agreement and the score difference through the scorer's own -log
transform (sprintiface.scores.neg_log_scores) on every sample frame.

The chosen variant is the fastest one at least ``min_speedup`` times as fast as
float whose agreement is at least ``min_agreement``. When none is, no int8
model is chosen (the caller writes the float model and says so), unless
``keep_slower``: then the fastest variant meeting the agreement (else the most
accurate one) is chosen anyway.
"""
from __future__ import annotations

import contextlib
import logging
import os
import statistics
import time
from dataclasses import dataclass, field
from collections.abc import Iterable, Iterator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Callable

import numpy

from sprintiface.errors import ModelError

if TYPE_CHECKING:  # annotations only (postponed): onnx is prepare's, the engine is imported when measuring
    from onnx import ModelProto

    from sprintiface.engine import OnnxEngine

#: Defaults of the selection rule (``prepare --min-speedup`` / ``--min-agreement``). 0.95: on random
#: normal features (the default sample) best-class agreement is pessimistic — random weights give flat
#: posteriors, where small score changes flip the best class — and the 124 MB MLP's int8 model, at
#: 96-97% there, recognised the same words as float32 in RASR (issue 16); give --features for real figures.
MIN_SPEEDUP = 1.10
MIN_AGREEMENT = 0.95
#: The last two rounds of every variant's speed-up agree within this share: the figure is a measurement.
STABLE_WITHIN = 0.15
MAX_ROUNDS = 6
#: Cycles (float, every variant) per round.
CYCLES_PER_ROUND = 5
#: Frames scored for accuracy (and calibration), and the part of them each timing cycle runs.
SAMPLE_FRAMES = 2000
TIMING_FRAMES = 500
#: Op types with a variant of their own, when the graph has them.
OP_TYPES = ("MatMul", "Gemm", "LSTM", "Conv", "Attention")
WEIGHT_OP_TYPES = ("MatMul", "Gemm")

#: x86 flags (/proc/cpuinfo) of int8 dot-product instructions, best first, with what they are.
X86_INT8 = (("amx_int8", "AMX-INT8 (tile matrix multiply)"), ("avx512_vnni", "AVX512-VNNI (vpdpbusd)"),
            ("avx_vnni", "AVX-VNNI (vpdpbusd, 256 bit)"), ("avx512bw", "AVX512BW (vpmaddubsw)"),
            ("avx2", "AVX2 (vpmaddubsw)"))
#: aarch64 features (/proc/cpuinfo) of int8 dot-product instructions, best first.
ARM_INT8 = (("i8mm", "I8MM (smmla)"), ("asimddp", "dot product (sdot)"), ("asimd", "NEON (smull)"))


@dataclass
class VariantResult:
    """One int8 variant measured against float32 on the same frames."""

    name: str
    description: str
    quantized_nodes: list[str]           # the float graph's nodes that are int8 in the variant's graph
    top1_agreement: float | None = None
    max_score_difference: float | None = None
    mean_score_difference: float | None = None
    int8_us_per_frame: float | None = None
    speedup: float | None = None       # float time / variant time, medians over every round
    round_speedups: list[float] = field(default_factory=list)  # the same per round: the last two agree
    error: str | None = None           # why the variant could not be built or run (not measured then)
    same_as: str | None = None         # an earlier variant that came out with the same int8 nodes: its figures


@dataclass
class QuantizationReport:
    """Every int8 variant measured, the one chosen (or none, and why), and the CPU's int8 instructions."""

    frames: int                          # frames the accuracy is measured on
    features: str                        # what they are
    timing_frames: int                   # frames each timing cycle runs (per engine)
    float_us_per_frame: float
    variants: list[VariantResult]
    chosen: str | None                # the variant written, or None: the float model is written
    message: str                         # the decision in one sentence
    int8_instructions: list[str]         # this CPU's, best first
    min_speedup: float
    min_agreement: float
    rounds: int                          # timing rounds measured
    stable: bool                         # the last two rounds agreed within STABLE_WITHIN for every variant
    calibration: str | None = None    # what the static variants were calibrated on
    noise: float = 0.0                   # largest relative difference between the last two rounds

    def variant(self, name: str) -> VariantResult:
        """The measured variant ``name`` (KeyError when it was not measured)."""
        return report_variant(self.variants, name)


def report_variant(results: Sequence[VariantResult], name: str) -> VariantResult:
    """The result named ``name`` (KeyError when there is none)."""
    for result in results:
        if result.name == name:
            return result
    raise KeyError(name)


def int8_instructions(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """This CPU's int8 dot-product instructions, best first (what ONNX Runtime's int8 kernels
    dispatch to is the first of them), read from the kernel's flags; [] when unreadable."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as file:
            text = file.read()
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
            break  # every core of a node reports the same
    table = X86_INT8 if "avx2" in flags or "sse2" in flags else ARM_INT8
    return [described for flag, described in table if flag in flags]


def describe_instructions(instructions: Sequence[str]) -> str:
    """One line for the report: the instructions, and AMX's absence said where it is absent."""
    if not instructions:
        return "no int8 dot-product instructions known to sprintiface (int8 is unlikely to pay)"
    text = ", ".join(instructions)
    if not any(name.startswith("AMX") for name in instructions) and any("AVX" in name for name in instructions):
        text += "; no AMX"
    return text


# -- the variants -------------------------------------------------------------------------

@dataclass
class _Variant:
    name: str
    description: str
    nodes: list[str]
    build: Callable[[str, str], None]     # (float path, variant path)


def _constant_names(model: ModelProto) -> set[str]:
    names = {tensor.name for tensor in model.graph.initializer}
    names.update(output for node in model.graph.node if node.op_type == "Constant" for output in node.output)
    return names


def weight_nodes(model: ModelProto, op_types: Sequence[str] = WEIGHT_OP_TYPES) -> list[str]:
    """Names of the ``op_types`` nodes of ``model`` whose one input is a constant weight
    (an initializer or a Constant's output) and the other an activation: attention's
    activation-by-activation MatMuls (QK^T, AV) are not among them."""
    constants = _constant_names(model)
    found: list[str] = []
    for node in model.graph.node:
        if node.op_type in op_types and len(node.input) >= 2:
            first, second = (name in constants for name in node.input[:2])
            if first != second:
                found.append(node.name)
    return found


_DEQUANTIZE = "DequantizeLinear"


def _is_int8_op(op_type: str) -> bool:
    """Whether ``op_type`` computes in integers: MatMulInteger, ConvInteger,
    DynamicQuantizeMatMul/LSTM, QAttention, QLinear*, QGemm ... (not the quantize and
    dequantize steps themselves)."""
    if op_type in ("DynamicQuantizeLinear", "QuantizeLinear"):
        return False
    return op_type.endswith("Integer") or op_type.startswith("DynamicQuantize") or \
        (len(op_type) > 1 and op_type[0] == "Q" and op_type[1].isupper())


def int8_nodes(float_model: ModelProto, variant_model: ModelProto, asked: Iterable[str]) -> list[str]:
    """Which of the nodes ``asked`` (of ``float_model``) are int8 in ``variant_model``:
    gone and replaced by an integer op named after them (dynamic quantization makes
    ``<name>_quant``; a Gemm becomes ``<name>_MatMul_quant``), or kept with every data input
    of the two first fed by a DequantizeLinear (static QDQ, which ONNX Runtime fuses into an
    int8 kernel at load). A node the quantizer left float is not counted, nor a float node
    that merely reads a quantized tensor (a residual Add)."""
    produced_by = {output: node.op_type for node in variant_model.graph.node for output in node.output}
    variant_ops = {node.name: node for node in variant_model.graph.node}
    integer_names = [node.name for node in variant_model.graph.node if _is_int8_op(node.op_type)]
    constants = _constant_names(variant_model)
    found = []
    for node in float_model.graph.node:
        if node.name not in asked:
            continue
        kept = variant_ops.get(node.name)
        if kept is None or kept.op_type != node.op_type:
            if any(name.startswith(node.name + "_") for name in integer_names):
                found.append(node.name)
            continue
        data = [name for name in kept.input[:2] if name and name not in constants]
        if data and all(produced_by.get(name) == _DEQUANTIZE for name in data):
            found.append(node.name)
    return found


def _name_nodes(model: ModelProto) -> None:
    """Give every unnamed node a unique name: ONNX Runtime's quantizer selects nodes by name."""
    taken = {node.name for node in model.graph.node if node.name}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


#: Every variant name :func:`quantize` may measure (``dynamic-<Op>`` for the op types of OP_TYPES).
VARIANT_NAMES = ("dynamic-all", "dynamic-weights", *(f"dynamic-{op}" for op in OP_TYPES), "static-weights",
                 "static-all")


def _variants(model: ModelProto, calibration: list[dict[str, numpy.ndarray]] | None,
              wanted: Sequence[str] | None = None) -> list[_Variant]:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry

    present = {node.op_type for node in model.graph.node}

    def by_type(op_types: Iterable[str]) -> list[str]:
        return [node.name for node in model.graph.node if node.op_type in op_types]

    gemms = {node.name for node in model.graph.node if node.op_type == "Gemm"}
    gemm_weights = weight_nodes(model, ("Gemm",))

    # reduce_range in both builds: 7-bit weights. x86 CPUs without VNNI (AVX2, AVX512BW)
    # multiply uint8 by int8 with vpmaddubsw, whose 16-bit sums saturate on full-range
    # weights: best-class agreement fell from 98% to 87% on an attention block on an AVX2
    # CPU. A file prepared on a VNNI machine meets such nodes in a cluster, so every int8
    # file is made safe for them.

    def dynamic(op_types: Iterable[str], nodes: Iterable[str]) -> Callable[[str, str], None]:
        # ONNX Runtime has no integer Gemm: its dynamic quantizer first rewrites every Gemm
        # into MatMul + Add named <gemm>_MatMul and <gemm>_Add and selects nodes after that,
        # so a Gemm is asked for under its MatMul's name (attention's output projection).
        chosen = list(nodes)
        chosen += [f"{name}_MatMul" for name in chosen if name in gemms]
        types = sorted(set(op_types) | ({"MatMul", "Gemm"} if gemms & set(chosen) else set()))

        def build(source: str, target: str) -> None:
            quantize_dynamic(source, target, op_types_to_quantize=types, nodes_to_quantize=chosen,
                             per_channel=True, reduce_range=True, weight_type=QuantType.QInt8)
        return build

    def static(op_types: Iterable[str], nodes: Iterable[str]) -> Callable[[str, str], None]:
        def build(source: str, target: str) -> None:
            quantize_static(source, target, _Reader(calibration or []), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(op_types), nodes_to_quantize=list(nodes), per_channel=True,
                            reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return build

    dynamic_types = sorted(present & set(IntegerOpsRegistry))
    weights = weight_nodes(model)
    every = by_type(dynamic_types) + gemm_weights
    found = [_Variant("dynamic-all", "dynamic, every op type ONNX Runtime quantizes: "
                      + ", ".join(sorted(set(dynamic_types) | ({"Gemm"} & present))), every,
                      dynamic(dynamic_types, every)),
             _Variant("dynamic-weights", "dynamic, MatMul/Gemm with a constant weight only "
                      "(activation-by-activation MatMuls stay float)", weights, dynamic(WEIGHT_OP_TYPES, weights))]
    for op_type in OP_TYPES:
        if op_type == "Gemm" and op_type in present:  # quantized as the MatMul it is rewritten into
            found.append(_Variant("dynamic-Gemm", "dynamic, Gemm nodes with a constant weight only", gemm_weights,
                                  dynamic([], gemm_weights)))
        elif op_type in present and op_type in IntegerOpsRegistry:
            nodes = by_type([op_type])
            found.append(_Variant(f"dynamic-{op_type}", f"dynamic, {op_type} nodes only", nodes,
                                  dynamic([op_type], nodes)))
    if calibration is not None:
        static_weights = weight_nodes(model, ("MatMul", "Gemm", "Conv"))
        static_types = sorted(present & set(QDQRegistry))
        found.append(_Variant("static-weights", "static QDQ calibrated on the features, MatMul/Gemm/Conv with a "
                              "constant weight only", static_weights, static(("MatMul", "Gemm", "Conv"),
                                                                            static_weights)))
        found.append(_Variant("static-all", "static QDQ calibrated on the features, every op type: "
                              + ", ".join(static_types), by_type(static_types),
                              static(static_types, by_type(static_types))))
    unique: list[_Variant] = []
    seen: list[tuple[str, frozenset[str]]] = []
    # Those asked for first (``wanted``; all when None), then the same nodes the same way
    # measured once, under the first name: a variant asked for by name is never dropped as
    # the twin of one that was not asked for.
    found = [variant for variant in found if wanted is None or variant.name in wanted]
    for variant in found:
        key = (variant.name.split("-")[0], frozenset(variant.nodes))
        if variant.nodes and key not in seen:
            seen.append(key)
            unique.append(variant)
    return unique


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over prepared feeds, one segment per call."""

    def __init__(self, feeds: list[dict[str, numpy.ndarray]]):
        self._feeds: Iterator[dict[str, numpy.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, numpy.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:
        pass


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantizer advises on the root logger and its calibration sessions warn on
    stderr (unused initializers: the cut bias); the report says what matters, so mute both here."""
    import onnxruntime

    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)
    onnxruntime.set_default_logger_severity(3)
    try:
        yield
    finally:
        onnxruntime.set_default_logger_severity(2)  # ONNX Runtime's default
        logging.disable(disabled)


# -- measuring ----------------------------------------------------------------------------

def _sample(sample_features: str | None, input_dim: int | None) \
        -> tuple[list[numpy.ndarray], str, list[numpy.ndarray] | None, str | None]:
    """(evaluation segments, described, calibration segments or None, calibration described)."""
    if not sample_features:
        if input_dim is None:
            raise ModelError("prepare --quantize: the model's feature axis is dynamic; give --features to "
                             "compare on (expected a feature file, got none)")
        rng = numpy.random.default_rng(0)
        segments = [rng.standard_normal((500, input_dim)).astype(numpy.float32) for _ in range(4)]
        return segments, "random normal features (pessimistic: give --features for real ones)", None, None
    from sprintiface.feature_files import read_segments

    evaluation: list[numpy.ndarray] = []
    calibration: list[numpy.ndarray] = []
    for index, (_, frames) in enumerate(read_segments(sample_features)):
        # alternate segments, so that the static variants are compared on frames they were not calibrated on
        full = [sum(len(s) for s in part) >= SAMPLE_FRAMES for part in (evaluation, calibration)]
        if all(full):
            break
        (calibration if (index % 2 and not full[1]) or full[0] else evaluation).append(frames)
    if not evaluation:
        raise ModelError(f"prepare --quantize: the feature file {sample_features!r} holds no segments "
                         f"(expected at least one to compare on)")
    if calibration:
        return evaluation, sample_features, calibration, f"other segments of {sample_features}"
    return evaluation, sample_features, evaluation, f"the same frames of {sample_features} (it has no more)"


def _scores(engine: OnnxEngine, segments: Iterable[numpy.ndarray]) -> numpy.ndarray:
    from sprintiface.scores import neg_log_scores

    return numpy.concatenate([neg_log_scores(engine.forward(frames), engine.kind, engine.logit_bias)
                              for frames in segments])


def _timing_segments(segments: list[numpy.ndarray]) -> list[numpy.ndarray]:
    chosen: list[numpy.ndarray] = []
    for frames in segments:
        if chosen and sum(len(s) for s in chosen) + len(frames) > TIMING_FRAMES:
            break
        chosen.append(frames)
    return chosen


def _time(engines: Sequence[OnnxEngine], segments: Sequence[numpy.ndarray], cycles: int) -> list[list[float]]:
    """CPU seconds of this thread for one pass over ``segments`` per engine, ``cycles`` times,
    interleaved. With one intra-op thread ONNX Runtime computes on the calling thread, so
    this is the job's compute; wall time on a busy node measures the scheduler instead (a
    pass of a few ms phase-locks with other processes' time slices: 0.1x to 18x per round)."""
    seconds: list[list[float]] = [[] for _ in engines]
    for _ in range(cycles):
        for index, engine in enumerate(engines):
            started = time.thread_time()
            for frames in segments:
                engine.forward(frames)
            seconds[index].append(time.thread_time() - started)
    return seconds


def measure(float_path: str, variants: list[tuple[str, str]], segments: list[numpy.ndarray], *,
            cycles: int = CYCLES_PER_ROUND, max_rounds: int = MAX_ROUNDS) \
        -> tuple[float, dict[str, tuple[float, list[float]]], int, bool, float]:
    """Speed of each ``(name, path)`` against the model at ``float_path`` on ``segments``:
    ``(float seconds per pass, {name: (seconds per pass, [speed-up per round])}, rounds, stable, noise)``.
    Rounds of ``cycles`` interleaved passes are measured until the last two agree within
    STABLE_WITHIN for every variant, at most ``max_rounds``."""
    from sprintiface.engine import OnnxEngine

    engines = [OnnxEngine(float_path)] + [OnnxEngine(path) for _, path in variants]
    for engine in engines:  # warm at these lengths: allocation, packing, first-run paths
        for frames in segments:
            engine.forward(frames)
    rounds: list[list[list[float]]] = []
    noise = float("inf")
    while len(rounds) < max_rounds:
        rounds.append(_time(engines, segments, cycles))
        if len(rounds) >= 2:
            last = [[statistics.median(r[0]) / statistics.median(r[i]) for r in rounds[-2:]]
                    for i in range(1, len(engines))]
            noise = max((abs(a - b) / ((a + b) / 2) for a, b in last), default=0.0)
            if noise <= STABLE_WITHIN:
                break
    everything = [[s for r in rounds for s in r[i]] for i in range(len(engines))]
    float_seconds = statistics.median(everything[0])
    results: dict[str, tuple[float, list[float]]] = {}
    for index, (name, _) in enumerate(variants, start=1):
        per_round = [statistics.median(r[0]) / statistics.median(r[index]) for r in rounds]
        results[name] = (statistics.median(everything[index]), per_round)
    return float_seconds, results, len(rounds), noise <= STABLE_WITHIN, (0.0 if noise == float("inf") else noise)


def _choose(results: list[VariantResult], min_speedup: float, min_agreement: float,
            keep_slower: bool) -> tuple[str | None, str]:
    """(the chosen variant's name or None, the decision in one sentence): the selection rule."""
    measured = [(r.name, r.speedup, r.top1_agreement) for r in results
                if r.speedup is not None and r.top1_agreement is not None and r.same_as is None]
    accurate = [m for m in measured if m[2] >= min_agreement]
    paying = [m for m in accurate if m[1] >= min_speedup]
    rule = f"at least {min_speedup:.2f}x as fast as float32 with best-class agreement of {100 * min_agreement:.1f}%"
    if paying:
        name, speedup, agreement = max(paying, key=lambda m: (m[1], m[2]))
        return name, (f"int8 pays: {name} is {speedup:.2f}x as fast as float32 with {100 * agreement:.1f}% "
                      f"best-class agreement (the fastest variant {rule})")
    if not results:
        return None, ("int8 does not pay: the model has no nodes the variants asked for quantize; "
                      "wrote the float32 model")
    if not measured:
        return None, "int8 does not pay: no variant could be built and run; wrote the float32 model"
    if keep_slower:
        pool = accurate or [max(measured, key=lambda m: m[2])]
        name, speedup, agreement = max(pool, key=lambda m: (m[1], m[2]))
        return name, (f"int8 does not pay (no variant is {rule}); --keep-slower: wrote {name} anyway "
                      f"({speedup:.2f}x, {100 * agreement:.1f}% agreement)")
    return None, (f"int8 does not pay: no variant is {rule}; wrote the float32 model, no int8 model "
                  f"(--keep-slower writes the best variant anyway)")


def quantize(onnx: ModuleType, model: ModelProto, metadata: dict[str, str], work: str, sample_features: str | None, *,
             min_speedup: float = MIN_SPEEDUP, min_agreement: float = MIN_AGREEMENT, keep_slower: bool = False,
             set_metadata: Callable[[ModelProto, dict[str, str]], None],
             save: Callable[[ModuleType, ModelProto, str], None], variants: Sequence[str] | None = None,
             cycles: int = CYCLES_PER_ROUND, max_rounds: int = MAX_ROUNDS) \
        -> tuple[ModelProto | None, QuantizationReport]:
    """Measure the int8 variants of ``model`` (float32, prepared: its plan in ``metadata``) in the
    scratch folder ``work`` on ``sample_features`` (random normal frames when None) and choose one
    (see the module docstring). Returns ``(the chosen int8 model or None, QuantizationReport)``;
    ``model`` is not changed. ``set_metadata(model, entries)`` and ``save(onnx, model, path)``
    are prepare's (metadata entries; a model with its weights in a file beside it). ``variants``:
    measure only these (names of VARIANT_NAMES; those the graph has no nodes for are left out)."""
    from sprintiface.engine import OnnxEngine

    if min_speedup < 0 or not 0 <= min_agreement <= 1:
        raise ModelError(f"prepare --quantize: expected --min-speedup >= 0 and --min-agreement in [0, 1], got "
                         f"{min_speedup} and {min_agreement}")
    unknown = sorted(set(variants or ()) - set(VARIANT_NAMES))
    if unknown:
        raise ModelError(f"prepare --quantize: expected variants among {', '.join(VARIANT_NAMES)}, got "
                         f"{', '.join(unknown)}")
    named = onnx.ModelProto()
    named.CopyFrom(model)
    _name_nodes(named)
    set_metadata(named, metadata)
    float_path = os.path.join(work, "float.onnx")
    save(onnx, named, float_path)
    reference = OnnxEngine(float_path)
    segments, described, calibration_segments, calibrated_on = _sample(sample_features, reference.input_dim)
    calibration = None if calibration_segments is None else [reference._feeds(f) for f in calibration_segments]
    expected = _scores(reference, segments)
    results: list[VariantResult] = []
    built: list[tuple[str, str]] = []
    outcomes: dict[tuple[str, frozenset[str]], str] = {}
    for variant in _variants(named, calibration, variants):
        result = VariantResult(variant.name, variant.description, [])
        results.append(result)
        path = os.path.join(work, f"{variant.name}.onnx")
        try:
            with _quiet():
                variant.build(float_path, path)
            quantized = onnx.load(path)
            result.quantized_nodes = int8_nodes(named, quantized, set(variant.nodes))
            outcome = (variant.name.split("-")[0], frozenset(result.quantized_nodes))
            if not result.quantized_nodes:
                result.error = "the quantizer left every node float"
                continue
            if outcome in outcomes:  # the quantizer skipped what made it differ: measured once
                result.same_as = outcomes[outcome]
                continue
            outcomes[outcome] = variant.name
            set_metadata(quantized, metadata)
            onnx.save_model(quantized, path)
            got = _scores(OnnxEngine(path), segments)
        except Exception as error:  # a variant ONNX Runtime cannot build or run is reported, not fatal
            result.error = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            continue
        difference = numpy.abs(got.astype(numpy.float64) - expected)
        finite = numpy.isfinite(difference)  # a masked class scores the floor in both: no difference
        result.top1_agreement = float(numpy.mean(expected.argmin(axis=1) == got.argmin(axis=1)))
        result.max_score_difference = float(difference[finite].max()) if finite.any() else 0.0
        result.mean_score_difference = float(difference[finite].mean()) if finite.any() else 0.0
        built.append((variant.name, path))
    del reference
    timing = _timing_segments(segments)
    timing_frames = sum(len(s) for s in timing)
    float_seconds, rounds, stable, noise = 0.0, 0, True, 0.0
    if built:
        float_seconds, speeds, rounds, stable, noise = measure(float_path, built, timing, cycles=cycles,
                                                               max_rounds=max_rounds)
        for result in results:
            if result.name in speeds:
                seconds, per_round = speeds[result.name]
                result.int8_us_per_frame = seconds / timing_frames * 1e6
                result.speedup = float_seconds / seconds
                result.round_speedups = per_round
    for result in results:
        if result.same_as is not None:
            first = report_variant(results, result.same_as)
            for name in ("top1_agreement", "max_score_difference", "mean_score_difference", "int8_us_per_frame",
                         "speedup", "round_speedups"):
                setattr(result, name, getattr(first, name))
    chosen, message = _choose(results, min_speedup, min_agreement, keep_slower)
    report = QuantizationReport(
        frames=int(expected.shape[0]), features=described, timing_frames=timing_frames,
        float_us_per_frame=float_seconds / max(timing_frames, 1) * 1e6, variants=results, chosen=chosen,
        message=message, int8_instructions=int8_instructions(), min_speedup=min_speedup,
        min_agreement=min_agreement, rounds=rounds, stable=stable, calibration=calibrated_on, noise=noise)
    if chosen is None:
        return None, report
    chosen_model = onnx.load(os.path.join(work, f"{chosen}.onnx"))
    set_metadata(chosen_model, metadata)
    return chosen_model, report


def report_lines(report: QuantizationReport) -> list[str]:
    """The report as the CLI prints it: the frames, a table of every variant, the decision."""
    lines = [f"int8 against float32 on {report.frames} frames of {report.features} "
             f"(speed: CPU time of {report.timing_frames} frames per pass, 1 thread, medians of {report.rounds} "
             f"rounds of interleaved passes; the last two rounds differ by {100 * report.noise:.0f}%"
             f"{'' if report.stable else f', more than {100 * STABLE_WITHIN:.0f}%: the machine is noisy'})"]
    if report.calibration:
        lines.append(f"  static variants calibrated on {report.calibration}")
    else:
        lines.append("  static variants not measured: they need --features to calibrate on")
    lines.append(f"  CPU int8 instructions: {describe_instructions(report.int8_instructions)}")
    lines.append(f"  float32: {report.float_us_per_frame:.1f} us per frame")
    lines.append(f"  {'variant':<16} {'nodes':>5} {'agrees':>7} {'max diff':>9} {'mean diff':>9} "
                 f"{'us/frame':>9} {'speed-up':>8}  per round")
    for r in report.variants:
        if r.error is not None or r.top1_agreement is None:
            lines.append(f"  {r.name:<16} {len(r.quantized_nodes):>5} not measured: {r.error}")
            continue
        speed = f"{r.int8_us_per_frame:>9.1f} {r.speedup:>7.2f}x" if r.speedup is not None else f"{'-':>9} {'-':>8}"
        mark = " <- written" if r.name == report.chosen else f" (= {r.same_as})" if r.same_as else ""
        rounds = " ".join(f"{s:.2f}x" for s in r.round_speedups)
        lines.append(f"  {r.name:<16} {len(r.quantized_nodes):>5} {100 * r.top1_agreement:>6.1f}% "
                     f"{r.max_score_difference:>9.4f} {r.mean_score_difference:>9.4f} {speed}  {rounds}{mark}")
    lines.append(f"  {report.message}")
    return lines
