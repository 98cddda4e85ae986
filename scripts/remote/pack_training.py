"""Pack what a training run needs on another machine into chunks of at most N MiB.

Usage: python scripts/remote/pack_training.py IMAGES OUTPUT_DIR --chunk-mib N [--vgg-dtype float16|int8]
           [--vgg FILE] [--checkpoint STEP.pt]
IMAGES is a training set with content/ and style/. The chunks hold train-set/{content,style}, the loss network
as vgg19_<dtype>.safetensors (exported from the fetched VGG-19 unless --vgg names one) and, to continue a run
exactly, a checkpoint as checkpoint.pt. There, `chunks.py unpack` (or start.sh) rebuilds the data folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]   # chunks.py; the repository's mambast

from chunks import pack  # noqa: E402

VGG_NAME = "vgg19_{}.safetensors"


def pack_training(images: Path, out: Path, chunk_mib: float, vgg: Path | None = None, vgg_dtype: str = "float16",
                  checkpoint: Path | None = None) -> list[Path]:
    for kind in ("content", "style"):
        if not (images / kind).is_dir():
            raise FileNotFoundError(f"images: no {kind}/ folder in {images}")
    vgg_name = vgg.name if vgg is not None and vgg.name.startswith("vgg19_") else VGG_NAME.format(vgg_dtype)
    with tempfile.TemporaryDirectory() as tmp:
        if vgg is None:
            from mambast.networks.vgg import export_weights, fetch
            vgg = export_weights(Path(tmp) / VGG_NAME.format(vgg_dtype), vgg_dtype, source=fetch())
        items = {"train-set/content": images / "content", "train-set/style": images / "style",
                 vgg_name: vgg}
        if checkpoint is not None:
            items["checkpoint.pt"] = checkpoint
        return pack(items, out, chunk_mib)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", type=Path, help="training set with content/ and style/")
    p.add_argument("out", type=Path, help="folder for the chunks")
    p.add_argument("--chunk-mib", type=float, required=True, help="largest chunk, in MiB")
    p.add_argument("--vgg-dtype", choices=["float16", "int8"], default="float16",
                   help="the loss network's storage (float16 ~26 MB; int8 ~13 MB, features within ~1-4 %%)")
    p.add_argument("--vgg", type=Path, default=None,
                   help="an exported VGG file (mambast.networks.vgg.export_weights) to send instead of exporting one")
    p.add_argument("--checkpoint", type=Path, default=None, help="a training checkpoint (.pt) to continue from")
    args = p.parse_args(argv)
    paths = pack_training(args.images, args.out, args.chunk_mib, args.vgg, args.vgg_dtype, args.checkpoint)
    print(f"wrote {len(paths)} chunks + chunks.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
