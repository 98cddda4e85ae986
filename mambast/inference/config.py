"""`StylizeConfig`: every inference setting and its one default, shared by `mambast.stylize`, `mambast stylize`
(whose flags it generates) and evaluation. Nothing here imports torch at module level, so the CLI stays light.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from dataclasses import dataclass, field

DEFAULT_SIZE = 512
# Pixels of the content mirrored around each side before stylizing and cut off after: the model's outermost
# token row and column carry stripes, which then fall in the part cut off (docs/quality.md measures it).
DEFAULT_MARGIN = 0
MAX_MARGIN = 256
# Largest working size (pixels) stylized: 4096 x 4096 takes about 14 GiB on a GPU in bf16, more on a CPU.
MAX_WORKING_PIXELS = 4096 * 4096
MAX_SIZE = math.isqrt(MAX_WORKING_PIXELS)   # a larger size makes every working size too large
# Compute precisions by name, as torch spells them; float32 means "no autocast" (see `torch_dtype`).
DTYPES = ("float32", "bfloat16", "float16")
CUDA_DTYPE, CPU_DTYPE = "bfloat16", "float32"
CUDA_BATCH_SIZE, CPU_BATCH_SIZE = 8, 1


def default_device() -> str:
    """cuda where available, else cpu."""
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def on_cuda(device) -> bool:
    return str(device).startswith("cuda")


def default_dtype(device) -> str:
    """The precision a device runs in unless told: bfloat16 on CUDA, float32 on the CPU."""
    return CUDA_DTYPE if on_cuda(device) else CPU_DTYPE


def default_batch_size(device) -> int:
    """Pairs per model call unless told: 8 on CUDA (launch-bound at 1), 1 on the CPU (no gain from batching)."""
    return CUDA_BATCH_SIZE if on_cuda(device) else CPU_BATCH_SIZE


@dataclass
class StylizeConfig:
    """How to stylize: one field per `mambast stylize` flag (`--batch-size` for batch_size, `--no-shuffle` for
    shuffle). None means "pick for the device"; `resolved()` fills those in, in one place."""

    size: int | None = field(default=DEFAULT_SIZE, metadata={
        "type": int, "help": "working short side of the content in pixels, within about 2 x SIZE² pixels "
                             "(strips are worked smaller); 0 = original size"})
    margin: int = field(default=DEFAULT_MARGIN, metadata={
        "type": int, "help": f"pixels of the content mirrored around each side while stylizing, cut off after: "
                             f"moves the border stripes the model paints out of the picture, at the cost of the "
                             f"added pixels (16 at 512: 13 %%; they add to the working size); 0..{MAX_MARGIN}, "
                             f"default {DEFAULT_MARGIN}"})
    seed: int | None = field(default=None, metadata={
        "type": int, "help": "seed of the style-token shuffle (reproducible runs)"})
    shuffle: bool = field(default=True, metadata={"help": "shuffle the style tokens before each cross block"})
    strength: float = field(default=1.0, metadata={
        "type": float, "help": "0..1: how much style; 0 gives the model's reconstruction of the content, 1 the full "
                               "stylization (default 1)"})
    preserve_color: bool = field(default=False, metadata={
        "help": "keep the content's colours: the stylized luminance with the content's chroma"})
    dtype: str | None = field(default=None, metadata={
        "choices": DTYPES, "help": f"compute precision (autocast; the scan state stays float32); "
                                   f"default {CUDA_DTYPE} on CUDA, {CPU_DTYPE} on CPU"})
    batch_size: int | None = field(default=None, metadata={
        "type": int, "help": f"pairs of one working size stylized per model call (default {CUDA_BATCH_SIZE} on "
                             f"CUDA, {CPU_BATCH_SIZE} on CPU)"})
    compile: bool = field(default=False, metadata={
        "help": "CUDA only: torch.compile the layers around the scan; faster, but each new working size or batch "
                "count first compiles for 10-25 s (for large folders of few sizes)"})
    cuda_graphs: bool | None = field(default=None, metadata={
        "help": "replay small calls from CUDA graphs (default: on CUDA)"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda or cuda:N (default: cuda if available)"})

    @property
    def working_size(self) -> int | None:
        """The size `working_size` takes: None (0 or None) keeps the content as it is."""
        return self.size or None

    def check(self) -> "StylizeConfig":
        """ValueError naming the field and its accepted values for a setting no device could run; returns self."""
        for name in ("size", "seed", "batch_size"):   # Python callers may pass anything (the CLI parses ints)
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise ValueError(f"{name} must be an int; got {value!r}")
        if self.size is not None and not 0 <= self.size <= MAX_SIZE:
            raise ValueError(f"size must be in 0..{MAX_SIZE} (0: the original size); got {self.size}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {self.batch_size}")
        check_margin(self.margin)
        if self.size and self.size + 2 * self.margin > MAX_SIZE:   # every working size would then be too large
            raise ValueError(f"size + 2 x margin must be at most {MAX_SIZE}; got {self.size} + 2 x {self.margin}")
        if self.seed is not None and not -2 ** 63 <= self.seed < 2 ** 64:
            raise ValueError(f"seed must fit in 64 bits; got {self.seed}")
        self.strength = check_strength(self.strength)   # a 0-d tensor or array becomes its float
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {self.dtype!r}")
        if self.device is not None and not re.fullmatch(r"cpu|cuda(:\d+)?", str(self.device)):
            raise ValueError(f"device must be cpu, cuda or cuda:N; got {self.device!r}")
        return self

    def resolved(self) -> "StylizeConfig":
        """A checked copy with the device-dependent defaults filled in: device, dtype, batch size, CUDA graphs.
        ValueError if the device is not on this machine or a CUDA-only switch is on elsewhere."""
        self.check()
        import torch
        device = str(self.device) if self.device is not None else default_device()
        cuda = on_cuda(device)
        if cuda and not torch.cuda.is_available():
            raise ValueError(f"device {device}: no CUDA device is available")
        if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
            raise ValueError(f"device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        if self.compile and not cuda:
            raise ValueError("compile is for CUDA devices (on the CPU compiling gained nothing; leave it off)")
        if self.cuda_graphs and not cuda:
            raise ValueError("cuda_graphs is for CUDA devices")
        return dataclasses.replace(
            self, device=device, dtype=self.dtype or default_dtype(device),
            batch_size=self.batch_size or default_batch_size(device),
            cuda_graphs=cuda if self.cuda_graphs is None else self.cuda_graphs)

    @property
    def torch_dtype(self):
        """The autocast dtype of `dtype` (None for float32: no autocast); dtype must be resolved or given."""
        return torch_dtype(self.dtype)


def check_margin(margin) -> int:
    """margin as an int in 0..MAX_MARGIN; ValueError otherwise."""
    if isinstance(margin, bool) or not isinstance(margin, numbers.Integral) or not 0 <= margin <= MAX_MARGIN:
        raise ValueError(f"margin must be an int in 0..{MAX_MARGIN}; got {margin!r}")
    return int(margin)


def check_strength(strength) -> float:
    """strength as a float in [0, 1]; ValueError otherwise (NaN, bools and non-numbers included: float() would
    take the string "1" too)."""
    # one-element tensors and arrays (a 0-d torch or numpy value) count as their number
    if getattr(strength, "ndim", None) == 0 and hasattr(strength, "item"):
        strength = strength.item()
    real = isinstance(strength, numbers.Real) and not isinstance(strength, bool)
    value = float(strength) if real else math.nan
    if not 0.0 <= value <= 1.0:
        got = f"{strength!r}" if real else f"{strength!r} ({type(strength).__name__}, not a number)"
        raise ValueError(f"strength must be in 0..1 (0: the content's reconstruction, 1: full stylization); "
                         f"got {got}")
    return value


def torch_dtype(name: str | None):
    """A precision name -> the torch dtype autocast runs in, None for float32 (no autocast)."""
    import torch
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {name!r}")
    return None if name == "float32" else getattr(torch, name)


def autocast_dtype(dtype: str | None, device):
    """The autocast dtype for a precision name on a device; None (the default) picks the device's default."""
    return torch_dtype(dtype if dtype is not None else default_dtype(device))
