import json
import pickle

import pytest
import torch

from conftest import randomize, tiny_config, to_official
from mambast import MambaST
from mambast.errors import WeightsError
from mambast.weights import quantize_int8, dequantize


def _out(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    c, s = torch.rand(1, 3, 16, 24, generator=g), torch.rand(1, 3, 16, 24, generator=g)
    with torch.no_grad():
        return model(c, s, shuffle=False)


def test_official_load_save_roundtrip_gives_identical_output(official_files, tmp_path):
    paths, original = official_files
    m = MambaST.from_official(mamba=paths["mamba"], decoder=paths["decoder"], embedding=paths["embedding"])
    assert m.config == original.config  # sizes inferred from the checkpoint
    torch.testing.assert_close(_out(m), _out(original), rtol=0, atol=0)
    m.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["dim"] == 32
    m2 = MambaST.from_pretrained(tmp_path / "saved")
    torch.testing.assert_close(_out(m2), _out(m), rtol=0, atol=0)
    m3 = MambaST.from_pretrained(tmp_path / "saved" / "model.safetensors")  # config from the file's metadata
    torch.testing.assert_close(_out(m3), _out(m), rtol=0, atol=0)


def test_official_accepts_state_dicts(tiny_model):
    m = MambaST.from_official(*to_official(tiny_model))
    torch.testing.assert_close(_out(m), _out(tiny_model), rtol=0, atol=0)


def test_missing_key_is_named(tiny_model):
    mamba, dec, emb = to_official(tiny_model)
    del mamba["decoder.layers.0.self_attention.Ds"]
    with pytest.raises(WeightsError, match="decoder.layers.0.self_attention.Ds"):
        MambaST.from_official(mamba, dec, emb, config=tiny_model.config)


def test_wrong_shape_is_named(tiny_model):
    mamba, dec, emb = to_official(tiny_model)
    dec["5.weight"] = torch.zeros(3, 3, 3, 3)
    with pytest.raises(WeightsError, match=r"cnn_decoder\.5\.weight has shape"):
        MambaST.from_official(mamba, dec, emb, config=tiny_model.config)


class _Evil:
    def __reduce__(self):
        return (print, ("this checkpoint ran code",))


def test_pickle_that_runs_code_is_refused(tmp_path, tiny_model, capsys):
    mamba, dec, emb = to_official(tiny_model)
    evil = tmp_path / "mamba_evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"x": _Evil()}, f)
    torch.save(dec, tmp_path / "d.pth")
    torch.save(emb, tmp_path / "e.pth")
    with pytest.raises(WeightsError, match="refused") as err:
        MambaST.from_official(evil, tmp_path / "d.pth", tmp_path / "e.pth")
    assert "ran code" not in capsys.readouterr().out
    assert "weights_only" not in str(err.value) and "\n" not in str(err.value)   # not torch's advice to turn it off


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_text("hello")
    with pytest.raises(WeightsError, match="junk.pth"):
        MambaST.from_official(junk, junk, junk)
    with pytest.raises(WeightsError, match="not found"):
        MambaST.from_pretrained(tmp_path / "nope")


def test_weights_without_config_or_the_keys_to_infer_one_name_the_file(tmp_path):
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(2)}, tmp_path / "other.safetensors")   # no config in its metadata, none beside it
    with pytest.raises(WeightsError, match=r"other\.safetensors: checkpoint lacks key patch_embed\.proj\.weight"):
        MambaST.from_pretrained(tmp_path / "other.safetensors")


def test_int8_roundtrip_is_close(tmp_path):
    m = randomize(MambaST(tiny_config(dim=64)))
    sd = {k: v.float() for k, v in m.state_dict().items()}
    back = dequantize(quantize_int8(sd, min_numel=256))
    for k in sd:
        err = (back[k] - sd[k]).abs().max() / sd[k].abs().max().clamp(min=1e-12)
        assert err < 1 / 127 + 1e-6, k


@pytest.mark.parametrize("config", [b"\xff\xfe not utf-8", b'{"dt_rank": -3}', b'{"ln_eps": "x"}', b"[1, 2]",
                                    b'{"decoder_channels": [16, "a", 8]}'])
def test_bad_config_json_is_a_weights_error(tmp_path, tiny_model, config):
    tiny_model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_bytes(config)
    with pytest.raises(WeightsError, match="config.json"):
        MambaST.from_pretrained(tmp_path / "m")


def test_official_checkpoint_with_odd_keys_or_shapes_is_a_weights_error(tiny_model):
    mamba, decoder, embedding = to_official(tiny_model)
    with pytest.raises(WeightsError, match="string keys"):
        MambaST.from_official(mamba={**mamba, 1: torch.zeros(1)}, decoder=decoder, embedding=embedding)
    bad = dict(mamba)
    bad["encoder_c.layers.0.self_attention.A_logs"] = torch.zeros(7)
    with pytest.raises(WeightsError):
        MambaST.from_official(mamba=bad, decoder=decoder, embedding=embedding)


def test_convert_onto_an_existing_file_is_a_one_line_error(tmp_path, official_files, capsys):
    from mambast.cli import main
    paths, _ = official_files
    target = tmp_path / "taken"
    target.write_text("x")
    code = main(["convert", "--mamba", str(paths["mamba"]), "--decoder", str(paths["decoder"]),
                 "--embedding", str(paths["embedding"]), "-o", str(target)])
    err = capsys.readouterr().err
    assert code == 1 and "taken" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- hostile files: one line, nothing built or written

@pytest.fixture
def never_built(monkeypatch):
    """Fails the test if a MambaST is built (a hostile config must be refused before)."""
    def refuse(self, *a, **kw):
        raise AssertionError("a model was built")
    monkeypatch.setattr(MambaST, "__init__", refuse)


@pytest.mark.parametrize("config, match", [('{"dim": 1000000}', "dim must be at most"),
                                           ('{"depth_encoder": 100000}', "depth_encoder must be at most"),
                                           ("[" * 30000 + "]" * 30000, "nests deeper"),
                                           ('{"dim": 1024, "depth_encoder": 8}', "describes .* parameters")])
def test_hostile_config_json_is_refused_before_the_model_is_built(tmp_path, tiny_model, never_built, config, match):
    tiny_model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(config)
    with pytest.raises(WeightsError, match=match) as err:
        MambaST.from_pretrained(tmp_path / "m")
    assert "\n" not in str(err.value)


def _with(model, key, value):
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd[key].view(-1)[0] = value
    return sd


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_at_load_naming_the_tensor(tmp_path, tiny_model, capsys, value):
    from PIL import Image
    from safetensors.torch import save_file

    from mambast.cli import main
    tiny_model.save_pretrained(tmp_path / "m")
    save_file(_with(tiny_model, "decoder.norm.weight", value), tmp_path / "m" / "model.safetensors")
    with pytest.raises(WeightsError, match=r"decoder\.norm\.weight holds NaN or Inf"):
        MambaST.from_pretrained(tmp_path / "m")
    c = tmp_path / "c.png"
    Image.new("RGB", (16, 16), (200, 10, 10)).save(c)
    code = main(["stylize", str(c), str(c), "-o", str(tmp_path / "out.png"), "--model", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 1 and "decoder.norm.weight" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.png").exists()


def test_weights_far_beyond_the_config_are_refused_before_they_are_read(tmp_path, tiny_model, monkeypatch):
    from safetensors.torch import save_file

    import mambast.loading
    tiny_model.save_pretrained(tmp_path / "m")
    # a half-precision tensor would be copied to float32 (in a sparse file: gigabytes from a few kilobytes on disk)
    sd = {**tiny_model.state_dict(), "extra": torch.zeros(2_000_000, dtype=torch.float16)}
    save_file(sd, tmp_path / "m" / "model.safetensors")
    monkeypatch.setattr(mambast.loading, "dequantize", lambda sd: pytest.fail("the tensors were converted"))
    with pytest.raises(WeightsError, match=r"holds 2,\d+,\d+ numbers, the config describes \d+,\d+ parameters"):
        MambaST.from_pretrained(tmp_path / "m")


def test_convert_refuses_non_finite_weights_naming_the_tensor(tmp_path, tiny_model, capsys):
    from mambast.cli import main
    mamba, dec, emb = to_official(tiny_model)
    mamba["decoder.layers.0.self_attention.Ds"][3] = float("nan")
    for name, sd in (("m", mamba), ("d", dec), ("e", emb)):
        torch.save(sd, tmp_path / f"{name}.pth")
    code = main(["convert", "--mamba", str(tmp_path / "m.pth"), "--decoder", str(tmp_path / "d.pth"),
                 "--embedding", str(tmp_path / "e.pth"), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "decoder.layers.0.self_attention.Ds holds NaN" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_integer_tensors_are_refused_not_converted(tiny_model):
    mamba, dec, emb = to_official(tiny_model)
    dec["1.bias"] = torch.arange(dec["1.bias"].numel(), dtype=torch.int32)
    with pytest.raises(WeightsError, match=r"cnn_decoder\.1\.bias has dtype int32"):
        MambaST.from_official(mamba, dec, emb)


@pytest.mark.parametrize("damage", [lambda s: s[:-1], lambda s: s[:, None], lambda s: s.to(torch.int32),
                                    lambda s: torch.cat([s, s])])
def test_int8_scales_of_the_wrong_length_rank_or_dtype_are_one_line_errors(tmp_path, tiny_model, damage):
    from safetensors.torch import save_file
    sd = quantize_int8({k: v.float() for k, v in tiny_model.state_dict().items()}, min_numel=256)
    key = "encoder_c.layers.0.self_attention.x_proj_weight"     # stacked [4, R+2N, Di]: one scale per row
    sd[key + ".int8_scale"] = damage(sd[key + ".int8_scale"])
    tiny_model.save_pretrained(tmp_path / "m")
    save_file(sd, tmp_path / "m" / "model.safetensors")
    with pytest.raises(WeightsError, match=r"model\.safetensors: .*x_proj_weight\.int8_scale must be \d+ floats") as e:
        MambaST.from_pretrained(tmp_path / "m")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("damage", [lambda s: s[:-1], lambda s: s[:, None]])
def test_vgg_int8_scales_of_the_wrong_shape_are_one_line_errors(damage):
    from mambast.networks.vgg import _dequantise
    q = torch.randint(-127, 127, (8, 4, 3, 3), dtype=torch.int8)
    assert _dequantise({"c.weight": q, "c.weight_scale": torch.ones(8)})["c.weight"].shape == q.shape
    with pytest.raises(WeightsError, match=r"c\.weight_scale must be 8 floats"):
        _dequantise({"c.weight": q, "c.weight_scale": damage(torch.ones(8))})


def test_pickle_refusals_name_the_refused_global(tmp_path):
    from mambast.weights import load_torch_file
    raw, zipped = tmp_path / "raw.pth", tmp_path / "zipped.pth"
    raw.write_bytes(pickle.dumps({"x": _Evil()}, protocol=4))
    torch.save({"x": _Evil()}, zipped)
    for path in (raw, zipped):
        with pytest.raises(WeightsError, match="it would import builtins.print") as e:
            load_torch_file(path, "checkpoint", max_bytes=1 << 20)
        assert "weights_only" not in str(e.value) and path.name in str(e.value)


def test_an_empty_checkpoint_file_is_a_one_line_error(tmp_path):
    (tmp_path / "empty.pth").touch()
    with pytest.raises(WeightsError, match=r"empty\.pth: empty file"):
        MambaST.from_official(tmp_path / "empty.pth", tmp_path / "empty.pth", tmp_path / "empty.pth")
