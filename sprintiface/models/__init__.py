"""The model shipped in the package: ``demo.onnx``, what ``sprintiface demo`` runs.

An MLP 40 -> 256 -> 256 -> 500 with a final Softmax, in RETURNN's export
layout (``data`` [B, T, 40], ``data:size1`` [B], ``output`` [B, T, 500]),
written from a fixed seed by ``tools/make_demo_model.py``.
"""
import os

DEMO_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo.onnx")
DEMO_INPUT_DIM = 40
DEMO_OUTPUT_DIM = 500
