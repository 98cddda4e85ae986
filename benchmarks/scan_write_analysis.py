"""Which arguments torch.compile thinks the scan kernels write (its analysis of a user-defined Triton kernel), on the CPU.

An experiment, kept in git history only: Triton gives TTIR for an sm_90 target without a GPU when a driver that only
names the target is set active. Usage: python benchmarks/scan_write_analysis.py fwd|bwd
"""
import sys, torch, triton
import mambast.ops.triton_scan as ts
from mambast.ops.triton_scan import TRAINING_CONFIG as cfg
import torch._higher_order_ops.triton_kernel_wrap as t
from triton.backends.compiler import GPUTarget
class FakeDriver:
    def get_current_target(self): return GPUTarget("cuda", 90, 32)
    def get_current_device(self): return 0
    def get_current_stream(self, *a): return 0
    def get_active_torch_device(self): return torch.device("cpu")
    def get_benchmarker(self): return None
triton.runtime.driver.set_active(FakeDriver())
Bt, L, Dm, N, H, W = 2, 16, 32, 16, 4, 4
u=torch.randn(Bt,L,Dm); delta=torch.randn(Bt,4,L,Dm); A2=torch.randn(4,Dm,N); B=torch.randn(Bt,4,L,N); C=torch.randn(Bt,4,L,N)
D=torch.randn(4,Dm); bias=torch.randn(4,Dm); n_chunks=triton.cdiv(L,cfg.chunk); states=torch.empty(Bt,4,n_chunks,Dm,N); gy=torch.randn(Bt,L,Dm)
du=torch.zeros(Bt,L,Dm); ddelta=torch.empty_like(delta); dB=torch.zeros_like(B); dC=torch.zeros_like(C)
dA=torch.empty(Bt,4,Dm,N); dD=torch.empty(Bt,4,Dm); dbias=torch.empty(Bt,4,Dm)
which = sys.argv[1]
if which == "bwd":
    k = ts._scan_bwd_kernel
    vals = [u, delta, A2, B, C, D, bias, states, gy, du, ddelta, dB, dC, dA, dD, dbias, L, H, W, Dm, N, n_chunks,
            *u.stride(), *delta.stride(), *B.stride(), *C.stride(), *gy.stride()]
    kw = dict(zip(k.arg_names, vals)); kw.update(CHUNK=cfg.chunk, BLOCK_D=cfg.block_d_bwd, BLOCK_N=16, N_LANES=4)
else:
    k = ts._scan_fwd_kernel
    out=torch.zeros(Bt,L,Dm); out2=torch.zeros(Bt,L,Dm); summaries=torch.empty(1)
    vals=[u, delta, A2, B, C, D, bias, out, out2, states, summaries, L, H, W, Dm, N, triton.cdiv(L, cfg.tile_fwd), n_chunks,
          *u.stride(), *delta.stride(), *B.stride(), *C.stride()]
    kw = dict(zip(k.arg_names, vals))
    kw.update(TILE=cfg.tile_fwd, BLOCK_D=cfg.block_d_fwd, BLOCK_N=16, N_LANES=min(cfg.lanes_fwd,16), STORE_STATES=True,
              STATE_EVERY=cfg.chunk // cfg.tile_fwd, SEGMENTS=1, SUMMARY=False, SOFTPLUS=True, FMA_DECAYS=min(cfg.fma_decays_fwd, 16 // min(cfg.lanes_fwd,16)))
missing=[n for n in k.arg_names if n not in kw]; print("missing", missing)
res = t.identify_accessed_tensors(k, kw, {})
print("writes:", sorted(d.name for d in res.read_writes.writes))
