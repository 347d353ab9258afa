"""Write sprintiface/models/demo.onnx, the model `sprintiface demo` runs.

The demo model is built from a fixed seed and prepared (``sprintiface prepare
--plain``), so that the demo runs with the core install (numpy and onnxruntime,
no onnx). Deterministic: running it again gives the same bytes, which
tests/test_demo.py checks (after a version change, run it again). Run from the
repository root: ``python tools/make_demo_model.py [PATH]``.
"""
import os
import sys

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)

from onnx_models import build_demo, save_model  # noqa: E402 - after tools/ is put on sys.path

#: The file in the source tree (not the installed copy).
SOURCE_DEMO_MODEL = os.path.join(os.path.dirname(TOOLS), "sprintiface", "models", "demo.onnx")

def write_demo_model(path: str) -> None:
    """build_demo(), prepared (plain form), at ``path``."""
    import tempfile

    from sprintiface.prepare import prepare_model

    with tempfile.TemporaryDirectory() as directory:
        source = os.path.join(directory, "demo.onnx")
        save_model(build_demo(), source)
        prepare_model(source, path, plain=True)


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else SOURCE_DEMO_MODEL
    write_demo_model(path)
    print(f"wrote {path}")
