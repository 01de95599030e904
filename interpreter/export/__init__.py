"""Exporting a model to other runtimes: ONNX (onnx_export.py)."""
