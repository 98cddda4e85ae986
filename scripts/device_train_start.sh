#!/usr/bin/env bash
# Run THERE (the GPU machine), from the repository copy: take what this call carried in .data/, and once the
# images and the VGG are both on the machine, start `mambast train` detached. Extra arguments go to the
# trainer (e.g. --steps 20000 --ckpt-every 500 --sample-every 500 --config default).
#   bash scripts/device_train_start.sh [trainer flags...]
# Carried .data/init/ (bf16 shards + manifest.json from device_train_finish.sh) starts from those weights
# (Adam restarts). A run already in $HOME/mambast-run/out is resumed from its latest checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${MAMBAST_DEVICE_DATA:-$HOME/mambast-data}
RUN=${MAMBAST_DEVICE_RUN:-$HOME/mambast-run}
mkdir -p "$DATA" "$RUN"

# 1. keep what this call carried (files outside the repository copy survive while the machine is warm)
if [ -d .data/train-set ]; then rm -rf "$DATA/train-set"; cp -r .data/train-set "$DATA/train-set"; echo "images copied"; fi
for f in .data/vgg19_*.safetensors; do [ -f "$f" ] && cp "$f" "$DATA/" && echo "copied $f"; done
if [ -d .data/init ]; then rm -rf "$DATA/init"; cp -r .data/init "$DATA/init"; echo "init weights copied"; fi

if [ -f "$RUN/train.pid" ] && kill -0 "$(cat "$RUN/train.pid")" 2>/dev/null; then
  echo "training is already running (pid $(cat "$RUN/train.pid"))"; tail -n 3 "$RUN/train.log"; exit 0
fi

# 2. everything there? otherwise say what the next call must carry
vgg=""
for f in "$DATA/vgg19_fp16.safetensors" "$DATA/vgg19_int8.safetensors"; do [ -f "$f" ] && { vgg="$f"; break; }; done
missing=""
[ -d "$DATA/train-set/content" ] && [ -d "$DATA/train-set/style" ] || missing="$missing .data/train-set"
[ -n "$vgg" ] || missing="$missing .data/vgg19_fp16.safetensors"
if [ -n "$missing" ]; then
  echo "not started: carry$missing in the next call (back to back, while this machine is warm)"; exit 0
fi

# 3. a snapshot of the code, so later calls that refresh the repository copy cannot change a running job
rm -rf "$RUN/src"; mkdir -p "$RUN/src"; cp -r mambast "$RUN/src/mambast"; cp -r scripts "$RUN/src/scripts"
export PYTHONPATH="$RUN/src" PYTHONUNBUFFERED=1

extra=()
if ls "$RUN/out/checkpoints"/step_*.pt >/dev/null 2>&1; then
  extra+=(--resume latest)
elif [ -f "$DATA/init/manifest.json" ]; then
  python3 "$RUN/src/scripts/merge_shards.py" "$DATA/init" --out "$DATA/init-model"
  step=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1])).get('step', 0))" "$DATA/init/manifest.json")
  extra+=(--init "$DATA/init-model" --init-step "$step")
fi

setsid nohup python3 -m mambast.train --content "$DATA/train-set/content" --style "$DATA/train-set/style" \
  --out "$RUN/out" --vgg "$vgg" --workers 6 "${extra[@]}" "$@" >"$RUN/train.log" 2>&1 </dev/null &
echo $! >"$RUN/train.pid"
echo "started pid $(cat "$RUN/train.pid"); log: $RUN/train.log"
sleep 45
tail -n 5 "$RUN/train.log"
kill -0 "$(cat "$RUN/train.pid")" 2>/dev/null || { echo "training exited early"; exit 1; }
