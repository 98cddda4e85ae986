"""Reference selective scan and the four-direction cross-scan helpers: slow, plain, the test oracle.

Every fast scan in `mambast.ops` computes exactly `selective_scan_2d_ref`; nothing here is tuned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

N_ORDERS = 4  # 0 row-major, 1 column-major, 2 reversed row-major, 3 reversed column-major


def scan_orders(H: int, W: int, device=None) -> torch.Tensor:
    """[4, L] long: entry [k, t] is the row-major position (h * W + w) read at step t of order k."""
    rows = torch.arange(H * W, device=device)
    cols = rows.view(H, W).t().reshape(-1)  # column-major: step w * H + h reads position h * W + w
    return torch.stack([rows, cols, rows.flip(0), cols.flip(0)])


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] grid -> [B, 4, C, L] sequences, one per scan order."""
    B, C, H, W = x.shape
    rows = x.reshape(B, C, H * W)
    cols = x.transpose(2, 3).reshape(B, C, H * W)
    return torch.stack([rows, cols, rows.flip(-1), cols.flip(-1)], dim=1)


def cross_merge(ys: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """[B, 4, C, L] per-order sequences -> [B, C, L] in row-major positions, the four summed."""
    B, K, C, L = ys.shape
    rows = ys[:, 0] + ys[:, 2].flip(-1)
    cols = ys[:, 1] + ys[:, 3].flip(-1)
    return rows + cols.reshape(B, C, W, H).transpose(2, 3).reshape(B, C, L)


def to_scan_order(z: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """[B, 4, C, L] with order k's data in row-major positions -> each order k read in its own order."""
    idx = scan_orders(H, W, z.device)
    return torch.stack([z[:, k].index_select(-1, idx[k]) for k in range(z.shape[1])], dim=1)


def selective_scan_ref(u, delta, A, B, C, D):
    """The selective scan as a loop over tokens, in float32.

    u, delta: [Bt, K, Dm, L] (delta already positive); A: [K, Dm, N]; B, C: [Bt, K, N, L];
    D: [K, Dm]. Per channel: h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t, y_t = <C_t, h_t> + D u_t.
    Returns y: [Bt, K, Dm, L] float32.
    """
    u, delta, A, B, C, D = (t.float() for t in (u, delta, A, B, C, D))
    Bt, K, Dm, L = u.shape
    h = u.new_zeros(Bt, K, Dm, A.shape[-1])
    ys = []
    for t in range(L):
        dt = delta[..., t, None]                                       # [Bt, K, Dm, 1]
        h = torch.exp(dt * A) * h + dt * B[:, :, None, :, t] * u[..., t, None]
        ys.append((h * C[:, :, None, :, t]).sum(-1))                   # [Bt, K, Dm]
    return torch.stack(ys, dim=-1) + D[..., None] * u


def selective_scan_2d_ref(u, delta, A, B, C, D, delta_bias, H: int, W: int):
    """Four-direction selective scan over an H x W grid, merged back to row-major positions.

    Channel-last, every sequence indexed by row-major position p = h * W + w (L = H * W):
    u: [Bt, L, Dm] the scanned input, shared by the four orders; delta: [Bt, 4, L, Dm] raw
    (before softplus); B, C: [Bt, 4, L, N]; A: [4, Dm, N] (negative); D, delta_bias: [4, Dm].
    Order k reads the positions scan_orders(H, W)[k] one after another, with its own delta, B, C,
    A, D. Returns [Bt, L, Dm] float32: the four orders' outputs summed at row-major positions.
    """
    Bt, K, L, Dm = delta.shape
    assert K == N_ORDERS and L == H * W, "expected 4 scan orders over an H x W grid"
    us = cross_scan(u.float().transpose(1, 2).reshape(Bt, Dm, H, W))            # [Bt, 4, Dm, L]
    deltas = F.softplus(delta.float() + delta_bias.float()[None, :, None, :])   # [Bt, 4, L, Dm]
    ys = selective_scan_ref(us, to_scan_order(deltas.transpose(2, 3), H, W), A,
                            to_scan_order(B.transpose(2, 3), H, W), to_scan_order(C.transpose(2, 3), H, W), D)
    return cross_merge(ys, H, W).transpose(1, 2)                                # [Bt, L, Dm]
