"""The stylizer's many-pairs pipeline: same results as one call per pair, each image encoded once, bad files
isolated; its CUDA graphs."""

import numpy as np
import pytest
import torch
from PIL import Image

from mambast.cli import main
from mambast.inference.geometry import fit_style
from mambast.inference.jobs import Job
from mambast.inference.stylizer import ByteLRU, PairStylizer, stylize_tensor
from mambast.io import load_image, pil_to_tensor


def _img(path, w, h, seed):
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def pairs(tmp_path):
    """3 contents (two of one size, one of another) x 2 styles, and their output paths."""
    contents = [_img(tmp_path / "c0.png", 24, 16, 0), _img(tmp_path / "c1.png", 24, 16, 1),
                _img(tmp_path / "c2.png", 19, 29, 2)]
    styles = [_img(tmp_path / "s0.png", 40, 33, 3), _img(tmp_path / "s1.png", 13, 20, 4)]
    out = tmp_path / "out"
    return [Job(c, s, out / f"{c.stem}_{s.stem}.png") for c in contents for s in styles]


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_pipeline_matches_one_call_per_pair(tiny_model, pairs, batch_size):
    stylizer = PairStylizer(tiny_model, size=16, seed=5, batch_size=batch_size, workers=2)
    results = list(stylizer.run(pairs))
    assert [j for j, _ in results] == pairs and all(e is None for _, e in results)
    for job in pairs:
        ref = stylize_tensor(tiny_model, pil_to_tensor(load_image(job.content)), pil_to_tensor(load_image(job.style)),
                             size=16, seed=5)
        ref = (ref[0] * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy().astype(int)
        got = np.asarray(Image.open(job.output)).astype(int)
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1, job


def test_margin_is_the_mirrored_content_stylized_then_cut_off(tiny_model):
    g = torch.Generator().manual_seed(0)
    x, s = torch.rand(1, 3, 24, 32, generator=g), torch.rand(1, 3, 20, 28, generator=g)
    got = PairStylizer(tiny_model, size=None, seed=3, margin=8, cuda_graphs=False).stylize(x, s)
    mirror = lambda t: torch.nn.functional.pad(t, (8, 8, 8, 8), mode="reflect")   # noqa: E731
    fitted = mirror(fit_style(s, 24, 32))         # the style at the content's scale, mirrored as the content
    ref = PairStylizer(tiny_model, size=None, seed=3, cuda_graphs=False).stylize(mirror(x), fitted)[..., 8:32, 8:40]
    assert got.shape == x.shape
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    plain = PairStylizer(tiny_model, size=None, seed=3, cuda_graphs=False).stylize(x, s)
    assert (got - plain).abs().max() > 1e-3            # the margin is not a no-op


def test_margin_output_at_the_working_size_keeps_the_colours_in_place(tiny_model):
    """keep_size=False with preserve_color: the colours come from the content's pixels, not from its margins."""
    g = torch.Generator().manual_seed(1)
    x, s = torch.rand(1, 3, 24, 32, generator=g), torch.rand(1, 3, 24, 32, generator=g)
    stylizer = PairStylizer(tiny_model, size=None, seed=2, margin=8, preserve_color=True, cuda_graphs=False)
    torch.testing.assert_close(stylizer.stylize(x, s, keep_size=False), stylizer.stylize(x, s))   # working = own size


def test_pipeline_with_a_margin_matches_one_call_per_pair(tiny_model, pairs):
    stylizer = PairStylizer(tiny_model, size=16, seed=5, batch_size=3, workers=2, margin=8)
    assert all(e is None for _, e in stylizer.run(pairs))
    one = PairStylizer(tiny_model, size=16, seed=5, margin=8, cuda_graphs=False)
    for job in pairs:
        ref = one.stylize(pil_to_tensor(load_image(job.content)), pil_to_tensor(load_image(job.style)))
        ref = (ref[0] * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy().astype(int)
        got = np.asarray(Image.open(job.output)).astype(int)
        assert got.shape == ref.shape and np.abs(got - ref).max() <= 1, job


def test_each_content_and_style_is_encoded_once(tiny_model, pairs):
    stylizer = PairStylizer(tiny_model, size=16, seed=0, batch_size=4, workers=2)
    assert all(e is None for _, e in stylizer.run(pairs))
    # 3 contents; styles fitted to 2 working sizes: 2 styles x 2 sizes
    assert stylizer.stats["content_encoded"] == 3 and stylizer.stats["content_cached"] == 3
    assert stylizer.stats["style_encoded"] == 4 and stylizer.stats["style_cached"] == 2
    stylizer.clear_caches()                  # a second run from cold caches encodes everything again
    assert len(stylizer.images) == len(stylizer.content_tokens) == len(stylizer.style_tokens) == 0
    assert not stylizer.stats
    assert all(e is None for _, e in stylizer.run(pairs))
    assert stylizer.stats["content_encoded"] == 3 and stylizer.stats["content_cached"] == 3
    assert stylizer.stats["style_encoded"] == 4 and stylizer.stats["style_cached"] == 2


def test_without_cache_room_everything_is_encoded_per_pair(tiny_model, pairs):
    stylizer = PairStylizer(tiny_model, size=16, seed=0, batch_size=1, workers=1, cache_bytes=0)
    assert all(e is None for _, e in stylizer.run(pairs))
    assert stylizer.stats["content_encoded"] == 6 and stylizer.stats["style_encoded"] == 6


def test_a_bad_file_fails_only_its_pairs(tiny_model, pairs, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    jobs = pairs[:2] + [Job(bad, pairs[0].style, tmp_path / "out" / "bad.png")] + pairs[2:]
    ordered = list(PairStylizer(tiny_model, size=16, seed=0, batch_size=3, workers=2).run(jobs))
    assert [j for j, _ in ordered] == jobs, "results come in input order, failures included"
    results = dict(ordered)
    assert "bad.jpg" in str(results[jobs[2]]) and not (tmp_path / "out" / "bad.png").exists()
    assert all(results[j] is None and j.output.exists() for j in pairs)


def test_byte_lru_evicts_least_recently_used():
    t = torch.zeros(4, dtype=torch.float32)  # 16 bytes
    lru = ByteLRU(40)
    lru.put("a", t), lru.put("b", t)
    assert lru.get("a") is not None          # a is now the most recent
    lru.put("c", t)                          # 48 bytes > 40: b goes
    assert lru.get("b") is None and lru.get("a") is not None and lru.get("c") is not None
    lru.put("big", torch.zeros(100))         # larger than the budget: not kept, nothing evicted
    assert lru.get("big") is None and len(lru) == 2
    lru.put("err", ValueError("x"))          # exceptions are kept and cost nothing
    assert isinstance(lru.get("err"), ValueError) and lru.bytes == 32
    lru.clear()
    assert len(lru) == 0 and lru.bytes == 0 and lru.get("a") is None
    lru.put("a", t)                          # usable again after clearing
    assert lru.get("a") is not None and lru.bytes == 16


def test_cli_batch_size_must_be_positive(tmp_path, tiny_model, capsys):
    tiny_model.save_pretrained(tmp_path / "w")
    c, s = _img(tmp_path / "c.png", 16, 16, 0), _img(tmp_path / "s.png", 16, 16, 1)
    code = main(["stylize", str(c), str(s), "-o", str(tmp_path / "o.png"), "--model", str(tmp_path / "w"),
                 "--batch-size", "0"])
    err = capsys.readouterr().err
    assert code == 1 and "--batch-size" in err and len(err.strip().splitlines()) == 1


def test_cli_compile_is_refused_on_the_cpu(tmp_path, tiny_model, capsys):
    tiny_model.save_pretrained(tmp_path / "w")
    c, s = _img(tmp_path / "c.png", 16, 16, 0), _img(tmp_path / "s.png", 16, 16, 1)
    code = main(["stylize", str(c), str(s), "-o", str(tmp_path / "o.png"), "--model", str(tmp_path / "w"),
                 "--device", "cpu", "--compile"])
    err = capsys.readouterr().err
    assert code == 1 and "--compile" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@gpu
@pytest.mark.gpu
def test_graph_replay_matches_eager_forward(tiny_model):
    from mambast.inference.graphs import GraphCache
    from mambast.model import draw_permutations
    model = tiny_model.cuda()
    runner = GraphCache(lambda c, s, perms: model(c, s, perms=perms), warmup=1, capture_after=2)
    with torch.inference_mode():
        for seed in range(4):   # an eager call (on the capture stream), one capture, then replays
            c, s = torch.rand(2, 3, 32, 24, device="cuda"), torch.rand(2, 3, 32, 24, device="cuda")
            perms = draw_permutations(len(model.decoder.layers), 12, torch.Generator().manual_seed(seed)).cuda()
            ref = model(c, s, generator=seed)
            got = runner(c, s, perms)
            assert (got - ref).norm() / ref.norm() < 1e-5
    assert runner.captures == 1


def test_graph_cache_refuses_cpu_tensors_before_making_a_stream():
    from mambast.inference import graphs
    before = dict(graphs._STREAMS)
    with pytest.raises(ValueError, match="CUDA tensor"):
        graphs.GraphCache(lambda x: x * 2)(torch.ones(3))
    assert graphs._STREAMS == before


@gpu
@pytest.mark.gpu
def test_graph_cache_runs_every_call_on_its_capture_stream():
    from mambast.inference.graphs import GraphCache, _capture_stream
    streams = []

    def fn(x):
        streams.append(torch.cuda.current_stream())
        torch.cuda._sleep(1_000_000)        # a late output: a caller not made to wait would read it unfinished
        return (x @ x.T).relu_() + 1
    runner = GraphCache(fn, warmup=2, capture_after=2)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):           # a caller on a stream of its own
        for seed in range(3):               # an eager call, then two warm-ups and a capture, then a replay
            x = torch.randn(64, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(seed))
            got = runner(x).cpu()
            assert torch.allclose(got, ((x @ x.T).relu_() + 1).cpu(), rtol=1e-4, atol=1e-3)
    assert len(streams) == 4 and all(s == _capture_stream(x.device) for s in streams)
    assert all(s != side and s != torch.cuda.default_stream() for s in streams)
    for capture_after in (1, 2):            # captured at once, or an eager call first
        with pytest.raises(TypeError, match="one tensor"):
            GraphCache(lambda x: (x, x), warmup=1, capture_after=capture_after)(x)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_pipeline_with_cuda_graphs_matches_without(tiny_model, pairs, dtype, tmp_path):
    model = tiny_model.cuda()
    jobs = pairs * 2   # every shape comes back: graphs are captured and replayed
    jobs = [Job(j.content, j.style, tmp_path / f"g{i}.png") for i, j in enumerate(jobs)]
    plain = [Job(j.content, j.style, tmp_path / f"e{i}.png") for i, j in enumerate(jobs)]
    graphed = PairStylizer(model, size=16, seed=1, batch_size=2, autocast_dtype=dtype, cuda_graphs=True)
    assert all(e is None for _, e in graphed.run(jobs))
    assert all(e is None for _, e in PairStylizer(model, size=16, seed=1, batch_size=2, autocast_dtype=dtype,
                                                   cuda_graphs=False).run(plain))
    assert graphed._fuse.graphs.captures >= 1
    for a, b in zip(jobs, plain):
        diff = np.abs(np.asarray(Image.open(a.output)).astype(int) - np.asarray(Image.open(b.output)).astype(int))
        assert diff.max() <= 1


def test_large_images_are_not_batched_beyond_the_pixel_budget(tiny_model, pairs):
    stylizer = PairStylizer(tiny_model, size=16, seed=0, batch_size=8, workers=1, max_batch_pixels=2 * 16 * 24)
    sizes = []
    fuse = stylizer._fuse
    stylizer._fuse = lambda xc, xs, *rest: sizes.append(xc.shape[0]) or fuse(xc, xs, *rest)
    assert all(e is None for _, e in stylizer.run(pairs))
    assert max(sizes) == 2 and sum(sizes) == len(pairs)


def test_cached_tokens_do_not_keep_the_batch_alive(tiny_model, pairs):
    stylizer = PairStylizer(tiny_model, size=16, seed=0, batch_size=4, workers=1)
    assert all(e is None for _, e in stylizer.run(pairs))
    for cache in (stylizer.content_tokens, stylizer.style_tokens):
        for t in cache._items.values():
            assert t.untyped_storage().nbytes() == t.numel() * t.element_size()


def _compiled_matches_plain(model, pairs, tmp_path, dtype, cuda_graphs):
    jobs = [Job(j.content, j.style, tmp_path / "out" / f"compiled{i}.png") for i, j in enumerate(pairs)]
    plain = [Job(j.content, j.style, tmp_path / "out" / f"plain{i}.png") for i, j in enumerate(pairs)]
    compiled = PairStylizer(model, size=16, seed=2, batch_size=2, autocast_dtype=dtype, cuda_graphs=cuda_graphs,
                            compile=True)
    assert all(e is None for _, e in compiled.run(jobs))
    assert all(e is None for _, e in PairStylizer(model, size=16, seed=2, batch_size=2, autocast_dtype=dtype,
                                                   cuda_graphs=False).run(plain))
    for a, b in zip(jobs, plain):
        diff = np.abs(np.asarray(Image.open(a.output)).astype(int) - np.asarray(Image.open(b.output)).astype(int))
        assert diff.max() <= 1


def test_compiled_pipeline_matches_plain(tiny_model, pairs, tmp_path):
    _compiled_matches_plain(tiny_model, pairs[:2], tmp_path, None, False)


@pytest.mark.gpu
@gpu
def test_compiled_pipeline_with_cuda_graphs_matches_plain(tiny_model, pairs, tmp_path):
    _compiled_matches_plain(tiny_model.cuda(), pairs * 2, tmp_path, None, True)


def test_weights_cast_to_the_autocast_dtype_give_the_same_images(tiny_model, pairs, tmp_path):
    """`mambast stylize` stores Linear / Conv2d weights in the autocast dtype: the pipeline's images do not change."""
    import copy

    from mambast.inference.precision import cast_autocast_weights
    cast = cast_autocast_weights(copy.deepcopy(tiny_model), torch.bfloat16)
    outs = []
    for name, model in (("plain", tiny_model), ("cast", cast)):
        jobs = [Job(j.content, j.style, tmp_path / name / j.output.name) for j in pairs[:3]]
        stylizer = PairStylizer(model, size=16, seed=4, batch_size=2, autocast_dtype=torch.bfloat16)
        assert all(e is None for _, e in stylizer.run(jobs))
        outs.append([np.asarray(Image.open(j.output)) for j in jobs])
    for a, b in zip(*outs):
        assert np.array_equal(a, b)
