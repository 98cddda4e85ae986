#!/usr/bin/env bash
# On the GPU machine: wait while the detached training runs, printing the log's last line each minute.
# Returns after SECONDS (default 540) or as soon as training ends.
#   bash scripts/remote/wait.sh RUN_DIR [SECONDS]
set -uo pipefail
RUN=${1:?usage: wait.sh RUN_DIR [SECONDS]}
n=${2:-540}
end=$((SECONDS + n))
pid=$(cat "$RUN/train.pid" 2>/dev/null || echo "")
[ -n "$pid" ] || { echo "no training was started ($RUN/train.pid missing)"; exit 1; }
while [ "$SECONDS" -lt "$end" ] && kill -0 "$pid" 2>/dev/null; do
  left=$((end - SECONDS))
  sleep $((left < 60 ? left : 60))
  tail -n 1 "$RUN/train.log"
done
tail -n 5 "$RUN/train.log"
if kill -0 "$pid" 2>/dev/null; then echo "still training (pid $pid)"; else echo "training has ended"; fi
