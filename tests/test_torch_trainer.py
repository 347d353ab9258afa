"""trainer:torch driven as RASR drives it (module-level calls, keyword arguments, Fortran
float32 features, uint32 alignments), and its exports recognised by the scorer.

Needs PyTorch (pip install 'sprintiface[torch]'); CI runs these alone with ``pytest -m torch``.
"""
import json
import os
import re
import socket
import subprocess
import sys
import textwrap

import numpy
import pytest
from conftest import end_training_session, rasr_scorer, score_segment

import sprintiface
from sprintiface import ConfigError, TrainerError
from sprintiface.demos import TORCH_DEMO_MODEL_FILE, frame_error_rate, synthetic_segment

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

INPUT_DIM, CLASSES = 12, 6
MLP_FILE = TORCH_DEMO_MODEL_FILE.format(input_dim=INPUT_DIM, classes=CLASSES)
#: The demo's MLP trained by plain SGD (each step is then easy to predict).
SGD_FILE = MLP_FILE + textwrap.dedent("""

    def get_optimizer(model):
        return torch.optim.SGD(model.parameters(), lr=0.1)
""")
#: A BLSTM that packs its batch by the lengths (the trace must keep T and the lengths dynamic).
BLSTM_FILE = textwrap.dedent(f"""
    import torch


    class PackedBLSTM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM({INPUT_DIM}, 16, bidirectional=True, batch_first=True)
            self.out = torch.nn.Linear(32, {CLASSES})

        def forward(self, features, lengths):
            packed = torch.nn.utils.rnn.pack_padded_sequence(features, lengths.cpu().long(), batch_first=True,
                                                             enforce_sorted=False)
            hidden, _ = self.lstm(packed)
            hidden, _ = torch.nn.utils.rnn.pad_packed_sequence(hidden, batch_first=True,
                                                               total_length=features.shape[1])
            return self.out(hidden)


    class BLSTM(PackedBLSTM):
        def forward(self, features, lengths):
            return self.out(self.lstm(features)[0])


    def get_model(epoch):
        torch.manual_seed(0)
        return MODEL()
""")


@pytest.fixture(autouse=True)
def clean_session():
    yield
    end_training_session()


def write(tmp_path, text, name="am.py"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def rasr_init(config, target_mode="target-alignment", input_dim=INPUT_DIM, output_dim=CLASSES):
    return sprintiface.init(inputDim=input_dim, outputDim=output_dim, allowDownsampling=0, config=config,
                            targetMode=target_mode, cudaEnabled=0, cudaActiveGpu=-1)


def fortran(features):
    """RASR's layout of a (T, F) segment: float32 (F, T), Fortran order."""
    return numpy.asfortranarray(features.T)


def train_through_rasr(config, names, weights=None):
    """RASR's nn-trainer with python-segment-order, target-alignment: getSegmentList, init with the
    first segment, feedInputAndTargetAlignment per segment, exit."""
    initialised = False
    for name in sprintiface.getSegmentList(corpusName="train", segmentList=names, segmentsInfo=None, config=config):
        features, labels = synthetic_segment(name, INPUT_DIM, CLASSES)
        if not initialised:
            rasr_init(config)
            initialised = True
        sprintiface.feedInputAndTargetAlignment(features=fortran(features), targetAlignment=labels,
                                                weights=None if weights is None else weights(labels),
                                                segmentName=name)
    sprintiface.exit()


def checkpoint(prefix, epoch):
    return torch.load(f"{prefix}.{epoch:03d}.pt", weights_only=True)


def held_out():
    return [synthetic_segment(f"test/{i}", INPUT_DIM, CLASSES) for i in range(6)]


def test_demo_train_recognises_with_its_exports_and_halves_the_frame_error_rate(tmp_path):
    # the installed command, away from the source tree
    result = subprocess.run([sys.executable, "-m", "sprintiface", "demo", "--train", "--epochs", "4",
                             "--directory", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rates = [float(rate) for rate in re.findall(r"through the scorer: frame error rate ([0-9.]+)%", result.stdout)]
    assert len(rates) == 4 and rates[-1] < rates[0] / 2, result.stdout
    assert sorted(os.listdir(tmp_path)) == ["am.001.onnx", "am.001.pt", "am.002.onnx", "am.002.pt", "am.003.onnx",
                                            "am.003.pt", "am.004.onnx", "am.004.pt", "am.py"]


def test_the_model_file_imports_its_neighbours_and_leaves_sys_path_as_it_was(tmp_path):
    from sprintiface.training.torch_trainer import UserModelCode

    (tmp_path / "neighbour_of_am.py").write_text("WIDTH = 3\n")
    path = write(tmp_path, "import neighbour_of_am\n\n\ndef get_model(epoch):\n    return neighbour_of_am.WIDTH\n")
    before = list(sys.path)
    try:
        code = UserModelCode(path)
        assert code.call("get_model", epoch=1, step=0) == 3
        assert sys.path == before
    finally:
        sys.modules.pop("neighbour_of_am", None)


def test_the_model_file_of_torch_training_md_trains_an_epoch(tmp_path):
    """The page's ``# am.py`` block, as it stands (50 features, 4501 classes, its optimizer,
    scheduler and learning rate), trains an epoch through RASR's calls and writes both files."""
    page = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "torch-training.md")
    with open(page, encoding="utf-8") as file:
        (code,) = re.findall(r"```python\n(# am\.py\n.*?)```", file.read(), re.S)
    model_file = write(tmp_path, code)
    prefix = tmp_path / "out" / "am"
    config = f"action:train,trainer:torch,model_file:{model_file},model:{prefix},num_epochs:1,max_seqs:2," \
             f"torch_threads:1,log_level:warning"
    features, classes = 50, 4501
    rng = numpy.random.default_rng(0)
    for index, name in enumerate(sprintiface.getSegmentList(corpusName="train", segmentList=["a", "b"],
                                                            segmentsInfo=None, config=config)):
        if index == 0:
            rasr_init(config, input_dim=features, output_dim=classes)
        frames = 20 + 5 * index
        sprintiface.feedInputAndTargetAlignment(
            features=fortran(rng.standard_normal((frames, features)).astype(numpy.float32)),
            targetAlignment=rng.integers(0, classes, frames).astype(numpy.uint32), weights=None, segmentName=name)
    sprintiface.exit()
    state = checkpoint(prefix, 1)
    assert state["step"] == 1 and state["scheduler"] is not None  # one mini-batch of two; get_optimizer's scheduler
    assert state["optimizer"]["param_groups"][0]["weight_decay"] == 0.01
    assert os.path.isfile(f"{prefix}.001.onnx")


@pytest.mark.parametrize("exporter, model", [("torchscript", "PackedBLSTM"), ("dynamo", "BLSTM")])
def test_the_export_scores_like_the_pytorch_model_in_eval_mode(tmp_path, exporter, model):
    import onnx

    model_file = write(tmp_path, BLSTM_FILE.replace("MODEL()", f"{model}()"))
    prefix = tmp_path / "out" / "am"
    config = f"action:train,trainer:torch,model_file:{model_file},model:{prefix},onnx_exporter:{exporter}," \
             f"max_seqs:2,torch_threads:1,log_level:warning"
    train_through_rasr(config.replace("max_seqs:2", "max_seqs:2,num_epochs:1"), [f"s{i}" for i in range(3)])
    graph = onnx.load(f"{prefix}.001.onnx").graph
    shapes = {value.name: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
              for value in list(graph.input) + list(graph.output)}
    assert shapes == {"data": ["B", "T", INPUT_DIM], "data:size1": ["B"], "output": ["B", "T", CLASSES]}
    assert graph.input[1].type.tensor_type.elem_type == onnx.TensorProto.INT32

    # the PyTorch model of the checkpoint, in eval mode, against the scorer on the export
    namespace = {}
    with open(model_file, encoding="utf-8") as file:
        exec(compile(file.read(), model_file, "exec"), namespace)
    reference = namespace["get_model"](1)
    reference.load_state_dict(checkpoint(prefix, 1)["model"])
    reference.eval()
    scorer = rasr_scorer(f"model:{prefix},epoch:1,log_level:warning", INPUT_DIM, CLASSES)
    for num_frames in (1, 57, 230):
        features = numpy.random.default_rng(num_frames).standard_normal((num_frames, INPUT_DIM)).astype(numpy.float32)
        with torch.no_grad():
            logits = reference(torch.from_numpy(features)[None], torch.tensor([num_frames], dtype=torch.int32))
        expected = -torch.log_softmax(logits[0], dim=-1).numpy()
        assert numpy.abs(score_segment(scorer, features) - expected).max() <= 1e-4


def test_criterion_by_sprint_learns_from_rasrs_error_signal(tmp_path):
    model_file = write(tmp_path, MLP_FILE)
    prefix = tmp_path / "am"
    config = f"action:train,trainer:torch,model_file:{model_file},model:{prefix},num_epochs:4,seq_ordering:random," \
             f"learning_rate:0.002,torch_threads:1,log_level:warning"
    names = [f"train/{i}" for i in range(24)]
    initialised = False
    for index, name in enumerate(sprintiface.getSegmentList(corpusName="train", segmentList=names,
                                                            segmentsInfo=None, config=config)):
        features, labels = synthetic_segment(name, INPUT_DIM, CLASSES)
        weights = numpy.ones(labels.shape, numpy.float32)
        weights[::5] = 0.5
        if not initialised:
            rasr_init(config, "criterion-by-sprint")
            initialised = True
        posteriors = sprintiface.feedInput(features=fortran(features), weights=weights, segmentName=name)
        assert posteriors.shape == (CLASSES, labels.shape[0]) and posteriors.dtype == numpy.float32
        numpy.testing.assert_allclose(posteriors.sum(axis=0), 1.0, rtol=1e-5)
        if index % 7 == 3:
            sprintiface.finishDiscard()
            continue
        # RASR's frame-wise cross-entropy with naturalPairingType softmax: the gradient of the
        # frame-summed criterion w.r.t. the logits, softmax minus Kronecker delta, times the weights
        frames = numpy.arange(labels.shape[0])
        error = float(-(weights * numpy.log(posteriors[labels, frames])).sum())
        signal = posteriors.copy()
        signal[labels, frames] -= 1.0
        sprintiface.finishError(error=error, errorSignal=numpy.asfortranarray(signal * weights, numpy.float32),
                                naturalPairingType="softmax")
    sprintiface.exit()
    rates = [frame_error_rate(f"model:{prefix},epoch:{epoch}", held_out(), INPUT_DIM, CLASSES) for epoch in (1, 4)]
    assert rates[1] < rates[0] / 2, rates


def _one_segment_step(tmp_path, name, target_mode, signal=None, weights=None):
    """One segment through RASR's calls (no segment ordering: one epoch, ended at exit);
    returns the checkpoint of that epoch."""
    prefix = tmp_path / name
    config = f"action:train,trainer:torch,model_file:{write(tmp_path, SGD_FILE)},model:{prefix},max_seqs:1," \
             f"torch_threads:1,queue_size:0,log_level:warning"
    features, labels = synthetic_segment("one", INPUT_DIM, CLASSES)
    rasr_init(config, target_mode)
    if target_mode == "criterion-by-sprint":
        posteriors = sprintiface.feedInput(features=fortran(features), weights=None, segmentName="one")
        if signal is None:
            sprintiface.finishDiscard()
        else:
            pairing, error_signal = signal(posteriors, labels)
            sprintiface.finishError(error=1.0, errorSignal=numpy.asfortranarray(error_signal, numpy.float32),
                                    naturalPairingType=pairing)
    else:
        sprintiface.feedInputAndTargetAlignment(features=fortran(features), targetAlignment=labels,
                                                weights=weights, segmentName="one")
    sprintiface.exit()
    return checkpoint(prefix, 1)


def _softmax_pairing(posteriors, labels):
    signal = posteriors.copy()
    signal[labels, numpy.arange(labels.shape[0])] -= 1.0
    return "softmax", signal


def _posterior_pairing(posteriors, labels):
    # d(-sum_t log p_t(label_t)) / d p: -1/p at the label, 0 elsewhere
    signal = numpy.zeros_like(posteriors)
    frames = numpy.arange(labels.shape[0])
    signal[labels, frames] = -1.0 / posteriors[labels, frames]
    return None, signal


def test_one_criterion_three_ways_make_the_same_step(tmp_path):
    # RASR's signal w.r.t. the logits, the same criterion's signal w.r.t. the posteriors, and the
    # default frame-wise cross-entropy on the alignment: one gradient, one SGD step
    by_logits = _one_segment_step(tmp_path, "logits", "criterion-by-sprint", _softmax_pairing)
    by_posteriors = _one_segment_step(tmp_path, "posteriors", "criterion-by-sprint", _posterior_pairing)
    by_alignment = _one_segment_step(tmp_path, "alignment", "target-alignment")
    discarded = _one_segment_step(tmp_path, "discarded", "criterion-by-sprint", None)
    namespace = {}
    exec(SGD_FILE, namespace)
    untouched = namespace["get_model"](1).state_dict()
    assert by_logits["step"] == by_posteriors["step"] == by_alignment["step"] == 1 and discarded["step"] == 0
    for key, value in untouched.items():
        assert torch.equal(discarded["model"][key], value)
        assert not torch.allclose(by_logits["model"][key], value)
        torch.testing.assert_close(by_posteriors["model"][key], by_logits["model"][key], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(by_alignment["model"][key], by_logits["model"][key], atol=1e-6, rtol=1e-5)


def test_frame_weights_scale_the_step(tmp_path):
    namespace = {}
    exec(SGD_FILE, namespace)
    untouched = namespace["get_model"](1).state_dict()
    ones = _one_segment_step(tmp_path, "ones", "target-alignment")
    num_frames = synthetic_segment("one", INPUT_DIM, CLASSES)[0].shape[0]
    doubled = _one_segment_step(tmp_path, "twos", "target-alignment", weights=numpy.full(num_frames, 2, numpy.float32))
    zeros = _one_segment_step(tmp_path, "zeros", "target-alignment", weights=numpy.zeros(num_frames, numpy.float32))
    for key, value in untouched.items():
        torch.testing.assert_close(doubled["model"][key] - value, 2 * (ones["model"][key] - value),
                                   atol=1e-6, rtol=1e-4)
        assert torch.equal(zeros["model"][key], value)


def test_gradient_accumulation_averages_mini_batches(tmp_path):
    # two segments of equal length: one batch of two == two batches of one accumulated
    model_file = write(tmp_path, SGD_FILE)
    segments = [synthetic_segment(name, INPUT_DIM, CLASSES, frames=(30, 30)) for name in ("a", "b", "c")]

    def run(name, extra, count):
        prefix = tmp_path / name
        rasr_init(f"action:train,trainer:torch,model_file:{model_file},model:{prefix},torch_threads:1,"
                  f"log_level:warning,{extra}")
        for index, (features, labels) in enumerate(segments[:count]):
            sprintiface.feedInputAndTargetAlignment(features=fortran(features), targetAlignment=labels, weights=None,
                                                    segmentName=f"s{index}")
        sprintiface.exit()
        return checkpoint(prefix, 1)

    together = run("together", "max_seqs:2", 2)
    accumulated = run("accumulated", "max_seqs:1,accum_grad_multiple_step:2", 2)
    assert together["step"] == accumulated["step"] == 1
    for key, value in together["model"].items():
        torch.testing.assert_close(accumulated["model"][key], value, atol=1e-6, rtol=1e-5)
    # three batches, two per step: one step, and one with the remainder at the epoch end
    assert run("remainder", "max_seqs:1,accum_grad_multiple_step:2", 3)["step"] == 2


KILLED_JOB = textwrap.dedent("""
    import os, sys, numpy, sprintiface
    from sprintiface.demos import synthetic_segment
    config, stop = sys.argv[1], int(sys.argv[2])
    names = ["train/%d" % i for i in range(10)]
    for index, name in enumerate(sprintiface.getSegmentList(corpusName="train", segmentList=names,
                                                            segmentsInfo=None, config=config)):
        if index == stop:
            os._exit(1)  # killed: no exit(), no atexit
        features, labels = synthetic_segment(name, 12, 6)
        if index == 0:
            sprintiface.init(inputDim=12, outputDim=6, allowDownsampling=0, config=config,
                             targetMode="target-alignment", cudaEnabled=0, cudaActiveGpu=-1)
        sprintiface.feedInputAndTargetAlignment(features=numpy.asfortranarray(features.T), targetAlignment=labels,
                                                weights=None, segmentName=name)
""")

DROPOUT_FILE = MLP_FILE.replace("torch.nn.ReLU(),", "torch.nn.ReLU(), torch.nn.Dropout(0.2),")


def test_a_killed_job_resumes_after_its_last_epoch_as_if_never_stopped(tmp_path):
    model_file = write(tmp_path, DROPOUT_FILE)
    names = [f"train/{i}" for i in range(10)]

    def config(folder):
        return f"action:train,trainer:torch,model_file:{model_file},model:{tmp_path / folder / 'am'}," \
               f"checkpoint_dir:{tmp_path / folder},num_epochs:3,seq_ordering:random,max_seqs:3," \
               f"torch_threads:1,log_level:warning"

    train_through_rasr(config("straight"), names)
    # killed in the middle of epoch 3 (after 25 of 30 segments), then started again with the same config
    subprocess.run([sys.executable, "-c", KILLED_JOB, config("resumed"), "25"], cwd=tmp_path, timeout=120)
    assert sorted(os.listdir(tmp_path / "resumed")) == ["am.001.onnx", "am.001.pt", "am.002.onnx", "am.002.pt",
                                                        "epoch.001.done", "epoch.002.done"]
    order = list(sprintiface.getSegmentList(corpusName="train", segmentList=names, segmentsInfo=None,
                                            config=config("resumed")))
    assert len(order) == 10  # epoch 3 only
    train_through_rasr(config("resumed"), names)
    straight, resumed = checkpoint(tmp_path / "straight" / "am", 3), checkpoint(tmp_path / "resumed" / "am", 3)
    assert resumed["step"] == straight["step"] == 12  # 4 batches per epoch
    for key, value in straight["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    for index, state in straight["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(resumed["optimizer"]["state"][index][key], value), (index, key)
    # without checkpoint_dir: start_epoch:3 continues from <model>.002.pt
    (tmp_path / "restarted").mkdir()
    os.link(tmp_path / "resumed" / "am.002.pt", tmp_path / "restarted" / "am.002.pt")
    train_through_rasr(config("restarted").replace(f"checkpoint_dir:{tmp_path / 'restarted'}", "start_epoch:3"), names)
    restarted = checkpoint(tmp_path / "restarted" / "am", 3)
    assert all(torch.equal(restarted["model"][key], value) for key, value in straight["model"].items())


def test_learning_rate_per_epoch_and_scheduler(tmp_path):
    names = ["a", "b"]
    by_function = write(tmp_path, MLP_FILE + "\n\ndef get_learning_rate(epoch):\n    return 0.1 / epoch\n", "lr.py")
    train_through_rasr(f"action:train,trainer:torch,model_file:{by_function},model:{tmp_path / 'lr'},num_epochs:3,"
                       f"torch_threads:1,log_level:warning", names)
    assert [checkpoint(tmp_path / "lr", e)["optimizer"]["param_groups"][0]["lr"] for e in (1, 2, 3)] == \
        pytest.approx([0.1, 0.05, 0.1 / 3])
    scheduled = write(tmp_path, MLP_FILE + textwrap.dedent("""

        def get_optimizer(model, learning_rate):
            optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
            return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    """), "scheduled.py")
    train_through_rasr(f"action:train,trainer:torch,model_file:{scheduled},model:{tmp_path / 'sched'},num_epochs:2,"
                       f"learning_rate:0.4,torch_threads:1,log_level:warning", names)
    states = [checkpoint(tmp_path / "sched", e) for e in (1, 2)]
    assert [s["scheduler"]["last_epoch"] for s in states] == [1, 2]
    assert [s["optimizer"]["param_groups"][0]["lr"] for s in states] == pytest.approx([0.2, 0.1])


def test_train_step_for_target_modes_without_alignments(tmp_path):
    model_file = write(tmp_path, MLP_FILE + textwrap.dedent("""

        SEEN = []

        def train_step(model, batch, epoch):
            # a toy objective: every frame of a segment is the class len(orthography) % CLASSES
            SEEN.append((epoch, [s.orthography for s in batch.segments], tuple(batch.features.shape),
                         batch.lengths.tolist(), batch.alignment))
            logits = model(batch.features, batch.lengths)
            targets = torch.tensor([len(s.orthography) % CLASSES for s in batch.segments])
            targets = targets[:, None].expand(batch.mask.shape)
            return torch.nn.functional.cross_entropy(logits[batch.mask], targets[batch.mask])
    """))
    rasr_init(f"action:train,trainer:torch,model_file:{model_file},model:{tmp_path / 'am'},max_seqs:2,queue_size:0,"
              f"log_level:warning", "target-segment-orth")
    trainer = sprintiface._training().session.trainer
    for name, orthography, num_frames in (("a", "hello world ", 5), ("b", "hi ", 7), ("c", "x ", 3)):
        features = numpy.ones((num_frames, INPUT_DIM), numpy.float32)
        sprintiface.feedInputAndTargetSegmentOrth(features=fortran(features), targetSegmentOrth=orthography,
                                                  weights=None, segmentName=name)
    sprintiface.exit()
    assert trainer.user_code.module.SEEN == [(1, ["hi ", "hello world "], (2, 7, INPUT_DIM), [7, 5], None),
                                              (1, ["x "], (1, 3, INPUT_DIM), [3], None)]
    assert checkpoint(tmp_path / "am", 1)["step"] == 2


def test_model_file_and_target_mode_errors_name_what_is_missing(tmp_path):
    prefix = tmp_path / "am"
    base = f"action:train,trainer:torch,model:{prefix},queue_size:0,log_level:warning"
    with pytest.raises(ConfigError, match="needs config key 'model_file'"):
        rasr_init(base)
    with pytest.raises(ConfigError, match="needs config key 'model'"):
        rasr_init(f"action:train,trainer:torch,model_file:{write(tmp_path, MLP_FILE)}")
    with pytest.raises(ConfigError, match=r"'model_file': no such file 'nowhere.py'"):
        rasr_init(base + ",model_file:nowhere.py")
    broken = write(tmp_path, "import torch\ndef get_model(epoch):\n    return (\n", "broken.py")
    with pytest.raises(ConfigError, match=r"(?s)model_file '.*broken.py' failed to load.*SyntaxError"):
        rasr_init(f"{base},model_file:{broken}")
    with pytest.raises(ConfigError, match="defines no get_model"):
        rasr_init(f"{base},model_file:{write(tmp_path, 'x = 1', 'empty.py')}")
    with pytest.raises(ConfigError, match=r"get_model\(\) takes parameter 'size', which sprintiface does not give"):
        rasr_init(f"{base},model_file:{write(tmp_path, 'def get_model(size): pass', 'size.py')}")
    with pytest.raises(ConfigError, match=r"target mode target-segment-orth gives no frame targets.*define train_step"):
        rasr_init(f"{base},model_file:{write(tmp_path, MLP_FILE)}", "target-segment-orth")

    features, labels = synthetic_segment("x", INPUT_DIM, CLASSES)

    def first_segment_fails(match):
        with pytest.raises(TrainerError, match=match):
            sprintiface.feedInputAndTargetAlignment(features=fortran(features), targetAlignment=labels,
                                                    weights=None, segmentName="x")
        with pytest.raises(TrainerError):  # RASR's exit() after a failure raises it again
            sprintiface.exit()

    failing = write(tmp_path, "def get_model(epoch):\n    raise ValueError('no such layer')\n", "failing.py")
    rasr_init(f"{base},model_file:{failing}")
    first_segment_fails(r"(?s)get_model\(\) in model_file '.*failing.py' failed.*no such layer")
    no_lengths = write(tmp_path, MLP_FILE.replace("def forward(self, features, lengths):",
                                                  "def forward(self, features):"), "no_lengths.py")
    rasr_init(f"{base},model_file:{no_lengths}")
    first_segment_fails(r"cannot be called as forward\(features, lengths\).*give forward a lengths")
    wrong = write(tmp_path, MLP_FILE.replace("CLASSES = 12, 6", "CLASSES = 12, 7"), "wrong.py")
    rasr_init(f"{base},model_file:{wrong},max_seqs:1")
    first_segment_fails(r"wrong.py' gave \(1, \d+, 7\).*expected logits .*C=outputDim=6")
    rasr_init(f"{base},model_file:{write(tmp_path, MLP_FILE)},start_epoch:4")
    first_segment_fails(r"starts at epoch 4 \(start_epoch\).*checkpoint '.*am.003.pt' does not")
    rasr_init(f"{base},model_file:{write(tmp_path, MLP_FILE)}", "target-generic")
    with pytest.raises(TrainerError, match=r"segment 'x' .target-generic. has no alignment.*define train_step"):
        sprintiface.feedInputAndTarget(features=fortran(features), weights=None, segmentName="x",
                                       orthography="a b ", alignment=None)


RANK_JOB = textwrap.dedent("""
    import json, os, sys, numpy, sprintiface
    from sprintiface.demos import synthetic_segment
    config, mine, mode = sys.argv[1], set(sys.argv[2].split(",")), sys.argv[3]
    names = ["train/%d" % i for i in range(9)]
    trainer = None
    for name in sprintiface.getSegmentList(corpusName="train", segmentList=names, segmentsInfo=None, config=config):
        if name.split("/")[1] not in mine:
            continue  # RASR's partition filter, after the segment ordering: another process's segment
        features, labels = synthetic_segment(name, 12, 6)
        if trainer is None:  # RASR's lazy init, with this process's first segment
            sprintiface.init(inputDim=12, outputDim=6, allowDownsampling=0, config=config, targetMode=mode,
                             cudaEnabled=0, cudaActiveGpu=-1)
            trainer = sprintiface._training().session.trainer
        features = numpy.asfortranarray(features.T)
        if mode == "target-alignment":
            sprintiface.feedInputAndTargetAlignment(features=features, targetAlignment=labels, weights=None,
                                                    segmentName=name)
            continue
        posteriors = sprintiface.feedInput(features=features, weights=None, segmentName=name)
        if name.endswith("/5"):
            sprintiface.finishDiscard()
            continue
        signal = posteriors.copy()
        signal[labels, numpy.arange(labels.shape[0])] -= 1.0
        sprintiface.finishError(error=1.0, errorSignal=signal, naturalPairingType="softmax")
    sprintiface.exit()
    print(json.dumps({"digest": trainer.parameter_digest(), "steps": trainer.step}))
""")


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("mode", ["target-alignment", "criterion-by-sprint"])
def test_two_processes_on_uneven_partitions_train_one_model(tmp_path, mode):
    # 9 segments, 3 per epoch (partition_epoch 3). Process 1's partition is segments 3 and 4: nothing
    # in epoch 1 (before its first segment), two in epoch 2, nothing in epoch 3 (after its last);
    # process 0 has the other seven (3, 1, 3 per epoch). criterion-by-sprint: RASR discards segment 5.
    model_file = write(tmp_path, MLP_FILE)
    prefix = tmp_path / "out" / "am"
    config = f"action:train,trainer:torch,model_file:{model_file},model:{prefix},checkpoint_dir:{tmp_path / 'out'}," \
             f"num_epochs:3,partition_epoch:3,max_seqs:1,torch_threads:1,queue_size:2,log_level:info"
    partitions = ["0,1,2,5,6,7,8", "3,4"]
    port = _free_port()
    processes = []
    for rank, partition in enumerate(partitions):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   OMP_NUM_THREADS="1")
        processes.append(subprocess.Popen([sys.executable, "-c", RANK_JOB, config, partition, mode], cwd=tmp_path,
                                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=180))
    finally:
        for process in processes:
            process.kill()
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert results[0]["digest"] == results[1]["digest"]
    assert results[0]["steps"] == results[1]["steps"]
    # every epoch's checkpoint and export, written by process 0 only
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        [f"am.{e:03d}.{x}" for e in (1, 2, 3) for x in ("pt", "onnx")] + [f"epoch.{e:03d}.done" for e in (1, 2, 3)])
    assert outputs[1][1].count("wrote nothing (process 0 writes)") == 3
    assert outputs[0][1].count("on all 2 processes") == 3
    # the exported model is the model both processes hold
    namespace = {}
    exec(MLP_FILE, namespace)
    final = namespace["get_model"](3)
    final.load_state_dict(checkpoint(prefix, 3)["model"])
    from sprintiface.training.torch_distributed import parameter_digest

    assert parameter_digest(final) == results[0]["digest"]
