"""Where a training step goes, in parts (an experiment, CUDA): the loss network and losses forward + backward
eager or compiled, NCHW or channels-last (and with zero padding, as a bound); the model's forward + backward eager
or compiled; the whole step with the loss network eager or compiled; then torch.profiler's table of three steps.

Usage: python benchmarks/train_parts.py [BATCH]   (256² random inputs, random weights; repository on PYTHONPATH)
"""
import time, sys, os, torch, copy
import torch.nn.functional as F
from mambast.model import MambaST
from mambast.config import MambaSTConfig
from mambast.networks.vgg import VGG19Features
from mambast.train.losses import StyleTransferLoss
torch.backends.cudnn.benchmark = True
dev = "cuda"
B = int(sys.argv[1]) if len(sys.argv) > 1 else 8
R = 256
model = MambaST(MambaSTConfig()).to(dev).train()
vgg = VGG19Features().to(dev).eval()
crit = StyleTransferLoss(vgg)
opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
c = torch.rand(B, 3, R, R, device=dev); s = torch.rand(B, 3, R, R, device=dev)
ac = lambda: torch.autocast("cuda", dtype=torch.bfloat16)
def timeit(fn, n=10, w=3):
    for _ in range(w): fn()
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(n): fn()
    torch.cuda.synchronize(); return (time.perf_counter() - t) / n
def rep(name, fn, n=10, w=3):
    t0 = time.perf_counter()
    dt = timeit(fn, n, w)
    print(f"B={B} {name}: {dt*1e3:.1f} ms -> {B/dt:.1f} img/s   (incl. warm-up {time.perf_counter()-t0:.0f} s)  peak {torch.cuda.max_memory_allocated()/2**30:.1f} GiB", flush=True)
    torch.cuda.reset_peak_memory_stats()
def loss_only(cr, cl=False):
    x = torch.rand(3*B, 3, R, R, device=dev, requires_grad=True)
    def f():
        xx = x.contiguous(memory_format=torch.channels_last) if cl else x
        cc = c.contiguous(memory_format=torch.channels_last) if cl else c
        ss = s.contiguous(memory_format=torch.channels_last) if cl else s
        with ac():
            t = cr(cc, ss, *xx.split(B))
        t["total"].backward()
    return f
rep("loss eager NCHW", loss_only(crit))
vgg_cl = copy.deepcopy(vgg).to(memory_format=torch.channels_last)
crit_cl = StyleTransferLoss(vgg_cl)
rep("loss eager channels_last", loss_only(crit_cl, True))
vgg_z = copy.deepcopy(vgg)
for m in vgg_z.modules():
    if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3): m.padding_mode = "zeros"
rep("loss eager NCHW ZERO padding (reference only)", loss_only(StyleTransferLoss(vgg_z)))
rep("loss eager channels_last ZERO padding (reference only)", loss_only(StyleTransferLoss(copy.deepcopy(vgg_z).to(memory_format=torch.channels_last)), True))
crit_c = torch.compile(crit)
rep("loss compiled NCHW", loss_only(crit_c))
crit_ccl = torch.compile(crit_cl)
rep("loss compiled channels_last", loss_only(crit_ccl, True))
def model_only(m):
    def f():
        with ac():
            out = m(c, s, identities=True)
        out.float().square().mean().backward()
    return f
rep("model eager fwd+bwd", model_only(model), n=5)
mc = torch.compile(model)
rep("model compiled fwd+bwd", model_only(mc))
def step(m, cr):
    def f():
        with ac():
            out, icc, iss = m(c, s, identities=True).split(B)
            t = cr(c, s, out, icc, iss)
        opt.zero_grad(set_to_none=True)
        t["total"].backward()
        opt.step()
    return f
rep("step compiled model + eager loss (the trainer)", step(mc, crit))
rep("step compiled model + compiled loss", step(mc, crit_c))
from torch.profiler import profile, ProfilerActivity
f = step(mc, crit)
for _ in range(3): f()
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CUDA]) as p:
    for _ in range(3): f()
    torch.cuda.synchronize()
print(p.key_averages().table(sort_by="cuda_time_total", row_limit=45, max_name_column_width=90), flush=True)
