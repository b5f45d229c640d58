"""The one Triton release the gpu repository is built for, and the versions of what it carries.

This table is the single place these versions are written. Everything that depends on them reads
it or is checked against it by the tests (tests/test_serving_image.py):

- ``docker/Dockerfile.triton`` and ``docker/Dockerfile.train``: the ``FROM`` tags and the build
  arguments the serving image's build-time check compares with what the image really holds;
- ``pyproject.toml`` / ``constraints.txt``: the DALI and ONNX Runtime the test environment
  installs, so the generated ``dali.py`` is built and run by the same DALI that serializes it in
  the image, and the ONNX graphs are checked by the same ONNX Runtime;
- the TensorRT ONNX parser's operator list (``vidcls/export/backend_contract.py``) and the
  onnxruntime backend's accelerator keys, both of this release;
- the version the TensorRT plan builder insists on (a plan only loads in the TensorRT that built it);
- docs/deployment.md and the README.

Why this release: see docs/deployment.md ("The serving image"). In short, the DALI of an older
image cannot serialize the decode pipeline (sampled-frame decoding with ``frames=``/``pad_mode``
arrived in DALI 1.48, the ``fn.decoders.video`` name in 2.0), and only DALI 1.53 and later can
be installed by version on the machines that run the tests.
"""

from __future__ import annotations

# NGC release (YY.MM): nvcr.io/nvidia/tritonserver:<release>-py3 and nvcr.io/nvidia/pytorch:<release>-py3.
TRITON_RELEASE = "26.08"
TRITON_IMAGE = f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-py3"
TRAIN_IMAGE = f"nvcr.io/nvidia/pytorch:{TRITON_RELEASE}-py3"

# What the serving image's backends run, in full.
DALI_VERSION = "2.2.0"            # the DALI backend's DALI (serializes dali.py at load time)
ONNXRUNTIME_VERSION = "1.28.0"    # the onnxruntime backend's ONNX Runtime
TENSORRT_VERSION = "11.2.1.2"     # the tensorrt backend's (and the ORT TensorRT EP's) TensorRT
CUDA_MAJOR = 13                   # the image's CUDA: the DALI build is nvidia-dali-cuda130

# The Python packages the test environment pins to the image's versions. TensorRT is not among
# them: its wheel needs a GPU to build or parse anything, so the test environment checks graphs
# against the parser's operator list of this version instead (backend_contract).
PIP_PINS: dict[str, str] = {
    "nvidia-dali-cuda120": DALI_VERSION,  # same DALI release, CUDA 12 build: its CPU operators are what tests run
    "onnxruntime": ONNXRUNTIME_VERSION,
}


def tensorrt_major_minor(version: str = TENSORRT_VERSION) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def versions() -> dict[str, str]:
    """Component → version, as docs/deployment.md and the README list them."""
    return {"Triton (NGC)": TRITON_RELEASE, "DALI": DALI_VERSION, "ONNX Runtime": ONNXRUNTIME_VERSION,
            "TensorRT": TENSORRT_VERSION}
