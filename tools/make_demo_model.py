"""Write sprintiface/models/demo.onnx, the model `python -m sprintiface demo` runs.

Deterministic (fixed seed): running it again gives the same bytes, which
tests/test_demo.py checks.
"""
import sys

from sprintiface.models import DEMO_MODEL, build_demo, save_model

if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else DEMO_MODEL
    save_model(build_demo(), path)
    print(f"wrote {path}")
