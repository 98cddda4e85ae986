#!/usr/bin/env bash
# A/B timing of code versions with benchmarks/efficiency.py, alternating on one host, so that clock and
# machine differences fall on both sides (repo root).
#
#   bash benchmarks/ab.sh prepare DIR COMMIT...          # where the git history is: each COMMIT's mambast/ and
#                                                        # benchmarks/ into DIR/COMMIT (weights excluded)
#   bash benchmarks/ab.sh run ROUNDS TREE... [-- ARGS]   # on the CUDA machine: efficiency.py in each TREE (a
#                                                        # prepared folder, or . for this tree), ROUNDS times
#
# DIR and TREE are relative to the repository root. ARGS go to efficiency.py (default: --runs 60 --methods
# ours-compiled --resolutions 512 --dtypes bf16). Only the "ms/image" lines are printed, under a "## TREE ROUND"
# header; the first round of each tree includes compiling.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
usage() { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
case "$1" in
prepare)
    [ $# -ge 3 ] || usage
    dir=$2; shift 2
    for commit in "$@"; do
        rm -rf "${dir:?}/$commit" && mkdir -p "$dir/$commit"
        git archive "$commit" mambast benchmarks | tar -x -C "$dir/$commit"
        rm -rf "$dir/$commit/mambast/assets"             # efficiency.py runs random weights
        echo "$dir/$commit: $(git log -1 --format='%h %s' "$commit" | cut -c1-100)"
    done ;;
run)
    [ $# -ge 3 ] || usage
    rounds=$2; shift 2
    trees=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do trees+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    args=("$@")
    [ ${#args[@]} -gt 0 ] || args=(--runs 60 --methods ours-compiled --resolutions 512 --dtypes bf16)
    unset TRITON_INTERPRET
    echo "# python benchmarks/efficiency.py --out <tmp> ${args[*]}"
    for ((r = 1; r <= rounds; r++)); do
        for tree in "${trees[@]}"; do
            echo "## $tree $r"
            out=$(mktemp -d)
            (cd "$tree" && PYTHONPATH=$PWD python benchmarks/efficiency.py --out "$out" "${args[@]}" 2>&1) \
                | grep -E "ms/image|Error" || echo "(no timing: see efficiency.py's output)"
            rm -rf "$out"
        done
    done ;;
*) usage ;;
esac
