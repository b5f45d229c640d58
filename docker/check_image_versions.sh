#!/usr/bin/env bash
# The serving image's build-time check (docker/Dockerfile.triton runs it right after FROM): the
# backends the gpu repository needs are there, and DALI, ONNX Runtime and TensorRT are exactly
# the versions vidcls/serving_image.py names, in every part (2.2.0 is not 2.2.1, 11.2.1.2 is not
# 11.2.1.3). A component that is missing, found twice in different versions, or whose full
# version cannot be read fails the build: dali.py is serialized by the DALI backend's own DALI,
# the accelerator keys are those of this onnxruntime backend, and plans only load in the
# TensorRT that built them.
#
# Usage: check_image_versions.sh DALI_VERSION ONNXRUNTIME_VERSION TENSORRT_VERSION
# IMAGE_ROOT (default: empty = /) is the tree to inspect; tests/test_serving_image.py runs the
# script on fake trees.
set -euo pipefail

want_dali=$1 want_ort=$2 want_trt=$3
root=${IMAGE_ROOT:-}
backends="$root/opt/tritonserver/backends"

fail() {
  echo "$1: update vidcls/serving_image.py (and the Dockerfile's build arguments) to the image's versions" >&2
  exit 1
}

for b in dali onnxruntime tensorrt python; do
  [ -d "$backends/$b" ] || fail "backend $b missing from the base image"
done

# DALI: the wheel the DALI backend carries (its .dist-info folder names the full version).
dali=$(find "$backends/dali" -maxdepth 6 -type d -name 'nvidia_dali*.dist-info' -printf '%f\n' \
  | sed -E 's/^nvidia_dali[a-z0-9_]*-([0-9][0-9A-Za-z.+]*)\.dist-info$/\1/' | sort -u | paste -sd' ' -)
# ONNX Runtime: the library the onnxruntime backend loads (libonnxruntime.so.MAJOR.MINOR.PATCH).
ort=$(find "$backends/onnxruntime" -maxdepth 1 -name 'libonnxruntime.so.*.*' -printf '%f\n' \
  | sed -E 's/^libonnxruntime\.so\.//' | sort -u | paste -sd' ' -)
# TensorRT: the library's file name has three parts only (libnvinfer.so.11.2.1); the full
# four-part version comes from the Debian package or, failing that, from NvInferVersion.h.
trt_lib=$(find "$root/" -xdev -name 'libnvinfer.so.*.*' -not -path "$root/proc/*" -printf '%f\n' 2>/dev/null \
  | sed -E 's/^libnvinfer\.so\.//' | sort -u | paste -sd' ' -)
# shellcheck disable=SC2016  # dpkg-query's own ${Package}/${Version} format, not shell variables
trt=$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Package} ${Version}\n' 'libnvinfer*' 2>/dev/null \
  | awk '$1 ~ /^libnvinfer[0-9]+$/ { sub(/-.*/, "", $2); print $2 }' | sort -u | paste -sd' ' - || true)
if [ -z "$trt" ]; then
  trt=$(find "$root/" -xdev -name NvInferVersion.h -not -path "$root/proc/*" 2>/dev/null | while read -r h; do
    awk '/^#define TRT_(MAJOR|MINOR|PATCH|BUILD)_ENTERPRISE / { v[$2] = $3 }
         END { if (length(v) == 4) print v["TRT_MAJOR_ENTERPRISE"] "." v["TRT_MINOR_ENTERPRISE"] "." v["TRT_PATCH_ENTERPRISE"] "." v["TRT_BUILD_ENTERPRISE"] }' "$h"
  done | sort -u | paste -sd' ' -)
fi

echo "image: DALI ${dali:-not found}, ONNX Runtime ${ort:-not found}, TensorRT ${trt:-not found} (library ${trt_lib:-not found})"
[ "$dali" = "$want_dali" ] || fail "DALI ${dali:-not found} in the image, $want_dali expected"
[ "$ort" = "$want_ort" ] || fail "ONNX Runtime ${ort:-not found} in the image, $want_ort expected"
[ "$trt" = "$want_trt" ] || fail "TensorRT ${trt:-not found (no libnvinfer package, no NvInferVersion.h)} in the image, $want_trt expected"
[ "$trt_lib" = "${want_trt%.*}" ] || fail "TensorRT library libnvinfer.so.${trt_lib:-?} in the image, libnvinfer.so.${want_trt%.*} expected"
echo "versions ok"
