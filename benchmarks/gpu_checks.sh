#!/usr/bin/env bash
# GPU checks: the tests of the fused Triton selective scan, the step-size kernel, the fused convolutions, the
# CUDA-graph pipeline and the default model on the GPU (gpu-marked ones included), a compiled training step's
# gradients against the eager one's per model part (compile_check.py), then benchmarks/scan.py. Run on a
# CUDA machine; logs and JSON go to the folder given (default out/gpu_checks).
#   bash benchmarks/gpu_checks.sh [OUTPUT_DIR]
# SWEEP=0 skips the tile-configuration sweep of the benchmark (about a minute of compiling).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-out/gpu_checks}"
mkdir -p "$out"
unset TRITON_INTERPRET                                  # compiled kernels, not the CPU interpreter
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

python - <<'EOF' 2>&1 | tee "$out/env.log" || exit 2
import torch, triton
assert torch.cuda.is_available(), "no CUDA device visible"
print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__}")
EOF

start=$SECONDS
# The Triton kernels' files whole (compiled, not interpreted, here), then every gpu-marked test elsewhere.
python -m pytest tests/ops/test_triton_scan.py tests/ops/test_triton_delta.py tests/ops/test_triton_conv.py \
    tests/test_default_model.py -q -rs 2>&1 | tee "$out/gpu_tests.log"
tests=${PIPESTATUS[0]}
python -m pytest tests -m gpu --ignore=tests/ops -q -rs 2>&1 | tee -a "$out/gpu_tests.log"
[ "${PIPESTATUS[0]}" = 0 ] || tests=1
if grep -q "SKIPPED" "$out/gpu_tests.log"; then
    echo "tests: some tests were skipped on the GPU (see above); counted as a failure"
    tests=1
fi
echo "tests: exit $tests after $((SECONDS - start)) s"

start=$SECONDS
python benchmarks/compile_check.py --out "$out" 2>&1 | tee "$out/compile_check.log"
compiled=${PIPESTATUS[0]}
echo "compile check: exit $compiled after $((SECONDS - start)) s"

start=$SECONDS
sweep=()
[ "${SWEEP:-1}" = 1 ] && sweep=(--sweep)
python benchmarks/scan.py --out "$out" ${sweep[@]+"${sweep[@]}"} 2>&1 | tee "$out/bench_scan.log"
bench=${PIPESTATUS[0]}
echo "benchmark: exit $bench after $((SECONDS - start)) s"

verdict() { [ "$1" = 0 ] && echo passed || echo FAILED; }
echo "summary: tests $(verdict $tests), compiled training gradients $(verdict $compiled), benchmark correctness" \
     "checks $(verdict $bench); logs and JSON in $out"
[ "$tests" = 0 ] && [ "$compiled" = 0 ] && [ "$bench" = 0 ]
