"""Experiment: average the bundled model's outputs over token-grid phases (the content shifted by 0 or 4 px in x and y,
reflected) and measure grid_amplitude and border_step; usage: python shift_average.py N_PAIRS (evaluation set beside
the checkout, 512 short side, seed 0)."""
import sys, time, torch, torch.nn.functional as F
from pathlib import Path
from PIL import Image
import numpy as np
import mambast
from mambast.metrics.artifacts import grid_amplitude, border_step
EV = Path(__file__).resolve().parents[2] / "shared" / "eval-set"
cs = sorted((EV/"content").glob("*.jpg"))[:int(sys.argv[1])]
ss = sorted((EV/"style").glob("*.jpg"))
def load(p, short=512):
    im = Image.open(p).convert("RGB"); w, h = im.size; s = short / min(w, h)
    im = im.resize((round(w*s)//8*8, round(h*s)//8*8), Image.BICUBIC)
    return torch.from_numpy(np.asarray(im)).permute(2,0,1).float()[None]/255
shifts = {"0": [(0,0)], "2": [(0,0),(4,4)], "4": [(0,0),(4,0),(0,4),(4,4)]}
res = {k: [] for k in shifts}; resb = {k: [] for k in shifts}
t=time.time()
for i, cp in enumerate(cs):
    c = load(cp); s = load(ss[i % len(ss)], 512)
    H, W = c.shape[-2:]
    outs = {}
    for dy, dx in shifts["4"]:
        cpad = F.pad(c, (dx, 0, dy, 0), mode="reflect")
        y = mambast.stylize(cpad, s, size=0, margin=0, seed=0, output_type="pt", device="cpu")
        outs[(dy,dx)] = y[..., dy:dy+H, dx:dx+W]
    for k, sh in shifts.items():
        y = torch.stack([outs[d] for d in sh]).mean(0)
        res[k].append(grid_amplitude(y).item()); resb[k].append(border_step(y).item())
        if i < 3: Image.fromarray((y[0].permute(1,2,0).clamp(0,1)*255).round().byte().numpy()).save(f"tta{i}_{k}.png")
    print(i, {k: round(v[-1],2) for k,v in res.items()}, round(time.time()-t), flush=True)
for k in shifts: print(k, "grid", np.mean(res[k]).round(3), "border", np.mean(resb[k]).round(2))
