"""Loading, saving and converting Mamba-ST weights: the authors' .pth files, our safetensors folders,
and the int8 packaging of the bundled default model.

A checkpoint is untrusted input: .pth files are read with `torch.load(weights_only=True)` only.
"""

from __future__ import annotations

import json
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


from .errors import WeightsError  # noqa: F401  (re-exported)


def _unpickling_reason(e: Exception) -> str:
    """The reason in torch's weights_only refusal, without its advice to turn the safety off."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
        for advice in ("Check the documentation", "Please use", "Alternatively"):
            text = text.split(advice, 1)[0]
    reason = " ".join(text.split())
    return reason[:200] or "unsupported content"


def _read_state_dict(src, what: str) -> dict[str, torch.Tensor]:
    """A state dict from a dict, a .pth/.pt file (weights_only) or a .safetensors file."""
    if isinstance(src, dict):
        sd = src
    else:
        path = Path(src)
        if not path.exists():
            raise WeightsError(f"{path}: {what} checkpoint not found")
        if not path.is_file():
            raise WeightsError(f"{path}: {what} checkpoint is not a file")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            try:
                sd = load_file(str(path))
            except Exception as e:  # safetensors raises several error types for broken files
                raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
        else:
            try:
                with warnings.catch_warnings():   # torch warns about pickle protocols of files it then refuses
                    warnings.simplefilter("ignore", UserWarning)
                    sd = torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as e:
                raise WeightsError(f"{path}: refused: not a plain tensor checkpoint ({_unpickling_reason(e)}); "
                                   "only tensors are read from .pth files, no code") from None
            except Exception as e:
                raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise WeightsError(f"{what} checkpoint is not a state dict of tensors (string keys, tensor values)")
    return sd


def _check_and_load(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    if missing:
        raise WeightsError(f"{source}: missing key {missing[0]}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
    unexpected = [k for k in sd if k not in own]
    if unexpected:
        raise WeightsError(f"{source}: unexpected key {unexpected[0]}"
                           + (f" (+{len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
    for k, v in sd.items():
        if v.shape != own[k].shape:
            raise WeightsError(f"{source}: key {k} has shape {list(v.shape)}, the model expects {list(own[k].shape)}")
    model.load_state_dict(sd, strict=True)


def official_to_ours(mamba, decoder, embedding) -> dict[str, torch.Tensor]:
    """Merge the authors' three state dicts (or paths) into one state dict with our key names."""
    out = {}
    for what, src in (("mamba", mamba), ("decoder", decoder), ("embedding", embedding)):
        for k, v in _read_state_dict(src, what).items():
            if what == "mamba" and OFFICIAL_UNUSED.match(k):
                continue
            out[OFFICIAL_PREFIX[what] + k] = v.float()
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


def load_official(mamba, decoder, embedding, config: MambaSTConfig | None = None):
    """Build a MambaST from the authors' embedding / mamba / decoder checkpoints (paths or state dicts)."""
    from .model import MambaST
    sd = official_to_ours(mamba, decoder, embedding)
    model = MambaST(config or infer_config(sd))
    _check_and_load(model, sd, "official checkpoint")
    return model.eval()


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


def dequantize(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if k.endswith(SCALE_SUFFIX):
            continue
        if v.dtype == torch.int8:
            scale = sd.get(k + SCALE_SUFFIX)
            if scale is None:
                raise WeightsError(f"int8 tensor {k} has no {k + SCALE_SUFFIX}")
            v = (v.reshape(scale.shape[0], -1).float() * scale[:, None]).reshape(v.shape)
        out[k] = v.float()
    return out


def load_pretrained(path="default", device=None, dtype=None):
    """A MambaST from "default" (the bundled model), a save_pretrained folder, or a .safetensors file."""
    from safetensors import safe_open

    from .model import MambaST
    if str(path) == "default":
        path = DEFAULT_MODEL_DIR
        if not (path / WEIGHTS_NAME).exists():
            raise WeightsError("the bundled default model is not part of this installation; pass weights "
                               "explicitly (a save_pretrained folder, a .safetensors file, or `mambast convert` output)")
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: weights not found")
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
    try:
        if path.is_dir() and (path / CONFIG_NAME).exists():
            cfg_text = (path / CONFIG_NAME).read_text(encoding="utf-8")
        else:
            cfg_text = meta.get("config")
        config = MambaSTConfig.from_dict(json.loads(cfg_text)) if cfg_text else None
    except (OSError, ValueError, TypeError) as e:   # unreadable, not UTF-8, not JSON, wrong keys or values
        raise WeightsError(f"{path}: bad {CONFIG_NAME} ({type(e).__name__}: {e})") from None
    sd = dequantize(sd)
    model = MambaST(config or infer_config(sd))
    _check_and_load(model, sd, str(weights))
    return model.to(device=device, dtype=dtype).eval()
