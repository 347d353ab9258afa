"""The shareable form's weights file (``OUT.<id>.data``) byte by byte: what it holds,
and why it holds each packed weight twice (issue 16, item 2; docs/performance.md).

ONNX Runtime 1.32 reads both copies at every load: the session packs the original
initializer itself, looks the result up among the saved blobs by its hash, and
compares it with the blob before using the blob's (shared, mapped) pages. So the
originals decide the scores and the blobs are checked against them; neither can go.
The second test watches that: should a later ONNX Runtime stop reading a copy, it
fails and says which copy `prepare` may then drop.
"""
import os
import shutil

import numpy
import pytest
from conftest import features, make_engine
from onnx_models import build_mlp

from sprintiface import ModelError
from sprintiface.cli import main

PAGE = 4096


def _prepare(tmp_path, write_model):
    source = write_model(build_mlp(12, 30, (64, 64), seed=3), "am.onnx")
    out = str(tmp_path / "am.prepared.onnx")
    assert main(["prepare", source, "-o", out]) == 0
    return source, out


def _external(out):
    """{initializer name: (original (offset, length), [blob (offset, length), ...])}, and the weights file."""
    import onnx

    model = onnx.load(out, load_external_data=False)
    found, location = {}, None
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries["location"]
        blobs = []
        for key, value in entries.items():
            if key.startswith("prepacked"):  # "<kernel>+<hash>|offset;length;checksum|..."
                for part in value.split("|")[1:]:
                    offset, length, _ = part.split(";")
                    blobs.append((int(offset), int(length)))
        found[tensor.name] = ((int(entries["offset"]), int(entries["length"])), blobs)
    return found, os.path.join(os.path.dirname(out), location)


def test_weights_file_holds_each_original_once_and_its_packed_blob(tmp_path, write_model):
    source, out = _prepare(tmp_path, write_model)
    entries, data = _external(out)
    matmul_weights = {"W0", "W1", "W2"}  # the MLP's MatMul weights; the biases are not packed
    assert matmul_weights <= set(entries)
    for name, (original, blobs) in entries.items():
        assert len(blobs) == (1 if name in matmul_weights else 0), name
        for _, length in blobs:
            assert length >= original[1]  # MLAS pads the packed columns, never drops any
    ranges = sorted([original for original, _ in entries.values()] +
                    [blob for _, blobs in entries.values() for blob in blobs])
    for (offset, length), (following, _) in zip(ranges, ranges[1:]):
        assert offset + length <= following  # no two copies share bytes
    size = os.path.getsize(data)
    held = sum(length for _, length in ranges)
    assert ranges[-1][0] + ranges[-1][1] == size
    assert held <= size < held + PAGE * len(ranges)  # what is listed, page alignment between
    # Against the model's own weights: the originals once, the packed weights once more.
    originals = sum(original[1] for original, _ in entries.values())
    packed = sum(original[1] for name, (original, _) in entries.items() if name in matmul_weights)
    assert originals + packed <= held < originals + packed + PAGE * len(ranges)
    assert os.path.getsize(source) < size + os.path.getsize(out) < 2 * os.path.getsize(source) + PAGE * len(ranges)


def _copy_pair(out, data, folder):
    os.makedirs(folder)
    shutil.copy(out, folder)
    copy = os.path.join(folder, os.path.basename(data))
    shutil.copy(data, copy)
    os.chmod(copy, 0o644)
    return os.path.join(folder, os.path.basename(out)), copy


def _zero(path, offset, length):
    handle = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(handle, bytes(length), offset)
    finally:
        os.close(handle)


def test_every_load_packs_the_originals_and_checks_the_packed_blob(tmp_path, write_model):
    _, out = _prepare(tmp_path, write_model)
    entries, data = _external(out)
    x = features(40, 12)
    reference = make_engine(out).forward(x)
    (original, (blob,)) = entries["W1"]

    # The originals decide: zeroed, the session packs zeros (no saved blob has that hash) and
    # scores a different model. If this fails, ONNX Runtime no longer reads the originals of
    # packed weights: `prepare` may drop them.
    without_original, weights = _copy_pair(out, data, str(tmp_path / "zeroed-original"))
    _zero(weights, *original)
    assert not numpy.array_equal(make_engine(without_original).forward(x), reference)

    # The blob is checked against the session's own packing: zeroed, the load fails. If this
    # fails, ONNX Runtime packs privately when the blob is wrong (or ignores it): then the
    # blob is not what a job reads either.
    without_blob, weights = _copy_pair(out, data, str(tmp_path / "zeroed-blob"))
    _zero(weights, *blob)
    with pytest.raises(ModelError, match="ONNX Runtime cannot load"):
        make_engine(without_blob)

    # Both intact: the same scores, bit for bit, from a copy as from the prepared pair.
    intact, _ = _copy_pair(out, data, str(tmp_path / "intact"))
    assert numpy.array_equal(make_engine(intact).forward(x), reference)


def _mapped_ranges(path):
    """(file offset, length) of this process's mappings of ``path``."""
    import re

    target, ranges = os.path.realpath(path), []
    with open("/proc/self/smaps", encoding="utf-8") as smaps:
        for line in smaps:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].strip() == target:
                    start, end = (int(value, 16) for value in parts[0].split("-"))
                    ranges.append((int(parts[2], 16), end - start))
    return ranges


def _pages(spans):
    """The page numbers of the file that the (offset, length) spans touch."""
    return {page for offset, length in spans if length
            for page in range(offset // PAGE, (offset + length - 1) // PAGE + 1)}


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads Linux's /proc/self/smaps")
def test_a_loaded_job_maps_the_packed_blobs_and_not_the_originals_they_replace(tmp_path, write_model):
    _, out = _prepare(tmp_path, write_model)
    entries, data = _external(out)
    engine = make_engine(out)
    mapped = _pages(_mapped_ranges(data))
    used = _pages([blob for _, blobs in entries.values() for blob in blobs] +
                  [original for original, blobs in entries.values() if not blobs])  # blobs, unpacked ones
    replaced = _pages([original for original, blobs in entries.values() if blobs]) - used
    assert replaced  # pages that hold nothing but originals of packed weights exist in this model
    assert mapped, "the prepared model's weights are not mapped from its weights file"
    assert mapped <= used  # a job maps the blobs (and what is used unpacked) ...
    assert not mapped & replaced  # ... and none of the originals the blobs replace, once loaded
    assert _pages([blob for _, blobs in entries.values() for blob in blobs]) <= mapped  # every blob in use
    del engine
