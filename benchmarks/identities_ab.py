"""Experiment (removed after it ran): a training step with the identity passes as one 3B batch through the encoders
against MambaST.forward(..., identities=True), on the CPU, default config, batch 2, 64-pixel crops."""
import time, torch
from mambast.model import MambaST
from mambast.config import MambaSTConfig
from mambast.networks.vgg import VGG19Features
from mambast.train.losses import StyleTransferLoss
torch.manual_seed(0)
B, R = 2, 64
model = MambaST(MambaSTConfig()).train()
crit = StyleTransferLoss(VGG19Features())
opt = torch.optim.Adam(model.parameters(), lr=1e-4)
c, s = torch.rand(B, 3, R, R), torch.rand(B, 3, R, R)
def old():
    y = model(torch.cat([c, c, s]), torch.cat([s, c, s]))
    return y
def new():
    return model(c, s, identities=True)
def step(f):
    out, icc, iss = f().split(B)
    t = crit(c, s, out, icc, iss); opt.zero_grad(); t["total"].backward(); opt.step()
def model_only(f):
    f().square().mean().backward()
res = {}
for rnd in range(3):
    for name, f in (("3B", old), ("identities", new)):
        for kind, g in (("step", step), ("model fwd+bwd", model_only)):
            g(f)
            t = time.perf_counter()
            for _ in range(3): g(f)
            res.setdefault((kind, name), []).append((time.perf_counter() - t) / 3 * 1e3)
for k, v in sorted(res.items()):
    print(k, "min %.0f ms" % min(v), ["%.0f" % x for x in v])
