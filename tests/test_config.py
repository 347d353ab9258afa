"""pymod-config strings and TOML config files."""
import pytest

from sprintiface.config import OPTIONS, load_config, split_config_string
from sprintiface.errors import ConfigError


def test_split_at_first_colon_and_skip_empty_items():
    assert split_config_string("a:1,,b:x:y,c:") == {"a": "1", "b": "x:y", "c": ""}
    assert split_config_string("") == {}
    assert split_config_string(None) == {}
    with pytest.raises(ConfigError, match=r"item 'oops'.*expected key:value"):
        split_config_string("a:1,oops")
    with pytest.raises(ConfigError, match="'a' is given twice"):
        split_config_string("a:1,a:2")


def test_typed_values_and_defaults():
    config = load_config("action:forward,configfile:,epoch:80,prior_scale:0.7,onnx:/x/y.onnx,buffer_size:32")
    assert config.epoch == 80 and config.prior_scale == 0.7 and config.buffer_size == 32
    assert config.onnx == "/x/y.onnx" and config.action == "forward"
    assert config.intra_op_threads == 1 and config.inter_op_threads == 1
    assert config.output_kind == "auto" and config.prior_space == "log"
    assert "epoch" in config.given and "output_kind" not in config.given
    assert config.raw["epoch"] == "80"


def test_toml_configfile_and_string_wins(tmp_path):
    path = tmp_path / "am.toml"
    path.write_text('onnx = "from-file.onnx"\nprior_scale = 0.3\nintra_op_threads = 2\nbuffer_size = 64\n')
    config = load_config(f"configfile:{path},prior_scale:0.6")
    assert config.onnx == str(tmp_path / "from-file.onnx")  # relative to the file, not the working directory
    assert config.prior_scale == 0.6
    assert config.intra_op_threads == 2 and config.buffer_size == 64
    path.write_text('onnx = "m.onnx"\nprior_scal = 0.3\n')
    with pytest.raises(ConfigError, match=rf"unknown config key\(s\) 'prior_scal' \(in {path}\)"):
        load_config(f"configfile:{path}")
    path.write_text('intra_op_threads = "many"\n')
    with pytest.raises(ConfigError, match=rf"'intra_op_threads' \(in {path}\).*got 'many'"):
        load_config(f"configfile:{path}")
    path.write_text("this is = = not toml")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(f"configfile:{path}")
    with pytest.raises(ConfigError, match=r"configfile.*no such file"):
        load_config(f"configfile:{tmp_path / 'missing.toml'}")


@pytest.mark.parametrize("item, message", [
    ("epoch:0", "'epoch'.*>= 1"),
    ("prior_scale:nan", "'prior_scale'.*finite"),
    ("intra_op_threads:1.5", "'intra_op_threads'"),
    ("action:decode", "'action'.*expected one of forward, train, nop; got 'decode'"),
    ("log_level:loud", "'log_level'.*expected one of debug, info, warning, error"),
])
def test_bad_values_name_key_value_and_allowed(item, message):
    with pytest.raises(ConfigError, match=message):
        load_config(item)


def test_every_option_is_documented():
    for option in OPTIONS.values():
        assert option.help.strip(), option.name
        if option.choices and option.default is not None:
            assert option.default in option.choices


def test_config_fields_are_the_options_with_the_converters_types():
    import typing

    from sprintiface.config import Config

    hints = typing.get_type_hints(Config)
    assert list(hints) == [*OPTIONS, "given", "raw"]
    for name, option in OPTIONS.items():
        produced = str if option.choices else typing.get_type_hints(option.convert)["return"]
        expected = typing.Optional[produced] if option.default is None else produced
        assert hints[name] == expected, name


def test_config_is_frozen_and_reads_by_key():
    import copy
    import pickle

    config = load_config("epoch:3")
    assert config["epoch"] == 3 == config.epoch
    with pytest.raises(AttributeError, match="frozen"):
        config.epoch = 4
    with pytest.raises(AttributeError, match="frozen"):
        del config.epoch
    assert config == load_config("epoch:3") != load_config("epoch:4")
    assert hash(config) == hash(load_config("epoch:3"))
    for twin in (copy.copy(config), pickle.loads(pickle.dumps(config))):
        assert twin == config and twin.given == config.given and twin.raw == config.raw
    with pytest.raises(KeyError):
        config["given"]
