"""The docs' key table is the code's: it cannot drift."""
import os
import re

from sprintiface.config import OPTIONS, options_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_configuration_table_matches_the_code():
    with open(os.path.join(ROOT, "docs", "configuration.md"), encoding="utf-8") as file:
        text = file.read()
    table = re.search(r"<!-- config-table:start -->\n(.*)<!-- config-table:end -->", text, re.S).group(1)
    assert table == options_table(), "regenerate with: python -m sprintiface config-table"


def test_readme_names_every_scorer_key():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as file:
        readme = file.read()
    for key in ("onnx", "model", "epoch", "output_kind", "prior_file", "prior_scale", "prior_space",
                "buffer_size", "intra_op_threads", "inter_op_threads", "input_name", "length_name",
                "output_name", "action", "log_level"):
        assert f"`{key}`" in readme and key in OPTIONS
