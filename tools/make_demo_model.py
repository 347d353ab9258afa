"""Write sprintiface/models/demo.onnx, the model `sprintiface demo` runs.

Deterministic (fixed seed): running it again gives the same bytes, which
tests/test_demo.py checks. Run from the repository root:
``python tools/make_demo_model.py [PATH]``.
"""
import os
import sys

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)

from onnx_models import build_demo, save_model  # noqa: E402

#: The file in the source tree (not the installed copy).
SOURCE_DEMO_MODEL = os.path.join(os.path.dirname(TOOLS), "sprintiface", "models", "demo.onnx")

if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else SOURCE_DEMO_MODEL
    save_model(build_demo(), path)
    print(f"wrote {path}")
