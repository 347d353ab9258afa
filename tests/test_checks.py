"""The one int-not-bool rule (sprintiface._checks) and the one HDF layout (sprintiface.hdf_layout)."""
import numpy
import pytest

from sprintiface import hdf_layout
from sprintiface._checks import checked_int
from sprintiface.config import load_config
from sprintiface.errors import ConfigError, ProtocolError


@pytest.mark.parametrize("value", [True, numpy.bool_(False), 1.0, "1", None, numpy.float32(2)])
def test_checked_int_refuses_what_is_not_an_integer(value):
    with pytest.raises(ProtocolError, match=rf"^compute: expected num_frames to be an int, got {type(value).__name__}"):
        checked_int(value, "num_frames", where="compute")


def test_checked_int_takes_numpy_integers_and_checks_the_bound():
    assert checked_int(numpy.int64(7), "n") == 7 and type(checked_int(numpy.int32(3), "n")) is int
    with pytest.raises(ConfigError, match=r"expected dim to be an int >= 1, got int 0"):
        checked_int(0, "dim", minimum=1, error=ConfigError)


def test_config_ints_from_toml_are_never_bools(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("intra_op_threads = true\n")
    with pytest.raises(ConfigError, match=r"'intra_op_threads'.*to be an int, got bool True"):
        load_config(f"configfile:{path}")


def test_the_dump_trainers_file_is_read_by_the_layouts_names(tmp_path):
    h5py = pytest.importorskip("h5py")
    from sprintiface.feature_files import read_segments

    with h5py.File(tmp_path / "f.hdf", "w") as file:
        file[hdf_layout.INPUTS] = numpy.arange(12, dtype=numpy.float32).reshape(6, 2)
        file[hdf_layout.SEQ_LENGTHS] = numpy.array([[4, 4], [2, 2]], numpy.int32)
        file[hdf_layout.SEQ_TAGS] = numpy.array([b"a", b"b"])
    assert [(name, frames.shape) for name, frames in read_segments(str(tmp_path / "f.hdf"))] == \
        [("a", (4, 2)), ("b", (2, 2))]
    assert hdf_layout.target_data("classes") == "targets/data/classes"
