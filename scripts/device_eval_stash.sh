#!/usr/bin/env bash
# There (GPU machine): keep the carried .data/ev/part-XX chunk(s) in $HOME/mambast-eval/parts; once every chunk
# is there (the number is given), unpack into $HOME/mambast-eval (cache/ and eval-set/). See
# scripts/prepare_device_eval.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=$HOME/mambast-eval
mkdir -p "$DEST/parts" "$DEST/cache"
cp .data/ev/part-* "$DEST/parts/" 2>/dev/null || true
have=$(ls "$DEST/parts" | wc -l)
need=${1:?usage: device_eval_stash.sh NUMBER_OF_CHUNKS}
echo "chunks here: $have of $need"
if [ "$have" -ge "$need" ]; then
    cat "$DEST"/parts/part-* | tar -C "$DEST/cache" -xf -
    mv "$DEST/cache/eval-set" "$DEST/eval-set" 2>/dev/null || true
    rm -rf "$DEST/parts"
    du -sh "$DEST"/cache/* "$DEST/eval-set"
fi
