#!/usr/bin/env bash
# On the GPU machine: rebuild the data folder from chunks, then start `python -m mambast.train` detached.
#   bash scripts/remote/start.sh DATA_DIR RUN_DIR [trainer flags...]
# DATA_DIR holds what pack_training.py wrote (part-* + chunks.json; chunks may arrive over several transfers:
# the script says which are still missing and starts nothing) or the unpacked data: train-set/{content,style},
# vgg19_*.safetensors and optionally checkpoint.pt. RUN_DIR gets the run: out/ (the trainer's --out),
# train.log, train.pid and src/ (a copy of the code, so that later changes to the checkout cannot reach a
# running job). The run continues, in this order, from RUN_DIR/out's latest checkpoint, from DATA_DIR/checkpoint.pt
# (exactly: weights, optimizer state, data position), or from DATA_DIR/init/ (weight shards from export.py:
# weights only, a fresh optimizer); otherwise it starts afresh. Trainer flags follow, e.g. --steps 20000.
# NPROC=N (default 1) runs N processes, one per GPU, under torchrun (data-parallel: --batch-size is per process,
# so the global batch is N times it; the learning rate is not scaled).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
DATA=${1:?usage: start.sh DATA_DIR RUN_DIR [trainer flags...]}
RUN=${2:?usage: start.sh DATA_DIR RUN_DIR [trainer flags...]}
shift 2
mkdir -p "$DATA" "$RUN"
DATA=$(cd "$DATA" && pwd)
RUN=$(cd "$RUN" && pwd)

if [ -f "$RUN/train.pid" ] && kill -0 "$(cat "$RUN/train.pid")" 2>/dev/null; then
  echo "training is already running (pid $(cat "$RUN/train.pid"))"; tail -n 3 "$RUN/train.log"; exit 0
fi
if [ -f "$DATA/chunks.json" ]; then
  rc=0; python3 "$here/chunks.py" unpack "$DATA" "$DATA" || rc=$?
  [ "$rc" = 3 ] && exit 0            # chunks still missing: said which
  [ "$rc" = 0 ] || exit "$rc"
  rm -f "$DATA"/part-* "$DATA/chunks.json"
fi

vgg=$(ls "$DATA"/vgg19_*.safetensors 2>/dev/null | head -n 1 || true)
[ -d "$DATA/train-set/content" ] && [ -d "$DATA/train-set/style" ] || { echo "no train-set/{content,style} in $DATA"; exit 1; }
[ -n "$vgg" ] || { echo "no vgg19_*.safetensors in $DATA"; exit 1; }

rm -rf "$RUN/src"; mkdir -p "$RUN/src"; cp -r "$repo/mambast" "$repo/scripts" "$RUN/src/"
export PYTHONPATH="$RUN/src" PYTHONUNBUFFERED=1

extra=()
if ls "$RUN/out/checkpoints"/step_*.pt >/dev/null 2>&1; then
  extra+=(--resume latest)
elif [ -f "$DATA/checkpoint.pt" ]; then
  extra+=(--resume "$DATA/checkpoint.pt")
elif [ -f "$DATA/init/manifest.json" ]; then
  python3 "$RUN/src/scripts/remote/merge.py" "$DATA/init" --out "$DATA/init-model"
  step=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1])).get('step', 0))" "$DATA/init/manifest.json")
  extra+=(--init "$DATA/init-model" --init-step "$step")
fi

NPROC=${NPROC:-1}
launch=(python3 -m mambast.train)
if [ "$NPROC" -gt 1 ]; then
  # NCCL's NVLink multicast off: it needs fabric support some hosts lack
  export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
  launch=(python3 -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m mambast.train)
fi
setsid nohup "${launch[@]}" --content "$DATA/train-set/content" --style "$DATA/train-set/style" \
  --vgg "$vgg" --out "$RUN/out" "${extra[@]}" "$@" >"$RUN/train.log" 2>&1 </dev/null &
echo $! >"$RUN/train.pid"
echo "started pid $(cat "$RUN/train.pid") ${extra[*]}; log: $RUN/train.log"
sleep "${START_WAIT_S:-45}"
tail -n 5 "$RUN/train.log"
kill -0 "$(cat "$RUN/train.pid")" 2>/dev/null || { echo "training exited early"; exit 1; }
