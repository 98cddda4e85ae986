"""fwd+bwd of the training scan at Bt 16 and 24 (TRAINING_CONFIG) with whichever mambast is importable: time_bwd.py TAG"""
import sys, torch
import mambast.ops.triton_scan as ts
tag = sys.argv[1]; dev = "cuda"
g = torch.Generator(device="cpu").manual_seed(0)
def r(*s, sc=1.0): return torch.randn(*s, generator=g) * sc
res = []
for Bt in (16, 24):
    Dm, N, H, W = 1024, 16, 32, 32; L = H * W; bf = torch.bfloat16
    xs = [r(Bt, L, Dm).to(dev, bf), r(Bt, 4, L, Dm, sc=0.5).to(dev, bf),
          (-torch.exp(r(4, Dm, N, sc=0.3) + torch.log(torch.arange(1, N + 1.0)))).to(dev),
          r(Bt, 4, L, N).to(dev, bf), r(Bt, 4, L, N).to(dev, bf), r(4, Dm).to(dev), (r(4, Dm, sc=0.5) - 2).to(dev)]
    gy = r(Bt, L, Dm).to(dev)
    def step():
        ins = [x.detach().requires_grad_() for x in xs]
        y = ts.selective_scan_2d_triton(*ins, H, W, config=ts.TRAINING_CONFIG)
        return torch.autograd.grad(y, ins, gy)
    for _ in range(5): step()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = 1e9
    for _ in range(3):
        torch.cuda.synchronize(); e0.record()
        for _ in range(20): step()
        e1.record(); torch.cuda.synchronize(); best = min(best, e0.elapsed_time(e1) / 20)
    res.append(f"Bt {Bt} {best:.3f} ms")
print(f"{tag:16s} " + ", ".join(res), flush=True)
