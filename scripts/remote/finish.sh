#!/usr/bin/env bash
# On the GPU machine: stop the detached training with SIGTERM (the trainer writes a checkpoint) and export it
# into OUTPUT_DIR in files of at most CHUNK_MIB: the weights as bf16 shards, log.csv, the last sample grid, the
# end of the training log, and the whole checkpoint (optimizer state included) unless that takes everything
# over MAX_MIB. Here, scripts/remote/merge.py rebuilds a model folder (and the checkpoint) from them.
#   bash scripts/remote/finish.sh RUN_DIR OUTPUT_DIR CHUNK_MIB [MAX_MIB]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
RUN=${1:?usage: finish.sh RUN_DIR OUTPUT_DIR CHUNK_MIB [MAX_MIB]}
DEST=${2:?usage: finish.sh RUN_DIR OUTPUT_DIR CHUNK_MIB [MAX_MIB]}
CHUNK=${3:?usage: finish.sh RUN_DIR OUTPUT_DIR CHUNK_MIB [MAX_MIB]}
MAX=${4:-}
pid=$(cat "$RUN/train.pid" 2>/dev/null || echo "")
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 1 240); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  if kill -0 "$pid" 2>/dev/null; then echo "trainer did not stop in 240 s; exporting its last checkpoint"; fi
fi
mkdir -p "$DEST"
python3 "$here/export.py" "$RUN/out" "$DEST" --chunk-mib "$CHUNK" ${MAX:+--max-mib "$MAX"} || exit 1
[ -f "$RUN/train.log" ] && tail -n 200 "$RUN/train.log" >"$DEST/train-log-tail.txt"
ls -la "$DEST"
tail -n 3 "$RUN/train.log" 2>/dev/null
