"""Loading, saving and converting Mamba-ST weights: the authors' .pth files, our safetensors folders,
and the int8 packaging of the bundled default model. Model classes inherit `PretrainedMixin`; this module
builds `cls(config)` for the class it is given and never imports a model.

A checkpoint is untrusted input: .pth files are measured (`check_torch_archive`), then read with
`torch.load(weights_only=True)` only, a config is held to hard limits and every tensor is checked (name, shape,
dtype, finite values) before a model takes it.
"""

from __future__ import annotations

import math
import pickle
import re
import warnings
from pathlib import Path

import torch

from .atomic import atomic_write
from .config import MambaSTConfig

DEFAULT_MODEL_DIR = Path(__file__).parent / "assets" / "default"
MAX_DEFAULT_MODEL_BYTES = 25_000_000  # the bundled model (int8) must stay within 25 MB
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
SCALE_SUFFIX = ".int8_scale"

# Official checkpoint files -> the prefix their keys get in our state dict. The Mamba file's keys
# (encoder_c., encoder_s., decoder.) are already our names.
OFFICIAL_PREFIX = {"mamba": "", "decoder": "cnn_decoder.", "embedding": "patch_embed."}
# Stored in the official Mamba file but unused by the forward pass: accepted and dropped.
OFFICIAL_UNUSED = re.compile(r"(.*\.skip_scale2$)|(encoder_[cs]\.layers\.\d+\.self_attention\.in_style_proj\.weight$)"
                             r"|(new_ps\..*)")


from .errors import WeightsError, one_line, printable, why_missing  # noqa: F401  (WeightsError re-exported)
from .io import check_input_file


MAX_PICKLE_SCAN = 64 << 20   # bytes of a refused pickle read to name the global it wanted
# torch.load materialises every storage a .pth holds before any shape is checked, so the archive is measured
# first. Bound: twice the float32 bytes of the numbers the file should hold, plus 64 MiB for the pickle, Adam's
# step counters and RNG states; a valid file is about half of it (pth_bound). 65,535 entries: one per tensor,
# and even a training checkpoint of the deepest config allowed has under 20,000.
PTH_SLACK = 64 << 20
MAX_PTH_ENTRIES = 65_535
TORCH_MAGIC = 0x1950A86A20F9469CFC6C   # first pickle of torch's older (before 1.6) non-zip format
# Element sizes of the storage classes that older format names; an unknown one counts as the largest.
_STORAGE_ITEM_BYTES = {"Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2,
                       "Char": 1, "Byte": 1, "Bool": 1, "ComplexFloat": 8, "ComplexDouble": 16}


def pth_bound(numbers: int) -> int:
    """Most bytes a .pth expected to hold `numbers` float32 values may hold before it is refused unread."""
    return 2 * 4 * int(numbers) + PTH_SLACK


def _refused_global(path: Path) -> str | None:
    """The first global a pickle (plain, or a torch zip's data.pkl) imports that torch's weights-only loader does
    not allow, read with pickletools (which parses, never runs); None if there is none or the file is unreadable."""
    import pickletools
    import zipfile
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
        allowed = set(_get_allowed_globals())
    except (ImportError, AttributeError):   # a private helper: without it, anything outside torch is named
        allowed = set()
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                member = next(i for i in z.infolist() if i.filename.endswith("data.pkl"))
                with z.open(member) as f:
                    data = f.read(MAX_PICKLE_SCAN)
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_PICKLE_SCAN)
        pushed, memo = [], {}   # values pushed (strings, else None) and memoised, enough to follow STACK_GLOBAL
        for op, arg, _ in pickletools.genops(data):
            name = None
            if op.name == "GLOBAL":
                name = arg.replace(" ", ".")
            elif op.name == "STACK_GLOBAL" and len(pushed) >= 2 and all(isinstance(v, str) for v in pushed[-2:]):
                name = ".".join(pushed[-2:])
            elif op.name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = pushed[-1] if pushed else None
            elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                pushed.append(memo.get(arg))
            elif op.name not in ("PROTO", "FRAME", "STOP", "MARK"):
                pushed.append(arg if isinstance(arg, str) and "UNICODE" in op.name else None)
            if name and name.startswith("__builtin__."):   # protocol 2 spells builtins as Python 2 did
                name = "builtins." + name.split(".", 1)[1]
            if name and (name not in allowed if allowed else not name.startswith(("torch.", "collections."))):
                return name
    except Exception:   # a damaged or odd pickle: no name, torch's own reason is given instead
        return None
    return None


def _unpickling_reason(e: Exception) -> str:
    """The reason in torch's weights_only refusal, without its advice to turn the safety off."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
        for advice in ("Check the documentation", "Please use", "Alternatively"):
            text = text.split(advice, 1)[0]
    reason = " ".join(text.split())
    return reason[:200] or "unsupported content"


class _Stub:
    """What every class and storage of a probed pickle becomes: it takes any arguments and state, runs nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


class _Bounded:
    """A file whose reads never ask for more than it holds (a pickle opcode can declare any length)."""

    def __init__(self, f, size: int):
        self.f, self.size = f, size

    def read(self, n: int = -1) -> bytes:
        left = max(0, self.size - self.f.tell())
        return self.f.read(left if n is None or n < 0 else min(n, left))

    def readline(self, n: int = -1) -> bytes:
        return self.f.readline(n)


def _legacy_storage_bytes(path: Path, size: int) -> int | None:
    """Bytes of the storages a .pth of torch's older non-zip format declares (torch allocates them all before
    reading any), found by unpickling its header with every class a `_Stub` (nothing is imported or run);
    None if the file is not in that format."""
    declared: dict = {}

    class Probe(pickle.Unpickler):
        def find_class(self, module, name):
            if name.endswith("Storage"):   # the storage's type: kept by name for its element size
                return ("storage class", name[:-len("Storage")])
            return _Stub

        def persistent_load(self, pid):
            if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
                kind, key, numel = pid[1], pid[2], pid[4]
                item = _STORAGE_ITEM_BYTES.get(kind[1], 16) if isinstance(kind, tuple) and len(kind) > 1 else 16
                # torch writes string keys and sizes below 2**62: anything else (a key whose text would grow
                # exponentially, a size too long to print) is not its file
                if not isinstance(key, str) or type(numel) is not int or not 0 <= numel < 1 << 62:
                    raise ValueError("not a storage torch writes")
                declared[key] = max(declared.get(key, 0), numel * item)
            return _Stub()

    try:
        with open(path, "rb") as f:
            src = _Bounded(f, size)
            if Probe(src).load() != TORCH_MAGIC:
                return None
            for _ in range(3):   # protocol version, system info, the object itself
                Probe(src).load()
    except Exception:   # not a pickle, a truncated one, or one our stubs cannot follow
        return None
    return sum(declared.values())


def _code_refusal(path: Path, what: str, why: str) -> WeightsError:
    return WeightsError(f"{path}: refused: not a plain tensor {what} ({why}); only tensors are read from "
                        ".pth files, no code")


def _central_entries(f, end) -> int:
    """Entries in a zip's central directory, counted from their headers up to MAX_PTH_ENTRIES + 1 (the end
    record's own count can lie; zipfile would build an object for every header there is)."""
    import struct
    import zipfile
    start = end[zipfile._ECD_LOCATION] - end[zipfile._ECD_SIZE]   # where zipfile reads it too
    if end[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:
        start -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator
    f.seek(max(0, start))
    count = 0
    while count <= MAX_PTH_ENTRIES:
        head = f.read(46)
        if len(head) < 46 or head[:4] != b"PK\x01\x02":
            break
        name, extra, comment = struct.unpack("<HHH", head[28:34])
        f.seek(name + extra + comment, 1)
        count += 1
    return max(count, end[zipfile._ECD_ENTRIES_TOTAL])


def check_torch_archive(path: Path, what: str, max_bytes: int) -> None:
    """WeightsError naming `path` if torch.load would have to allocate more than `max_bytes` for it: the file,
    its zip entries (each entry's uncompressed size, as torch reads them whole) or, in torch's older non-zip
    format, the storages its pickle declares. Only headers and the pickle are read, never a storage."""
    size = path.stat().st_size
    if size > max_bytes:
        raise WeightsError(f"{path}: refused: {size:,} bytes, more than a {what} can need ({max_bytes:,}); "
                           "it was not read")
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"   # torch's own test of its zip format
    if zipped:
        import zipfile
        try:
            with open(path, "rb") as f:   # the count first: ZipFile makes an object per entry (private, hence getattr)
                end = getattr(zipfile, "_EndRecData", lambda _: None)(f)
                count = _central_entries(f, end) if end else 0
            if count <= MAX_PTH_ENTRIES:
                with zipfile.ZipFile(path) as z:
                    entries = z.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
            raise WeightsError(f"{path}: not a readable PyTorch {what} (damaged zip archive: {one_line(e)})") from None
        if count > MAX_PTH_ENTRIES:
            raise WeightsError(f"{path}: refused: more than {MAX_PTH_ENTRIES:,} archive entries, more than a {what} "
                               "has; it was not read")
        total = sum(e.file_size for e in entries)
        if total > max_bytes:   # (the entry count was bounded above: zipfile reads no more headers than were counted)
            biggest = max(entries, key=lambda e: e.file_size)
            raise WeightsError(f"{path}: refused: its {len(entries):,} archive entries hold {total:,} bytes "
                               f"(the largest, {printable(biggest.filename)}, {biggest.file_size:,}), more than a "
                               f"{what} can need ({max_bytes:,}); it was not read")
        return
    declared = _legacy_storage_bytes(path, size)
    if declared is None:
        name = _refused_global(path)
        if name:
            raise _code_refusal(path, what, f"it would import {name}")
        raise WeightsError(f"{path}: not a readable PyTorch {what} (neither torch's zip format nor its older "
                           "pickle format)")
    if declared > min(size, max_bytes):   # the older format stores every storage whole after its pickle
        raise WeightsError(f"{path}: refused: its tensors declare {declared:,} bytes, the file holds {size:,} and a "
                           f"{what} can need {max_bytes:,}; it was not read")


def load_torch_file(path, what: str, *, max_bytes: int):
    """torch.load(weights_only=True) of an untrusted file, refused unread if torch would allocate more than
    `max_bytes` for it (`check_torch_archive`); WeightsError in one line naming the file (empty, damaged, too
    large, or a pickle that would run code: then the global it wanted)."""
    path = check_input_file(path, what, WeightsError)
    check_torch_archive(path, what, max_bytes)
    try:
        with warnings.catch_warnings():   # torch warns about pickle protocols of files it then refuses
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        name = _refused_global(path)
        raise _code_refusal(path, what, f"it would import {name}" if name else _unpickling_reason(e)) from None
    except Exception as e:   # zip, pickle and storage errors of every kind
        raise WeightsError(f"{path}: not a readable PyTorch {what} ({type(e).__name__}: {one_line(e)})") from None


def _read_state_dict(src, what: str, config: MambaSTConfig | None = None) -> dict[str, torch.Tensor]:
    """A state dict from a dict, a .pth/.pt file (weights_only; refused unread beyond `pth_bound` of the
    parameters of `config`, by default the published model's) or a .safetensors file."""
    if isinstance(src, dict):
        sd = src
    else:
        path = Path(src)
        if path.suffix == ".safetensors" and path.is_file():
            from safetensors.torch import load_file
            try:
                sd = load_file(str(path))
            except Exception as e:  # safetensors raises several error types for broken files
                raise WeightsError(f"{path}: not a readable safetensors file ({one_line(e)})") from None
        else:
            numbers = (config or MambaSTConfig()).num_parameters   # each file holds a part of the model
            sd = load_torch_file(path, f"{what} checkpoint", max_bytes=pth_bound(numbers))
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise WeightsError(f"{what} checkpoint is not a state dict of tensors (string keys, tensor values)")
    return sd


def _more(names: list[str]) -> str:
    return names[0] + (f" (+{len(names) - 1} more)" if len(names) > 1 else "")


def check_state_dict(sd: dict[str, torch.Tensor], own: dict[str, torch.Tensor], source: str) -> None:
    """WeightsError naming the first key of `sd` that is missing, unexpected, of another shape than in `own`,
    not floating point, or holding NaN or Inf (which would give black images without an error)."""
    missing = [k for k in own if k not in sd]
    if missing:
        raise WeightsError(f"{source}: missing key {_more(missing)}")
    unexpected = [k for k in sd if k not in own]
    if unexpected:
        raise WeightsError(f"{source}: unexpected key {_more(unexpected)}")
    for k, v in sd.items():
        if v.shape != own[k].shape:
            raise WeightsError(f"{source}: key {k} has shape {list(v.shape)}, the model expects {list(own[k].shape)}")
        if not v.is_floating_point():
            raise WeightsError(f"{source}: key {k} has dtype {str(v.dtype).replace('torch.', '')}, expected floats")
        if not torch.isfinite(v).all():
            raise WeightsError(f"{source}: key {k} holds NaN or Inf values")


def check_against_config(sd: dict[str, torch.Tensor], config: MambaSTConfig, source: str, *, cls) -> list:
    """`check_state_dict` of `sd` against `cls(config)` built on the meta device (names and shapes, no memory);
    refused first if the config needs more than twice the numbers the weights hold (plus a million, so that a
    missing tensor is still named): a few bytes of config cannot make it build a huge model. Returns the
    parameters' shapes, in order."""
    held = sum(v.numel() for v in sd.values())
    if config.num_parameters > 2 * held + 1_000_000:
        raise WeightsError(f"{source}: the config describes {config.num_parameters:,} parameters, the weights "
                           f"hold {held:,}")
    with torch.device("meta"):
        shell = cls(config)
    check_state_dict(sd, shell.state_dict(), source)
    return [p.shape for p in shell.parameters()]


def build_checked(sd: dict[str, torch.Tensor], config: MambaSTConfig, source: str, *, cls):
    """A `cls(config)` with the checked weights of `sd` (`check_against_config`), built only once they passed."""
    check_against_config(sd, config, source, cls=cls)
    model = cls(config)
    model.load_state_dict(sd, strict=True)
    return model


def official_to_ours(mamba, decoder, embedding, config: MambaSTConfig | None = None) -> dict[str, torch.Tensor]:
    """Merge the authors' three state dicts (or paths) into one state dict with our key names; a file far larger
    than a model of `config` (default: the published one) can fill is refused unread."""
    out = {}
    for what, src in (("mamba", mamba), ("decoder", decoder), ("embedding", embedding)):
        for k, v in _read_state_dict(src, what, config).items():
            if what == "mamba" and OFFICIAL_UNUSED.match(k):
                continue
            out[OFFICIAL_PREFIX[what] + k] = v.float() if v.is_floating_point() else v   # others refused later
    return out


def infer_config(sd: dict[str, torch.Tensor]) -> MambaSTConfig:
    """Sizes read off a state dict in our key names (the published model gives the defaults)."""
    try:
        dim = sd["patch_embed.proj.weight"].shape[0]
        patch = sd["patch_embed.proj.weight"].shape[-1]
        a = sd["encoder_c.layers.0.self_attention.A_logs"]
        d_inner = sd["encoder_c.layers.0.self_attention.in_proj.weight"].shape[0] // 2
        rank = sd["encoder_c.layers.0.self_attention.dt_projs_weight"].shape[-1]
        d_conv = sd["encoder_c.layers.0.self_attention.conv2d.weight"].shape[-1]
    except KeyError as e:
        raise WeightsError(f"checkpoint lacks key {e.args[0]}") from None
    except IndexError:
        raise WeightsError("checkpoint tensors have unexpected shapes (patch embedding, A_logs, in_proj, "
                           "dt_projs_weight or conv2d of the first encoder layer)") from None

    def depth(prefix):
        return len({k.split(".")[2] for k in sd if k.startswith(prefix + ".layers.")})

    convs = [sd[f"cnn_decoder.{i}.weight"].shape[0] for i in (1, 14, 21) if f"cnn_decoder.{i}.weight" in sd]
    rank = 0 if rank == math.ceil(dim / 16) else rank  # 0 = the default rule
    try:
        return MambaSTConfig(dim=dim, patch_size=patch, depth_encoder=depth("encoder_c"),
                             depth_decoder=depth("decoder"), d_state=a.shape[1], expand=d_inner // dim, dt_rank=rank,
                             d_conv=d_conv, decoder_channels=convs or MambaSTConfig().decoder_channels)
    except (ValueError, TypeError, IndexError) as e:
        raise WeightsError(f"checkpoint sizes do not make a Mamba-ST model ({e})") from None


def load_official(mamba, decoder, embedding, config: MambaSTConfig | None = None, *, cls):
    """Build a `cls` from the authors' embedding / mamba / decoder checkpoints (paths or state dicts)."""
    sd = official_to_ours(mamba, decoder, embedding, config)
    return build_checked(sd, config or infer_config(sd), "official checkpoint", cls=cls).eval()


def save_pretrained(model, directory, quantize: bool = False) -> None:
    """Write config.json + model.safetensors (float32, or int8 per output channel with quantize=True)."""
    from safetensors.torch import save_file
    directory = Path(directory)
    sd = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    if quantize:
        sd = quantize_int8(sd)
    meta = {"config": model.config.to_json(), "format": "int8" if quantize else "float32"}
    atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(sd, p, metadata=meta))
    atomic_write(directory / CONFIG_NAME, lambda p: Path(p).write_text(model.config.to_json() + "\n"))


def quantize_int8(sd: dict[str, torch.Tensor], min_numel: int = 4096) -> dict[str, torch.Tensor]:
    """Matrices and conv kernels -> int8 with one float32 scale per output row (a conv's output channel,
    a Linear's output feature, one row of each scan order's stacked projection); A_logs -> float16."""
    out = {}
    for k, v in sd.items():
        if k.endswith("A_logs"):
            out[k] = v.half()
        elif v.dim() >= 2 and v.numel() >= min_numel:
            flat = v.reshape(-1, v.shape[-1]) if v.dim() == 3 else v.reshape(v.shape[0], -1)
            scale = flat.abs().amax(dim=1).clamp(min=1e-12) / 127.0
            out[k] = torch.round(flat / scale[:, None]).clamp(-127, 127).to(torch.int8).reshape(v.shape)
            out[k + SCALE_SUFFIX] = scale.float()
        else:
            out[k] = v
    return out


def dequantize_int8(name: str, q: torch.Tensor, scale: torch.Tensor | None, rows: int, scale_name: str):
    """float32 of int8 `q` stored as `rows` rows of one scale each; WeightsError if the scale is missing, not a
    vector of `rows` floats (a damaged file would otherwise fail deep inside torch, or broadcast silently)."""
    if scale is None:
        raise WeightsError(f"int8 tensor {name} has no {scale_name}")
    if scale.dim() != 1 or scale.numel() != rows or not scale.is_floating_point():
        raise WeightsError(f"{scale_name} must be {rows} floats, one per row of {name} {list(q.shape)}; got "
                           f"{str(scale.dtype).replace('torch.', '')} of shape {list(scale.shape)}")
    return (q.reshape(rows, -1).float() * scale.float()[:, None]).reshape(q.shape)


def dequantize(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floats of `quantize_int8` output (other dtypes are left for `check_state_dict` to refuse)."""
    out = {}
    for k, v in sd.items():
        if k.endswith(SCALE_SUFFIX):
            continue
        if v.dtype == torch.int8:
            rows = v.numel() // max(1, v.shape[-1]) if v.dim() == 3 else (v.shape[0] if v.dim() else 1)
            v = dequantize_int8(k, v, sd.get(k + SCALE_SUFFIX), rows, k + SCALE_SUFFIX)
        out[k] = v.float() if v.is_floating_point() else v
    return out


def load_pretrained(path="default", device=None, dtype=None, *, cls):
    """A `cls` from "default" (the bundled model), a save_pretrained folder, or a .safetensors file."""
    from safetensors import safe_open

    if str(path) == "default":
        path = DEFAULT_MODEL_DIR
        if not (path / WEIGHTS_NAME).exists():
            raise WeightsError("the bundled default model is not part of this installation; pass weights "
                               "explicitly (a save_pretrained folder, a .safetensors file, or `mambast convert` output)")
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: {why_missing(path, 'weights not found')}")
    weights = path / WEIGHTS_NAME if path.is_dir() else path
    if path.is_dir() and not weights.exists():
        raise WeightsError(f"{path}: folder has no {WEIGHTS_NAME}")
    if weights.suffix != ".safetensors":
        raise WeightsError(f"{weights}: expected a .safetensors file or a save_pretrained folder "
                           "(convert the authors' .pth files with `mambast convert`)")
    sd = _read_state_dict(weights, "model")
    try:
        with safe_open(str(weights), "pt") as f:
            meta = f.metadata() or {}
    except Exception:
        meta = {}
    try:   # limits checked before anything is built (see MambaSTConfig)
        if path.is_dir() and (path / CONFIG_NAME).exists():
            config = MambaSTConfig.from_json_file(path / CONFIG_NAME)
        else:
            config = MambaSTConfig.from_json(meta["config"]) if meta.get("config") else None
    except (OSError, ValueError, TypeError) as e:   # unreadable, not UTF-8, not JSON, wrong keys or values
        raise WeightsError(f"{path}: bad {CONFIG_NAME} ({type(e).__name__}: {one_line(e)})") from None
    try:   # from the shapes alone: nothing read yet (safetensors maps the file)
        config = config or infer_config(sd)
    except WeightsError as e:
        raise WeightsError(f"{weights}: {e}") from None
    held = sum(v.numel() for v in sd.values())
    if held > 2 * config.num_parameters + 1_000_000:   # refused before dequantizing would read and copy them
        raise WeightsError(f"{weights}: holds {held:,} numbers, the config describes {config.num_parameters:,} "
                           "parameters")
    try:
        sd = dequantize(sd)
    except WeightsError as e:
        raise WeightsError(f"{weights}: {e}") from None
    model = build_checked(sd, config, str(weights), cls=cls)
    return model.to(device=device, dtype=dtype).eval()


class PretrainedMixin:
    """Loading and saving for a model class built as `cls(config)` from a MambaSTConfig (diffusers' way: the model
    inherits its loader instead of importing it)."""

    @classmethod
    def from_pretrained(cls, path="default", device=None, dtype=None):
        """A model from "default" (the bundled model), a save_pretrained folder, or a .safetensors file."""
        return load_pretrained(path, device=device, dtype=dtype, cls=cls)

    @classmethod
    def from_official(cls, mamba, decoder, embedding, config: MambaSTConfig | None = None):
        """A model from the authors' mamba / decoder / embedding checkpoints (paths or state dicts)."""
        return load_official(mamba, decoder, embedding, config, cls=cls)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], config: MambaSTConfig, source: str = "state dict"):
        """A model of `config` with the checked weights of `sd` (see `build_checked`)."""
        return build_checked(sd, config, source, cls=cls)

    def save_pretrained(self, directory, quantize: bool = False) -> None:
        """Write config.json + model.safetensors (see `save_pretrained`)."""
        save_pretrained(self, directory, quantize=quantize)
