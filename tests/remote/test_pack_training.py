"""A training set, the loss network and a checkpoint packed for another machine (scripts/remote/pack_training.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "remote"))  # the helpers are scripts
from chunks import MIB, unpack  # noqa: E402
from pack_training import pack_training  # noqa: E402


def test_the_unpacked_data_folder_holds_what_the_trainer_reads(tmp_path):
    for kind in ("content", "style"):
        (tmp_path / "images" / kind).mkdir(parents=True)
        (tmp_path / "images" / kind / "a.png").write_bytes(kind.encode() * 3000)
    (tmp_path / "vgg19_int8.safetensors").write_bytes(b"v" * 5000)
    (tmp_path / "step_00000002.pt").write_bytes(b"c" * 4000)
    paths = pack_training(tmp_path / "images", tmp_path / "chunks", 4096 / MIB, vgg=tmp_path / "vgg19_int8.safetensors",
                          checkpoint=tmp_path / "step_00000002.pt")
    assert all(p.stat().st_size <= 4096 for p in paths)
    unpack(tmp_path / "chunks", tmp_path / "data")
    data = tmp_path / "data"
    assert (data / "train-set" / "content" / "a.png").read_bytes() == b"content" * 3000
    assert (data / "train-set" / "style" / "a.png").read_bytes() == b"style" * 3000
    assert (data / "vgg19_int8.safetensors").read_bytes() == b"v" * 5000
    assert (data / "checkpoint.pt").read_bytes() == b"c" * 4000


def test_a_folder_without_content_and_style_is_refused(tmp_path):
    (tmp_path / "images" / "content").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no style/"):
        pack_training(tmp_path / "images", tmp_path / "chunks", 1, vgg=tmp_path / "v.safetensors")
