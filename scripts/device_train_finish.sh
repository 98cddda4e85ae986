#!/usr/bin/env bash
# Run THERE, in the last call: stop training with SIGTERM (the trainer writes a checkpoint), then put into
# $OUT the weights as bf16 safetensors shards of < 16 MiB with manifest.json, log.csv, the last sample grid
# and the end of the training log. Rebuild fp32 weights here with scripts/merge_shards.py.
#   bash scripts/device_train_finish.sh
set -uo pipefail
cd "$(dirname "$0")/.."
RUN=${MAMBAST_DEVICE_RUN:-$HOME/mambast-run}
: "${OUT:?OUT must name the folder whose files come back}"
pid=$(cat "$RUN/train.pid" 2>/dev/null || echo "")
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 1 240); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  if kill -0 "$pid" 2>/dev/null; then echo "trainer did not stop in 240 s; exporting its last checkpoint"; fi
fi
PYTHONPATH="$PWD" python3 scripts/device_export.py "$RUN/out" "$OUT" || exit 1
[ -f "$RUN/out/log.csv" ] && cp "$RUN/out/log.csv" "$OUT/log.csv"
[ -f "$RUN/out/samples/latest.png" ] && cp "$RUN/out/samples/latest.png" "$OUT/samples-latest.png"
[ -f "$RUN/train.log" ] && tail -n 200 "$RUN/train.log" >"$OUT/train-log-tail.txt"
ls -la "$OUT"
tail -n 3 "$RUN/train.log"
