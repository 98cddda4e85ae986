"""What each creative control costs: seconds (CPU) or milliseconds (CUDA) per stylized image, against the plain
stylization, through `Stylizer.stylize` as `mambast.stylize` runs it (one content, cached nothing).

Usage: python benchmarks/controls.py [--model PATH] [--size 512] [--runs 5] [--device cpu|cuda] [--dtype ...]
       [--out benchmarks/results/controls-<device>.json]
Random weights of the reference configuration unless --model (speed does not depend on values). Each control
fuses the content with more token grids (one per style, one more for strength < 1) and decodes once; colour
preservation is a pass over the output's pixels.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from common import header, time_calls, write_json  # benchmarks/common.py; puts the repository on sys.path
from mambast import MambaST, StylizeConfig, keep_freed_memory
from mambast.inference.api import load_model
from mambast.inference.stylizer import Stylizer

CASES = {
    "plain": dict(),
    "strength 0.5": dict(strength=0.5),
    "2 styles, weights 0.7,0.3": dict(styles=2, weights=(0.7, 0.3)),
    "2 styles + strength 0.5": dict(styles=2, weights=(0.7, 0.3), strength=0.5),
    "3-region mask": dict(styles=3, mask=True),
    "preserve colour": dict(preserve_color=True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a model (default: random reference-size weights)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: the device's)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    keep_freed_memory()
    config = StylizeConfig(size=None, seed=0, device=args.device, dtype=args.dtype).resolved()
    torch.manual_seed(0)
    model = load_model(args.model, config) if args.model else _random_model(config)
    stylizer = Stylizer.from_config(model, config)
    cuda = config.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else None
    g = torch.Generator().manual_seed(0)
    n = args.size
    content = torch.rand(1, 3, n, n, generator=g)
    styles = [torch.rand(1, 3, n, n, generator=g) for _ in range(3)]
    mask = torch.zeros(n, n)
    mask[:, n // 3:] = 0.5
    mask[n // 2:, 2 * n // 3:] = 1.0
    calls = {}
    for name, case in CASES.items():
        k = case.get("styles", 1)
        kw = dict(strength=case.get("strength"), preserve_color=case.get("preserve_color"),
                  weights=case.get("weights"), mask=mask if case.get("mask") else None)
        calls[name] = lambda k=k, kw=kw: stylizer.stylize(content, styles[:k] if k > 1 else styles[0], **kw)
        calls[name]()
        calls[name]()                                            # warm-up (JIT, CUDA graphs)
    times = {name: [] for name in calls}
    for _ in range(args.runs):       # the cases in turn, round after round: a busy machine slows them alike
        for name, call in calls.items():
            times[name] += time_calls(call, 1, sync)
    rows = {name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t)} for name, t in times.items()}
    base = rows["plain"]["median_s"]
    unit, scale = ("ms", 1e3) if cuda else ("s", 1.0)
    print(f"{n}x{n}, {config.device} {config.dtype}, median of {args.runs} rounds after a warm-up:")
    for name, r in rows.items():
        r["vs_plain"] = r["median_s"] / base
        print(f"  {name:28s} {r['median_s'] * scale:8.3f} {unit}  ({r['vs_plain']:.2f}x plain)")
    if args.out:
        write_json(args.out, {"header": header(config.device, size=n, model=args.model or "random reference"),
                              "dtype": config.dtype, "runs": args.runs, "results": rows})
        print(f"wrote {args.out}")


def _random_model(config):
    """A reference-size model with random weights, placed as `load_model` places the bundled one."""
    from mambast.inference.config import torch_dtype
    from mambast.inference.precision import cast_autocast_weights
    return cast_autocast_weights(MambaST().eval(), torch_dtype(config.dtype), config.device)


if __name__ == "__main__":
    main()
