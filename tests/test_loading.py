import torch

from mambast.model import MambaST
from mambast.weights import load_pretrained


class Tagged(MambaST):
    """A model class of its own: loading must build it, not MambaST."""


def test_loading_builds_the_class_it_is_called_on(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "m")
    m = Tagged.from_pretrained(tmp_path / "m")
    assert type(m) is Tagged
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), tiny_model.state_dict().values()))
    assert type(load_pretrained(tmp_path / "m")) is MambaST   # the functions of mambast.weights build MambaST
