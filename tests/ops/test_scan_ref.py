import torch

from mambast.ops import cross_merge, cross_scan, scan_orders, selective_scan_2d_ref, selective_scan_ref
from mambast.ops.scan_ref import to_scan_order


def test_cross_scan_orders_match_scan_orders_table():
    x = torch.randn(2, 3, 4, 5)
    seqs = cross_scan(x)                                      # [2, 4, 3, 20]
    flat = x.reshape(2, 3, 20)
    for k, idx in enumerate(scan_orders(4, 5)):
        assert torch.equal(seqs[:, k], flat[..., idx])
    # column-major: step w * H + h reads position h * W + w
    assert scan_orders(4, 5)[1, 1 * 4 + 2].item() == 2 * 5 + 1


def test_cross_merge_inverts_cross_scan_and_sums_orders():
    for H, W in [(4, 5), (1, 7), (6, 1), (3, 3)]:
        x = torch.randn(2, 3, H, W)
        merged = cross_merge(cross_scan(x), H, W)
        torch.testing.assert_close(merged, 4 * x.reshape(2, 3, H * W))


def test_to_scan_order_agrees_with_cross_scan():
    x = torch.randn(2, 3, 5, 4)
    z = x.reshape(2, 1, 3, 20).expand(2, 4, 3, 20)
    torch.testing.assert_close(to_scan_order(z, 5, 4), cross_scan(x))


def _naive_scan_1d(u, delta, A, B, C, D):
    """Scalar loops, float64: the definition written out."""
    L, N = u.shape[0], A.shape[0]
    h = [0.0] * N
    y = []
    for t in range(L):
        acc = 0.0
        for n in range(N):
            h[n] = torch.exp(delta[t] * A[n]).item() * h[n] + delta[t].item() * B[t, n].item() * u[t].item()
            acc += C[t, n].item() * h[n]
        y.append(acc + D.item() * u[t].item())
    return torch.tensor(y, dtype=torch.float64)


def test_selective_scan_ref_matches_scalar_definition():
    g = torch.Generator().manual_seed(1)
    Bt, K, Dm, L, N = 1, 2, 3, 6, 4
    u = torch.randn(Bt, K, Dm, L, generator=g)
    delta = torch.rand(Bt, K, Dm, L, generator=g) + 0.1
    A = -torch.rand(K, Dm, N, generator=g) * 3
    B = torch.randn(Bt, K, N, L, generator=g)
    C = torch.randn(Bt, K, N, L, generator=g)
    D = torch.randn(K, Dm, generator=g)
    y = selective_scan_ref(u, delta, A, B, C, D)
    for k in range(K):
        for d in range(Dm):
            want = _naive_scan_1d(u[0, k, d].double(), delta[0, k, d].double(), A[k, d].double(),
                                  B[0, k].t().double(), C[0, k].t().double(), D[k, d].double())
            torch.testing.assert_close(y[0, k, d].double(), want, rtol=1e-5, atol=1e-5)


def test_2d_ref_column_major_order_on_non_square_grid():
    """Order 1 alone (others zeroed through C) must equal a 1D scan over the transposed grid."""
    g = torch.Generator().manual_seed(2)
    Bt, H, W, Dm, N = 1, 3, 5, 2, 4
    L = H * W
    u = torch.randn(Bt, L, Dm, generator=g)
    delta = torch.randn(Bt, 4, L, Dm, generator=g)
    A = -torch.rand(4, Dm, N, generator=g) - 0.5
    B = torch.randn(Bt, 4, L, N, generator=g)
    C = torch.randn(Bt, 4, L, N, generator=g)
    C[:, [0, 2, 3]] = 0
    D = torch.zeros(4, Dm)
    bias = torch.randn(4, Dm, generator=g)
    y = selective_scan_2d_ref(u, delta, A, B, C, D, bias, H, W)           # [Bt, L, Dm]
    col = lambda z: z.reshape(*z.shape[:-2], H, W, z.shape[-1]).transpose(-3, -2).reshape(z.shape)  # noqa: E731
    dt = torch.nn.functional.softplus(col(delta[:, 1]) + bias[1])          # [Bt, L, Dm] column-major
    want = selective_scan_ref(col(u).transpose(1, 2)[:, None], dt.transpose(1, 2)[:, None], A[1:2],
                              col(B[:, 1]).transpose(1, 2)[:, None], col(C[:, 1]).transpose(1, 2)[:, None], D[1:2])
    want = want[:, 0].transpose(1, 2).reshape(Bt, W, H, Dm).transpose(1, 2).reshape(Bt, L, Dm)  # row-major
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
