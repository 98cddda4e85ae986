import pytest
import torch

from mambast import StylizeConfig, stylize
from mambast.inference import api
from mambast.model import MambaST


@pytest.fixture
def saved(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "m")
    api.clear_model_cache()
    yield tmp_path / "m"
    api.clear_model_cache()


def test_stylize_keeps_its_model_between_calls(saved, monkeypatch):
    loads = []
    load = MambaST.from_pretrained.__func__
    counted = classmethod(lambda cls, *a, **k: loads.append(a) or load(cls, *a, **k))
    monkeypatch.setattr(MambaST, "from_pretrained", counted)
    c, s = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    a = stylize(c, s, saved, size=16, seed=0, output_type="pt")
    b = stylize(c, s, saved, size=16, seed=0, output_type="pt")
    assert len(loads) == 1 and torch.equal(a, b)


def test_outputs_are_clamped_and_settings_come_from_the_config(saved, tiny_model):
    with torch.no_grad():
        tiny_model.cnn_decoder[-1].bias.fill_(5.0)   # pushes every pixel far above 1
    c, s = torch.rand(3, 12, 20), torch.rand(1, 3, 16, 16)
    y = stylize(c, s, tiny_model, config=StylizeConfig(size=16, seed=1), output_type="pt")
    assert y.shape == (1, 3, 12, 20) and 0 <= y.min() and y.max() <= 1
    assert stylize(c, s, tiny_model, size=16, seed=1, output_type="pil").size == (20, 12)


def test_unknown_settings_and_output_types_are_named():
    with pytest.raises(TypeError, match="sise"):
        stylize(None, None, sise=3)
    with pytest.raises(ValueError, match="output_type must be one of 'pil', 'pt'"):
        stylize(None, None, output_type="np")
