"""Mamba-ST assembled: patch embedding, content and style Mamba encoders, ST cross decoder, CNN decoder.

Read top to bottom; loading and saving are inherited from `mambast.loading.PretrainedMixin`.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .config import MambaSTConfig
from .loading import PretrainedMixin
from .nn import PatchEmbed, STBlock, VSSBlock, cnn_decoder


def as_generator(seed_or_gen, device) -> torch.Generator | None:
    """A torch.Generator from a seed (int), a generator, or None (global RNG)."""
    if isinstance(seed_or_gen, torch.Generator) and seed_or_gen.device.type != "cpu":
        raise ValueError("generator must be a CPU torch.Generator (the permutation is drawn on the CPU)")
    if seed_or_gen is None or isinstance(seed_or_gen, torch.Generator):
        return seed_or_gen
    return torch.Generator(device="cpu").manual_seed(int(seed_or_gen))


class MambaEncoder(nn.Module):
    """Stack of VSS blocks, each with the extra outer skip: x <- VSSBlock(x) + x (no final norm)."""

    def __init__(self, cfg: MambaSTConfig, depth: int, drop_path: float):
        super().__init__()
        self.layers = nn.ModuleList(VSSBlock(cfg, drop_path) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x) + x
        return x


def draw_permutations(n: int, length: int, generator=None, device=None) -> torch.Tensor:
    """[n, length] style-token permutations, one per cross block: argsort of uniform noise drawn on the
    CPU, as the authors draw them (layer by layer, so a seed gives the same permutations either way).
    device: where to put them; a CUDA device gets them through pinned memory without waiting for the work
    already queued on its stream (a copy from pageable memory would wait, leaving the GPU idle while the
    next kernels are launched); under torch.compile, which cannot trace pinning, a plain copy (and the noise comes
    from the compiled graph's own generator: not the eager permutations for the same seed)."""
    perms = torch.stack([torch.argsort(torch.rand(length, generator=generator)) for _ in range(n)])
    if device is not None and torch.device(device).type == "cuda" and not torch.compiler.is_compiling():
        return perms.pin_memory().to(device, non_blocking=True)
    return perms if device is None else perms.to(device)


class MambaSTDecoder(nn.Module):
    """Stack of ST cross blocks (x <- STBlock(x, shuffled s) + x), then a final LayerNorm."""

    def __init__(self, cfg: MambaSTConfig):
        super().__init__()
        self.layers = nn.ModuleList(STBlock(cfg, cfg.drop_path_decoder) for _ in range(cfg.depth_decoder))
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)

    def forward(self, x, s, shuffle: bool, generator=None, perms: torch.Tensor | None = None):
        """perms: [layers, H*W] permutations to use instead of drawing them (any device)."""
        B, H, W, C = s.shape
        if shuffle and perms is None:  # a fresh permutation of the L style positions before every cross block
            perms = draw_permutations(len(self.layers), H * W, generator, device=s.device)   # (no wait on CUDA)
        if shuffle:
            perms = perms.to(s.device)
        for i, layer in enumerate(self.layers):
            s_in = s.reshape(B, H * W, C)[:, perms[i]].reshape(B, H, W, C) if shuffle else s
            x = layer(x, s_in) + x
        return self.norm(x)


class MambaST(PretrainedMixin, nn.Module):
    """content [B, 3, H, W], style [B, 3, H, W] in [0, 1] (H, W multiples of patch_size) -> [B, 3, H, W].

    The output is not clamped. For images of any size use `mambast.stylize` (or `mambast.Stylizer`).
    """

    def __init__(self, config: MambaSTConfig | None = None):
        super().__init__()
        self.config = cfg = config or MambaSTConfig()
        self.patch_embed = PatchEmbed(cfg)
        self.encoder_c = MambaEncoder(cfg, cfg.depth_encoder, cfg.drop_path_encoder)
        self.encoder_s = MambaEncoder(cfg, cfg.depth_encoder, cfg.drop_path_encoder)
        self.decoder = MambaSTDecoder(cfg)
        self.cnn_decoder = cnn_decoder(cfg)

    def encode_content(self, content: torch.Tensor) -> torch.Tensor:   # -> [B, H', W', C]
        return self.encoder_c(self.patch_embed(content))

    def encode_style(self, style: torch.Tensor) -> torch.Tensor:       # -> [B, H', W', C]
        return self.encoder_s(self.patch_embed(style))

    def decode(self, content_tokens, style_tokens, shuffle: bool | None = None, generator=None,
               perms: torch.Tensor | None = None) -> torch.Tensor:
        """Fuse encoded content and style tokens and decode to pixels [B, 3, H, W].

        perms: the style permutations ([depth_decoder, H'*W'], see `draw_permutations`) instead of
        drawing them; for callers that must not draw inside the call (CUDA graphs)."""
        if content_tokens.shape != style_tokens.shape:
            raise ValueError(f"content and style token grids differ: {tuple(content_tokens.shape)} vs "
                             f"{tuple(style_tokens.shape)}; bring the style to the content's size first")
        shuffle = self.config.shuffle if shuffle is None else shuffle
        x = self.decoder(content_tokens, style_tokens, shuffle, as_generator(generator, style_tokens.device), perms)
        return self.cnn_decoder(x.permute(0, 3, 1, 2))                  # [B, C, H', W'] -> [B, 3, H, W]

    def forward(self, content: torch.Tensor, style: torch.Tensor, shuffle: bool | None = None,
                generator: torch.Generator | int | None = None, perms: torch.Tensor | None = None,
                identities: bool = False) -> torch.Tensor:
        """identities=True (training): [O; Icc; Iss], [3B, 3, H, W], the stylization O = f(Ic, Is) and the identity
        passes Icc = f(Ic, Ic), Iss = f(Is, Is) in one decoder batch; content and style then have one shape."""
        p = self.config.patch_size
        for name, t in (("content", content), ("style", style)):
            if t.dim() != 4 or t.shape[1] != 3 or t.shape[2] % p or t.shape[3] % p:
                raise ValueError(f"{name} must be [B, 3, H, W] with H and W multiples of {p}; got {tuple(t.shape)}")
        if not identities:
            return self.decode(self.encode_content(content), self.encode_style(style), shuffle, generator, perms)
        if content.shape != style.shape:
            raise ValueError(f"identities=True needs content and style of one shape; got {tuple(content.shape)} "
                             f"and {tuple(style.shape)}")
        B = content.shape[0]
        if self.training and self.config.drop_path_encoder > 0:   # each use of an image draws its own dropped paths
            return self(torch.cat([content, content, style]), torch.cat([style, content, style]), shuffle, generator,
                        perms)
        # Each encoder sees Ic and Is once (2B images instead of 3B), the patch embedding runs once for both.
        tokens = self.patch_embed(torch.cat([content, style]))
        xc, xs = self.encoder_c(tokens), self.encoder_s(tokens)                # each [Ic; Is]
        return self.decode(torch.cat([xc[:B], xc[:B], xc[B:]]), torch.cat([xs[B:], xs[:B], xs[B:]]), shuffle,
                           generator, perms)
