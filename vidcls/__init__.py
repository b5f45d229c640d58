"""vidcls: video-content classification served by NVIDIA Triton Inference Server."""

__version__ = "0.1.0"
