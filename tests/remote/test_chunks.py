"""Files and folders packed into chunks of at most N MiB and unpacked back (scripts/remote/chunks.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHUNKS = Path(__file__).resolve().parents[2] / "scripts" / "remote" / "chunks.py"
sys.path.insert(0, str(CHUNKS.parent))   # the helpers are scripts
from chunks import MIB, missing_chunks, pack, unpack  # noqa: E402


def tiny_tree(root: Path) -> Path:
    """A training-set-like folder and a weights-like file, ~40 KiB of incompressible bytes in all."""
    for kind, n in (("content", 3), ("style", 2)):
        (root / "images" / kind).mkdir(parents=True)
        for i in range(n):
            (root / "images" / kind / f"{i}.jpg").write_bytes(os.urandom(7000 + 100 * i))
    (root / "vgg.safetensors").write_bytes(os.urandom(5000))
    return root


def same_files(a: Path, b: Path) -> bool:
    files = lambda root: sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    return files(a) == files(b) and all((a / f).read_bytes() == (b / f).read_bytes() for f in files(a))


def test_pack_and_unpack_round_trip_within_the_chunk_size(tmp_path):
    src = tiny_tree(tmp_path / "src")
    chunk_mib = 8192 / MIB
    paths = pack({"train-set": src / "images", "vgg19_fp16.safetensors": src / "vgg.safetensors"},
                 tmp_path / "chunks", chunk_mib)
    assert len(paths) > 4 and all(p.stat().st_size <= 8192 for p in paths)
    assert unpack(tmp_path / "chunks", tmp_path / "back") == ["train-set", "vgg19_fp16.safetensors"]
    assert same_files(src / "images", tmp_path / "back" / "train-set")
    assert (tmp_path / "back" / "vgg19_fp16.safetensors").read_bytes() == (src / "vgg.safetensors").read_bytes()


def test_unpack_waits_for_every_chunk_and_refuses_a_changed_one(tmp_path):
    src = tiny_tree(tmp_path / "src")
    paths = pack({"images": src / "images"}, tmp_path / "chunks", 8192 / MIB)
    held = paths[1].read_bytes()
    paths[1].unlink()
    assert missing_chunks(tmp_path / "chunks") == [paths[1].name]
    with pytest.raises(FileNotFoundError, match="1 of .* chunks missing"):
        unpack(tmp_path / "chunks", tmp_path / "back")
    paths[1].write_bytes(held[:-1] + bytes([held[-1] ^ 1]))
    with pytest.raises(ValueError, match="SHA-256"):
        unpack(tmp_path / "chunks", tmp_path / "back")
    assert not (tmp_path / "back").exists()


def test_a_repack_leaves_no_chunk_of_the_earlier_stream(tmp_path):
    src = tiny_tree(tmp_path / "src")
    pack({"images": src / "images"}, tmp_path / "chunks", 4096 / MIB)
    pack({"vgg": src / "vgg.safetensors"}, tmp_path / "chunks", 4096 / MIB)
    listed = [c["name"] for c in json.loads((tmp_path / "chunks" / "chunks.json").read_text())["chunks"]]
    assert sorted(p.name for p in (tmp_path / "chunks").glob("part-*")) == listed


def test_command_line_packs_named_items_and_says_what_is_missing(tmp_path):
    src = tiny_tree(tmp_path / "src")
    run = lambda *a: subprocess.run([sys.executable, str(CHUNKS), *map(str, a)], capture_output=True, text=True)
    r = run("pack", tmp_path / "c", "--chunk-mib", 0.01, f"train-set={src / 'images'}", src / "vgg.safetensors")
    assert r.returncode == 0, r.stderr
    (tmp_path / "c" / "part-00000").unlink()
    r = run("unpack", tmp_path / "c", tmp_path / "back")
    assert r.returncode == 3 and "part-00000" in r.stdout
