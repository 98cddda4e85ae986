"""SS2D: the 2D selective-scan layer (self version) and ST-SS2D (the cross version fusing content and style).

Both read the token grid in four scan orders through `mambast.ops.selective_scan_2d_proj`; they never
choose the implementation themselves.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import MambaSTConfig
from ..ops import dwconv_silu, selective_scan_2d_proj

K = 4  # scan orders


class _SS2DBase(nn.Module):
    """Parameters and output path shared by the self and cross versions (names as in the checkpoints)."""

    def __init__(self, cfg: MambaSTConfig, proj_rows: int, scan_impl: str = "auto"):
        super().__init__()
        C, Di, N, R = cfg.dim, cfg.d_inner, cfg.d_state, cfg.rank
        self.d_inner, self.d_state, self.dt_rank = Di, N, R
        self.scan_impl = scan_impl
        self.in_proj = nn.Linear(C, 2 * Di, bias=False)
        self.conv2d = nn.Conv2d(Di, Di, cfg.d_conv, padding=cfg.d_conv // 2, groups=Di, bias=True)
        self.x_proj_weight = nn.Parameter(torch.empty(K, proj_rows, Di))
        self.dt_projs_weight = nn.Parameter(torch.empty(K, Di, R))
        self.dt_projs_bias = nn.Parameter(torch.empty(K, Di))
        self.A_logs = nn.Parameter(torch.empty(K * Di, N))
        self.Ds = nn.Parameter(torch.empty(K * Di))
        self.out_norm = nn.LayerNorm(Di, eps=cfg.ln_eps)
        self.out_proj = nn.Linear(Di, C, bias=False)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self, dt_min: float = 1e-3, dt_max: float = 1e-1) -> None:
        """Mamba's initialisation: A = -(1..N), D = 1, dt log-uniform in [dt_min, dt_max]."""
        Di, N, R = self.d_inner, self.d_state, self.dt_rank
        for name, p in self.named_parameters(recurse=False):
            if name.endswith("proj_weight") and name != "dt_projs_weight":
                nn.init.uniform_(p, -Di ** -0.5, Di ** -0.5)
        nn.init.uniform_(self.dt_projs_weight, -R ** -0.5, R ** -0.5)
        dt = torch.exp(torch.rand(K, Di) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=1e-4)
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_logs.copy_(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(K * Di, 1))
        self.Ds.fill_(1.0)

    def _in_proj(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """in_proj as two products, one per half of its rows, so that the scanned half comes out dense
        (a chunk of one product would be strided, and the depthwise convolution would first copy it)."""
        w = self.in_proj.weight
        return F.linear(x, w[:self.d_inner]), F.linear(x, w[self.d_inner:])   # x, z: [B, H, W, Di] each

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H, W, Di] -> SiLU(depthwise conv) -> [B, H*W, Di]."""
        return dwconv_silu(x, self.conv2d.weight, self.conv2d.bias)

    @staticmethod
    def _project(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Per-order projection at every position: [B, L, Di] x [K, r, Di] -> [B, K, L, r]."""
        B, L, _ = x.shape
        y = x @ weight.reshape(-1, weight.shape[-1]).t()                  # [B, L, K*r]
        return y.view(B, L, K, -1).permute(0, 2, 1, 3)

    def _scan_and_output(self, u, dt_raw, Bm, Cm, z, H: int, W: int) -> torch.Tensor:
        """Selective scan of u (all four orders; step sizes from dt_raw), then LayerNorm, SiLU(z) gate, out_proj."""
        Bsz = u.shape[0]
        Di, N = self.d_inner, self.d_state
        A = -torch.exp(self.A_logs.float()).view(K, Di, N)
        y = selective_scan_2d_proj(u, dt_raw, self.dt_projs_weight, A, Bm.contiguous(), Cm.contiguous(),
                                   self.Ds.view(K, Di), self.dt_projs_bias, H, W, impl=self.scan_impl)  # [B, L, Di]
        n = self.out_norm  # in float32 whatever the model dtype, as the authors' code does
        y = F.layer_norm(y.float(), (Di,), n.weight.float(), n.bias.float(), n.eps).to(z.dtype)
        y = y.view(Bsz, H, W, Di) * F.silu(z)
        return self.out_proj(y)                                             # [B, H, W, C]


class SS2D(_SS2DBase):
    """Self version: delta, B, C and the scanned input all come from x."""

    def __init__(self, cfg: MambaSTConfig, scan_impl: str = "auto"):
        super().__init__(cfg, cfg.rank + 2 * cfg.d_state, scan_impl)

    def forward(self, x: torch.Tensor) -> torch.Tensor:                   # x: [B, H, W, C]
        B, H, W, _ = x.shape
        x, z = self._in_proj(x)
        u = self._conv(x)                                                  # [B, L, Di]
        dt_raw, Bm, Cm = self._project(u, self.x_proj_weight).split(
            [self.dt_rank, self.d_state, self.d_state], dim=-1)            # [B, K, L, R|N|N]
        return self._scan_and_output(u, dt_raw, Bm, Cm, z, H, W)


class CrossSS2D(_SS2DBase):
    """ST-SS2D: delta and B from the style, C (and the gate z) from the content; the style is scanned."""

    def __init__(self, cfg: MambaSTConfig, scan_impl: str = "auto"):
        super().__init__(cfg, cfg.d_state, scan_impl)   # x_proj_weight: the content's C
        self.in_style_proj = nn.Linear(cfg.dim, cfg.d_inner, bias=False)
        self.style_proj_weight = nn.Parameter(torch.empty(K, cfg.rank + cfg.d_state, cfg.d_inner))
        nn.init.uniform_(self.style_proj_weight, -cfg.d_inner ** -0.5, cfg.d_inner ** -0.5)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:  # x, s: [B, H, W, C]
        B, H, W, _ = x.shape
        x, z = self._in_proj(x)
        xc = self._conv(x)                                                 # [B, L, Di] content
        u = self._conv(self.in_style_proj(s))                              # [B, L, Di] style (shared conv)
        dt_raw, Bm = self._project(u, self.style_proj_weight).split([self.dt_rank, self.d_state], dim=-1)
        Cm = self._project(xc, self.x_proj_weight)                         # [B, K, L, N]
        return self._scan_and_output(u, dt_raw, Bm, Cm, z, H, W)
