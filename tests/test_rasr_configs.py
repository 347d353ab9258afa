"""Every RASR config in the docs is one RASR accepts as written.

Each ```ini block of README.md and docs/*.md, and each docs/examples/*.config, is read
as RASR reads it (``[selection]`` prefixes, ``key = value``, ``#`` comments, ``$(name)``
references) and checked against the contract in ../shared/spec/rasr-protocol.md, as
data: the nn-trainer ``action`` each target mode needs, ``buffer-type = utterance`` and
``shuffle = false`` for trainers that need whole segments, the segment order's own keys,
the feature scorer's keys in the mixture-set selection, and a pymod-config that
sprintiface's own parser takes. Then, where the block's module config can run here, it
is driven through RASR's calls (the feature scorer through sprintiface.rasr_calls, the
trainer and the segment order with keyword calls and Fortran float32 features).

Blocks that need RASR carry ``<!-- needs: RASR -->`` on the line before the fence (the
docs' marker for blocks that do not run here). A block whose modules are not sprintiface
(the native ONNX scorer, RETURNN: what a user switches from) is checked only for not
mixing in sprintiface's keys.
"""
import glob
import os
import re
from typing import NamedTuple

import numpy
import pytest
from conftest import end_training_session

import sprintiface
from onnx_models import build_mlp, save_model
from sprintiface.config import load_config
from sprintiface.rasr_calls import rasr_scorer_calls

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = "<!-- needs: RASR -->"

#: RASR master's nn-trainer, measured (spec section 2): the action each target mode needs.
SUPERVISED_MODES = ("target-alignment",)
UNSUPERVISED_MODES = ("unsupervised", "forward-only")
#: RASR's criteria that stop under unsupervised-training ("... is not unsupervised, it needs an alignment").
ALIGNMENT_CRITERIA = ("cross-entropy", "squared-error", "binary-divergence")
#: pymod-config actions whose trainer needs whole segments: action train with these trainers.
SEGMENT_TRAINERS = ("dump", "torch")


class Block(NamedTuple):
    where: str  # file:line
    text: str
    marked: bool


def ini_blocks() -> list[Block]:
    blocks = []
    paths = [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]
    for path in paths:
        with open(path, encoding="utf-8") as file:
            lines = file.read().split("\n")
        index = 0
        while index < len(lines):
            if lines[index].strip() == "```ini":
                end = lines.index("```", index + 1)
                marked = index > 0 and lines[index - 1].strip() == MARKER
                blocks.append(Block(f"{os.path.relpath(path, ROOT)}:{index + 1}",
                                    "\n".join(lines[index + 1:end]), marked))
                index = end
            index += 1
    for path in sorted(glob.glob(os.path.join(ROOT, "docs", "examples", "*.config"))):
        with open(path, encoding="utf-8") as file:
            blocks.append(Block(os.path.relpath(path, ROOT), file.read(), True))
    return blocks


def parse(text: str) -> dict[str, str]:
    """RASR's config text as ``{full key: value}``: each key prefixed by its selection,
    comments cut, ``$(name)`` resolved from the block's own keys."""
    keys: dict[str, str] = {}
    selection = ""
    for line in text.split("\n"):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        section = re.fullmatch(r"\[(.*)\]", line)
        if section:
            selection = section.group(1).strip()
            continue
        assert "=" in line, f"not a RASR config line: {line!r}"
        key, value = (part.strip() for part in line.split("=", 1))
        keys[f"{selection}.{key}" if selection else key] = value
    plain = {key.rsplit(".", 1)[-1]: value for key, value in keys.items()}

    def resolve(value: str) -> str:
        return re.sub(r"\$\(([^)]+)\)", lambda match: plain[match.group(1)], value)

    return {key: resolve(value) for key, value in keys.items()}


def value(config: dict[str, str], name: str, default=None):
    """The value of the key whose last component (after a selection) is ``name``."""
    found = [v for key, v in config.items() if key == name or key.endswith("." + name)]
    assert len(set(found)) <= 1, f"{name} is set to different values: {found}"
    return found[0] if found else default


def selection_of(config: dict[str, str], name: str) -> str:
    return next(key for key in config if key == name or key.endswith("." + name))[: -len(name)].rstrip(".")


def uses_sprintiface(config) -> bool:
    return "sprintiface" in (value(config, "pymod-name"), value(config, "python-segment-order-pymod-name"))


BLOCKS = ini_blocks()
IDS = [block.where for block in BLOCKS]


def test_the_docs_have_rasr_configs_of_every_kind():
    kinds = set()
    for block in BLOCKS:
        config = parse(block.text)
        if value(config, "feature-scorer-type") == "python-feature-scorer":
            kinds.add("scorer")
        if value(config, "trainer") == "python-trainer":
            kinds.add(value(config, "target-mode", "target-alignment"))
        if value(config, "python-segment-order") == "true":
            kinds.add("segment order")
    assert {"scorer", "segment order", "target-alignment", "criterion-by-sprint"} <= kinds, kinds


@pytest.mark.parametrize("block", BLOCKS, ids=IDS)
def test_every_rasr_block_is_marked_as_needing_rasr(block):
    assert block.marked, f"{block.where}: put {MARKER} on the line before the ```ini fence"


@pytest.mark.parametrize("block", BLOCKS, ids=IDS)
def test_every_rasr_config_follows_the_contract(block):
    config = parse(block.text)
    where = block.where
    if not uses_sprintiface(config):
        # what a user switches from (RASR's native ONNX scorer, RETURNN): no sprintiface keys in it
        pymod = value(config, "pymod-config") or ""
        assert "onnx:" not in pymod and "trainer:torch" not in pymod, where
        return
    if value(config, "feature-scorer-type") is not None:
        check_scorer(config, where)
    if value(config, "trainer") is not None:
        check_trainer(config, where)
    if any(key.rsplit(".", 1)[-1].startswith("python-segment-order") for key in config):
        check_segment_order(config, where)


def check_scorer(config, where):
    assert value(config, "feature-scorer-type") == "python-feature-scorer", where
    selection = selection_of(config, "feature-scorer-type")
    assert selection.endswith("mixture-set"), \
        f"{where}: RASR reads the feature scorer's keys from the acoustic model's mixture-set selection"
    scorer = {name: config.get(f"{selection}.{name}") for name in
              ("file", "feature-dimension", "python-feature-scorer-output-dimension", "pymod-name", "pymod-config")}
    missing = [name for name, text in scorer.items() if text is None]
    assert not missing, f"{where}: {missing} missing from the mixture-set selection [{selection}]"
    assert scorer["pymod-name"] == "sprintiface", where
    assert int(scorer["feature-dimension"]) > 0 and int(scorer["python-feature-scorer-output-dimension"]) > 0
    parsed = load_config(scorer["pymod-config"])  # no unknown key, every value well-formed
    assert parsed.action in (None, "forward"), where
    assert parsed.onnx or parsed.model, f"{where}: the scorer needs onnx or model"


def check_trainer(config, where):
    assert value(config, "trainer") == "python-trainer", where
    assert value(config, "pymod-name") == "sprintiface", where
    mode = value(config, "target-mode", "target-alignment")  # RASR's default target mode
    action = value(config, "action")
    criterion = value(config, "training-criterion", "none")
    assert mode != "target-segment-orth", \
        f"{where}: target-segment-orth does not reach Python in RASR master (spec section 2)"
    if mode in SUPERVISED_MODES or (mode == "criterion-by-sprint" and criterion in ALIGNMENT_CRITERIA):
        assert action == "supervised-training", \
            f"{where}: target mode {mode} with criterion {criterion} needs action = supervised-training, got {action}"
    elif mode in UNSUPERVISED_MODES or mode == "criterion-by-sprint":
        assert action == "unsupervised-training", \
            f"{where}: target mode {mode} with criterion {criterion} needs action = unsupervised-training, got {action}"
    else:  # target-generic: supervised with an alignment port, unsupervised without
        assert action in ("supervised-training", "unsupervised-training"), where
    assert int(value(config, "trainer-output-dimension")) > 0, where
    parsed = load_config(value(config, "pymod-config"))
    assert parsed.action in ("train", "forward", "nop"), f"{where}: the trainer needs action train/forward/nop"
    if parsed.action == "forward":
        assert mode in ("forward-only", "criterion-by-sprint"), where
    if parsed.action == "train" and parsed.trainer in SEGMENT_TRAINERS:
        assert value(config, "buffer-type") == "utterance", \
            f"{where}: trainer:{parsed.trainer} needs buffer-type = utterance"
        assert value(config, "shuffle") == "false", f"{where}: trainer:{parsed.trainer} needs shuffle = false"


def check_segment_order(config, where):
    assert value(config, "python-segment-order") == "true", where
    assert value(config, "python-segment-order-pymod-name") == "sprintiface", where
    assert value(config, "python-segment-order-pymod-path"), \
        f"{where}: the segment order needs its own python-segment-order-pymod-path"
    load_config(value(config, "python-segment-order-config"))


# -- driven through RASR's calls --------------------------------------------------------

def local_config(pymod_config: str, tmp_path, files: dict[str, str]) -> str:
    """The block's pymod-config with each file it names replaced by a real one here."""
    items = []
    for item in pymod_config.split(","):
        key, _, text = item.partition(":")
        if key in files:
            text = files[key]
        elif key in ("dump_file", "model", "checkpoint_dir"):
            text = str(tmp_path / os.path.basename(text))
        items.append(f"{key}:{text}")
    return ",".join(items)


def scorer_blocks():
    return [b for b in BLOCKS if uses_sprintiface(parse(b.text))
            and value(parse(b.text), "feature-scorer-type") == "python-feature-scorer"]


@pytest.mark.parametrize("block", scorer_blocks(), ids=[b.where for b in scorer_blocks()])
def test_each_scorer_block_runs_through_rasrs_calls(block, tmp_path):
    from sprintiface.priors import save_prior

    config = parse(block.text)
    input_dim = int(value(config, "feature-dimension"))
    output_dim = int(value(config, "python-feature-scorer-output-dimension"))
    parsed = load_config(value(config, "pymod-config"))
    model = build_mlp(input_dim, output_dim, (16,), seed=3)
    files = {}
    if parsed.model:  # model:<prefix>,epoch:<n> resolves to <prefix>.<n:03d>.onnx
        prefix = str(tmp_path / "am")
        save_model(model, f"{prefix}.{parsed.epoch:03d}.onnx")
        files["model"] = prefix
    else:
        files["onnx"] = str(tmp_path / "am.onnx")
        save_model(model, files["onnx"])
    if parsed.prior_file:
        files["prior_file"] = str(tmp_path / os.path.basename(parsed.prior_file))
        save_prior(files["prior_file"], numpy.full(output_dim, -numpy.log(output_dim), numpy.float32))
    pymod = local_config(value(config, "pymod-config"), tmp_path, files)
    rng = numpy.random.default_rng(0)
    segments = [rng.standard_normal((length, input_dim)).astype(numpy.float32) for length in (9, 4)]
    scored = list(rasr_scorer_calls(sprintiface, pymod, segments, input_dim, output_dim))
    assert [scores.shape for _, scores in scored] == [(9, output_dim), (4, output_dim)]
    assert all(numpy.isfinite(scores).all() for _, scores in scored)


def trainer_blocks(torch: bool):
    found = []
    for block in BLOCKS:
        config = parse(block.text)
        if uses_sprintiface(config) and value(config, "trainer") == "python-trainer" and \
                (load_config(value(config, "pymod-config")).trainer == "torch") == torch:
            found.append(block)
    return found


TORCH_MODEL_FILE = '''
import torch


def get_model(epoch):
    torch.manual_seed(0)
    return Model()


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear({input_dim}, {classes})

    def forward(self, features, lengths):
        return self.linear(features)
'''


def drive_trainer(block, tmp_path, input_dim=8):
    """getSegmentList (when the block orders segments) and the trainer's calls for two
    named segments, as nn-trainer with buffer-type = utterance makes them, then exit()."""
    config = parse(block.text)
    mode = value(config, "target-mode", "target-alignment")
    output_dim = int(value(config, "trainer-output-dimension"))
    parsed = load_config(value(config, "pymod-config"))
    files = {}
    if parsed.model_file:
        files["model_file"] = str(tmp_path / "am.py")
        with open(files["model_file"], "w") as file:
            file.write(TORCH_MODEL_FILE.format(input_dim=input_dim, classes=output_dim))
    if parsed.onnx:
        files["onnx"] = str(tmp_path / "am.onnx")
        save_model(build_mlp(input_dim, output_dim, (8,)), files["onnx"])
    pymod = local_config(value(config, "pymod-config"), tmp_path, files)
    names = ["corpus/a", "corpus/b"]
    handed = names
    if value(config, "python-segment-order") == "true":
        order = local_config(value(config, "python-segment-order-config"), tmp_path, files)
        # one epoch of the block's ordering: the block's own num_epochs would train them all here
        order = re.sub(r"num_epochs:\d+", "num_epochs:1", order)
        pymod = re.sub(r"num_epochs:\d+", "num_epochs:1", pymod)
        info = {name: {"time": 0.05 * (index + 1)} for index, name in enumerate(names)}
        handed = list(sprintiface.getSegmentList(corpusName="corpus", segmentList=names, segmentsInfo=info,
                                                 config=order))
        assert sorted(handed) == names
    rng = numpy.random.default_rng(0)
    try:
        for index, name in enumerate(handed):
            frames = 5 + index
            features = numpy.asfortranarray(rng.standard_normal((input_dim, frames)).astype(numpy.float32))
            alignment = rng.integers(0, output_dim, frames).astype(numpy.uint32)
            if index == 0:
                sprintiface.init(inputDim=input_dim, outputDim=output_dim, allowDownsampling=0, config=pymod,
                                 targetMode=mode, cudaEnabled=0, cudaActiveGpu=-1)
            if mode == "criterion-by-sprint":
                posteriors = sprintiface.feedInput(features=features, weights=None, segmentName=name)
                signal = numpy.asfortranarray(posteriors.astype(numpy.float32))
                signal[alignment, numpy.arange(frames)] -= 1.0  # softmax minus Kronecker delta
                sprintiface.finishError(error=1.0, errorSignal=signal, naturalPairingType="softmax")
            elif mode == "target-alignment":
                sprintiface.feedInputAndTargetAlignment(features=features, targetAlignment=alignment, weights=None,
                                                        segmentName=name)
            elif mode == "forward-only":
                sprintiface.feedInputForwarding(features=features, weights=None, segmentName=name)
            else:
                sprintiface.feedInputUnsupervised(features=features, weights=None, segmentName=name)
        sprintiface.exit()
    finally:
        end_training_session()
    return parsed


@pytest.mark.parametrize("block", trainer_blocks(torch=False), ids=[b.where for b in trainer_blocks(torch=False)])
def test_each_trainer_block_runs_through_rasrs_calls(block, tmp_path):
    h5py = pytest.importorskip("h5py")
    parsed = drive_trainer(block, tmp_path)
    if parsed.trainer == "dump":
        with h5py.File(tmp_path / os.path.basename(parsed.dump_file), "r") as file:
            assert file.attrs["numSeqs"] == 2


@pytest.mark.torch
@pytest.mark.parametrize("block", trainer_blocks(torch=True), ids=[b.where for b in trainer_blocks(torch=True)])
def test_each_torch_trainer_block_runs_through_rasrs_calls(block, tmp_path):
    pytest.importorskip("torch")
    parsed = drive_trainer(block, tmp_path)
    prefix = tmp_path / os.path.basename(parsed.model)
    assert os.path.exists(f"{prefix}.001.onnx") and os.path.exists(f"{prefix}.001.pt")


def segment_order_blocks():
    return [b for b in BLOCKS if uses_sprintiface(parse(b.text)) and value(parse(b.text), "trainer") is None
            and value(parse(b.text), "python-segment-order") == "true"]


@pytest.mark.parametrize("block", segment_order_blocks(), ids=[b.where for b in segment_order_blocks()])
def test_each_segment_order_block_runs_through_rasrs_call(block):
    config = parse(block.text)
    names = [f"corpus/s{index}" for index in range(8)]
    info = {name: {"time": 0.1 * (index % 3 + 1)} for index, name in enumerate(names)}
    if value(config, "python-segment-order-with-segment-info") != "true":
        info = None
    try:
        handed = list(sprintiface.getSegmentList(corpusName="corpus", segmentList=names, segmentsInfo=info,
                                                 config=value(config, "python-segment-order-config")))
    finally:
        end_training_session()
    order = load_config(value(config, "python-segment-order-config"))
    assert len(handed) == len(names) * order.num_epochs // order.partition_epoch
    assert set(handed) == set(names)
