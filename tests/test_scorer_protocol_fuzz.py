"""A state machine over RASR's feature-scorer calls, right and wrong, on real models.

Hypothesis drives one scorer (real ONNX files, real ONNX Runtime) through
RASR's calls (/work/shared/spec/rasr-protocol.md, section 1) in any order,
with arguments of every wrong kind, and holds it to a model of what the
scorer's buffer holds after each call:

- every call either does what the protocol says or raises a library error
  (a ``SprintifaceError``) whose message names the argument that was wrong
  (``time``, ``num_frames``, ``feature``, ``input_dim``...), never a
  TypeError/ValueError/OverflowError from inside;
- a refused call leaves the buffer as it was; after every step the buffered
  frames (``get_features()``) are exactly the model's;
- every score row served equals a bare ``InferenceSession.run`` of the frames
  in the buffer plus the -log transform (float64 reference), and so does the
  next valid segment after any sequence of errors.

Inputs that trigger a known library bug are left out of the state machine
(``KNOWN_BUGS``) and pinned by a strict xfail test each, at the end of this file.
"""
from __future__ import annotations

import enum
import operator
import re
from typing import Callable, ClassVar, NamedTuple, Optional

import numpy
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, \
    run_state_machine_as_test
from onnx_models import build_blstm, build_mlp, save_model
from scorer_reference import ReferenceScorer, assert_scores, rasr_module_init

import sprintiface
from sprintiface import SprintifaceError

INPUT_DIM, OUTPUT_DIM = 12, 30
CHUNK_FRAMES = 6
PRIOR_SCALE = 0.6

#: Library bugs this suite found and that are still open: inputs that trigger
#: them are not drawn, and a strict xfail test below pins each. Remove an
#: entry when its test passes.
KNOWN_BUGS = {}


# -- the models and configs ------------------------------------------------------

class Setup(NamedTuple):
    name: str
    config: str
    reference: ReferenceScorer
    buffer_size: int


@pytest.fixture(scope="module")
def setups(tmp_path_factory):
    """The scorer configurations the machine chooses from, on model files written once."""
    folder = tmp_path_factory.mktemp("fuzz_models")
    mlp, blstm = str(folder / "mlp.onnx"), str(folder / "blstm.onnx")
    save_model(build_mlp(INPUT_DIM, OUTPUT_DIM, (16,), seed=11), mlp)
    save_model(build_blstm(INPUT_DIM, OUTPUT_DIM, hidden=8, seed=12), blstm)
    prior = numpy.random.default_rng(13).random(OUTPUT_DIM) + 0.05
    log_prior = numpy.log(prior / prior.sum())
    prior_path = folder / "prior.txt"
    prior_path.write_text("\n".join(f"{v:.9g}" for v in log_prior) + "\n")
    # What the scorer adds: the prior as it reads it (float32), times the scale.
    prior_term = numpy.float32(PRIOR_SCALE) * log_prior.astype(numpy.float32)
    quiet = "log_level:warning"
    return [
        Setup("mlp", f"onnx:{mlp},{quiet}", ReferenceScorer(mlp), -1),
        Setup("blstm+prior", f"onnx:{blstm},prior_file:{prior_path},prior_scale:{PRIOR_SCALE},{quiet}",
              ReferenceScorer(blstm, prior_term=prior_term), -1),
        Setup("mlp chunked", f"onnx:{mlp},buffer_size:{CHUNK_FRAMES},{quiet}", ReferenceScorer(mlp), CHUNK_FRAMES),
        Setup("blstm chunked", f"onnx:{blstm},buffer_size:{CHUNK_FRAMES},{quiet}", ReferenceScorer(blstm),
              CHUNK_FRAMES),
    ]


# -- arguments of every kind -------------------------------------------------------

class Feature(NamedTuple):
    """A ``feature`` argument: what is passed, and the float32 frame the buffer must then hold
    (None when the argument must be refused)."""
    label: str
    value: object
    stored: Optional[numpy.ndarray]


def _wide(values: numpy.ndarray, dtype, step: int) -> numpy.ndarray:
    storage = numpy.zeros(values.size * step, dtype=dtype)
    storage[::step] = values
    return storage


def _accepted_feature_kinds() -> list[tuple[str, bool, Callable[[numpy.ndarray], object]]]:
    """Frames RASR could send (or a caller on RASR's behalf): float32 or float64 vectors of
    length input_dim in native byte order, any strides, ndarray or buffer. Each kind is
    (label, takes float64 values, make from values)."""
    f32, f64 = numpy.float32, numpy.float64
    return [
        ("fresh float32", False, lambda v: numpy.array(v, dtype=f32)),
        ("explicit little-endian float32", False, lambda v: v.astype("<f4")),
        ("strided float32 (every 3rd)", False, lambda v: _wide(v, f32, 3)[::3]),
        ("negative stride float32", False, lambda v: numpy.ascontiguousarray(v[::-1])[::-1]),
        ("column of a C matrix", False,
         lambda v: numpy.ascontiguousarray(numpy.stack([v, numpy.full_like(v, 7)]).T)[:, 0]),
        ("read-only float32", False, lambda v: _read_only(v)),
        ("memoryview float32", False, lambda v: memoryview(numpy.array(v))),
        ("memoryview strided float32", False, lambda v: memoryview(_wide(v, f32, 2))[::2]),
        ("memoryview negative stride float32", False, lambda v: memoryview(numpy.ascontiguousarray(v[::-1]))[::-1]),
        ("unaligned float32 (odd byte offset)", False, lambda v: _unaligned(v, f32, 0)),
        ("odd byte stride float32 (5 bytes)", False, lambda v: _unaligned(v, f32, 1)),
        ("memoryview unaligned float32", False, lambda v: memoryview(_unaligned(v, f32, 3))),
        ("float64", True, lambda v: numpy.array(v, dtype=f64)),
        ("unaligned strided float64", True, lambda v: _unaligned(v, f64, 3)),
        ("strided float64", True, lambda v: _wide(v, f64, 2)[::2]),
        ("memoryview strided float64", True, lambda v: memoryview(_wide(v, f64, 3))[::3]),
    ]


def _unaligned(values: numpy.ndarray, dtype, gap: int) -> numpy.ndarray:
    """``values`` as a ``dtype`` array at an odd address, ``gap`` bytes between values."""
    itemsize = numpy.dtype(dtype).itemsize
    stride = itemsize + gap
    storage = numpy.zeros(1 + stride * values.size, dtype=numpy.uint8)
    array = numpy.ndarray(values.shape, dtype=dtype, buffer=storage.data, offset=1, strides=(stride,))
    array[:] = values
    return array


def _read_only(values: numpy.ndarray) -> numpy.ndarray:
    array = numpy.array(values)
    array.flags.writeable = False
    return array


def _refused_feature_kinds(dim: int) -> list[tuple[str, Callable[[numpy.ndarray], object]]]:
    """Arguments that are not a frame of input_dim float32/float64 values: must be refused,
    never converted."""
    return [
        ("too long", lambda v: numpy.concatenate([v, v[:1]])),
        ("too short", lambda v: numpy.array(v[:-1])),
        ("empty", lambda v: numpy.zeros(0, numpy.float32)),
        ("0-d", lambda v: numpy.array(v[0])),
        ("row matrix (1, F)", lambda v: numpy.array(v)[None]),
        ("column matrix (F, 1)", lambda v: numpy.array(v)[:, None]),
        ("int32", lambda v: v.astype(numpy.int32)),
        ("int64", lambda v: v.astype(numpy.int64)),
        ("uint8", lambda v: v.astype(numpy.uint8)),
        ("float16", lambda v: v.astype(numpy.float16)),
        ("bool", lambda v: v > 0),
        ("object", lambda v: v.astype(object)),
        ("complex64", lambda v: v.astype(numpy.complex64)),
        ("big-endian float32", lambda v: v.astype(">f4")),
        ("big-endian float64", lambda v: v.astype(">f8")),
        ("strided int32", lambda v: _wide(v.astype(numpy.int32), numpy.int32, 2)[::2]),
        ("memoryview int32", lambda v: memoryview(v.astype(numpy.int32))),
        ("memoryview strided int32", lambda v: memoryview(_wide(v.astype(numpy.int32), numpy.int32, 2))[::2]),
        ("memoryview strided float16", lambda v: memoryview(_wide(v.astype(numpy.float16), numpy.float16, 2))[::2]),
        ("memoryview of bytes", lambda v: memoryview(numpy.array(v).tobytes())),
        ("bytes", lambda v: numpy.array(v).tobytes()),
        ("list of floats", lambda v: [float(x) for x in v]),
        ("list of None", lambda v: [None] * dim),
        ("tuple of floats", lambda v: tuple(float(x) for x in v)),
        ("None", lambda v: None),
        ("str", lambda v: "0.5 " * dim),
        ("float scalar", lambda v: float(v[0])),
        ("numpy float32 scalar", lambda v: v[0]),
    ]


@st.composite
def frame_values(draw, dim: int = INPUT_DIM) -> numpy.ndarray:
    """float32 (dim,) feature values; sometimes with a NaN or an infinity in them."""
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([1.0, 1.0, 0.01, 3.0]))  # no softmax underflow: the reference stays exact
    values = (numpy.random.default_rng(seed).standard_normal(dim) * scale).astype(numpy.float32)
    special = draw(st.sampled_from([None] * 24 + [numpy.nan, numpy.inf, -numpy.inf]))
    if special is not None:
        values[draw(st.integers(0, dim - 1))] = special
    return values


@st.composite
def features_arg(draw, dim: int = INPUT_DIM) -> Feature:
    values = draw(frame_values(dim))
    if draw(st.integers(0, 3)) == 0:
        label, make = draw(st.sampled_from(_refused_feature_kinds(dim)))
        with numpy.errstate(invalid="ignore", over="ignore"):  # NaN to int: any value will do
            return Feature(label, make(values), None)
    label, wide, make = draw(st.sampled_from(_accepted_feature_kinds()))
    if wide:
        # float64 values, some between float32 ones (and some beyond float32's range):
        # the buffer holds them rounded to nearest float32, as numpy rounds.
        values64 = values.astype(numpy.float64) * draw(st.sampled_from([1.0, 1 + 1e-9]))
        if draw(st.integers(0, 15)) == 0:
            values64[draw(st.integers(0, dim - 1))] = draw(st.sampled_from([1e39, -1e300]))
        with numpy.errstate(over="ignore"):
            return Feature(label, make(values64), values64.astype(numpy.float32))
    return Feature(label, make(values), values)


class IntSubclass(int):
    """An int that is not exactly int (as an IntEnum is)."""


class Colour(enum.IntEnum):
    ZERO = 0


def _index_value(value) -> Optional[int]:
    """The integer a protocol argument stands for, or None when it is not an integer
    (bool, float, str, None...). Any __index__ type counts, as ``operator.index`` says."""
    if isinstance(value, (bool, numpy.bool_)):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


@st.composite
def count_arg(draw, right: int, allow_index_types: bool = True):
    """A ``time`` or ``num_frames`` argument, around the ``right`` value."""
    same = [right, right] + ([numpy.int64(right), numpy.int32(right), numpy.uint32(right), IntSubclass(right)]
                             if allow_index_types else [])
    wrong = [right + 1, right - 1, right + 2, -1, 2**31, 2**63, 2**64, 2**70, -2**70, float(right), 0.0,
             numpy.float64(right), None, str(right), True, False, numpy.True_, [right], right + 0.5, complex(right)]
    if allow_index_types:
        wrong += [numpy.int64(right + 1), numpy.int64(-1), numpy.uint64(2**64 - 1)]
    return draw(st.sampled_from(same) if draw(st.integers(0, 2)) else st.sampled_from(wrong))


# -- checking a refused call --------------------------------------------------------

Check = tuple[str, Callable[[str], bool]]


def shows_value(name: str, value) -> Check:
    """The message names ``name`` and shows the ``value`` that came."""
    return (f"{name} and its value {value!r}",
            lambda message: name in message and any(text in message for text in {repr(value), str(value)}))


def mentions(*words: str) -> Check:
    return (" or ".join(words), lambda message: any(word in message for word in words))


#: A refused frame: the message says what was expected and what came.
BAD_FEATURE: Check = ("feature, expected and got",
                      lambda message: "feature" in message and "expected" in message and "got" in message)


def expect_refused(call, *checks: Check, what: str) -> SprintifaceError:
    """``call()`` must raise a SprintifaceError whose message passes one of ``checks``
    (one per thing wrong with the call)."""
    try:
        call()
    except SprintifaceError as error:
        message = str(error)
        assert any(check(message) for _, check in checks), (
            f"{what}: the message names none of [{'; '.join(label for label, _ in checks)}]: "
            f"{type(error).__name__}: {message}")
        return error
    raise AssertionError(f"{what}: accepted, but it must be refused ({'; '.join(label for label, _ in checks)})")


# -- the machine ------------------------------------------------------------------------

class Scores(enum.Enum):
    NONE = "none"      # get_scores must refuse every time
    VALID = "valid"    # get_scores must serve rows [0, len(frames)) of the reference
    MAYBE = "maybe"    # after a refused call: either refused, or the valid rows


class ScorerProtocol(RuleBasedStateMachine):
    """One scorer object as RASR holds it, and the model of its buffer."""

    setups: ClassVar[list[Setup]] = []

    def __init__(self):
        super().__init__()
        self.setup: Optional[Setup] = None
        self.scorer = None
        self.initialized = False
        self.frames: list[numpy.ndarray] = []   # what the buffer holds (float32 (F,) each)
        self.scores = Scores.NONE
        self.expected: Optional[numpy.ndarray] = None   # reference (T, C) of the last compute
        self.failed_since_reset = False   # a refused call since the last reset forgives its count

    # -- module init ----------------------------------------------------------------

    @initialize(index=st.integers(0, 3), then_init=st.integers(0, 7))
    def module_init(self, index, then_init):
        """RASR's module init; mostly followed by the scorer's init, as RASR does."""
        self.setup = self.setups[index]
        self.scorer = rasr_module_init(sprintiface, self.setup.config)
        if then_init:
            self.init((INPUT_DIM, OUTPUT_DIM))

    @rule(unit=st.sampled_from(["PythonTrainer", "PythonSegmentOrder", "", None]))
    def module_init_for_another_unit(self, unit):
        expect_refused(lambda: sprintiface.init(name="Sprint.PythonControl", sprint_unit=unit, reference=None,
                                                callback=None, version_number=5, config=self.setup.config),
                       shows_value("sprint_unit", unit), what=f"init(sprint_unit={unit!r})")

    @rule(then_init=st.integers(0, 3))
    def module_init_again(self, then_init):
        """A second scorer object from the same config (the first is dropped, as a
        restarted RASR would drop it): it starts uninitialised."""
        self.scorer = rasr_module_init(sprintiface, self.setup.config)
        self.initialized, self.frames, self.scores, self.expected = False, [], Scores.NONE, None
        self.failed_since_reset = False
        if then_init:
            self.init((INPUT_DIM, OUTPUT_DIM))

    # -- init and buffer size ---------------------------------------------------------

    @rule(dims=st.sampled_from([(INPUT_DIM, OUTPUT_DIM)] * 4 + [
        (INPUT_DIM + 1, OUTPUT_DIM), (INPUT_DIM, OUTPUT_DIM - 1), (0, OUTPUT_DIM), (INPUT_DIM, -1),
        (2**70, OUTPUT_DIM), (float(INPUT_DIM), OUTPUT_DIM), (INPUT_DIM, None), (str(INPUT_DIM), OUTPUT_DIM),
        (True, OUTPUT_DIM), (INPUT_DIM, numpy.int64(OUTPUT_DIM))]))
    def init(self, dims):
        input_dim, output_dim = dims
        right_input = _index_value(input_dim) == INPUT_DIM and not isinstance(input_dim, numpy.integer)
        right_output = _index_value(output_dim) == OUTPUT_DIM and not isinstance(output_dim, numpy.integer)
        call = lambda: self.scorer.init(input_dim=input_dim, output_dim=output_dim)  # noqa: E731 - the call _attempt() makes and checks
        if right_input and right_output:
            call()
        elif isinstance(input_dim, numpy.integer) or isinstance(output_dim, numpy.integer):
            # RASR passes Python ints; a numpy int may be taken or refused, not misread.
            try:
                call()
            except SprintifaceError as error:
                assert re.search("input_dim|output_dim", str(error)), str(error)
                return
        else:
            checks = ([mentions("input_dim", "feature-dimension")] if not right_input else []) + \
                     ([mentions("output_dim", "output dimension")] if not right_output else [])
            expect_refused(call, *checks, what=f"init(input_dim={input_dim!r}, output_dim={output_dim!r})")
            return  # a refused init leaves the scorer as it was
        self.initialized = True
        self.frames, self.scores, self.expected, self.failed_since_reset = [], Scores.NONE, None, False

    @rule()
    def get_feature_buffer_size(self):
        size = self.scorer.get_feature_buffer_size()
        assert type(size) is int and size == self.setup.buffer_size, size

    # -- per frame --------------------------------------------------------------------

    @rule(feature=features_arg(), data=st.data())
    def add_feature(self, feature, data):
        count = len(self.frames)
        time = data.draw(count_arg(count), label="time")
        call = lambda: self.scorer.add_feature(feature=feature.value, time=time)  # noqa: E731 - the call _attempt() makes and checks
        what = f"add_feature(feature={feature.label}, time={time!r}) with {count} frames buffered"
        if not self.initialized:
            expect_refused(call, mentions("init"), what=what)
            return
        problems = []
        if _index_value(time) != count:
            problems.append(shows_value("time", time))
        if 0 < self.setup.buffer_size <= count:
            problems.append(mentions("buffer_size"))
        if feature.stored is None:
            problems.append(BAD_FEATURE)
        if problems:
            expect_refused(call, *problems, what=what)
            self._refused()
            return
        call()
        self.frames.append(feature.stored)
        self.scores, self.expected = Scores.NONE, None

    @precondition(lambda self: self.initialized)
    @rule(values=st.lists(frame_values(), min_size=1, max_size=8), data=st.data())
    def add_frames(self, values, data):
        """Frames as RASR sends them (right times, accepted kinds), up to the buffer's limit."""
        kinds = _accepted_feature_kinds()
        for frame in values:
            if 0 < self.setup.buffer_size <= len(self.frames):
                break
            _, wide, make = kinds[data.draw(st.integers(0, len(kinds) - 1))]
            self.scorer.add_feature(feature=make(frame.astype(numpy.float64) if wide else frame),
                                    time=len(self.frames))
            self.frames.append(frame)
            self.scores, self.expected = Scores.NONE, None

    @rule(data=st.data(), asks=st.integers(1, 6))
    def get_scores(self, data, asks):
        """``asks`` positions in any order, repeats included (the aligner asks each 2-4 times);
        after a compute mostly valid ones."""
        count = len(self.frames)
        index_types = "get_scores-index-types" not in KNOWN_BUGS
        for _ in range(asks):
            if self.scores is not Scores.NONE and count and data.draw(st.integers(0, 4)):
                time = data.draw(st.integers(0, count - 1), label="time")
                if index_types and data.draw(st.integers(0, 4)) == 0:
                    time = data.draw(st.sampled_from([numpy.int64, numpy.int32, numpy.uint16, IntSubclass]))(time)
            else:
                time = data.draw(count_arg(data.draw(st.integers(0, max(count - 1, 0))), index_types),
                                 label="time")
            self._check_get_scores(time)

    def _check_get_scores(self, time):
        index = _index_value(time)
        what = f"get_scores(time={time!r}) with {len(self.frames)} frames ({self.scores.value} scores)"
        call = lambda: numpy.array(self.scorer.get_scores(time=time))  # noqa: E731 - a call for _attempt(), as in the other rules; RASR copies the row at once
        if not self.initialized:
            expect_refused(call, mentions("init"), what=what)
            return
        servable = index is not None and 0 <= index < len(self.frames)
        if self.scores is Scores.NONE or not servable:
            expect_refused(call, shows_value("time", time), what=what)
            self._refused()
            return
        if self.scores is Scores.MAYBE:
            try:
                row = call()
            except SprintifaceError as error:
                assert "time" in str(error) or "compute" in str(error), str(error)
                return
        else:
            row = call()
        assert row.shape == (OUTPUT_DIM,) and row.dtype in (numpy.float32, numpy.float64), (row.shape, row.dtype)
        assert_scores(row.astype(numpy.float64), self.expected[index], what)

    # -- per buffer ---------------------------------------------------------------------

    @rule(data=st.data())
    def compute(self, data):
        count = len(self.frames)
        num_frames = data.draw(count_arg(count), label="num_frames")
        what = f"compute(num_frames={num_frames!r}) with {count} frames"
        call = lambda: self.scorer.compute(num_frames=num_frames)  # noqa: E731 - the call _attempt() makes and checks
        if not self.initialized:
            expect_refused(call, mentions("init"), what=what)
            return
        if _index_value(num_frames) != count or count == 0:
            expect_refused(call, shows_value("num_frames", num_frames), what=what)
            self._refused()
            return
        bad = [t for t, frame in enumerate(self.frames) if not numpy.isfinite(frame).all()]
        if bad:
            error = expect_refused(call, mentions(f"frame {bad[0]}"), what=what)
            assert isinstance(error, sprintiface.FeatureError), repr(error)
            self._refused()
            return
        call()
        self.expected = self.setup.reference.scores(numpy.stack(self.frames))
        self.scores = Scores.VALID

    @rule(data=st.data())
    def reset(self, data):
        count = len(self.frames)
        num_frames = data.draw(count_arg(count), label="num_frames")
        what = f"reset(num_frames={num_frames!r}) with {count} frames"
        call = lambda: self.scorer.reset(num_frames=num_frames)  # noqa: E731 - the call _attempt() makes and checks
        value = _index_value(num_frames)
        if not self.initialized:
            if value == 0:
                call()  # RASR's reset(num_frames=0) before the first segment
            else:
                expect_refused(call, shows_value("num_frames", num_frames), what=what)
            return
        if value is None:
            expect_refused(call, shows_value("num_frames", num_frames), what=what)
            self._refused()
            return  # not a count: nothing is dropped
        if value == count:
            call()
        elif self.failed_since_reset:
            try:  # after a refused call the count may disagree: forgiven (or refused, still dropped)
                call()
            except SprintifaceError as error:
                assert "num_frames" in str(error), str(error)
        else:
            expect_refused(call, shows_value("num_frames", num_frames), what=what)
        # The buffer is dropped whether the count agreed or not.
        self.frames, self.scores, self.expected, self.failed_since_reset = [], Scores.NONE, None, False

    @rule()
    def exit(self):
        self.scorer.exit()
        if self.initialized:
            self.frames, self.scores, self.expected = [], Scores.NONE, None

    def _refused(self):
        self.failed_since_reset = True
        if self.scores is Scores.VALID:
            self.scores = Scores.MAYBE

    # -- whole segments as RASR sends them ------------------------------------------------

    @precondition(lambda self: self.initialized)
    @rule(length=st.one_of(st.integers(1, 25), st.integers(1, 25), st.integers(1, 25),
                           st.sampled_from([1023, 1025, 2100])),
          seed=st.integers(0, 2**32 - 1), repeats=st.integers(0, 3), leave_full=st.booleans())
    def valid_segment(self, length, seed, repeats, leave_full):
        """reset (right count), add_feature per frame, compute, every row asked 1 + ``repeats``
        times in shuffled order (as the aligner does); must equal the reference."""
        if 0 < self.setup.buffer_size < length:
            length = 1 + length % self.setup.buffer_size
        rng = numpy.random.default_rng(seed)
        self.scorer.reset(num_frames=len(self.frames))
        x = rng.standard_normal((length, INPUT_DIM)).astype(numpy.float32)
        for t in range(length):
            self.scorer.add_feature(feature=numpy.array(x[t]), time=t)
        self.scorer.compute(num_frames=length)
        expected = self.setup.reference.scores(x)
        positions = numpy.concatenate([numpy.arange(length)] + [rng.integers(0, length, min(length, 50))
                                                                 for _ in range(repeats)])
        rng.shuffle(positions)
        rows = numpy.stack([numpy.array(self.scorer.get_scores(time=t), dtype=numpy.float64)
                            for t in positions.tolist()])
        assert_scores(rows, expected[positions], f"{self.setup.name}: valid segment of {length} frames, "
                                                 f"rows in the order {positions.tolist()[:20]}...")
        self.frames, self.scores, self.expected, self.failed_since_reset = list(x), Scores.VALID, expected, False
        if not leave_full:
            self.scorer.reset(num_frames=length)
            self.frames, self.scores, self.expected = [], Scores.NONE, None

    # -- after every step ----------------------------------------------------------------------

    @invariant()
    def buffer_holds_the_models_frames(self):
        if not self.initialized:
            return
        held = self.scorer.get_features()
        assert held.shape == (INPUT_DIM, len(self.frames)), held.shape
        if self.frames:
            numpy.testing.assert_array_equal(held.T, numpy.stack(self.frames))


def test_scorer_protocol_state_machine(setups):
    ScorerProtocol.setups = setups
    run_state_machine_as_test(ScorerProtocol, settings=settings(
        max_examples=300, stateful_step_count=50, deadline=None, database=None, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]))


# -- bugs this suite found, fixed: kept as tests ----------------------------------------------

@pytest.mark.parametrize("index_type", [numpy.int64, numpy.int32, IntSubclass, Colour])
def test_get_scores_takes_the_index_types_add_feature_takes(setups, index_type):
    setup = setups[0]
    scorer = rasr_module_init(sprintiface, setup.config)
    scorer.init(input_dim=INPUT_DIM, output_dim=OUTPUT_DIM)
    x = numpy.ones((1, INPUT_DIM), numpy.float32)
    scorer.add_feature(feature=x[0], time=index_type(0))  # taken
    scorer.compute(num_frames=1)
    row = scorer.get_scores(time=index_type(0))
    assert_scores(numpy.array(row, dtype=numpy.float64), setup.reference.scores(x)[0])
