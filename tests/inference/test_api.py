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


@pytest.mark.parametrize("content, error, words", [
    (lambda: __import__("PIL.Image").Image.new("RGB", (0, 5)), ValueError, r"content has no pixels"),
    (lambda: torch.rand(3, 0, 8), ValueError, r"content has no pixels"),
    (lambda: torch.full((3, 8, 8), float("nan")), ValueError, "content holds NaN or Inf"),
    (lambda: torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8), ValueError, r"float tensor .* \(divide by 255\)"),
    (lambda: torch.rand(4, 8, 8), ValueError, r"content must be one RGB image tensor.*\[4, 8, 8\]"),
    (lambda: torch.rand(2, 3, 8, 8), ValueError, r"content must be one RGB image tensor"),
    (lambda: torch.rand(8, 8, 3), ValueError, r"content must be one RGB image tensor"),
    (lambda: __import__("numpy").zeros((8, 8, 3)), TypeError, "content must be a PIL image, a path or a tensor"),
    (lambda: None, TypeError, "content must be a PIL image, a path or a tensor; got NoneType"),
])
def test_hostile_images_are_one_line_errors_before_the_model_loads(monkeypatch, content, error, words):
    monkeypatch.setattr(api, "cached_model", lambda *a: pytest.fail("the model was loaded"))
    with pytest.raises(error, match=words) as e:
        stylize(content(), torch.rand(3, 8, 8), size=16)
    assert "\n" not in str(e.value)
    with pytest.raises(error, match=words.replace("content", "style 2")):
        stylize(torch.rand(3, 8, 8), [torch.rand(3, 8, 8), content()], size=16)


def test_a_stylizer_refuses_tensors_that_are_not_one_image(tiny_model):
    from mambast.inference.stylizer import Stylizer
    with pytest.raises(ValueError, match="style holds NaN or Inf"):
        Stylizer(tiny_model, size=16).stylize(torch.rand(1, 3, 8, 8), torch.full((1, 3, 8, 8), float("inf")))
    with pytest.raises(TypeError, match="model must be a MambaST, a weights path or None; got int"):
        stylize(torch.rand(3, 8, 8), torch.rand(3, 8, 8), 5, size=16)


def test_unknown_settings_and_output_types_are_named():
    with pytest.raises(TypeError, match="sise"):
        stylize(None, None, sise=3)
    with pytest.raises(ValueError, match="output_type must be one of 'pil', 'pt'"):
        stylize(None, None, output_type="np")
