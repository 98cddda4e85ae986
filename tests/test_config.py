"""The model config: hard limits checked before anything is built, and JSON read within size and depth limits."""

import os

import pytest

from mambast.config import MAX_CONFIG_BYTES, MAX_JSON_DEPTH, MAX_PARAMETERS, MambaSTConfig
from mambast.model import MambaST


@pytest.mark.parametrize("kw", [{},
                                dict(dim=32, depth_encoder=1, depth_decoder=2, d_state=4, decoder_channels=[16, 8, 8]),
                                dict(dim=48, expand=3, dt_rank=5, d_conv=5, depth_encoder=2, d_state=7)],
                         ids=["reference", "tiny", "odd"])
def test_parameter_count_is_that_of_the_model_built(kw):
    config = MambaSTConfig(**kw)
    assert config.num_parameters == sum(v.numel() for v in MambaST(config).state_dict().values())


@pytest.mark.parametrize("text, match", [
    ('{"dim": 1000000}', "dim must be at most"),
    ('{"depth_encoder": 100000}', "depth_encoder must be at most"),
    ('{"d_state": 100000}', "d_state must be at most"),
    ('{"decoder_channels": [100000, 8, 8]}', "decoder_channels must be"),
    ('{"decoder_channels": [16, 8]}', "decoder_channels must be"),
    ('{"dim": 4096, "depth_encoder": 64}', "parameters; the limit is"),
    ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), "nests deeper"),
    ("[" * 30000 + "]" * 30000, "nests deeper"),                  # json's recursion would overflow on it
    ('{"dim": 8, "x": "' + "a" * MAX_CONFIG_BYTES + '"}', "larger than the limit"),
    ('[1, 2]', "JSON object"),
])
def test_configs_beyond_the_limits_are_refused_before_building(text, match):
    with pytest.raises((ValueError, TypeError), match=match):
        MambaSTConfig.from_json(text)


def test_brackets_inside_strings_are_not_nesting():
    with pytest.raises(ValueError, match="unknown config keys"):     # parsed, not refused as too deep
        MambaSTConfig.from_json('{"[[[[[[[[[[[[": 1}')
    assert MambaSTConfig.from_json('{"dim": 32, "decoder_channels": [16, 8, 8]}').dim == 32


def test_the_limit_allows_the_reference_model_many_times_over():
    assert MambaSTConfig().num_parameters * 30 < MAX_PARAMETERS


def test_a_config_file_is_read_only_up_to_the_limit(tmp_path):
    big = tmp_path / "config.json"
    big.write_text(" " * (10 * MAX_CONFIG_BYTES) + "{}")
    with pytest.raises(ValueError, match="larger than the limit"):
        MambaSTConfig.from_json_file(big)


def test_the_nesting_check_takes_linear_time_on_unclosed_strings():
    import time
    t = time.perf_counter()
    with pytest.raises(ValueError):
        MambaSTConfig.from_json('"' + '\\"' * 32000)      # a backtracking scan would take tens of seconds
    assert time.perf_counter() - t < 1


@pytest.mark.parametrize("text", ['{"ln_eps": Infinity}', '{"ln_eps": 1e300}', '{"ln_eps": NaN}', '{"ln_eps": 0}'])
def test_a_layer_norm_epsilon_that_would_flatten_every_layer_is_refused(text):
    with pytest.raises(ValueError, match=r"ln_eps in \(0, 1\]"):
        MambaSTConfig.from_json(text)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX named pipes")
def test_a_config_path_that_is_a_pipe_is_refused_not_waited_on(tmp_path):
    import threading
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    # were the pipe opened, a writer arriving after 10 s ends the wait: the test then fails instead of hanging
    writer = threading.Timer(10, lambda: os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)))
    writer.start()
    try:
        with pytest.raises(ValueError, match="not a regular file"):
            MambaSTConfig.from_json_file(fifo)
    finally:
        writer.cancel()
