#!/usr/bin/env bash
# On a machine with 2 GPUs: evidence that data-parallel training works and how it scales.
#   bash scripts/remote/ddp_check.sh OUTPUT_DIR DATA_DIR VGG_FILE
# DATA_DIR holds content/ and style/ (e.g. train-set/ of a folder unpacked from pack_training.py's chunks);
# VGG_FILE is an exported loss network (vgg19_int8.safetensors or vgg19_float16.safetensors).
# 1. one GPU, 2. torchrun with two GPUs (same per-GPU batch): it/s, images/s, scaling efficiency;
# 3. both ranks hold bitwise-identical weights and Adam moments (scripts/ddp_compare.py);
# 4. the two-GPU run's checkpoint (written by rank 0) resumes on one GPU;
# 5. kill -9 of rank 1 mid-run: torchrun exits non-zero, no process is left, the newest checkpoint loads.
# Writes OUTPUT_DIR/ddp_check.log (everything) and OUTPUT_DIR/ddp_summary.json (numbers, pass/fail per check).
# DDP_CHECK_CPU=1 runs the same flow on CPU (gloo, tiny model, 32-pixel crops, a few steps) in about a minute.
# Other settings: DDP_CHECK_WORKERS (loader processes per stream and rank; 4, on CPU 0), DDP_CHECK_WORK
# (scratch folder, removed at the end unless DDP_CHECK_KEEP=1), DDP_CHECK_BUDGET (seconds for the whole script; 560).
set -uo pipefail
USAGE="usage: ddp_check.sh OUTPUT_DIR DATA_DIR VGG_FILE"
OUTDIR=$(realpath -m "${1:?$USAGE}")
DATA=$(realpath -m "${2:?$USAGE}")
VGG=$(realpath -m "${3:?$USAGE}")
cd "$(dirname "$0")/../.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
mkdir -p "$OUTDIR"
LOG=$OUTDIR/ddp_check.log
SUMMARY=$OUTDIR/ddp_summary.json
CPU=${DDP_CHECK_CPU:-0}
BUDGET=${DDP_CHECK_BUDGET:-560}
WORK=${DDP_CHECK_WORK:-$(mktemp -d -t ddp-check.XXXXXX)}
RES=$WORK/results
mkdir -p "$RES"

if [ "$CPU" = 1 ]; then
  export OMP_NUM_THREADS=1
  BATCH=2
  MODEL=(--device cpu --config tiny --size 64 --crop 32 --batch-size $BATCH --workers ${DDP_CHECK_WORKERS:-0} --log-every 2 --print-every 4)
  STEPS=12 WARM=4 CKPT=5 CMP_STEPS=3 PLUS=4 KILL_CKPT=3 KILL_AFTER=1
  T_RUN=120 T_CMP=90 T_RESUME=90 KILL_POLL=60 KILL_EXIT=60 LEFTOVER_WAIT=15
else
  BATCH=8
  MODEL=(--size 256 --crop 256 --batch-size $BATCH --workers ${DDP_CHECK_WORKERS:-4} --log-every 10 --print-every 50)
  # CKPT does not divide STEPS: when it does, the trainer's ranks disagree on writing a final checkpoint
  # (only rank 0 records the last one written) and rank 1 waits in a collective that rank 0 never joins
  STEPS=150 WARM=50 CKPT=40 CMP_STEPS=20 PLUS=20 KILL_CKPT=20 KILL_AFTER=3
  T_RUN=170 T_CMP=120 T_RESUME=120 KILL_POLL=90 KILL_EXIT=60 LEFTOVER_WAIT=15
fi
COMMON=(--content "$DATA/content" --style "$DATA/style" --vgg "$VGG" --sample-every 0 --no-progress "${MODEL[@]}")
TORCHRUN=(python3 -m torch.distributed.run --standalone --nproc_per_node 2)

now() { date +%s.%N; }
T_START=$(now)
elapsed() { awk -v a="$T_START" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }'; }
say() { echo "=== [$(elapsed)s] $*"; }

# timeout for a step: its own limit, cut to what the budget leaves (20 s kept for the summary); 0 = skip
limit() {
  local left=$(( BUDGET - $(elapsed) - 20 ))
  (( left < 30 )) && { echo 0; return; }
  (( $1 < left )) && echo "$1" || echo "$left"
}

alive() {  # a process that exists and is not a zombie
  [ -r "/proc/$1/stat" ] || return 1
  local state; state=$(sed -E 's/^.*\) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$state" ] && [ "$state" != Z ]
}

descendants() {  # every process below $1
  local c
  for c in $(pgrep -P "$1"); do echo "$c"; descendants "$c"; done
}

rank_pid() {  # the worker torchrun started for rank $2 (its environment holds RANK=$2; its parent's does not)
  local p
  for p in $(descendants "$1"); do
    if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "RANK=$2" &&
       ! tr '\0' '\n' <"/proc/$(ps -o ppid= -p "$p" | tr -d ' ')/environ" 2>/dev/null | grep -qx "RANK=$2"; then
      echo "$p"; return
    fi
  done
}

skip() { printf '{"status": "skipped", "reason": "%s"}\n' "$2" >"$RES/$1.json"; say "$1: skipped ($2)"; }

# throughput of a finished run from its log.csv: steps after WARM, timed by the trainer's elapsed_s column
throughput() {  # name rc wall out_dir world_size
  python3 - "$RES/$1.json" "$2" "$3" "$4/log.csv" "$5" "$WARM" "$BATCH" "$STEPS" <<'PY'
import csv, json, statistics, sys
dest, rc, wall, path, world, warm, batch, steps = sys.argv[1:]
rc, world, warm, batch, steps = int(rc), int(world), int(warm), int(batch), int(steps)
res = {"exit_code": rc, "wall_s": float(wall), "world_size": world, "batch_per_gpu": batch,
       "global_batch": batch * world, "steps": steps, "warmup_steps": warm}
try:
    rows = [r for r in csv.DictReader(open(path)) if r["step"].isdigit()]
    a = next(r for r in rows if int(r["step"]) >= warm)
    b = rows[-1]
    n, dt = int(b["step"]) - int(a["step"]), float(b["elapsed_s"]) - float(a["elapsed_s"])
    res.update(last_step=int(b["step"]), timed_steps=n, timed_s=dt, it_per_s=n / dt,
               images_per_s=n / dt * batch * world,
               median_window_it_per_s=statistics.median(float(r["it_per_s"]) for r in rows if int(r["step"]) > warm),
               final_total_loss=float(b["total"]))
except Exception as e:  # no log, too few rows
    res["error"] = f"{type(e).__name__}: {e}"
res["pass"] = rc == 0 and "it_per_s" in res and res["last_step"] == steps
json.dump(res, open(dest, "w"), indent=1)
print(json.dumps({k: res.get(k) for k in ("exit_code", "last_step", "it_per_s", "images_per_s",
                                           "median_window_it_per_s", "pass")}))
PY
}

run_timed() {  # name timeout out_dir world_size command...: run, log, then measure
  local name=$1 t=$2 out=$3 world=$4; shift 4
  local t0 rc; t0=$(now)
  timeout -k 15 "$t" "$@" 2>&1
  rc=$?
  local wall; wall=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')
  say "$name: exit code $rc after ${wall}s; log.csv:"
  cat "$out/log.csv" 2>/dev/null
  throughput "$name" "$rc" "$wall" "$out" "$world"
}

main() {
  say "ddp_check: cpu=$CPU data=$DATA vgg=$VGG work=$WORK budget=${BUDGET}s"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count())"
  [ "$CPU" = 1 ] || nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
  env | grep -E '^(NCCL|TORCH_SYMM|NVSHMEM)_' | sort
  local ok=1
  [ -d "$DATA/content" ] && [ -d "$DATA/style" ] || { echo "missing images: $DATA/{content,style}"; ok=0; }
  [ -f "$VGG" ] || { echo "missing VGG weights: $VGG"; ok=0; }
  if [ "$CPU" != 1 ] && ! python3 -c "import torch, sys; sys.exit(torch.cuda.device_count() < 2)"; then
    echo "fewer than 2 GPUs"; ok=0
  fi
  if [ $ok = 0 ]; then
    for s in gpu1 gpu2 identical resume kill; do skip $s "preflight failed"; done
    return
  fi

  # 1. one GPU
  local t
  t=$(limit $T_RUN)
  if [ "$t" = 0 ]; then skip gpu1 "time budget"; else
    say "1/5 one process, $STEPS steps"
    run_timed gpu1 "$t" "$WORK/gpu1" 1 python3 -m mambast.train "${COMMON[@]}" --out "$WORK/gpu1" \
      --steps $STEPS --ckpt-every $CKPT
  fi

  # 2. two GPUs
  t=$(limit $T_RUN)
  if [ "$t" = 0 ]; then skip gpu2 "time budget"; else
    say "2/5 torchrun, 2 processes, $STEPS steps"
    run_timed gpu2 "$t" "$WORK/gpu2" 2 "${TORCHRUN[@]}" -m mambast.train "${COMMON[@]}" --out "$WORK/gpu2" \
      --steps $STEPS --ckpt-every $CKPT
    ls -l "$WORK/gpu2/checkpoints"
  fi

  # 3. identical weights on both ranks
  t=$(limit $T_CMP)
  if [ "$t" = 0 ]; then skip identical "time budget"; else
    say "3/5 torchrun, 2 processes, $CMP_STEPS steps, then compare every rank's tensors"
    timeout -k 15 "$t" "${TORCHRUN[@]}" scripts/ddp_compare.py "${COMMON[@]}" --out "$WORK/compare" \
      --steps $CMP_STEPS --ckpt-every 0 --json "$WORK/compare.json" 2>&1
    local rc=$?
    python3 - "$RES/identical.json" "$rc" "$WORK/compare.json" <<'PY'
import json, os, sys
dest, rc, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
res = {"exit_code": rc}
if os.path.exists(path):
    rep = json.load(open(path))
    res.update(steps=rep["step"], identical=rep["identical"],
               max_abs_diff={g: max(v["max_abs_diff_vs_rank0"]) for g, v in rep["groups"].items()},
               sha256_16={g: v["sha256_16"] for g, v in rep["groups"].items()})
res["pass"] = rc == 0 and res.get("identical") is True
json.dump(res, open(dest, "w"), indent=1)
print(json.dumps(res))
PY
  fi

  # 4. resume the two-GPU run's rank-0 checkpoint on one GPU
  local ckpt
  ckpt=$(ls "$WORK"/gpu2/checkpoints/step_*.pt 2>/dev/null | sort | tail -n 1)
  t=$(limit $T_RESUME)
  if [ -z "$ckpt" ]; then skip resume "no checkpoint from step 2"
  elif [ "$t" = 0 ]; then skip resume "time budget"; else
    local from; from=$(basename "$ckpt" .pt); from=$((10#${from#step_}))
    say "4/5 one process resumes $ckpt (step $from) for $PLUS more steps"
    timeout -k 15 "$t" python3 -m mambast.train "${COMMON[@]}" --out "$WORK/resume" --resume "$ckpt" \
      --steps $((from + PLUS)) --ckpt-every 0 2>&1 | tee "$WORK/resume.log"
    local rc=${PIPESTATUS[0]}
    cat "$WORK/resume/log.csv" 2>/dev/null
    python3 - "$RES/resume.json" "$rc" "$ckpt" "$from" "$PLUS" "$BATCH" "$WORK/resume" "$WORK/resume.log" <<'PY'
import csv, json, re, sys
dest, rc, ckpt, start, plus, batch, out, log = sys.argv[1:]
rc, start, plus, batch = int(rc), int(start), int(plus), int(batch)
text = open(log).read()
res = {"exit_code": rc, "checkpoint": ckpt.rsplit("/", 1)[-1], "saved_step": start, "target_step": start + plus}
m = re.search(r"step (\d+) of (\d+)", text)
res["started_at_step"] = int(m.group(1)) if m else None
m = re.search(r"finished at step (\d+)", text)
res["finished_at_step"] = int(m.group(1)) if m else None
res["rng_reseeded_for_new_world_size"] = "reseeding" in text
try:
    from mambast.train.checkpoint import list_checkpoints, load_checkpoint
    src, new = load_checkpoint(ckpt), load_checkpoint(list_checkpoints(out + "/checkpoints")[-1])
    res.update(saved_world_size=src["world_size"], new_step=new["step"], new_world_size=new["world_size"],
               samples_seen_saved=src["data"]["seen"]["content"], samples_seen_new=new["data"]["seen"]["content"])
    res["data_position_continues"] = new["data"]["seen"]["content"] == src["data"]["seen"]["content"] + plus * batch
    rows = [r for r in csv.DictReader(open(out + "/log.csv")) if r["step"].isdigit()]
    res["first_logged_step"] = int(rows[0]["step"]) if rows else None
    res["final_total_loss"] = float(rows[-1]["total"]) if rows else None
except Exception as e:
    res["error"] = f"{type(e).__name__}: {e}"
res["pass"] = (rc == 0 and res["started_at_step"] == start and res["finished_at_step"] == start + plus
               and res.get("new_step") == start + plus and res.get("data_position_continues") is True)
json.dump(res, open(dest, "w"), indent=1)
print(json.dumps(res))
PY
  fi

  # 5. kill -9 one rank mid-run
  if (( $(elapsed) + KILL_POLL + KILL_EXIT + LEFTOVER_WAIT + 20 > BUDGET )); then skip kill "time budget"; else
    kill_test
  fi
}

kill_test() {
  local out=$WORK/kill klog=$WORK/kill.log
  say "5/5 torchrun, 2 processes, checkpoint every $KILL_CKPT steps; kill -9 rank 1 once a checkpoint exists"
  "${TORCHRUN[@]}" -m mambast.train "${COMMON[@]}" --out "$out" --steps 100000 --ckpt-every $KILL_CKPT \
    >"$klog" 2>&1 &
  local tr=$! t0; t0=$(now)
  local first="" waited=0
  while (( waited < KILL_POLL )); do
    first=$(ls "$out"/checkpoints/step_*.pt 2>/dev/null | head -n 1)
    [ -n "$first" ] && break
    alive $tr || break
    sleep 1; waited=$((waited + 1))
  done
  local victim="" procs="" rc="" exit_s="" before="" killed_at_step=""
  if [ -n "$first" ] && alive $tr; then
    sleep $KILL_AFTER
    before=$(ls "$out/checkpoints" | tr '\n' ' ')
    killed_at_step=$(tail -n 1 "$out/log.csv" 2>/dev/null | cut -d, -f1)
    victim=$(rank_pid $tr 1)
    procs=$(descendants $tr | tr '\n' ' ')
    say "checkpoints before the kill: $before; last logged step $killed_at_step; processes: torchrun $tr, below it: $procs"
    ps -o pid,ppid,stat,etime,args -p "$(echo $tr $procs | tr ' ' ',')" | cut -c1-160
    if [ -n "$victim" ]; then
      say "kill -9 $victim (rank 1)"
      kill -9 "$victim"
      local tk; tk=$(now)
      while alive $tr && awk -v a="$tk" -v b="$(now)" -v l="$KILL_EXIT" 'BEGIN { exit !(b - a < l) }'; do sleep 0.5; done
      exit_s=$(awk -v a="$tk" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    fi
  else
    say "no checkpoint after ${waited}s (or the run ended): not killing"
  fi
  local exited=1
  if alive $tr; then
    exited=0; say "torchrun still running: SIGTERM, then SIGKILL"
    kill -TERM $tr; sleep 10; alive $tr && kill -9 $tr
  fi
  wait $tr; rc=$?
  say "torchrun exit code $rc, ${exit_s}s after the kill; its log:"
  grep -v -E '^\s*(File |\^|return |\[rank[01]\]:\s+(File|\^|return))' "$klog" | tail -n 60
  # leftovers: everything that ran below torchrun, and anything still naming this run's folder
  local p left="" waited2=0
  while :; do
    left=""
    for p in $procs $(pgrep -f -- "--out $out" 2>/dev/null); do alive "$p" && left="$left $p"; done
    [ -z "$left" ] && break
    (( waited2 >= LEFTOVER_WAIT )) && break
    sleep 1; waited2=$((waited2 + 1))
  done
  if [ -n "$left" ]; then
    say "left over after ${waited2}s:$left; killing them"
    ps -o pid,ppid,stat,args -p "$(echo $left | tr ' ' ',')" | cut -c1-160
    for p in $left; do kill -9 "$p" 2>/dev/null; done
  fi
  local gpu_apps=""
  if [ "$CPU" != 1 ]; then  # for information (the pass needs no process left below torchrun)
    gpu_apps=$(nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader | tr '\n' ';')
    nvidia-smi --query-gpu=index,memory.used --format=csv,noheader
  fi
  python3 - "$RES/kill.json" "$out" "$rc" "$exited" "${exit_s:-}" "${victim:-}" "$left" "$waited2" "$before" \
    "${killed_at_step:-}" "$gpu_apps" "$KILL_EXIT" <<'PY'
import json, os, re, sys
dest, out, rc, exited, exit_s, victim, left, waited, before, killed_at, gpu_apps, limit = sys.argv[1:]
res = {"killed_pid": int(victim) if victim else None, "torchrun_exit_code": int(rc),
       "torchrun_exited_by_itself": exited == "1", "exit_s_after_kill": float(exit_s) if exit_s else None,
       "exit_limit_s": float(limit), "last_logged_step_before_kill": int(killed_at) if killed_at else None,
       "checkpoints_before_kill": before.split(), "leftover_pids": left.split(), "leftover_wait_s": int(waited),
       "gpu_processes_after": [a for a in gpu_apps.split(";") if a.strip()]}
try:
    from mambast.config import MambaSTConfig
    from mambast.model import MambaST
    from mambast.train.checkpoint import list_checkpoints, load_checkpoint
    ckdir = os.path.join(out, "checkpoints")
    found = list_checkpoints(ckdir)
    res["checkpoints_after"] = [p.name for p in found]
    res["stray_temp_files"] = [n for n in os.listdir(ckdir) if n.endswith(".tmp")]
    newest = found[-1]
    ck = load_checkpoint(newest)                       # torch.load(weights_only=True), as the trainer resumes
    model = MambaST(MambaSTConfig.from_dict(ck["model_config"]))
    model.load_state_dict(ck["model"])                 # strict
    import torch
    res.update(newest=newest.name, newest_step=int(ck["step"]),
               step_matches_name=int(ck["step"]) == int(re.search(r"\d+", newest.name).group()),
               newest_world_size=ck["world_size"], rng_states=len(ck["rng"]),
               weights_finite=all(bool(torch.isfinite(v).all()) for v in ck["model"].values()),
               optimizer_entries=len(ck["optimizer"]["state"]))
    res["newest_not_older_than_before_kill"] = bool(res["checkpoints_before_kill"]) and \
        newest.name >= sorted(res["checkpoints_before_kill"])[-1]
except Exception as e:
    res["error"] = f"{type(e).__name__}: {e}"
res["pass"] = (res["killed_pid"] is not None and res["torchrun_exit_code"] != 0 and res["torchrun_exited_by_itself"]
               and res["exit_s_after_kill"] is not None and res["exit_s_after_kill"] <= float(limit)
               and not res["leftover_pids"] and res.get("step_matches_name") is True
               and res.get("newest_not_older_than_before_kill") is True
               and res.get("weights_finite") is True and res.get("newest_world_size") == 2)
json.dump(res, open(dest, "w"), indent=1)
print(json.dumps(res))
PY
}

summary() {
  python3 - "$RES" "$SUMMARY" "$CPU" "$(elapsed)" <<'PY'
import json, os, sys
res_dir, dest, cpu, wall = sys.argv[1], sys.argv[2], sys.argv[3] == "1", float(sys.argv[4])
r = {}
for name in ("gpu1", "gpu2", "identical", "resume", "kill"):
    p = os.path.join(res_dir, name + ".json")
    r[name] = json.load(open(p)) if os.path.exists(p) else {"status": "not run"}
g1, g2 = r["gpu1"], r["gpu2"]
eff = (g2["images_per_s"] / (2 * g1["images_per_s"])) if "images_per_s" in g1 and "images_per_s" in g2 else None
out = {"mode": "cpu-dry-run" if cpu else "cuda", "wall_s": wall,
       "one_gpu": g1, "two_gpus": g2, "scaling_efficiency": eff,
       "identical_weights": r["identical"], "resume_on_one_gpu": r["resume"], "kill_one_rank": r["kill"],
       "checks": {"one_gpu_run": g1.get("pass", False), "two_gpu_run": g2.get("pass", False),
                  "identical_weights": r["identical"].get("pass", False),
                  "resume_on_one_gpu": r["resume"].get("pass", False), "kill_one_rank": r["kill"].get("pass", False)}}
out["all_pass"] = all(out["checks"].values())
json.dump(out, open(dest, "w"), indent=1)
f = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"
print(f"\n{'':24s}{'it/s':>8s}{'images/s':>10s}{'median it/s':>13s}  (batch {g1.get('batch_per_gpu', '?')} per GPU)")
for label, g in (("1 GPU", g1), ("2 GPUs (torchrun)", g2)):
    print(f"{label:24s}{f(g.get('it_per_s')):>8s}{f(g.get('images_per_s'), 1):>10s}{f(g.get('median_window_it_per_s')):>13s}")
print(f"scaling efficiency      {f(eff, 3)}  (images/s with 2) / (2 x images/s with 1)")
ident = r["identical"]
print(f"identical weights       {ident.get('identical')}  max|rank1-rank0| {ident.get('max_abs_diff')}")
rs = r["resume"]
print(f"resume on 1 GPU         from step {rs.get('saved_step')} started at {rs.get('started_at_step')}, "
      f"finished at {rs.get('finished_at_step')}")
k = r["kill"]
print(f"kill -9 rank 1          torchrun exit {k.get('torchrun_exit_code')} after {k.get('exit_s_after_kill')}s, "
      f"leftovers {k.get('leftover_pids')}, newest {k.get('newest')} step {k.get('newest_step')} loads: "
      f"{k.get('step_matches_name')}")
for name, ok in out["checks"].items():
    print(f"  {'PASS' if ok else 'FAIL'}  {name}")
print(f"all pass: {out['all_pass']}  ({wall:.0f}s)")
PY
}

{
  main
  summary
  [ "${DDP_CHECK_KEEP:-0}" = 1 ] || rm -rf "$WORK"
} 2>&1 | tee "$LOG"
