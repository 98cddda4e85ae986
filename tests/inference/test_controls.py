"""The creative controls (strength, style mixing, colour preservation, region masks): each one's defining property,
its slow reference, the folder pipeline against single calls, and the errors for bad values."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from mambast import StylizeConfig, stylize
from mambast.examples import stroke_painting
from mambast.inference.controls import (RegionMask, check_controls, load_mask, mask_regions, normalise_weights,
                                        parse_weights, preserve_colors, to_ycbcr)
from mambast.inference.geometry import finish_output, prepare_content, prepare_style
from mambast.inference.jobs import Job
from mambast.inference.stylizer import Stylizer
from mambast.io import load_image, pil_to_tensor
from mambast.model import as_generator, draw_permutations

RED = ((150, 20, 10), (220, 40, 30), (240, 90, 40), (180, 30, 60))
BLUE = ((10, 30, 120), (30, 80, 200), (60, 140, 230), (20, 40, 90))


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _halves(h: int, w: int) -> np.ndarray:
    """A two-region mask: black left half, white right half."""
    return np.repeat((np.arange(w) >= w // 2)[None].astype(np.uint8) * 255, h, 0)


def scene(w: int, h: int) -> torch.Tensor:
    """A small content with a layout: a colour ramp, a disc, a box and a line."""
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    img = Image.fromarray((np.stack([0.3 + 0.5 * x, 0.5 + 0.3 * y, 0.7 - 0.4 * x], -1) * 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    d.ellipse([w * .1, h * .2, w * .45, h * .8], fill=(230, 200, 60))
    d.rectangle([w * .55, h * .3, w * .9, h * .9], fill=(40, 90, 50))
    d.line([0, h * .1, w, h * .15], fill=(250, 250, 250), width=3)
    return pil_to_tensor(img)


@pytest.fixture(scope="module")
def trained():
    """The bundled model on the CPU (the properties below need a trained model), with a red and a blue style."""
    from mambast.inference.api import load_model
    model = load_model("default", StylizeConfig(device="cpu"))
    red, blue = (pil_to_tensor(stroke_painting(96, 300, seed, pal)) for seed, pal in ((1, RED), (2, BLUE)))
    return model, red, blue


def _reference(model, content, styles, strength, weights, seed, size=16):
    """The controls spelled out with the model's own modules: content fused with each style and with itself,
    blended before the CNN decoder (what `Stylizer` computes with batching, caches and fast paths)."""
    p = model.config.patch_size
    c, hw = prepare_content(content, size, p)
    xc = model.encode_content(c)
    grids = [model.encode_style(prepare_style(s, hw, p)) for s in styles] + [model.encode_style(c)]
    perms = draw_permutations(len(model.decoder.layers), xc.shape[1] * xc.shape[2], as_generator(seed, "cpu"))
    fused = [model.decoder(xc, g, True, perms=perms) for g in grids]
    x = sum(strength * w * f for w, f in zip(weights, fused[:-1])) + (1 - strength) * fused[-1]
    return finish_output(model.cnn_decoder(x.permute(0, 3, 1, 2)), hw, tuple(content.shape[-2:]))


# ------------------------------------------------------------------------------------------------ any weights

@torch.inference_mode()
@pytest.mark.parametrize("strength, weights", [(0.0, (1.0, 0.0)), (0.4, (0.7, 0.3)), (1.0, (0.25, 0.75))])
def test_strength_and_mixing_match_the_reference(tiny_model, strength, weights):
    c, s1, s2 = _rand(1, 3, 20, 30), _rand(1, 3, 17, 23, seed=1), _rand(1, 3, 40, 40, seed=2)
    got = Stylizer(tiny_model, size=16, seed=3).stylize(c, [s1, s2], weights=weights, strength=strength)
    ref = _reference(tiny_model, c, [s1, s2], strength, weights, 3)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_style_keys_of_a_style_list_must_be_a_list(tiny_model):
    c, s1, s2 = _rand(1, 3, 16, 16), _rand(1, 3, 16, 16, seed=1), _rand(1, 3, 16, 16, seed=2)
    stylizer = Stylizer(tiny_model, size=16, seed=0)
    with pytest.raises(ValueError, match="a list of style keys"):   # "ab" must not become keys "a" and "b"
        stylizer.stylize(c, [s1, s2], keys=("c", "ab"))
    with pytest.raises(ValueError, match="1 style keys for 2 styles"):
        stylizer.stylize(c, [s1, s2], keys=("c", ["a"]))
    keyed = stylizer.stylize(c, [s1, s2], keys=("c", ["a", "b"]))
    torch.testing.assert_close(keyed, stylizer.stylize(c, [s1, s2]))


def test_strength_zero_is_the_identity_path(tiny_model):
    """A = 0: the content fused with itself as its style (the paper's identity loss), whatever the styles."""
    c, s = _rand(1, 3, 16, 24), _rand(1, 3, 16, 16, seed=1)
    stylizer = Stylizer(tiny_model, size=None, seed=1)
    got = stylizer.stylize(c, s, strength=0)
    with torch.inference_mode():
        ref = tiny_model(c, c, perms=draw_permutations(2, 6, as_generator(1, "cpu"))).clamp(0, 1)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(got, stylizer.stylize(c, [s, _rand(1, 3, 9, 9, seed=2)], mask=_halves(4, 6), strength=0))


def test_weights_one_zero_are_the_single_style_exactly(tiny_model):
    c, s1, s2 = _rand(1, 3, 20, 30), _rand(1, 3, 17, 23, seed=1), _rand(1, 3, 40, 40, seed=2)
    stylizer = Stylizer(tiny_model, size=16, seed=5)
    single = stylizer.stylize(c, s1)
    assert torch.equal(stylizer.stylize(c, [s1, s2], weights=[1, 0]), single)
    assert torch.equal(stylizer.stylize(c, [s2, s1], weights=[0, 3]), single)
    assert torch.equal(stylize(c, [s1, s2], tiny_model, weights=[1, 0], size=16, seed=5, output_type="pt"), single)
    assert not torch.equal(stylizer.stylize(c, [s1, s2], weights=[0.5, 0.5]), single)


def test_weights_are_scaled_to_sum_one_and_default_to_equal(tiny_model):
    c, s1, s2 = _rand(1, 3, 16, 16), _rand(1, 3, 16, 16, seed=1), _rand(1, 3, 16, 16, seed=2)
    stylizer = Stylizer(tiny_model, size=16, seed=0)
    a = stylizer.stylize(c, [s1, s2])
    torch.testing.assert_close(stylizer.stylize(c, [s1, s2], weights=[2, 2]), a, atol=1e-6, rtol=0)
    torch.testing.assert_close(stylizer.stylize(c, [s1, s2], weights=(0.5, 0.5)), a, atol=1e-6, rtol=0)
    assert normalise_weights("3,1", 2) == (0.75, 0.25) and normalise_weights(None, 4) == (0.25,) * 4
    # weights whose sum overflows, or that underflow when divided by it, are still their ratios
    assert normalise_weights([1e308, 1e308], 2) == (0.5, 0.5) and normalise_weights([5e-324, 0], 2) == (1.0, 0.0)


def test_preserved_colours_have_the_contents_chroma(tiny_model):
    """Within the RGB gamut: the content's chroma with a luminance far from the content's can leave it (a random-noise
    content would), and clamping then moves the chroma."""
    c, s = scene(20, 24), _rand(1, 3, 16, 16, seed=1)
    y = Stylizer(tiny_model, size=16, seed=0, preserve_color=True).stylize(c, s)
    plain = Stylizer(tiny_model, size=16, seed=0).stylize(c, s)
    chroma = lambda x: to_ycbcr(x)[:, 1:]  # noqa: E731
    assert (chroma(y) - chroma(c)).abs().mean() < 0.01 < (chroma(plain) - chroma(c)).abs().mean()
    # the luminance is the stylized one, moved to the content's mean and spread
    lum = lambda x: to_ycbcr(x)[:, 0]  # noqa: E731
    assert abs(lum(y).mean() - lum(c).mean()) < 0.02
    ys, yp = lum(y).flatten(), lum(plain).flatten()
    assert torch.corrcoef(torch.stack([ys, yp]))[0, 1] > 0.95


def test_colour_preservation_keeps_a_grey_content_grey():
    c = torch.rand(1, 1, 8, 8).expand(1, 3, 8, 8)
    out = preserve_colors(torch.rand(1, 3, 8, 8), c)
    assert (to_ycbcr(out)[:, 1:]).abs().max() < 1e-5


# ------------------------------------------------------------------------------------------------ region masks

def test_mask_regions_are_grey_levels_darkest_first():
    grey = np.full((40, 60), 200, np.uint8)
    grey[:, :20], grey[:10, 40:] = 30, 90
    m = mask_regions(grey)
    assert m.levels == (30, 90, 200) and m.count == 3
    assert (m.labels[:, :20] == 0).all() and (m.labels[:10, 40:] == 1).all() and (m.labels[20:, 30:] == 2).all()


def test_mask_noise_and_antialiased_edges_join_the_nearest_region():
    rng = np.random.default_rng(0)
    grey = np.where(np.arange(200)[None, :] < 100, 10, 240).repeat(200, 0).astype(np.int64)
    grey = grey + rng.integers(-3, 4, grey.shape)          # JPEG-like noise around each level
    grey[:, 100] = 128                                      # an anti-aliased edge: a middle grey, one pixel wide
    m = mask_regions(np.clip(grey, 0, 255).astype(np.uint8))
    assert m.count == 2 and (m.labels[:, :100] == 0).all() and (m.labels[:, 101:] == 1).all()
    big = Image.new("L", (1600, 1600), 0)                   # a disc drawn anti-aliased (supersampled): many greys
    ImageDraw.Draw(big).ellipse([160, 160, 1440, 1440], fill=255)
    grey = np.asarray(big.resize((400, 400), Image.BOX))
    assert len(np.unique(grey)) > 10
    m = mask_regions(grey)
    assert m.levels == (0, 255) and m.labels[200, 200] == 1 and m.labels[0, 0] == 0


def test_masks_load_from_images_arrays_and_tensors(tmp_path):
    img = Image.new("L", (8, 4), 0)
    img.paste(255, (4, 0, 8, 4))
    img.save(tmp_path / "m.png")
    t = torch.zeros(1, 4, 8)
    t[..., 4:] = 1.0
    rgb = torch.zeros(3, 4, 8)
    rgb[:, :, 4:] = 1.0
    for mask in (img, tmp_path / "m.png", str(tmp_path / "m.png"), t, rgb, np.asarray(img)):
        m = load_mask(mask)
        assert m.size == (8, 4) and m.count == 2 and (m.labels[:, 4:] == 1).all() and (m.labels[:, :4] == 0).all()


def test_boolean_and_integer_masks_keep_their_levels_from_numpy_and_torch():
    levels = np.array([[0, 128], [255, 0]], dtype=np.uint8)
    for mask in (levels, torch.from_numpy(levels), torch.from_numpy(levels).to(torch.int32)):
        assert load_mask(mask).levels == (0, 128, 255)
    on = np.array([[True, False], [False, True]])
    for mask in (on, torch.from_numpy(on)):   # True is white: two regions, not one
        assert load_mask(mask).levels == (0, 255)


def test_region_weights_are_soft_at_borders_and_whole_inside():
    m = mask_regions(np.repeat(np.where(np.arange(128) < 64, 0, 255)[None, :], 64, 0).astype(np.uint8))
    w = m.token_weights((64, 128), (64, 128), 8)
    assert w.shape == (2, 8, 16)
    torch.testing.assert_close(w.sum(0), torch.ones(8, 16))
    row = w[1, 0]
    assert (row[:4] < 1e-3).all() and (row[-4:] > 1 - 1e-3).all(), "whole styles away from the border"
    assert (row.diff() >= 0).all() and row.diff().max() < 0.45, "a ramp over several tokens, no step"
    # no seam on the token grid: a border in the middle of a token gives that token a share of each style
    m2 = mask_regions(np.repeat(np.where(np.arange(132) < 68, 0, 255)[None, :], 64, 0).astype(np.uint8))
    w2 = m2.token_weights((64, 132), (64, 136), 8)[1, 0]
    assert 0.2 < w2[8] < 0.8 and (w2.diff() >= -1e-6).all()


def test_region_weights_with_a_margin_extend_the_edge_regions_into_it():
    """Mirrored margins around the content: their tokens carry the region of the edge next to them, and the
    content's own tokens keep the weights they have without a margin (the blur replicates edges either way)."""
    m = mask_regions(np.repeat(np.where(np.arange(40) < 13, 0, 255)[None, :], 24, 0).astype(np.uint8))
    w0 = m.token_weights((24, 40), (24, 40), 8)
    w1 = m.token_weights((24, 40), (40, 56), 8, margin=8)
    assert w0.shape == (2, 3, 5) and w1.shape == (2, 5, 7)
    torch.testing.assert_close(w1[:, 1:-1, 1:-1], w0)
    assert (w1[0, :, 0] > w1[0, :, 1]).all() and (w1[1, :, -1] >= w1[1, :, -2]).all()   # the edge's region, more so
    torch.testing.assert_close(w1[:, 0], w1[:, 1])                                      # a mask uniform down its rows


def test_a_mask_gives_each_region_its_style(tiny_model):
    """Any model: a region weighted wholly to one style matches that style's output away from the border (beyond
    the blur and the CNN decoder's reach of a few tokens)."""
    c, s1, s2 = _rand(1, 3, 32, 128), _rand(1, 3, 32, 32, seed=1), _rand(1, 3, 32, 32, seed=2)
    stylizer = Stylizer(tiny_model, size=None, seed=0)
    mask = torch.zeros(32, 128)
    mask[:, 64:] = 1
    y = stylizer.stylize(c, [s1, s2], mask=mask)
    a, b = stylizer.stylize(c, s1), stylizer.stylize(c, s2)
    torch.testing.assert_close(y[..., :8], a[..., :8], atol=1e-4, rtol=0)
    torch.testing.assert_close(y[..., -8:], b[..., -8:], atol=1e-4, rtol=0)
    assert (y[..., 60:68] - a[..., 60:68]).abs().max() > 1e-3 < (y[..., 60:68] - b[..., 60:68]).abs().max()


def test_a_mask_stays_on_its_content_with_a_margin(tiny_model):
    """With mirrored margins the regions still meet where the mask says: the columns closer to the first style's
    output than to the second's are those left of the border (a mask left where it is without margins would move
    it a margin's width to the left)."""
    c, s1, s2 = _rand(1, 3, 64, 128), _rand(1, 3, 32, 32, seed=1), _rand(1, 3, 32, 32, seed=2)
    mask = torch.zeros(64, 128)
    mask[:, 64:] = 1
    for margin in (0, 16):
        stylizer = Stylizer(tiny_model, size=None, seed=0, margin=margin)
        y = stylizer.stylize(c, [s1, s2], mask=mask)
        a, b = stylizer.stylize(c, s1), stylizer.stylize(c, s2)
        closer_to_a = int(((y - a).abs().mean((0, 1, 2)) < (y - b).abs().mean((0, 1, 2))).sum())
        assert abs(closer_to_a - 64) <= 8, (margin, closer_to_a)   # the mask ignoring the margin: 49


# ------------------------------------------------------------------------------------------------ a trained model

def test_strength_goes_from_the_reconstruction_to_the_stylization(trained):
    model, red, _ = trained
    c = scene(144, 96)
    stylizer = Stylizer(model, size=None, seed=0)
    outs = [stylizer.stylize(c, red, strength=a) for a in (0.0, 0.25, 0.5, 0.75, 1.0)]
    to_full = [float((o - outs[-1]).abs().mean()) for o in outs]
    assert all(a > b for a, b in zip(to_full, to_full[1:])), f"distance to full stylization not decreasing: {to_full}"
    pooled = lambda x: F.avg_pool2d(x, 8)  # noqa: E731   colours and layout, not the texture the decoder adds
    recon, full = (float((pooled(o) - pooled(c)).abs().mean()) for o in (outs[0], outs[-1]))
    assert recon < 0.5 * full, f"strength 0 is not near the content: {recon} vs {full} for the stylization"


def test_mixing_moves_the_colours_from_one_style_to_the_other(trained):
    model, red, blue = trained
    c = scene(96, 64)
    stylizer = Stylizer(model, size=None, seed=0)
    redness = [float((lambda m: m[0] - m[2])(stylizer.stylize(c, [red, blue], weights=[1 - w, w]).mean((0, 2, 3))))
               for w in (0.0, 0.5, 1.0)]
    assert redness[0] > redness[1] > redness[2] and redness[0] > 0.1 > -0.1 > redness[2], redness


def test_preserved_colours_with_a_trained_model(trained):
    model, red, _ = trained
    c = scene(96, 64)
    stylizer = Stylizer(model, size=None, seed=0)
    y, plain = stylizer.stylize(c, red, preserve_color=True), stylizer.stylize(c, red)
    chroma = lambda x: to_ycbcr(x)[:, 1:]  # noqa: E731
    assert (chroma(y) - chroma(c)).abs().mean() < 0.01
    assert (chroma(plain) - chroma(c)).abs().mean() > 0.05, "the red style would have changed the colours"
    assert float((y - c).abs().mean()) > 0.02, "the texture is the style's, not the content's"


def test_left_right_mask_gives_each_half_its_styles_colours(trained):
    model, red, blue = trained
    c = scene(96, 64)
    mask = torch.zeros(64, 96)
    mask[:, 48:] = 1
    y = Stylizer(model, size=None, seed=0).stylize(c, [red, blue], mask=mask)
    left, right = y[..., :32].mean((0, 2, 3)), y[..., 64:].mean((0, 2, 3))
    assert left[0] - left[2] > 0.1 and right[2] - right[0] > 0.1, (left, right)


# ------------------------------------------------------------------------------------------------ folders

def _save(t: torch.Tensor, path):
    Image.fromarray((t[0] * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()).save(path)
    return path


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("controls", [dict(weights=(0.7, 0.3), strength=0.6, preserve_color=True),
                                      dict(mask="m", strength=0.8)])
def test_folder_runs_match_single_calls(tiny_model, tmp_path, batch_size, controls):
    contents = [_save(_rand(1, 3, 24, 32, seed=i), tmp_path / f"c{i}.png") for i in range(3)] + \
        [_save(_rand(1, 3, 30, 40, seed=9), tmp_path / "c3.png")]
    styles = [_save(_rand(1, 3, 20, 20, seed=10 + i), tmp_path / f"s{i}.png") for i in range(2)]
    controls = dict(controls)
    if controls.get("mask") == "m":
        mask = Image.new("L", (4, 3), 0)
        mask.paste(255, (2, 0, 4, 3))
        controls["mask"] = mask
    strength, preserve = controls.pop("strength"), controls.pop("preserve_color", False)
    jobs = [Job(c, styles[0], tmp_path / "out" / f"{c.stem}.png", styles[1:]) for c in contents]
    stylizer = Stylizer(tiny_model, size=16, seed=4, batch_size=batch_size, workers=2, strength=strength,
                        preserve_color=preserve)
    assert all(e is None for _, e in stylizer.run(jobs, **controls))
    single = Stylizer(tiny_model, size=16, seed=4, strength=strength, preserve_color=preserve)
    for job in jobs:
        ref = single.stylize(pil_to_tensor(load_image(job.content)), [pil_to_tensor(load_image(s)) for s in job.styles],
                             **controls)
        ref = (ref[0] * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy().astype(int)
        assert np.abs(np.asarray(Image.open(job.output)).astype(int) - ref).max() <= 1, job
    if batch_size == 3:
        assert stylizer.stats["style_encoded"] == 2 * 2 + 2 * (strength < 1), "each style (and content) once"


def test_a_content_of_another_aspect_ratio_fails_only_its_job(tiny_model, tmp_path):
    good, bad = _save(_rand(1, 3, 16, 32), tmp_path / "good.png"), _save(_rand(1, 3, 32, 32), tmp_path / "bad.png")
    s = _save(_rand(1, 3, 16, 16), tmp_path / "s.png")
    jobs = [Job(c, s, tmp_path / f"o_{c.stem}.png", (s,)) for c in (bad, good)]
    results = dict(Stylizer(tiny_model, size=16).run(jobs, mask=np.array([[0, 255]], np.uint8)))
    assert "bad.png: mask is 2 x 1, content is 32 x 32" in str(results[jobs[0]]) and results[jobs[1]] is None


# ------------------------------------------------------------------------------------------------ errors

@pytest.mark.parametrize("kwargs, words", [
    (dict(strength=1.5), "strength must be in 0..1"),
    (dict(strength=float("nan")), "strength must be in 0..1"),
    (dict(weights=[1, 2, 3]), "weights: 3 given for 2 styles"),
    (dict(weights=[1, -1]), "weights must be >= 0"),
    (dict(weights=[0, 0]), "not all 0"),
    (dict(weights="a,b"), "comma list of numbers"),
    (dict(mask=np.array([[0, 100, 200, 250]] * 4, np.uint8)), "mask has 4 regions .* but 2 styles"),
    (dict(mask=np.zeros((4, 8), np.uint8)), (r"^mask has 1 region \(grey level 0\) but 2 styles were given: give "
                                             "one style per region, darkest first$")),   # the second style unused
    (dict(mask=_halves(4, 9)), "mask is 9 x 4, content is 8 x 4: the mask needs the content's aspect"),
    (dict(mask=np.zeros((4, 8), np.uint8), weights=[1, 1]), "not both"),
    (dict(mask=np.tile(np.arange(256, dtype=np.uint8), (4, 1))), "gradient"),
    (dict(mask=np.full((4, 8), np.nan)), "mask holds NaN or Inf"),
    (dict(mask=np.full((4, 8), "a")), "mask must hold real numbers"),
])
def test_bad_controls_are_refused_before_the_model_is_loaded(kwargs, words, monkeypatch):
    from mambast.inference import api
    monkeypatch.setattr(api, "cached_model", lambda *a: pytest.fail("the model was loaded"))
    with pytest.raises(ValueError, match=words):
        stylize(torch.rand(3, 4, 8), [torch.rand(3, 8, 8), torch.rand(3, 8, 8)], size=16, **kwargs)


def test_a_mask_within_one_percent_of_the_aspect_ratio_is_accepted(tiny_model):
    y = stylize(torch.rand(3, 100, 200), [torch.rand(3, 8, 8)] * 2, tiny_model, size=16, output_type="pt",
                mask=_halves(100, 201))
    assert y.shape == (1, 3, 100, 200)


def test_the_config_checks_strength_and_parse_weights_reads_comma_lists():
    with pytest.raises(ValueError, match="strength must be in 0..1"):
        StylizeConfig(strength=-0.1).check()
    assert StylizeConfig(strength=0).check().strength == 0
    assert parse_weights("0.7,0.3") == (0.7, 0.3) and parse_weights("1") == (1.0,)
    assert check_controls(2, None, None) == (None, None)
    assert isinstance(check_controls(2, None, _halves(2, 2))[1], RegionMask)
    assert isinstance(check_controls(1, None, np.zeros((2, 2), np.uint8))[1], RegionMask)


# ------------------------------------------------------------------------------------------------ CUDA

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("options", [dict(cuda_graphs=True), dict(cuda_graphs=False, compile=True)])
def test_controls_on_cuda_match_the_cpu(tiny_model, options):
    """The graphed (or compiled) fusion and decoding of the controls give the CPU's pictures; shapes met again are
    replayed."""
    c, s1, s2 = _rand(1, 3, 24, 32), _rand(1, 3, 16, 16, seed=1), _rand(1, 3, 20, 20, seed=2)
    mask = torch.zeros(24, 32)
    mask[:, 16:] = 1
    calls = [dict(style=[s1, s2], weights=[0.7, 0.3], strength=0.5), dict(style=[s1, s2], mask=mask),
             dict(style=s1, strength=0.0, preserve_color=True)]
    cpu = Stylizer(tiny_model, size=16, seed=3)
    want = [cpu.stylize(c, **kw) for kw in calls]
    cuda = Stylizer(tiny_model.cuda(), size=16, seed=3, **options)
    for _ in range(3):                       # eager, capture, replay
        for kw, ref in zip(calls, want):
            torch.testing.assert_close(cuda.stylize(c, **kw).cpu(), ref, atol=2e-3, rtol=0)
    if options.get("cuda_graphs"):
        assert cuda._fuse_tokens.graphs.captures >= 1 and cuda._decode_tokens.graphs.captures >= 1
