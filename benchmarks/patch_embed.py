"""The patch embedding (a 3 -> 512 conv with 8 x 8 kernels of stride 8) as cuDNN's conv against one matrix product over
the flattened patches (what `mambast.nn.blocks.PatchEmbed` runs), in bf16 as `mambast stylize` runs it (weights
stored in bf16, images cast to bf16), at 512² batch 1 and 16 (CUDA machine, repo root):

- the embedding alone, eager and torch.compile'd;
- the content encoder call (embedding + encoder), torch.compile'd, as with `--compile`.

    python benchmarks/patch_embed.py
"""

from __future__ import annotations

import torch
import triton.testing

from mambast.config import MambaSTConfig
from mambast.infer import cast_autocast_weights
from mambast.model import MambaST
from mambast.nn.blocks import PatchEmbed

SIDE = 512


def _ms(f):
    f()
    return triton.testing.do_bench(f, warmup=10, rep=200, return_mode="median")


def conv_forward(self, x):
    """The embedding as cuDNN's conv (PatchEmbed's forward before the product)."""
    return self.proj(x).permute(0, 2, 3, 1)


def main() -> None:
    torch.manual_seed(0)
    dev, bf16 = "cuda", torch.bfloat16
    model = cast_autocast_weights(MambaST(MambaSTConfig()).to(dev).eval(), bf16)
    product_forward = PatchEmbed.forward
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | ms per call (median)")
    for batch in (1, 16):
        x = torch.rand(batch, 3, SIDE, SIDE, device=dev).to(bf16)
        with torch.inference_mode(), torch.autocast("cuda", bf16):
            want = conv_forward(model.patch_embed, x).float()
            got = model.patch_embed(x).float()
            err = ((got - want).abs().max() / want.abs().max()).item()
            for name, forward in (("conv", conv_forward), ("product", product_forward)):
                PatchEmbed.forward = forward
                torch._dynamo.reset()
                alone = _ms(lambda: model.patch_embed(x))
                compiled = torch.compile(lambda t: model.patch_embed(t))
                alone_c = _ms(lambda: compiled(x))
                encoder = torch.compile(model.encode_content)
                enc = _ms(lambda: encoder(x))
                print(f"batch {batch:2d} {name:8s}: embedding eager {alone:.3f}, compiled {alone_c:.3f}; "
                      f"content encoder compiled {enc:.3f}")
            PatchEmbed.forward = product_forward
        print(f"batch {batch:2d}: max rel. difference product vs conv {err:.1e}")


if __name__ == "__main__":
    main()
