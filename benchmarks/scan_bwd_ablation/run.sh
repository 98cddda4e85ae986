#!/usr/bin/env bash
# Time each variant of the training scan backward (fwd + bwd, TRAINING_CONFIG, Bt 16 and 24) on a CUDA GPU:
#   bash benchmarks/scan_bwd_ablation/run.sh [variants...]   (repository root; base runs first and last)
# A variant removes or changes one part of _scan_bwd_kernel (make_variants.py); for timing only, its gradients
# are wrong.
set -u; unset TRITON_INTERPRET
here=$(dirname "$0")
python "$here/make_variants.py" . /tmp/scan_bwd_variants > /dev/null || exit 1
variants=${*:-"no_dC no_dB no_du no_atomics store_dBdC fma_exp no_ddelta_store no_states_load"}
for v in base $variants base; do
  PYTHONPATH=/tmp/scan_bwd_variants/$v timeout 120 python "$here/time_bwd.py" $v 2>&1 | tail -1
done
