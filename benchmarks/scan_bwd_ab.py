"""Experiment: time the training scan forward + backward (TRAINING_CONFIG, bf16, L = 1024, Dm = 1024, N = 16) at
Bt 16 and 24 with whichever mambast is importable; run once per tree, alternating. Usage: scan_bwd_ab.py TAG OUTDIR
(its saved gradients use an unseeded CUDA gy, so they do not compare across processes)."""
import sys, time, torch
from mambast.ops.triton_scan import selective_scan_2d_triton, TRAINING_CONFIG
tag, out = sys.argv[1], sys.argv[2]
dev = "cuda"
def inputs(Bt, Dm, N, H, W, seed, dtype=torch.bfloat16):
    g = torch.Generator(device="cpu").manual_seed(seed); L = H * W
    r = lambda *s, sc=1.0: (torch.randn(*s, generator=g) * sc)
    u = r(Bt, L, Dm).to(dev, dtype); delta = r(Bt, 4, L, Dm, sc=0.5).to(dev, dtype)
    A = -torch.exp(r(4, Dm, N, sc=0.3) + torch.log(torch.arange(1, N + 1.0))).to(dev)
    B = r(Bt, 4, L, N).to(dev, dtype); C = r(Bt, 4, L, N).to(dev, dtype)
    D = r(4, Dm).to(dev); bias = r(4, Dm, sc=0.5).to(dev) - 2
    return [u, delta, A, B, C, D, bias]
def step(xs, H, W, gy):
    xs = [x.detach().requires_grad_() for x in xs]
    y = selective_scan_2d_triton(*xs, H, W, config=TRAINING_CONFIG)
    return torch.autograd.grad(y, xs, gy)
for Bt in (16, 24):
    xs = inputs(Bt, 1024, 16, 32, 32, 0); gy = torch.randn(Bt, 1024, 1024, device=dev)
    for _ in range(5): step(xs, 32, 32, gy)
    torch.cuda.synchronize(); ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
    ts = []
    for rep in range(3):
        ev[0].record()
        for _ in range(20): step(xs, 32, 32, gy)
        ev[1].record(); torch.cuda.synchronize(); ts.append(ev[0].elapsed_time(ev[1]) / 20)
    print(f"{tag} Bt {Bt}: fwd+bwd {min(ts):.3f} ms (reps {', '.join(f'{t:.3f}' for t in ts)})", flush=True)
xs = inputs(2, 256, 16, 32, 32, 1, torch.float32); gy = torch.randn(2, 1024, 256, device=dev)
torch.save([g.cpu() for g in step(xs, 32, 32, gy)], f"{out}/grads_{tag}.pt")
xs = inputs(8, 1024, 16, 32, 32, 2); gy = torch.randn(8, 1024, 1024, device=dev)
torch.save([g.float().cpu() for g in step(xs, 32, 32, gy)], f"{out}/gradsbf_{tag}.pt")
