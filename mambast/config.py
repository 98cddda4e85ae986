"""The one configuration object of a Mamba-ST model.

Every size and switch lives here; modules take this config, the CLI and the Python API share it.
Defaults give the published reference model (about 27.1 M parameters).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path

# Hard limits, checked before anything is built: a few bytes of JSON must not allocate gigabytes.
LIMITS = {"dim": 8192, "depth_encoder": 64, "depth_decoder": 64, "d_state": 256, "expand": 8, "dt_rank": 8192,
          "d_conv": 15, "decoder_channels": 8192}
MAX_PARAMETERS = 1_000_000_000    # about 40 times the reference model (4 GB of float32)
MAX_CONFIG_BYTES = 65_536          # a config is a few hundred bytes
MAX_JSON_DEPTH = 8                 # a config nests two levels (the object and decoder_channels)
MAX_LN_EPS = 1.0                   # LayerNorm's epsilon: 1e-5 or 1e-6 in practice


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
        if not (isinstance(self.decoder_channels, (list, tuple)) and len(self.decoder_channels) == 3
                and all(integral(c) and 0 < c <= LIMITS["decoder_channels"] for c in self.decoder_channels)):
            raise ValueError(f"decoder_channels must be a list of 3 ints in 1..{LIMITS['decoder_channels']}; "
                             f"got {self.decoder_channels!r}")
        self.decoder_channels = [int(c) for c in self.decoder_channels]
        for name, limit in LIMITS.items():
            if name != "decoder_channels" and getattr(self, name) > limit:
                raise ValueError(f"{name} must be at most {limit}; got {getattr(self, name)}")
        if self.dim <= 0 or self.d_state <= 0 or self.expand <= 0:
            raise ValueError("dim, d_state and expand must be positive")
        for name in ("patch_size", "depth_encoder", "depth_decoder", "d_conv"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        if self.dt_rank < 0 or not 0 < self.ln_eps <= MAX_LN_EPS:   # a huge eps flattens every LayerNorm to 0
            raise ValueError(f"dt_rank must be >= 0 and ln_eps in (0, {MAX_LN_EPS:g}]; got {self.dt_rank}, "
                             f"{self.ln_eps}")
        if not (0 <= self.drop_path_decoder < 1 and 0 <= self.drop_path_encoder < 1):
            raise ValueError("drop_path rates must be in [0, 1)")
        if self.d_conv % 2 == 0:
            raise ValueError(f"d_conv must be odd (same-size depthwise conv); got {self.d_conv}")
        if self.patch_size != 2 ** (len(self.decoder_channels)):
            raise ValueError(
                f"patch_size {self.patch_size} must equal 2**len(decoder_channels) "
                f"(the CNN decoder upsamples by 2 once per width); got {len(self.decoder_channels)} widths")
        if self.num_parameters > MAX_PARAMETERS:
            raise ValueError(f"the config makes a model of {self.num_parameters:,} parameters; the limit is "
                             f"{MAX_PARAMETERS:,}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.dim

    @property
    def rank(self) -> int:
        return self.dt_rank or math.ceil(self.dim / 16)

    @property
    def num_parameters(self) -> int:
        """Parameters of the model this config makes, counted without building it (tests keep it exact)."""
        C, Di, N, R, K, (c1, c2, c3) = self.dim, self.d_inner, self.d_state, self.rank, 4, self.decoder_channels
        ss2d = C * 2 * Di + Di * (self.d_conv ** 2 + 1) + K * Di * (R + 1 + N + 1) + 2 * Di + Di * C
        block = 5 * C + ss2d                                      # two LayerNorms and skip_scale around SS2D
        own_proj = K * (R + 2 * N) * Di                           # the self version's x_proj_weight
        cross = C * Di + K * (R + N) * Di + K * N * Di            # in_style_proj, style_proj, the content's C
        convs = [(C, c1), (c1, c1), (c1, c1), (c1, c1), (c1, c2), (c2, c2), (c2, c3), (c3, c3), (c3, 3)]
        return (3 * C * self.patch_size ** 2 + C + 2 * self.depth_encoder * (block + own_proj)
                + self.depth_decoder * (block + cross) + 2 * C + sum(9 * i * o + o for i, o in convs))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MambaSTConfig":
        if not isinstance(d, dict):
            raise TypeError(f"a config is a JSON object; got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str | bytes) -> "MambaSTConfig":
        """A config from JSON text; ValueError beyond MAX_CONFIG_BYTES or MAX_JSON_DEPTH (checked before parsing,
        whose recursion a deeply nested document would exhaust)."""
        if len(text) > MAX_CONFIG_BYTES:
            raise ValueError(f"config is larger than the limit of {MAX_CONFIG_BYTES:,} bytes")
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        depth = deepest = 0
        # strings and brackets, one token each; an unclosed string runs to the end (no backtracking, linear time)
        for token in re.findall(r'"(?:[^"\\]|\\.)*"?|[][{}]', text):
            if token in ("[", "{", "]", "}"):
                depth += 1 if token in "[{" else -1
                deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            raise ValueError(f"config JSON nests deeper than {MAX_JSON_DEPTH} levels")
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_json_file(cls, path) -> "MambaSTConfig":
        """`from_json` of a file, of which at most MAX_CONFIG_BYTES + 1 bytes are read; ValueError for a path that
        is not a regular file (opening a named pipe would wait for a writer forever)."""
        if not Path(path).is_file():
            raise ValueError(f"{path}: not a regular file")
        with open(path, "rb") as f:
            return cls.from_json(f.read(MAX_CONFIG_BYTES + 1))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
