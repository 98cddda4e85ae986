#!/usr/bin/env bash
# Run THERE: keep the machine busy while training runs detached. Returns after N seconds (default 540; keep
# it under the 10-minute call limit) or as soon as training ends, printing the log's last line each minute.
#   bash scripts/device_train_wait.sh [N]
set -uo pipefail
RUN=${MAMBAST_DEVICE_RUN:-$HOME/mambast-run}
n=${1:-540}
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
