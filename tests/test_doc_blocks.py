"""Docs that run: every ```sh / ```python / ```ini / ```toml block in README.md and docs/*.md is
run by a test or says why it cannot run here.

The marker is an HTML comment on the line right before the fence (invisible on the rendered page):

- ``<!-- runs: tests/test_x.py::test_name -->``: that test runs the block (the test must exist);
  ``<!-- runs: .ci/run -->`` for the README's two commands, which .ci/run runs literally;
- ``<!-- needs: REASON -->``: the block cannot run here, REASON one of :data:`NEEDS`; a
  ``needs: torch`` sh or python block is run by :func:`test_torch_blocks_run` (``pytest -m torch``).

The sh blocks run here (``needs: torch``, and ``runs: tests/test_doc_blocks.py::test_cli_blocks_run``)
run with this interpreter's environment first on PATH; their ``pip install`` lines are not run
(the test runs in that install already, and pip must not reach for a registry from a test).

A block without a marker fails :func:`test_every_block_runs_or_says_why`, listed as file:line.
"""
import os
import re
import subprocess
import sys

import pytest
from onnx_models import build_mlp, save_model

from sprintiface.config import OPTIONS, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LANGUAGES = ("sh", "python", "ini", "toml")

#: Why a block cannot run in this test suite.
NEEDS = {
    "RASR": "a RASR installation (speech-recognizer, nn-trainer)",
    "cluster": "a cluster node or a wheel built for one",
    "i6_core": "Sisyphus with i6_core",
    "torch": "PyTorch: run by test_torch_blocks_run under pytest -m torch",
    "docker": "cibuildwheel's manylinux containers",
    "asv": "a benchmark run (minutes; asv builds its own environments)",
    "qemu": "an arm64 root under qemu-user (root, minutes: tools/aarch64/run_tests.sh, pytest -m aarch64)",
    "pytest": "the test suite itself (.ci/run runs it; a test running it would run itself)",
}

#: PENDING (until the parallel branches are merged): pages whose blocks their owners are
#: marking now. Their unmarked blocks are reported (xfail, with file:line), not failed; a page
#: whose blocks are all marked fails until it is taken off this list. Empty it after the merge.
PENDING_FILES: list[str] = []

_FENCE = re.compile(r"^```(\w+)\s*$")
_MARKER = re.compile(r"^<!--\s*(runs|needs):\s*(\S.*?)\s*-->\s*$")


class Block:
    def __init__(self, path, line, language, text, marker):
        self.path, self.line, self.language, self.text, self.marker = path, line, language, text, marker

    @property
    def where(self):
        return f"{self.path}:{self.line}"


def doc_files():
    pages = sorted(f"docs/{name}" for name in os.listdir(os.path.join(ROOT, "docs")) if name.endswith(".md"))
    return ["README.md", *pages]


def blocks(name):
    """The code blocks of ``name`` (relative to the root) in LANGUAGES, with their markers."""
    with open(os.path.join(ROOT, name), encoding="utf-8") as file:
        lines = file.read().split("\n")
    found, index = [], 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        start = index
        index += 1
        while index < len(lines) and not lines[index].startswith("```"):
            index += 1
        if match.group(1) in LANGUAGES:
            marker = _MARKER.match(lines[start - 1]) if start else None
            found.append(Block(name, start + 1, match.group(1), "\n".join(lines[start + 1:index]),
                               (marker.group(1), marker.group(2)) if marker else None))
        index += 1
    return found


def marked(kind, value=None):
    return [block for name in doc_files() for block in blocks(name)
            if block.marker and block.marker[0] == kind and (value is None or block.marker[1] == value)]


@pytest.mark.parametrize("name", doc_files())
def test_every_block_runs_or_says_why(name):
    unmarked = [f"{block.where} ```{block.language}" for block in blocks(name) if block.marker is None]
    if name in PENDING_FILES:
        if not unmarked:
            pytest.fail(f"every block of {name} is marked: take it off PENDING_FILES in {__file__}")
        pytest.xfail(f"pending: unmarked blocks {unmarked}")
    assert not unmarked, ("each block needs <!-- runs: tests/...::test --> or <!-- needs: REASON --> on the line "
                          f"before its fence (REASON one of {', '.join(NEEDS)}): {unmarked}")


def test_pending_files_exist():
    for name in PENDING_FILES:
        assert os.path.isfile(os.path.join(ROOT, name)), f"{name} is gone: take it off PENDING_FILES"


def test_markers_name_real_tests_and_known_reasons():
    for block in marked("needs"):
        assert block.marker[1] in NEEDS, f"{block.where}: needs {block.marker[1]!r}; known: {', '.join(NEEDS)}"
        if block.marker[1] == "torch":
            assert block.language in ("sh", "python"), f"{block.where}: a {block.language} block cannot run; " \
                                                       f"say what it needs to be used (RASR?)"
    for block in marked("runs"):
        target = block.marker[1]
        if target == ".ci/run":  # the README's first two sh blocks, read by .ci/run's readme_command
            with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as file:
                assert "readme_command" in file.read()
            first_two = [b.line for b in blocks("README.md") if b.language == "sh"][:2]
            assert block.path == "README.md" and block.line in first_two, \
                f"{block.where}: .ci/run runs only the README's first two sh blocks"
            continue
        path, _, test = target.partition("::")
        assert test, f"{block.where}: expected runs: tests/test_x.py::test_name, got {target!r}"
        assert os.path.isfile(os.path.join(ROOT, path)), f"{block.where}: {path} does not exist"
        with open(os.path.join(ROOT, path), encoding="utf-8") as file:
            assert re.search(rf"^def {re.escape(test)}\(", file.read(), re.M), f"{block.where}: no {target}"


def _run_here(test_name):
    """The blocks marked as run by ``test_name`` of this file."""
    found = marked("runs", f"tests/test_doc_blocks.py::{test_name}")
    assert found, f"no block is marked as run by {test_name}"
    return found


# -- the blocks this file runs -------------------------------------------------------------

def test_configuration_toml_example_is_a_valid_config(tmp_path):
    for block in _run_here("test_configuration_toml_example_is_a_valid_config"):
        path = tmp_path / "example.toml"
        path.write_text(block.text + "\n", encoding="utf-8")
        config = load_config(f"configfile:{path}")  # unknown keys and bad values raise here
        assert config.given and config.given <= set(OPTIONS), block.where


_PIP_INSTALL = re.compile(r"^pip install \S+(\s+#.*)?$")


def _shell_command(block):
    """bash -c for an sh block: its ``pip install`` lines left out (see the module docstring)."""
    lines = block.text.split("\n")
    kept = [line for line in lines if not _PIP_INSTALL.match(line.strip())]
    return ["bash", "-euo", "pipefail", "-c", "\n".join(kept)]


def _environment(directory):
    """This interpreter's scripts first on PATH (``sprintiface``, ``python``), temporaries in ``directory``."""
    return dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
                TMPDIR=str(directory))


def test_cli_blocks_run(tmp_path):
    """The pages' ``sprintiface ...`` sh blocks, in a folder with ``am.onnx`` (an MLP): each succeeds
    and writes the files it names with ``-o``."""
    save_model(build_mlp(40, 30, (16,), seed=1), str(tmp_path / "am.onnx"))
    for block in _run_here("test_cli_blocks_run"):
        assert block.language == "sh", block.where
        result = subprocess.run(_shell_command(block), capture_output=True, text=True, cwd=tmp_path, timeout=300,
                                env=_environment(tmp_path))
        assert result.returncode == 0, f"{block.where}:\n{result.stdout}\n{result.stderr}"
        for written in re.findall(r"\s-o\s+(\S+)", block.text):
            assert (tmp_path / written).is_file(), f"{block.where}: {written} was not written"


@pytest.mark.torch
def test_torch_blocks_run(tmp_path):
    pytest.importorskip("torch")
    torch_blocks = marked("needs", "torch")
    if not torch_blocks:
        pytest.skip("no block is marked <!-- needs: torch --> yet")
    for index, block in enumerate(torch_blocks):
        directory = tmp_path / str(index)
        directory.mkdir()
        command = [sys.executable, "-c", block.text] if block.language == "python" else _shell_command(block)
        result = subprocess.run(command, capture_output=True, text=True, cwd=directory, timeout=600,
                                env=_environment(directory))
        assert result.returncode == 0, f"{block.where}:\n{result.stdout}\n{result.stderr}"
