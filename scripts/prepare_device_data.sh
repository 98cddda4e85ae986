#!/usr/bin/env bash
# Run HERE (the development machine): stage what a training run on the GPU machine needs in the
# git-ignored folder .data/: the training images and a compact copy of the normalised VGG-19.
#   bash scripts/prepare_device_data.sh [--int8] [--images DIR]
# --int8   also write .data/vgg19_int8.safetensors (13 MB; fits in one call with the images)
# --images training-set folder with content/ and style/ (default: ../shared/train-set)
set -euo pipefail
cd "$(dirname "$0")/.."
images=../shared/train-set
int8=0
while [ $# -gt 0 ]; do
  case "$1" in
    --int8) int8=1 ;;
    --images) images="$2"; shift ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
  shift
done
case "$images" in *eval-set*) echo "refusing an evaluation folder: $images" >&2; exit 2 ;; esac
for kind in content style; do
  [ -d "$images/$kind" ] || { echo "missing $images/$kind" >&2; exit 1; }
done
mkdir -p .data/train-set
for kind in content style; do
  rm -rf ".data/train-set/$kind"
  cp -r "$images/$kind" ".data/train-set/$kind"
done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python - "$int8" <<'PY'
import sys
from mambast.networks.vgg import export_weights, fetch
src = fetch()
print(export_weights(".data/vgg19_fp16.safetensors", "float16", source=src))
if sys.argv[1] == "1":
    print(export_weights(".data/vgg19_int8.safetensors", "int8", source=src))
PY
du -sh .data/train-set .data/vgg19_*.safetensors
cat <<'TXT'
Each device call carries at most 64 MiB (working tree included). The images (~40 MiB) and the fp16
VGG (~25 MiB) together are just over, so send them in two calls made back to back:
  1. carry [".data/train-set"]                 command: bash scripts/device_train_start.sh
  2. carry [".data/vgg19_fp16.safetensors"]    command: bash scripts/device_train_start.sh --steps N ...
or in one call with the int8 VGG (--int8 here; features within ~1-4 % of fp32):
  carry [".data/train-set", ".data/vgg19_int8.safetensors"]
TXT
