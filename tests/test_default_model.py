import json

import torch

from mambast import MambaST, stylize
from mambast.weights import DEFAULT_MODEL_DIR, MAX_DEFAULT_MODEL_BYTES


def test_default_model_ships_small_and_loads():
    size = sum(f.stat().st_size for f in DEFAULT_MODEL_DIR.iterdir())
    assert size <= MAX_DEFAULT_MODEL_BYTES
    m = MambaST.from_pretrained("default")
    assert m.config.dim == 512 and not m.training


def test_default_model_int8_matches_float32_within_two_percent():
    """Packaging measured the int8 file against the float32 weights (which are not shipped)."""
    info = json.loads((DEFAULT_MODEL_DIR / "quantization.json").read_text())
    assert info["max_rel_output_diff_vs_float32"] < 0.02


def test_default_model_stylizes():
    g = torch.Generator().manual_seed(0)
    content = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 9, generator=g), size=(48, 72), mode="bilinear")
    style = torch.rand(1, 3, 40, 40, generator=g)
    out = stylize(content, style, size=None, seed=0, output_type="pt").cpu()   # on the GPU where there is one
    assert out.shape == (1, 3, 48, 72)
    assert torch.isfinite(out).all() and out.std() > 0.01
    # a trained model keeps the content's layout: the output correlates with the content
    gray = lambda x: x.mean(1).flatten()  # noqa: E731
    corr = torch.corrcoef(torch.stack([gray(out), gray(content)]))[0, 1]
    assert corr > 0.3


def test_bfloat16_output_close_to_float32():
    g = torch.Generator().manual_seed(1)
    content = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(64, 64), mode="bicubic")
    style = torch.rand(1, 3, 64, 64, generator=g)
    m = MambaST.from_pretrained("default")
    a = stylize(content.clamp(0, 1), style, model=m, size=None, seed=0, dtype="float32", output_type="pt")
    b = stylize(content.clamp(0, 1), style, model=m, size=None, seed=0, dtype="bfloat16", output_type="pt")
    assert ((a - b).norm() / a.norm()).item() < 1e-2
