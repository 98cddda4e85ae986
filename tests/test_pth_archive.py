"""A .pth is measured before torch.load reads it (torch materialises every storage first): its size, its zip
entries' declared sizes and count, or the storages its older-format pickle declares, against a bound set by
what the file should hold. The hostile files here are a few hundred bytes (or sparse): their headers lie."""

import io
import pickle
import struct

import pytest
import torch

from mambast.cli import main
from mambast.config import MambaSTConfig
from mambast.errors import WeightsError
from mambast.loading import MAX_PTH_ENTRIES, TORCH_MAGIC, pth_bound
from mambast.weights import load_torch_file

LIMIT = 1 << 20
STATE = {"w": torch.arange(12.0).reshape(3, 4), "b": torch.arange(5)}


@pytest.fixture
def no_torch_load(monkeypatch):
    """torch.load fails the test if called: every refusal must come before it."""
    def called(*args, **kwargs):
        raise AssertionError("torch.load was called on a file that should have been refused unread")
    monkeypatch.setattr(torch, "load", called)


def _zip_claiming(path, size):
    """A valid zip .pth whose central directory says its first storage entry holds `size` bytes."""
    torch.save(STATE, path)
    data = bytearray(path.read_bytes())
    i = data.find(b"PK\x01\x02")
    while i >= 0:
        n = int.from_bytes(data[i + 28:i + 30], "little")
        if b"/data/" in data[i + 46:i + 46 + n]:
            struct.pack_into("<I", data, i + 24, size)   # the entry's uncompressed size
            break
        i = data.find(b"PK\x01\x02", i + 4)
    path.write_bytes(bytes(data))
    return path


def _zip_counting(path, count):
    """A valid zip .pth whose end record (torch writes the zip64 one) says it has `count` entries."""
    torch.save(STATE, path)
    data = bytearray(path.read_bytes())
    end = data.rfind(b"PK\x06\x06")
    struct.pack_into("<QQ", data, end + 24, count, count)   # entries on this disk, entries in all
    path.write_bytes(bytes(data))
    return path


def _zip_hiding(path, count):
    """A zip of `count` tiny entries whose end record says it has one (zipfile would build every one)."""
    name, data = b"archive/data/0", bytes(16)
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 16, 16, len(name), 0) + name + data
    central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 16, 16, len(name), 0, 0, 0, 0, 0,
                          0) + name
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central) * count, len(local), 0)
    path.write_bytes(local + central * count + end)
    return path


def _legacy_declaring(path, numel, key="0"):
    """torch's older non-zip format with one float storage of `numel` declared (under `key`), 16 bytes stored."""
    class Declaring(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, key, "cpu", numel, None) if obj == "S" else None
    out = io.BytesIO()
    for header in (TORCH_MAGIC, 1001, {"little_endian": True}):
        pickle.dump(header, out, protocol=2)
    Declaring(out, protocol=2).dump({"w": "S"})
    pickle.dump(["0"], out, protocol=2)
    path.write_bytes(out.getvalue() + struct.pack("<q", 4) + bytes(16))
    return path


def _sparse(path, size):
    """A file of `size` bytes that takes no disk space (only its length is looked at)."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


HOSTILE = {
    "a zip entry claiming 3 GiB": (lambda p: _zip_claiming(p, 3 << 30), r"archive entries hold 3,221,22\d,\d+ bytes"),
    "a zip of 100,000 entries": (lambda p: _zip_counting(p, 100_000),
                                 rf"more than {MAX_PTH_ENTRIES:,} archive entries"),
    "a sparse 6 GiB file": (lambda p: _sparse(p, 6 << 30), r"6,442,450,944 bytes, more than"),
    "an older-format pickle declaring 40 GB": (lambda p: _legacy_declaring(p, 10 ** 10),
                                               r"tensors declare 40,000,000,000 bytes, the file holds \d+"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_pth_beyond_its_bound_is_refused_before_torch_reads_it(tmp_path, no_torch_load, case):
    make, words = HOSTILE[case]
    path = make(tmp_path / "hostile.pth")
    with pytest.raises(WeightsError, match=words) as e:
        load_torch_file(path, "checkpoint", max_bytes=LIMIT)
    assert str(e.value).startswith(str(path)) and "refused" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("legacy", [False, True])
def test_valid_pth_files_of_both_formats_load_within_their_bound(tmp_path, legacy):
    path = tmp_path / "ok.pth"
    torch.save(STATE, path, _use_new_zipfile_serialization=not legacy)
    loaded = load_torch_file(path, "checkpoint", max_bytes=LIMIT)
    assert loaded.keys() == STATE.keys() and all(torch.equal(loaded[k], v) for k, v in STATE.items())
    with pytest.raises(WeightsError, match="refused"):   # the same file, with less allowed than it holds
        load_torch_file(path, "checkpoint", max_bytes=path.stat().st_size - 1)


def test_an_older_format_file_storing_less_than_it_declares_is_refused(tmp_path, no_torch_load):
    path = _legacy_declaring(tmp_path / "short.pth", 1000)   # 4,000 bytes declared, 16 stored
    with pytest.raises(WeightsError, match="declare 4,000 bytes, the file holds"):
        load_torch_file(path, "checkpoint", max_bytes=LIMIT)


def test_a_zip_whose_end_record_hides_its_entries_is_counted_from_its_headers(tmp_path, no_torch_load):
    path = _zip_hiding(tmp_path / "many.pth", MAX_PTH_ENTRIES + 1)   # 4 MB: within the bound given below
    with pytest.raises(WeightsError, match=rf"more than {MAX_PTH_ENTRIES:,} archive entries"):
        load_torch_file(path, "checkpoint", max_bytes=8 << 20)


@pytest.mark.parametrize("what", ["a key torch never writes", "a size too long to print"])
def test_an_older_format_pickle_torch_never_writes_is_refused_at_once(tmp_path, no_torch_load, what):
    # a list key nested with shared halves would grow exponentially as text; 10**5000 has no printable size
    nested = [["0"] * 2] * 2
    path = (_legacy_declaring(tmp_path / "odd.pth", 4, key=nested) if what.startswith("a key")
            else _legacy_declaring(tmp_path / "odd.pth", 10 ** 5000))
    with pytest.raises(WeightsError, match=r"odd\.pth: not a readable PyTorch checkpoint"):
        load_torch_file(path, "checkpoint", max_bytes=LIMIT)


def test_a_file_in_neither_torch_format_is_a_one_line_error(tmp_path, no_torch_load):
    path = tmp_path / "text.pth"
    path.write_text("not a checkpoint\n")
    with pytest.raises(WeightsError, match=r"text\.pth: not a readable PyTorch checkpoint \(neither"):
        load_torch_file(path, "checkpoint", max_bytes=LIMIT)


@pytest.mark.parametrize("hostile", ["sparse", "zip"])
def test_convert_bounds_each_file_by_the_published_model(tmp_path, official_files, capsys, no_torch_load, hostile):
    paths, _ = official_files   # the mamba file is read first: torch.load is never called
    bound = pth_bound(MambaSTConfig().num_parameters)
    _sparse(paths["mamba"], bound + 1) if hostile == "sparse" else _zip_claiming(paths["mamba"], 3 << 30)
    code = main(["convert", "--mamba", str(paths["mamba"]), "--decoder", str(paths["decoder"]),
                 "--embedding", str(paths["embedding"]), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and f"more than a mamba checkpoint can need ({bound:,})" in err
    assert "mamba_iter_160000.pth: refused" in err and not (tmp_path / "out").exists()


def test_the_vgg_pth_is_bounded_by_the_whole_vgg19(tmp_path, no_torch_load):
    from mambast.networks.vgg import adain_numbers, load_vgg19
    assert adain_numbers() == 20_024_396   # AdaIN's vgg_normalised.pth: every conv of VGG-19 and the 1x1 one
    bound = pth_bound(adain_numbers())
    with pytest.raises(WeightsError, match=rf"vgg\.pth: refused: {bound + 1:,} bytes.*\({bound:,}\)"):
        load_vgg19(path=_sparse(tmp_path / "vgg.pth", bound + 1))
    with pytest.raises(WeightsError, match=r"vgg_legacy\.pth: refused: its tensors declare"):
        load_vgg19(path=_legacy_declaring(tmp_path / "vgg_legacy.pth", 10 ** 10))


def test_a_training_checkpoint_is_bounded_by_the_weights_and_adams_two_moments(tmp_path, no_torch_load):
    from conftest import tiny_config
    from mambast.train.checkpoint import load_checkpoint, newest_valid_checkpoint
    from mambast.train.config import TrainError
    config = tiny_config()
    bound = pth_bound(3 * config.num_parameters)
    path = _sparse(tmp_path / "step_00000001.pt", bound + 1)
    with pytest.raises(TrainError, match=rf"step_00000001\.pt: refused: .*\({bound:,}\)"):
        load_checkpoint(path, config)
    said = []
    with pytest.raises(TrainError, match="none of the 2 checkpoints"):
        newest_valid_checkpoint([_zip_claiming(tmp_path / "step_00000000.pt", 3 << 30), path], said.append, config)
    assert all("refused" in s for s in said) and len(said) == 2
