"""Write copies of the package with one part of the training scan backward (_scan_bwd_kernel) removed or changed,
for timing what each costs: python make_variants.py REPO DEST -> DEST/<variant>/mambast"""
import re, shutil, sys
from pathlib import Path
repo, dest = Path(sys.argv[1]), Path(sys.argv[2])
src = (repo / "mambast/ops/triton_scan.py").read_text()
start = src.index("def _scan_bwd_kernel(")
end = src.index("def _scan_bwd_kernel_3d(")
body = src[start:end]
EDITS = {
    "base": [],
    "no_dC": [("        tl.atomic_add(dC_base", "        pass  # tl.atomic_add(dC_base")],
    "no_dB": [("        tl.atomic_add(dB_base", "        pass  # tl.atomic_add(dB_base")],
    "no_du": [("        tl.atomic_add(du_base", "        pass  # tl.atomic_add(du_base")],
    "no_atomics": [("        tl.atomic_add(dC_base", "        pass  # tl.atomic_add(dC_base"),
                   ("        tl.atomic_add(dB_base", "        pass  # tl.atomic_add(dB_base"),
                   ("        tl.atomic_add(du_base", "        pass  # tl.atomic_add(du_base")],
    "fma_exp": [("        a = tl.exp2(dt[:, None, :, None] * A2[None, :, :, :])",
                 "        a = _exp2_fma(dt[:, None, :, None] * A2[None, :, :, :])")],
    "no_states_load": [("        h_in_nx = tl.load(st_base + (c - 1) * Dm * N, mask=nd_ok & more, other=0.0)",
                        "        h_in_nx = tl.zeros([NI, BLOCK_D, N_LANES], dtype=tl.float32)")],
    "store_dBdC": [("        tl.atomic_add(dC_base + p[:, None, None] * N + nt, dC, mask=tn_ok, sem=\"relaxed\")",
                    "        tl.store(dC_base + p[:, None, None] * N + nt, dC, mask=tn_ok)"),
                   ("        tl.atomic_add(dB_base + p[:, None, None] * N + nt, dB, mask=tn_ok, sem=\"relaxed\")",
                    "        tl.store(dB_base + p[:, None, None] * N + nt, dB, mask=tn_ok)")],
    "no_ddelta_store": [("        tl.store(ddl_base", "        pass  # tl.store(ddl_base")],
}
for name, edits in EDITS.items():
    b = body
    for old, new in edits:
        assert b.count(old) == 1, (name, old)
        b = b.replace(old, new)
    out = dest / name
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(repo / "mambast", out / "mambast", ignore=shutil.ignore_patterns("__pycache__", "default"))
    (out / "mambast/ops/triton_scan.py").write_text(src[:start] + b + src[end:])
print(" ".join(EDITS))
