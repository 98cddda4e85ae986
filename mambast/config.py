"""The one configuration object of a Mamba-ST model.

Every size and switch lives here; modules take this config, the CLI and the Python API share it.
Defaults give the published reference model (about 27.1 M parameters).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field


@dataclass
class MambaSTConfig:
    dim: int = 512                # token width C (patch embedding output, blocks)
    patch_size: int = 8           # patch embedding kernel = stride; images are padded to a multiple
    depth_encoder: int = 3        # VSS layers in each of the content and style encoders
    depth_decoder: int = 3        # ST cross layers in the Mamba decoder
    d_state: int = 16             # N, state size of the selective scan
    expand: int = 2               # inner size Di = expand * dim
    dt_rank: int = 0              # R; 0 means ceil(dim / 16)
    d_conv: int = 3               # depthwise conv kernel inside SS2D
    ln_eps: float = 1e-5          # every LayerNorm in the model
    drop_path_decoder: float = 0.1  # DropPath rate of the decoder blocks (training only)
    drop_path_encoder: float = 0.0
    shuffle: bool = True          # shuffle style tokens before each cross block (as the authors infer)
    decoder_channels: list[int] = field(default_factory=lambda: [256, 128, 64])  # CNN decoder widths

    def __post_init__(self) -> None:
        def integral(v) -> bool:
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)

        for f in dataclasses.fields(self):   # numbers of any kind (numpy too) in, plain Python values kept
            v, kind = getattr(self, f.name), str(f.type)
            if kind == "int" and integral(v):
                setattr(self, f.name, int(v))
            elif kind == "float" and isinstance(v, numbers.Real) and not isinstance(v, bool):
                setattr(self, f.name, float(v))
            elif kind == "bool" and isinstance(v, (bool, numbers.Integral)) and v in (0, 1):
                setattr(self, f.name, bool(v))
            elif kind in ("int", "float", "bool"):
                raise TypeError(f"{f.name} must be {kind}; got {v!r}")
        if not (isinstance(self.decoder_channels, (list, tuple)) and self.decoder_channels
                and all(integral(c) and c > 0 for c in self.decoder_channels)):
            raise ValueError(f"decoder_channels must be a list of positive ints; got {self.decoder_channels!r}")
        self.decoder_channels = [int(c) for c in self.decoder_channels]
        if self.dim <= 0 or self.d_state <= 0 or self.expand <= 0:
            raise ValueError("dim, d_state and expand must be positive")
        for name in ("patch_size", "depth_encoder", "depth_decoder", "d_conv"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        if self.dt_rank < 0 or not self.ln_eps > 0:
            raise ValueError(f"dt_rank must be >= 0 and ln_eps > 0; got {self.dt_rank}, {self.ln_eps}")
        if not (0 <= self.drop_path_decoder < 1 and 0 <= self.drop_path_encoder < 1):
            raise ValueError("drop_path rates must be in [0, 1)")
        if self.d_conv % 2 == 0:
            raise ValueError(f"d_conv must be odd (same-size depthwise conv); got {self.d_conv}")
        if self.patch_size != 2 ** (len(self.decoder_channels)):
            raise ValueError(
                f"patch_size {self.patch_size} must equal 2**len(decoder_channels) "
                f"(the CNN decoder upsamples by 2 once per width); got {len(self.decoder_channels)} widths")

    @property
    def d_inner(self) -> int:
        return self.expand * self.dim

    @property
    def rank(self) -> int:
        return self.dt_rank or math.ceil(self.dim / 16)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MambaSTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
