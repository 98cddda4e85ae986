"""Training data: recursive listing, eval-set refusal, bad files skipped, deterministic resumable sampling."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from mambast.train.config import TrainError
from mambast.train.data import ImageStream, InfiniteSampler, TrainImages, find_images, fixed_batch


def _write(path, h=40, w=52, seed=0, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(a).save(path, format=fmt)
    return path


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "images"
    _write(root / "a.png", seed=1)
    _write(root / "sub" / "b.jpg", seed=2)
    _write(root / "sub" / "deeper" / "c.bmp", seed=3)
    _write(root / "d.webp", seed=4)
    _write(root / "e.tif", seed=5)
    (root / "notes.txt").write_text("not an image")
    return root


def test_find_images_is_recursive_and_takes_pillow_formats(folder):
    paths = find_images(folder)
    assert paths == sorted(paths)
    assert {p.name for p in paths} == {"a.png", "b.jpg", "c.bmp", "d.webp", "e.tif"}


def test_eval_set_folders_are_refused(tmp_path):
    _write(tmp_path / "shared" / "eval-set" / "content" / "x.png")
    with pytest.raises(TrainError, match="evaluation"):
        find_images(tmp_path / "shared" / "eval-set" / "content", "content")
    os.symlink(tmp_path / "shared" / "eval-set", tmp_path / "innocent")
    with pytest.raises(TrainError, match="evaluation"):
        find_images(tmp_path / "innocent", "content")


def test_empty_or_missing_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainError, match="no images"):
        find_images(tmp_path / "empty")
    with pytest.raises(TrainError, match="not a folder"):
        find_images(tmp_path / "missing")


def test_bad_file_is_skipped_and_its_error_returned(tmp_path):
    good = _write(tmp_path / "good.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    data = TrainImages([bad, good], size=64, crop=32)
    img, skipped = data[(0, 0)]
    assert skipped.startswith(f"{bad}: ") and "\n" not in skipped
    assert img.shape == (3, 32, 32) and img.dtype == torch.uint8
    np.testing.assert_array_equal(img.numpy(), data[(1, 0)][0].numpy())   # the next file was used
    assert data[(1, 0)][1] == ""


@pytest.mark.parametrize("workers", [0, 2])
def test_a_skipped_file_is_told_once_in_one_line_and_counted_each_time(tmp_path, capfd, workers):
    """Met in every epoch and by every loader worker, the bad file is printed once and counted every time."""
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    data = TrainImages([bad, _write(tmp_path / "good.png")], size=64, crop=32)
    stream = ImageStream(data, batch_size=2, workers=workers)
    for _ in range(4):   # 4 epochs of the 2 files: the bad one is met 4 times
        next(stream)
    stream.close()
    assert stream.skipped == 4
    assert capfd.readouterr().err.splitlines() == [f"[train] skipped {bad}: not a recognised image file"]


def test_all_files_bad_raises_one_clear_error(tmp_path):
    files = []
    for i in range(3):
        files.append(tmp_path / f"bad{i}.png")
        files[-1].write_bytes(b"junk")
    with pytest.raises(TrainError, match="unreadable"):
        TrainImages(files, size=64, crop=32)[(0, 0)]


def test_augmentation_depends_only_on_seed_and_position(folder):
    files = find_images(folder)
    data = TrainImages(files, size=64, crop=32, scale_jitter=0.2, seed=7)
    a, _ = data[(1, 5)]
    b, _ = data[(1, 5)]
    c, _ = data[(1, 6)]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    other = TrainImages(files, size=64, crop=32, scale_jitter=0.2, seed=8)
    assert not torch.equal(a, other[(1, 5)][0])


def test_square_resize_then_crop_covers_the_expected_region(tmp_path):
    # a horizontal ramp: after a 2x "square" resize, a 32-wide crop spans half of the image's width
    ramp = np.tile(np.linspace(0, 255, 40).astype(np.uint8)[None, :, None], (40, 1, 3))
    path = tmp_path / "ramp.png"
    Image.fromarray(ramp).save(path)
    data = TrainImages([path], size=80, crop=32, flip=False)
    for pos in range(5):
        img = data[(0, pos)][0].float()
        span = img[0, 16, -2] - img[0, 16, 1]
        assert 90 < span < 120, span   # 29 of 80 resized columns ~ 29/80 of the 255 ramp


def test_short_side_resize_keeps_aspect(tmp_path):
    path = _write(tmp_path / "wide.png", h=20, w=80)
    img, _ = TrainImages([path], size=32, crop=32, resize="short")[(0, 3)]
    assert img.shape == (3, 32, 32)


def test_infinite_sampler_epochs_are_permutations_and_restart_exactly():
    s = InfiniteSampler(5, seed=3)
    it = iter(s)
    first = [next(it) for _ in range(12)]
    assert sorted(i for i, _ in first[:5]) == list(range(5))
    assert sorted(i for i, _ in first[5:10]) == list(range(5))
    assert [g for _, g in first] == list(range(12))
    it2 = iter(InfiniteSampler(5, seed=3, start=7))
    assert [next(it2) for _ in range(5)] == first[7:12]


def test_infinite_sampler_shards_the_global_stream_over_ranks():
    full = iter(InfiniteSampler(7, seed=1))
    ref = [next(full) for _ in range(20)]
    r0 = iter(InfiniteSampler(7, seed=1, rank=0, world_size=2))
    r1 = iter(InfiniteSampler(7, seed=1, rank=1, world_size=2))
    assert [next(r0) for _ in range(10)] == ref[0::2]
    assert [next(r1) for _ in range(10)] == ref[1::2]


def test_image_stream_position_resumes_exactly(folder):
    data = TrainImages(find_images(folder), size=64, crop=32, seed=0)
    a = ImageStream(data, batch_size=2, seed=0)
    batches = [next(a) for _ in range(4)]
    assert a.seen == 8
    b = ImageStream(data, batch_size=2, seed=0, start=6)
    assert torch.equal(next(b), batches[3])


def test_image_stream_with_workers_matches_main_process(folder):
    data = TrainImages(find_images(folder), size=64, crop=32, seed=0)
    a = ImageStream(data, batch_size=2, workers=0)
    b = ImageStream(data, batch_size=2, workers=2)
    try:
        for _ in range(3):
            assert torch.equal(next(a), next(b))
    finally:
        b.close()


def test_fixed_batch_is_float_and_centre_cropped(folder):
    x = fixed_batch(find_images(folder), 3, 32)
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1
