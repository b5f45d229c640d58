"""Triton python-backend model implementations (torch-free: numpy, PyAV, onnxruntime)."""
