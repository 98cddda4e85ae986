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
