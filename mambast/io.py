"""Image files in and out: decode any Pillow image safely to RGB, write outputs atomically.

Errors are `ImageError` with a one-line message naming the file; nothing here touches the model.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
                  ".jfif", ".tga", ".ico"}


from .errors import DISK_FULL, ImageError, one_line, why_missing  # noqa: F401  (ImageError re-exported)


def _to_rgb(img):
    """Any Pillow mode -> 8-bit RGB (16-bit and float scaled, alpha composited on white)."""
    from PIL import Image
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        finite = a[np.isfinite(a)]
        a = np.nan_to_num(a, nan=0.0, posinf=finite.max(initial=0.0), neginf=finite.min(initial=0.0))
        hi = 65535.0 if img.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        if img.mode == "F" and a.max(initial=0) <= 1.0:
            hi = 1.0
        a = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")


def check_input_file(path, kind: str, error: type[Exception] = ImageError) -> Path:
    """`path` as a Path if it names a non-empty file; `error` in one line otherwise (kind: "image", "video")."""
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: {why_missing(path)}")
    if path.is_dir():
        raise error(f"{path}: is a folder, expected {'an' if kind[0] in 'aeiou' else 'a'} {kind} file")
    if not path.is_file():   # a pipe or a device: reading it could block forever or never end
        raise error(f"{path}: not a regular file (a pipe, socket or device), expected {kind} data")
    if path.stat().st_size == 0:
        raise error(f"{path}: empty file")
    return path


def load_image(path):
    """Decode an image file to RGB with its EXIF orientation applied; ImageError on any problem."""
    from PIL import Image, ImageOps
    path = check_input_file(path, "image")
    _strict_bomb_guard()
    try:
        with Image.open(path) as img:
            limit = Image.MAX_IMAGE_PIXELS
            if limit and img.width * img.height > limit:   # checked here too: thread-safe, whatever the filters
                raise ImageError(f"{path}: refused: too many pixels ({img.width} x {img.height} = "
                                 f"{img.width * img.height:,}; the limit is {limit:,})")
            img.load()
            if not img.width or not img.height:
                raise ImageError(f"{path}: image has no pixels ({img.width} x {img.height})")
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{path}: refused: too many pixels ({e.args[0].split('.')[0]})") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{path}: not a recognised image file") from None
    except Exception as e:   # Pillow's decoders raise many types on malformed files (OSError, ValueError, TypeError...)
        raise ImageError(f"{path}: cannot decode image ({one_line(e)})") from None


def image_size(path) -> tuple[int, int]:
    """(width, height) of an image file as `load_image` returns it (EXIF orientation applied), from its header
    alone; ImageError if it cannot be read."""
    from PIL import Image
    path = check_input_file(path, "image")
    try:
        with Image.open(path) as img:
            w, h = img.size
            turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)   # orientations that swap the sides
    except Image.UnidentifiedImageError:
        raise ImageError(f"{path}: not a recognised image file") from None
    except Exception as e:
        raise ImageError(f"{path}: cannot read image ({one_line(e)})") from None
    return (h, w) if turned else (w, h)


_filters_set = False


def _strict_bomb_guard() -> None:
    """Once per process (changing warning filters around each call is not thread-safe, and images are
    decoded in threads): Pillow's decompression-bomb warning becomes an error, and its TIFF decoder's
    metadata warnings about malformed tags are not printed (the image is decoded or refused anyway)."""
    global _filters_set
    if not _filters_set:
        from PIL import Image
        warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")
        _filters_set = True


def check_image_tensor(x, what: str = "image") -> torch.Tensor:
    """`x` if it is one RGB image tensor ([3, H, W] or [1, 3, H, W], real floats, finite, H and W >= 1), as
    [1, 3, H, W]; ValueError in one line naming `what` otherwise (values are not range-checked: clamped later)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a tensor; got {type(x).__name__}")
    shape = list(x.shape)
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[:2] != (1, 3):
        raise ValueError(f"{what} must be one RGB image tensor, [3, H, W] or [1, 3, H, W]; got shape {shape}")
    if not x.shape[2] or not x.shape[3]:
        raise ValueError(f"{what} has no pixels (shape {shape})")
    if not x.is_floating_point():
        raise ValueError(f"{what} must be a float tensor in [0, 1]; got {str(x.dtype).replace('torch.', '')}"
                         + (" (divide by 255)" if x.dtype == torch.uint8 else ""))
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} holds NaN or Inf values")
    return x


def pil_to_tensor(img) -> torch.Tensor:
    """PIL RGB -> [1, 3, H, W] float32 in [0, 1]."""
    a = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float().div_(255.0)


def tensor_to_pil(x: torch.Tensor):
    """[1, 3, H, W] or [3, H, W] float in [0, 1] (clamped) -> PIL RGB."""
    from PIL import Image
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {x.shape[0]}")
        x = x[0]
    a = (x.detach().float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(a)   # uint8 H x W x 3: RGB (the mode argument is deprecated)


# Pillow's names of the formats outputs are written in (`save_image` picks them by suffix: .jpg is JPEG)
PIL_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}


def encode_image(img, format: str) -> bytes:
    """A PIL image as the bytes of a png/jpg/webp file, with the settings `save_image` writes that suffix with
    (Pillow's defaults: the same bytes as the file)."""
    import io
    buffer = io.BytesIO()
    try:
        img.save(buffer, format=PIL_FORMATS[format])
    except (OSError, ValueError, KeyError) as e:
        raise ImageError(f"cannot encode image as {format} ({one_line(e)})") from None
    return buffer.getvalue()


def save_image(img, path) -> None:
    """Write a PIL image atomically (temp file in the same folder, then rename); format from the suffix."""
    from .atomic import atomic_write
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: img.save(tmp, format=None if path.suffix else "PNG"),
                     suffix=path.suffix or ".png")
    except OSError as e:   # the reason without the temp file's name
        if e.errno in DISK_FULL:   # the disk, not this image: nothing more fits
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise ImageError(f"{path}: cannot write image ({e.strerror or e})") from None
    except (ValueError, KeyError) as e:
        raise ImageError(f"{path}: cannot write image ({e})") from None


def list_images(folder, recursive: bool = False) -> list[Path]:
    """Image files inside a folder (by suffix; hidden files such as macOS's ._x.jpg left out), sorted by path;
    `recursive`: in its subfolders too (see `walk_images`)."""
    folder = Path(folder)
    if recursive:
        return [folder / rel for rel in walk_images(folder)]
    return sorted(p for p in folder.iterdir() if _listed_image(p.name) and p.is_file())


def walk_images(folder) -> list[str]:
    """Paths (strings, relative to `folder`) of the image files in a folder tree, sorted; hidden files and
    hidden folders left out, symbolic links to folders not followed (a link loop would never end)."""
    found = []
    # strings and os.walk (one scandir per folder): a million-image tree is listed in seconds, in little memory
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = os.path.relpath(root, folder)
        found += [f if rel == "." else os.path.join(rel, f) for f in files if _listed_image(f)]
    return sorted(found)


def _listed_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES
