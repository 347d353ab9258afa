"""RASR's PythonTrainer and PythonSegmentOrdering calls under a hypothesis state machine.

Calls in the right and the wrong order (init with each target mode and action,
the feedInput* calls, finishError/finishDiscard, exit, getSegmentList in
between), with right and wrong arrays (Fortran and C order, wrong inputDim,
float64, NaN, alignments out of range, integer weights). Every call must do
what ../shared/spec/rasr-protocol.md says or raise a SprintifaceError (never a
TypeError/ValueError/... from inside); after an error the next valid session
works; and what a session leaves is exactly the segments it accepted, under
dump_file after a complete run, under dump_file.partial otherwise, never a
temporary.
"""
import itertools
import os
import shutil
import tempfile

import numpy
import onnxruntime
import pytest
from onnx_models import build_mlp, save_model
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition, rule,
                                 run_state_machine_as_test)

import sprintiface
from sprintiface import ConfigError, FeatureError, ProtocolError, SprintifaceError, TrainerError

h5py = pytest.importorskip("h5py")

INPUT_DIM, OUTPUT_DIM = 12, 30
MODES = ("criterion-by-sprint", "forward-only", "unsupervised", "target-alignment", "target-segment-orth",
         "target-generic")
#: The call each target mode takes (feedInputForwarding also serves criterion-by-sprint without a trainer).
CALL_OF_MODE = {"criterion-by-sprint": "feedInput", "forward-only": "feedInputForwarding",
                "unsupervised": "feedInputUnsupervised", "target-alignment": "feedInputAndTargetAlignment",
                "target-segment-orth": "feedInputAndTargetSegmentOrth", "target-generic": "feedInputAndTarget"}
FORWARD_CALLS = ("feedInput", "feedInputForwarding")
NAMES = [f"corpus/seg{i}" for i in range(6)]
#: How a feed's input can be wrong, and the error that names it.
CORRUPTIONS = (None, None, None, "wrong input dim", "float64", "nan", "1-d", "list", "alignment out of range",
               "alignment float", "alignment length", "int weights", "weights length", "nan weights",
               "name not str")


def call(function, **kwargs):
    """Call ``function`` as RASR does (keywords only); a SprintifaceError is returned, anything else fails."""
    try:
        return function(**kwargs)
    except SprintifaceError as error:
        return error


class TrainerCalls(RuleBasedStateMachine):
    """The model: which session runs (mode, action), whether it can still complete, the
    segment it waits on, and the names it must have written."""

    base = None
    model_path = None
    reference = None

    @initialize()
    def start(self):
        self.session = None
        self.directory = tempfile.mkdtemp(dir=self.base)  # each example its own: a failure leaves no trace
        self.counter = itertools.count()

    # -- init ----------------------------------------------------------------------

    @rule(mode=st.sampled_from(MODES), action=st.sampled_from(["train", "train", "nop", "forward"]),
          queue_size=st.sampled_from([0, 2]), allow_downsampling=st.sampled_from([0, 1, True]))
    def init(self, mode, action, queue_size, allow_downsampling):
        dump = os.path.join(self.directory, f"dump{next(self.counter)}.hdf")
        config = f"action:{action},onnx:{self.model_path},queue_size:{queue_size},log_level:error"
        if action == "train":
            config += f",trainer:dump,dump_file:{dump}"
        result = call(sprintiface.init, inputDim=INPUT_DIM, outputDim=OUTPUT_DIM,
                      allowDownsampling=allow_downsampling, config=config, targetMode=mode, cudaEnabled=0,
                      cudaActiveGpu=-1)
        self._session_ends(complete=False)  # a new init ends the running session
        if action == "forward" and mode not in ("criterion-by-sprint", "forward-only"):
            assert isinstance(result, ConfigError), result
            return
        assert result is None, result
        self.session = dict(mode=mode, action=action, dump=dump, written=[], pending=None, broken=False)

    @rule(bad=st.sampled_from(["inputDim", "outputDim", "targetMode", "allowDownsampling", "config", "action"]))
    def init_wrongly(self, bad):
        arguments = dict(inputDim=INPUT_DIM, outputDim=OUTPUT_DIM, allowDownsampling=0,
                         config=f"action:nop,onnx:{self.model_path}", targetMode="unsupervised", cudaEnabled=0,
                         cudaActiveGpu=-1)
        arguments.update({"inputDim": {"inputDim": "12"}, "outputDim": {"outputDim": 31},
                          "targetMode": {"targetMode": "supervised"}, "allowDownsampling": {"allowDownsampling": 2},
                          "config": {"config": ["action:nop"]},
                          "action": {"config": "action:learn"}}[bad])
        result = call(sprintiface.init, **arguments)
        assert isinstance(result, SprintifaceError), (bad, result)
        self._session_ends(complete=False)  # even a failing init ends the running session

    # -- feeds -----------------------------------------------------------------------

    @precondition(lambda self: self.session is not None)
    @rule(frames=st.integers(1, 9), fortran=st.booleans(), seed=st.integers(0, 2**16),
          weighted=st.booleans(), name=st.sampled_from(NAMES))
    def feed_as_rasr_does(self, frames, fortran, seed, weighted, name):
        self.feed(None, True, frames, fortran, seed, None, weighted, name)

    @rule(which=st.sampled_from(sorted(set(CALL_OF_MODE.values()))), right_call=st.booleans(),
          frames=st.integers(1, 9), fortran=st.booleans(), seed=st.integers(0, 2**16),
          corruption=st.sampled_from(CORRUPTIONS), weighted=st.booleans(), name=st.sampled_from(NAMES))
    def feed(self, which, right_call, frames, fortran, seed, corruption, weighted, name):
        session = self.session
        if right_call and session is not None:
            which = CALL_OF_MODE[session["mode"]]
        rng = numpy.random.default_rng(seed)
        features = rng.standard_normal((INPUT_DIM, frames)).astype(numpy.float32)
        features = numpy.asfortranarray(features) if fortran else numpy.ascontiguousarray(features)
        alignment = rng.integers(0, OUTPUT_DIM, frames).astype(numpy.uint32)
        weights = rng.random(frames).astype(numpy.float32) if weighted else None
        corruption = self._corrupt(corruption, which)
        if corruption == "wrong input dim":
            features = numpy.asfortranarray(rng.standard_normal((INPUT_DIM + 1, frames)).astype(numpy.float32))
        elif corruption == "float64":
            features = features.astype(numpy.float64)
        elif corruption == "nan":
            features[rng.integers(INPUT_DIM), rng.integers(frames)] = numpy.nan
        elif corruption == "1-d":
            features = features[:, 0]
        elif corruption == "list":
            features = features.tolist()
        elif corruption == "alignment out of range":
            alignment[rng.integers(frames)] = OUTPUT_DIM + int(rng.integers(3))
        elif corruption == "alignment float":
            alignment = alignment.astype(numpy.float32)
        elif corruption == "alignment length":
            alignment = alignment[:-1]
        elif corruption == "int weights":
            weights = numpy.ones(frames, numpy.int32)
        elif corruption == "weights length":
            weights = numpy.ones(frames + 1, numpy.float32)
        elif corruption == "nan weights":
            weights = numpy.full(frames, numpy.nan, numpy.float32)
        segment_name = 7 if corruption == "name not str" else name
        kwargs = dict(features=features, weights=weights, segmentName=segment_name)
        if which == "feedInputAndTargetAlignment":
            kwargs["targetAlignment"] = alignment
        elif which == "feedInputAndTargetSegmentOrth":
            kwargs["targetSegmentOrth"] = "hello world "
        elif which == "feedInputAndTarget":
            kwargs.update(alignment=alignment, orthography="hello world ", speaker_name="spk", speaker_gender=None)
        result = call(getattr(sprintiface, which), **kwargs)

        if session is None:
            assert isinstance(result, ProtocolError), result
            return
        if session["broken"]:
            assert isinstance(result, TrainerError), result
            return
        if corruption is not None:
            assert isinstance(result, FeatureError), (corruption, result)
            return self._rejected()
        train = session["action"] == "train"
        criterion = session["mode"] == "criterion-by-sprint"
        if session["action"] == "forward" and which not in FORWARD_CALLS:
            assert isinstance(result, ProtocolError) and "action forward takes" in str(result), result
            return
        if which == "feedInput" and session["pending"] is not None:
            assert isinstance(result, ProtocolError) and "still waits" in str(result), result
            return self._rejected()
        if train and criterion and which == "feedInputForwarding":
            assert isinstance(result, ProtocolError) and "takes feedInput" in str(result), result
            return self._rejected()
        if which in FORWARD_CALLS:
            assert isinstance(result, numpy.ndarray), result
            assert result.shape == (OUTPUT_DIM, frames) and result.dtype == numpy.float32
            assert result.flags.f_contiguous  # RASR's zero-copy layout
            if session["action"] == "nop":
                numpy.testing.assert_allclose(result, 1.0 / OUTPUT_DIM)
            else:
                expected = self.reference.run(None, {"data": features.T[None].copy()})[0][0]
                numpy.testing.assert_allclose(result, expected.T, rtol=1e-5, atol=1e-6)
            if which == "feedInput":
                session["pending"] = name
            if train and not (criterion and which == "feedInput"):
                session["written"].append(name)
        else:
            assert result is None, result
            if train:
                session["written"].append(name)

    def _corrupt(self, corruption, which):
        """Only the corruptions that apply to ``which`` (an alignment only where one is passed)."""
        if corruption and corruption.startswith("alignment") and \
                which not in ("feedInputAndTargetAlignment", "feedInputAndTarget"):
            return None
        return corruption

    def _rejected(self):
        if self.session["action"] == "train":  # a segment lost: this run cannot complete
            self.session["broken"] = True

    @precondition(lambda self: self.session is not None and self.session["pending"] is not None)
    @rule(pairing=st.sampled_from(["softmax", None]), error=st.floats(0, 100))
    def finish_error_as_rasr_does(self, pairing, error):
        self.finish_error(True, pairing, error)

    @rule(valid=st.booleans(), pairing=st.sampled_from(["softmax", None]), error=st.floats(0, 100))
    def finish_error(self, valid, pairing, error):
        session = self.session
        frames = 1
        if session is not None and session["pending"] is not None:
            frames = sprintiface._training().session._pending_frames
        signal = numpy.asfortranarray(numpy.full((OUTPUT_DIM, frames), 0.5, numpy.float32))
        if not valid:
            signal = signal[:, :0] if frames > 1 else signal.astype(numpy.float64)
        result = call(sprintiface.finishError, error=error, errorSignal=signal, naturalPairingType=pairing)
        if session is None or session["broken"]:
            assert isinstance(result, ProtocolError if session is None else TrainerError), result
        elif session["pending"] is None:
            assert isinstance(result, ProtocolError) and "without a segment" in str(result), result
        elif not valid:
            assert isinstance(result, FeatureError) and "errorSignal" in str(result), result
        else:
            assert result is None, result
            self._settle()

    @rule()
    def finish_discard(self):
        session = self.session
        result = call(sprintiface.finishDiscard)
        if session is None or session["broken"]:
            assert isinstance(result, ProtocolError if session is None else TrainerError), result
        elif session["pending"] is None:
            assert isinstance(result, ProtocolError) and "without a segment" in str(result), result
        else:
            assert result is None, result
            self._settle()

    def _settle(self):
        session = self.session
        if session["action"] == "train" and session["mode"] == "criterion-by-sprint":
            session["written"].append(session["pending"])
        session["pending"] = None

    # -- segment order and the end -------------------------------------------------------

    @rule(ordering=st.sampled_from(["default", "random", "sorted", "laplace:2", "sorted_reverse"]),
          info=st.sampled_from(["time", "nframes", "none", "broken"]), epochs=st.integers(1, 3),
          take=st.integers(0, 20))
    def get_segment_list(self, ordering, info, epochs, take):
        segments_info = {"time": {n: {"time": 0.1 * (i + 1)} for i, n in enumerate(NAMES)},
                         "nframes": {n: {"nframes": 10 - i, "time": 1.0} for i, n in enumerate(NAMES)},
                         "none": None, "broken": {n: {"time": "long"} for n in NAMES}}[info]
        result = call(sprintiface.getSegmentList, corpusName="corpus", segmentList=list(NAMES),
                      segmentsInfo=segments_info, config=f"seq_ordering:{ordering},num_epochs:{epochs},"
                                                         f"log_level:error")
        needs_lengths = ordering != "default" and ordering != "random"
        if needs_lengths and info in ("none", "broken"):
            assert isinstance(result, ConfigError) and ("segmentsInfo" in str(result)), result
            return
        names = list(itertools.islice(result, take))
        assert len(names) == min(take, len(NAMES) * epochs) and set(names) <= set(NAMES)

    @rule()
    def exit(self):
        result = call(sprintiface.exit)
        assert result is None, result
        self._session_ends(complete=True)

    def _session_ends(self, complete):
        """What the session that ends now (exit() or a new init) must leave behind."""
        session, self.session = self.session, None
        if session is None or session["action"] != "train":
            return
        dump = session["dump"]
        if complete and not session["broken"]:
            if session["pending"] is not None and session["mode"] == "criterion-by-sprint":
                session["written"].append(session["pending"])  # exit() discards the waiting one
            expected, kept = session["written"], dump
        else:
            expected, kept = session["written"], dump + ".partial"
            assert not os.path.exists(dump)
        if not expected and kept.endswith(".partial"):
            assert not os.path.exists(kept)
            return
        with h5py.File(kept, "r") as file:
            assert [tag.decode() for tag in file["seqTags"][...]] == expected
            assert int(file.attrs["numSeqs"]) == len(expected)
            assert file["inputs"].shape[0] == int(file.attrs["numTimesteps"]) == sum(file["seqLengths"][:, 0])

    @invariant()
    def no_temporary_of_a_finished_session(self):
        running = 0 if self.session is None or self.session["action"] != "train" else 1
        temporaries = [name for name in os.listdir(self.directory) if name.endswith(".tmp")]
        assert len(temporaries) == running, temporaries

    def teardown(self):
        call(sprintiface.exit)
        sprintiface._training().schedule = None
        sprintiface._training().target_mode_override = None
        shutil.rmtree(self.directory, ignore_errors=True)


def test_trainer_calls_in_any_order_with_any_input(tmp_path):
    model_path = str(tmp_path / "mlp.onnx")
    save_model(build_mlp(INPUT_DIM, OUTPUT_DIM, (16,), seed=1), model_path)
    TrainerCalls.base = str(tmp_path)
    TrainerCalls.model_path = model_path
    TrainerCalls.reference = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    run_state_machine_as_test(TrainerCalls, settings=settings(
        max_examples=300, stateful_step_count=50, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
