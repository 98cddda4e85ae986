import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from mambast.io import ImageError, load_image, save_image


def _png_header_only(path, w, h):
    """A PNG whose IHDR claims w x h pixels but has no image data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def bad_files(tmp_path):
    """name -> path of every kind of bad input the CLI must reject cleanly."""
    files = {}
    files["empty"] = tmp_path / "empty.jpg"
    files["empty"].write_bytes(b"")
    files["text"] = tmp_path / "text.jpg"
    files["text"].write_text("this is not an image\n")
    good = tmp_path / "good_src.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good, quality=90)
    files["truncated"] = tmp_path / "truncated.jpg"
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    good.unlink()
    files["bomb"] = tmp_path / "bomb.png"
    _png_header_only(files["bomb"], 60000, 60000)
    files["folder"] = tmp_path / "folder.jpg"
    files["folder"].mkdir()
    files["missing"] = tmp_path / "missing.jpg"
    if hasattr(os, "symlink"):
        files["link_loop"] = tmp_path / "loop.jpg"
        os.symlink(files["link_loop"].name, files["link_loop"])   # a link to itself: os.stat says ELOOP
    files["tiff_float_offsets"] = tmp_path / "odd.tif"        # Pillow raises TypeError, not OSError, on it
    _tiff_with_float_strip_offsets(files["tiff_float_offsets"])
    files["moderate_bomb"] = tmp_path / "moderate_bomb.png"   # above the limit, below Pillow's own error level
    _png_header_only(files["moderate_bomb"], 10000, 9500)
    return files


def _tiff_with_float_strip_offsets(path):
    """An 8 x 8 TIFF whose StripOffsets entry (tag 273) claims the FLOAT type."""
    import io
    import struct
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, "TIFF")
    d = bytearray(buf.getvalue())
    ifd = struct.unpack_from("<I", d, 4)[0]
    for i in range(struct.unpack_from("<H", d, ifd)[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack_from("<H", d, entry)[0] == 273:
            struct.pack_into("<H", d, entry + 2, 11)
    path.write_bytes(bytes(d))


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "bomb", "folder", "missing", "tiff_float_offsets",
                                  "moderate_bomb"])
def test_bad_images_raise_one_line_error_naming_the_file(tmp_path, kind):
    path = bad_files(tmp_path)[kind]
    with pytest.raises(ImageError) as e:
        load_image(path)
    msg = str(e.value)
    assert path.name in msg and "\n" not in msg


@pytest.mark.parametrize("mode", ["RGBA", "L", "LA", "P", "CMYK", "I;16", "I", "F", "1"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 255, (9, 7, 3), dtype=np.uint8))
    gray = np.asarray(rgb.convert("L"))
    if mode == "I;16":
        img = Image.fromarray(gray.astype(np.uint16) * 257)  # full 16-bit range
    elif mode in ("I", "F"):
        img = rgb.convert("L").convert(mode)
    else:
        img = rgb.convert(mode)
    suffix = ".tif" if mode in ("CMYK", "I;16", "I", "F") else ".png"
    path = tmp_path / f"img{suffix}"
    img.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (7, 9)
    if mode in ("I;16", "I", "F"):
        # a gray 16-bit/int/float image keeps its tones instead of saturating to white
        assert 20 < np.asarray(out).mean() < 235


def test_sixteen_bit_is_scaled(tmp_path):
    a = (np.linspace(0, 65535, 12 * 10).reshape(12, 10)).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "g.png")
    out = np.asarray(load_image(tmp_path / "g.png"))
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (30, 10), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "o.jpg", exif=exif.tobytes())
    assert load_image(tmp_path / "o.jpg").size == (10, 30)


def test_save_is_atomic_and_leaves_no_temp(tmp_path):
    save_image(Image.new("RGB", (4, 4)), tmp_path / "sub" / "x.png")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.png"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="symbolic links")
def test_a_symbolic_link_loop_is_named_and_a_broken_link_is_missing(tmp_path):
    os.symlink("b.png", tmp_path / "a.png")
    os.symlink("a.png", tmp_path / "b.png")
    os.symlink("nowhere.png", tmp_path / "broken.png")
    with pytest.raises(ImageError, match=r"^\S*a\.png: symbolic-link loop \(the link leads back to itself\)$"):
        load_image(tmp_path / "a.png")
    with pytest.raises(ImageError, match=r"broken\.png: no such file$"):
        load_image(tmp_path / "broken.png")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX named pipes")
def test_a_named_pipe_is_refused_not_read(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")          # reading it would wait for a writer, or never end
    with pytest.raises(ImageError, match=r"pipe\.png: not a regular file"):
        load_image(tmp_path / "pipe.png")
