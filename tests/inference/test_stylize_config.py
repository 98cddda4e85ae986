import argparse
import dataclasses

import pytest

from mambast.cli import add_config_arguments, build_parser, config_from_args
from mambast.inference.config import DEFAULT_SIZE, StylizeConfig


def test_defaults_are_resolved_for_the_cpu_in_one_place():
    c = StylizeConfig(device="cpu").resolved()
    assert (c.size, c.seed, c.shuffle, c.dtype, c.batch_size, c.compile, c.cuda_graphs) == \
        (DEFAULT_SIZE, None, True, "float32", 1, False, False)
    assert c.torch_dtype is None and StylizeConfig(size=0).working_size is None


@pytest.mark.parametrize("field, value, words", [("size", -1, "size must be in 0..4096"),
                                                 ("batch_size", 0, "batch_size must be >= 1"),
                                                 ("dtype", "half", "dtype must be one of float32, bfloat16, float16"),
                                                 ("device", "meta", "device must be cpu, cuda or cuda:N"),
                                                 ("compile", True, "compile is for CUDA devices"),
                                                 ("size", 32.5, "size must be an int"),
                                                 ("size", "64", "size must be an int"),
                                                 ("seed", 1.5, "seed must be an int"),
                                                 ("batch_size", True, "batch_size must be an int"),
                                                 ("strength", "1", r"strength must be in 0\.\.1 .*'1' \(str"),
                                                 ("strength", True, r"strength must be in 0\.\.1 .*True \(bool"),
                                                 ("strength", float("nan"), r"strength must be in 0\.\.1"),
                                                 ("margin", -1, r"margin must be an int in 0\.\.256"),
                                                 ("margin", 257, r"margin must be an int in 0\.\.256"),
                                                 ("margin", 8.0, r"margin must be an int"),
                                                 ("margin", True, r"margin must be an int")])
def test_bad_settings_name_the_field_and_what_it_accepts(field, value, words):
    with pytest.raises(ValueError, match=words):
        StylizeConfig(**{"device": "cpu", field: value}).resolved()


def test_a_margin_that_no_working_size_could_take_is_refused_up_front():
    with pytest.raises(ValueError, match=r"size \+ 2 x margin must be at most 4096; got 4096 \+ 2 x 1"):
        StylizeConfig(device="cpu", size=4096, margin=1).resolved()
    assert StylizeConfig(device="cpu", size=4064, margin=16).resolved().margin == 16
    assert StylizeConfig(device="cpu", size=0, margin=256).resolved().margin == 256   # original size: per image


def test_a_zero_dimensional_tensor_or_array_strength_is_its_number():
    import numpy as np
    import torch
    for value in (torch.tensor(0.5), np.array(0.5), np.float32(0.5)):
        assert StylizeConfig(device="cpu", strength=value).resolved().strength == 0.5
    with pytest.raises(ValueError, match="strength must be in 0..1"):
        StylizeConfig(device="cpu", strength=torch.tensor([0.5, 0.5])).resolved()


def test_every_field_is_a_stylize_flag_with_the_config_default():
    p = argparse.ArgumentParser()
    add_config_arguments(p)
    assert config_from_args(p.parse_args([])) == StylizeConfig()
    args = p.parse_args(["--size", "64", "--no-shuffle", "--batch-size", "2", "--dtype", "bfloat16",
                         "--no-cuda-graphs", "--seed", "3", "--device", "cpu"])
    assert config_from_args(args) == StylizeConfig(size=64, seed=3, shuffle=False, dtype="bfloat16", batch_size=2,
                                                   cuda_graphs=False, device="cpu")
    stylize = build_parser().parse_args(["stylize", "c.png", "s.png", "-o", "o.png"])
    assert {f.name for f in dataclasses.fields(StylizeConfig)} <= set(vars(stylize))


def test_a_stylizer_built_without_a_batch_size_takes_the_devices(tiny_model):
    from mambast.inference.stylizer import Stylizer
    assert Stylizer(tiny_model).batch_size == StylizeConfig(device="cpu").resolved().batch_size == 1


def test_settings_and_job_planning_import_without_torch():
    import subprocess
    import sys
    code = "import sys, mambast.inference.config, mambast.inference.jobs; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_stylize_refuses_a_strength_that_is_not_a_number_before_loading_a_model(monkeypatch):
    import mambast
    from mambast.model import MambaST

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before strength was checked")
    monkeypatch.setattr(MambaST, "from_pretrained", classmethod(no_model))
    for bad in ("1", True):
        with pytest.raises(ValueError, match="strength must be in 0..1") as e:
            mambast.stylize("c.png", "s.png", strength=bad)
        assert "\n" not in str(e.value)
