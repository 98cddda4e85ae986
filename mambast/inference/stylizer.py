"""The one stylizer: `Stylizer` runs the model for the Python API, the CLI and evaluation.

`Stylizer.stylize` takes one pair of tensors; `Stylizer.run` streams `Job`s of files fast:

    decode (threads) -> encode content / style (cached by file and working size) -> fuse + decode in batches
    -> crop, resize back (on the model's device) -> write (threads, atomic)

A pair's result is the same either way: the same preprocessing, the same model calls (encoding is per image,
so caching and batching change nothing), and, with a seed, the same style-token permutations (every batch
draws them from a fresh generator of that seed, as every single call does; without a seed a batch shares one
draw of the global RNG). It must not decide defaults: those are `StylizeConfig`'s.

The creative controls (strength, several styles mixed by weights or placed by a region mask, colour
preservation) are `mambast.inference.controls`' arithmetic; here a content is fused with each token grid its
recipe names, in one batch with the same permutations, and the blended grids are decoded once.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from ..errors import ImageError
from ..io import check_image_tensor, load_image, save_image
from ..model import as_generator, draw_permutations
from .config import DEFAULT_MARGIN, DEFAULT_SIZE, StylizeConfig, check_margin, check_strength, default_batch_size
from .controls import IDENTITY, RegionMask, blend, check_controls, preserve_colors, recipe
from .geometry import finish_output, prepare_content, prepare_style, to_uint8
from .jobs import Job
from .precision import autocast


class ByteLRU:
    """A thread-safe least-recently-used map that evicts once its values exceed `max_bytes` (tensors, tuples
    of tensors, exceptions; an exception counts as nothing)."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = max_bytes, 0
        self._items: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _size(v) -> int:
        if isinstance(v, tuple):
            return sum(ByteLRU._size(x) for x in v)
        return v.numel() * v.element_size() if isinstance(v, torch.Tensor) else 0

    def get(self, key):
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key, value) -> None:
        size = self._size(value)
        with self._lock:
            if key in self._items:
                self.bytes -= self._size(self._items.pop(key))
            if size > self.max_bytes:
                return
            self._items[key] = value
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self.bytes -= self._size(old)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)


def _failed(error: Exception) -> cf.Future:
    fut: cf.Future = cf.Future()
    fut.set_exception(error)
    return fut


def _graphed(fn, pixels, pool):
    """fn replayed from CUDA graphs for calls small enough to be launch-bound (`mambast.inference.graphs.graph_pays`),
    eager otherwise; pixels(first input) -> (batch, height, width) of the images it stands for; pool: the
    graph memory pool shared by one stylizer's calls (they run one after another on one stream)."""
    from .graphs import GraphCache, graph_pays
    graphs = GraphCache(fn, warmup=1, capture_after=2, pool=pool)

    def run(x, *rest):
        return graphs(x, *rest) if graph_pays(*pixels(x)) else fn(x, *rest)
    run.graphs = graphs
    return run


@dataclass
class _Item:
    job: Job
    content: torch.Tensor | None = None      # [1, 3, H, W] uint8 (CPU)
    styles: list | None = None               # [1, 3, h, w] uint8 (CPU) each
    error: ImageError | None = None


class Stylizer:
    """Stylize pairs with one model: `stylize` one pair of tensors; `run` a stream of `Job`s, yielding (job, error
    or None) in input order. `Stylizer.from_config(model, StylizeConfig(...))` takes the shared settings.

    batch_size: pairs fused per model call (default: the device's, see `StylizeConfig`); pairs of one working
    size (a change of size starts a new batch; fewer where batch x working pixels would exceed
    max_batch_pixels, so large images run one at a time). seed: an int gives every pair the permutations of
    one `stylize` call with that seed; a torch.Generator is advanced once per batch. workers: decoding threads (also the
    writing threads). cache_bytes: budget of each of the three caches (decoded images, content tokens,
    style tokens), so a style applied to many contents (or a content to many styles) is decoded and
    encoded once. cuda_graphs (default: on CUDA): replay the encoders and the fusion from CUDA graphs
    for input shapes met more than once (`mambast.inference.graphs`). compile: run the encoders and the fusion through
    torch.compile (inductor fuses the layers around the scan). Each new input shape (working size, or
    number of images in a call, such as a smaller last batch) compiles for 10-25 s on its first call,
    and beyond torch's recompilation limit (8 shapes per function) calls run uncompiled: it pays for long
    runs of few sizes. strength, preserve_color: the controls of every output (see `stylize`; `run` also takes
    style weights or a region mask). margin: pixels of the content mirrored around each side while stylizing and
    cut off after (`StylizeConfig.margin`).
    """

    def __init__(self, model, size: int | None = DEFAULT_SIZE, seed=None, shuffle: bool = True,
                 autocast_dtype: torch.dtype | None = None, batch_size: int | None = None, workers: int | None = None,
                 cache_bytes: int = 1 << 30, cuda_graphs: bool | None = None,
                 max_batch_pixels: int = 16 * 512 * 512, compile: bool = False, strength: float = 1.0,
                 preserve_color: bool = False, margin: int = DEFAULT_MARGIN):
        self.param = next(model.parameters())
        batch_size = default_batch_size(self.param.device) if batch_size is None else batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.model, self.size, self.seed, self.shuffle = model, size, seed, shuffle
        self.strength, self.preserve_color = check_strength(strength), bool(preserve_color)
        self.margin = check_margin(margin)
        self.autocast_dtype, self.batch_size, self.max_batch_pixels = autocast_dtype, batch_size, max_batch_pixels
        self.workers = workers or max(1, min(8, (os.cpu_count() or 2)))
        self.images = ByteLRU(cache_bytes)
        self.content_tokens = ByteLRU(cache_bytes)
        self.style_tokens = ByteLRU(cache_bytes)
        self.stats = collections.Counter()
        on_cuda = self.param.device.type == "cuda"
        if cuda_graphs and not on_cuda:
            raise ValueError("cuda_graphs needs the model on a CUDA device")
        self.cuda_graphs = on_cuda if cuda_graphs is None else cuda_graphs
        amp = lambda: autocast(self.param.device.type, self.autocast_dtype)  # noqa: E731
        maybe_compiled = (lambda f: torch.compile(f, dynamic=False)) if compile else (lambda f: f)

        def encoder(what):
            name = f"encode_{what}"
            # compiled: the bound method itself (its own code object, so its own recompile budget); eager: looked
            # up per call, so that a method wrapped after construction (counting calls, say) is the one called
            f = maybe_compiled(getattr(model, name)) if compile else (lambda x: getattr(model, name)(x))

            def run(x):
                with amp():
                    return f(x.to(self.param.dtype))
            return run

        decode = maybe_compiled(lambda xc, xs, perms: model.decode(xc, xs, shuffle=self.shuffle, perms=perms))
        # the two halves of `decode`, for the controls, which combine fused token grids before the CNN decoder
        cross = maybe_compiled(lambda xc, xs, perms: model.decoder(xc, xs, self.shuffle, None, perms))
        render = maybe_compiled(lambda x: model.cnn_decoder(x.permute(0, 3, 1, 2)))

        def fuse(xc, xs, perms=None):
            with amp():
                return decode(xc, xs, perms)

        def fuse_tokens(xc, xs, perms=None):
            with amp():
                return cross(xc, xs, perms)

        def decode_tokens(x):
            with amp():
                return render(x)
        self._encoders = {"content": encoder("content"), "style": encoder("style")}
        self._fuse, self._fuse_tokens, self._decode_tokens = fuse, fuse_tokens, decode_tokens
        if self.cuda_graphs:
            p = self.model.config.patch_size
            pool = torch.cuda.graph_pool_handle()
            images = lambda x: (x.shape[0], x.shape[2], x.shape[3])             # noqa: E731   [B, 3, H, W]
            tokens = lambda x: (x.shape[0], x.shape[1] * p, x.shape[2] * p)     # noqa: E731   [B, H', W', C]
            self._encoders = {k: _graphed(f, images, pool) for k, f in self._encoders.items()}
            self._fuse = _graphed(self._fuse, tokens, pool)
            self._fuse_tokens = _graphed(self._fuse_tokens, tokens, pool)
            self._decode_tokens = _graphed(self._decode_tokens, tokens, pool)

    @classmethod
    def from_config(cls, model, config: StylizeConfig, **options) -> "Stylizer":
        """A stylizer of `config`'s settings (resolved for the model's device); options: workers, cache_bytes,
        max_batch_pixels. The model must already be in place (`load_model` puts it there)."""
        device = next(model.parameters()).device
        config = StylizeConfig(**{**vars(config), "device": str(device)}).resolved()
        return cls(model, size=config.working_size, seed=config.seed, shuffle=config.shuffle,
                   autocast_dtype=config.torch_dtype, batch_size=config.batch_size, cuda_graphs=config.cuda_graphs,
                   compile=config.compile, strength=config.strength, preserve_color=config.preserve_color,
                   margin=config.margin, **options)

    def clear_caches(self) -> None:
        """Forget the decoded images and token grids and reset `stats`; compiled code and CUDA graphs stay
        (a long-lived stylizer moving to other folders, or a benchmark timing a warm one from cold caches).
        Call it between runs, not while `run` is being iterated."""
        for cache in (self.images, self.content_tokens, self.style_tokens):
            cache.clear()
        self.stats.clear()

    def encode(self, contents: torch.Tensor, styles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token grids [B, H', W', C] of padded images ([B, 3, H, W] on the model's device): the content
        encoder's of `contents`, the style encoder's of `styles` (the calls `run` makes, caches aside)."""
        return self.encode_content(contents), self.encode_style(styles)

    def encode_content(self, contents: torch.Tensor) -> torch.Tensor:
        """The content encoder's token grids [B, H', W', C] of padded images [B, 3, H, W] (graphed, compiled)."""
        return self._encoders["content"](contents)

    def encode_style(self, styles: torch.Tensor) -> torch.Tensor:
        """The style encoder's token grids [B, H', W', C] of padded images [B, 3, H, W] (graphed, compiled)."""
        return self._encoders["style"](styles)

    def fuse(self, xc: torch.Tensor, xs: torch.Tensor, perms: torch.Tensor | None = None) -> torch.Tensor:
        """Stylized images [B, 3, H, W] from content and style token grids and the style permutations."""
        return self._fuse(xc, xs, perms) if perms is not None else self._fuse(xc, xs)

    def fuse_tokens(self, xc: torch.Tensor, xs: torch.Tensor, perms: torch.Tensor | None = None) -> torch.Tensor:
        """The first half of `fuse`: the fused token grids [B, H', W', C] the CNN decoder takes."""
        return self._fuse_tokens(xc, xs, perms) if perms is not None else self._fuse_tokens(xc, xs)

    def decode_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The second half of `fuse`: fused token grids [B, H', W', C] -> images [B, 3, H, W]."""
        return self._decode_tokens(x)

    def permutations(self, xs: torch.Tensor, seed) -> torch.Tensor | None:
        """The style permutations `fuse` takes for style token grids xs, drawn as the model would draw them
        (see `mambast.model.draw_permutations`) from `seed` (an int, a CPU generator, or None: the global RNG),
        on xs's device; None when the stylizer does not shuffle."""
        if not self.shuffle:
            return None
        n, L = len(self.model.decoder.layers), xs.shape[1] * xs.shape[2]
        return draw_permutations(n, L, as_generator(seed, xs.device), xs.device)

    # -------------------------------------------------------------------------------- decoding (threads)

    def _decode(self, path: Path) -> torch.Tensor:
        img = self.images.get(path)
        if img is None:
            try:
                a = np.asarray(load_image(path), dtype=np.uint8)
                img = torch.from_numpy(a.copy()).permute(2, 0, 1)[None]    # [1, 3, H, W] uint8
            except ImageError as e:
                img = e
            self.images.put(path, img)
        if isinstance(img, Exception):
            raise ImageError(str(img)) from None   # a fresh one: re-raising the cached one grows its traceback
        return img

    def _load(self, job: Job) -> _Item:
        try:
            return _Item(job, self._decode(job.content), [self._decode(s) for s in job.styles])
        except ImageError as e:
            return _Item(job, error=e)

    # -------------------------------------------------------------------------------- model (main thread)

    def _to_device(self, img: torch.Tensor) -> torch.Tensor:
        return img.to(self.param.device, non_blocking=True).float().div_(255.0)

    def _prepare(self, item: _Item, region: RegionMask | None = None):
        """Working-size content (padded), functions making each fitted and padded style (called only if its
        tokens are not cached), working size, original size: `mambast.inference.geometry.prepare_pair` on the
        model's device. ImageError for a content too large, or not of the region mask's aspect ratio."""
        orig = tuple(item.content.shape[-2:])
        p = self.model.config.patch_size
        try:
            if region is not None:
                region.check_fits(orig[1], orig[0])
            c, (h, w) = prepare_content(self._to_device(item.content), self.size, p, self.margin)
        except ValueError as e:   # a working size beyond MAX_WORKING_PIXELS, a mask of another shape
            raise ImageError(f"{item.job.content}: {e}") from None

        def fitted(style) -> torch.Tensor:        # same padded size as the content
            return prepare_style(self._to_device(style), (h, w), p, self.margin)
        return c, [lambda s=s: fitted(s) for s in item.styles], (h, w), orig

    def _encode(self, cache: ByteLRU, keys: list, pixels: list, what: str) -> list:
        """Token grids for `keys`, encoding (in one batch) only the images not cached; pixels: functions
        that make each key's padded image. A key None is never cached (an image with no name to find it by)."""
        out = [cache.get(k) if k is not None else None for k in keys]
        todo = {}
        for i, k in enumerate(keys):
            if out[i] is None and (k is None or k not in todo):
                todo[k if k is not None else ("uncached", i)] = i
        if todo:
            tokens = self._encoders[what](torch.cat([pixels[i]() for i in todo.values()]))
            fresh = {k: tokens[j:j + 1].clone() for j, k in enumerate(todo)}   # clones: a cached slice would
            for k, t in fresh.items():                                         # keep the whole batch alive
                if keys[todo[k]] is not None:
                    cache.put(k, t)
            out = [o if o is not None else fresh[k if k is not None else ("uncached", i)]
                   for i, (k, o) in enumerate(zip(keys, out))]
        self.stats[f"{what}_encoded"] += len(todo)
        self.stats[f"{what}_cached"] += len(keys) - len(todo)
        return out

    def _recipe(self, n_styles: int, strength: float, weights, region, working, padded):
        """The control recipe of one content (`mambast.inference.controls.recipe`), its region weights on the
        token grid of its working size."""
        maps = None
        if region is not None and strength > 0:
            maps = region.token_weights(working, padded, self.model.config.patch_size, self.param.device,
                                        self.margin)
        return recipe(n_styles, strength, weights, region, maps)

    def _style_grids(self, recipes, style_keys, style_pixels, identity_keys, identity_pixels) -> list[dict]:
        """The style token grids the recipes use, encoded in one batch (cached by key): [{style index or IDENTITY
        (the content encoded as a style): grid [1, H', W', C]}] per content."""
        need = [(i, k) for i, r in enumerate(recipes) for k in r.styles]
        keys = [identity_keys[i] if k == IDENTITY else style_keys[i][k] for i, k in need]
        pixels = [identity_pixels[i] if k == IDENTITY else style_pixels[i][k] for i, k in need]
        grids: list[dict] = [{} for _ in recipes]
        for (i, k), grid in zip(need, self._encode(self.style_tokens, keys, pixels, "style")):
            grids[i][k] = grid
        return grids

    def fuse_recipes(self, xc: torch.Tensor, grids: list[dict], recipes: list, perms) -> torch.Tensor:
        """Pixels [B, 3, H, W] of B contents (tokens xc [B, H', W', C]) fused as their recipes
        (`controls.recipe`) say with the style grids `grids` ([{style index or IDENTITY: [1, H', W', C]}] per
        content), all with the style permutations `perms` (`permutations`). Where every output is one fused grid
        (the plain stylization, strength 0) this is one `fuse` call; otherwise the content is fused with each grid
        in one batch, the fused grids are blended, then decoded in one batch."""
        styles = [[grids[i][k] for k in r.styles] for i, r in enumerate(recipes)]
        if all(r.single for r in recipes):
            return self.fuse(xc, torch.cat([s[0] for s in styles]), perms)
        # each content repeated once per grid it fuses (views, not an index tensor: no blocking copy to a GPU)
        xcs = torch.cat([xc[i:i + 1].expand(len(s), -1, -1, -1) for i, s in enumerate(styles)])
        fused = self.fuse_tokens(xcs, torch.cat([g for s in styles for g in s]), perms)
        inputs, j = [], 0
        for s, r in zip(styles, recipes):
            inputs.append(blend(fused[j:j + len(s)], r.weights))
            j += len(s)
        return self.decode_tokens(torch.cat(inputs))

    def _finish(self, y: torch.Tensor, working, orig, content: torch.Tensor | None) -> torch.Tensor:
        """`finish_output`, then the content's colours (`preserve_colors`) if `content` (its pixels at the
        output's size) is given."""
        y = finish_output(y, working, orig, self.margin)
        return y if content is None else preserve_colors(y, content)

    @torch.inference_mode()
    def _stylize_batch(self, batch: list, weights=None, region: RegionMask | None = None) -> list[torch.Tensor]:
        """batch: [(item, (c, styles, working, orig))] of one padded size -> uint8 images [3, H, W] on the CPU."""
        recipes = [self._recipe(len(it.job.styles), self.strength, weights, region, hw, tuple(c.shape[-2:]))
                   for it, (c, _, hw, o) in batch]
        key_c = [(it.job.content, self.size, tuple(c.shape)) for it, (c, _, hw, o) in batch]
        xc = torch.cat(self._encode(self.content_tokens, key_c, [lambda c=b[1][0]: c for b in batch], "content"))
        grids = self._style_grids(
            recipes,
            [[(s, hw, tuple(c.shape)) for s in it.job.styles] for it, (c, _, hw, o) in batch],  # padded as content
            [b[1][1] for b in batch],
            [(("identity", it.job.content), self.size, tuple(c.shape)) for it, (c, _, hw, o) in batch],
            [lambda c=b[1][0]: c for b in batch])
        y = self.fuse_recipes(xc, grids, recipes, self.permutations(xc, self.seed))   # the styles' grid shape
        outs = []
        for i, (it, (_, _, hw, orig)) in enumerate(batch):
            content = self._to_device(it.content) if self.preserve_color else None
            outs.append(to_uint8(self._finish(y[i:i + 1], hw, orig, content)[0]).cpu())
        return outs

    @torch.inference_mode()
    def stylize(self, content: torch.Tensor, style, weights=None, mask=None, seed=None, keep_size: bool = True,
                keys: tuple = (None, None), strength: float | None = None,
                preserve_color: bool | None = None) -> torch.Tensor:
        """content [1, 3, H, W], style [1, 3, h, w] or a list of them, in [0, 1] (any device) -> stylized
        [1, 3, H, W] float32 in [0, 1] on the model's device (at the working size if not keep_size).

        Several styles are mixed by `weights` (one per style, scaled to sum 1; default equal), or placed by a region
        `mask` (an image whose grey levels, darkest first, select the styles in order; `controls.load_mask`).
        strength, preserve_color: this call's (default: the stylizer's). seed: this call's (default: the
        stylizer's). keys: hashable names of the content and the style (a list of names for a list of styles;
        e.g. their files) under which their tokens are cached, so that an image met again is not encoded again;
        None: not cached. ValueError for bad controls or a tensor that is not one finite RGB image, before any
        work."""
        content = check_image_tensor(content, "content")
        styles = ([check_image_tensor(s, f"style {i + 1}") for i, s in enumerate(style)]
                  if isinstance(style, (list, tuple)) else [check_image_tensor(style, "style")])
        if keys[1] is None:
            style_keys = [None] * len(styles)
        elif isinstance(style, (list, tuple)):
            if not isinstance(keys[1], (list, tuple)):   # a string would be split into one key per character
                raise ValueError(f"keys: a list of style keys for a list of styles; got {keys[1]!r}")
            style_keys = list(keys[1])
        else:
            style_keys = [keys[1]]
        if len(style_keys) != len(styles):
            raise ValueError(f"keys: {len(style_keys)} style keys for {len(styles)} styles")
        strength = self.strength if strength is None else check_strength(strength)
        preserve = self.preserve_color if preserve_color is None else bool(preserve_color)
        weights, region = check_controls(len(styles), weights, mask)
        if region is not None:
            region.check_fits(content.shape[-1], content.shape[-2])
        seed = self.seed if seed is None else seed
        orig, p = tuple(content.shape[-2:]), self.model.config.patch_size
        content = content.to(self.param.device, torch.float32)
        c, hw = prepare_content(content, self.size, p, self.margin)
        shape = tuple(c.shape)
        r = self._recipe(len(styles), strength, weights, region, hw, shape[-2:])
        xc = self._encode(self.content_tokens, [None if keys[0] is None else (keys[0], self.size, shape)],
                          [lambda: c], "content")[0]
        grids = self._style_grids(
            [r], [[None if k is None else (k, hw, shape) for k in style_keys]],
            [[lambda s=s: prepare_style(s.to(self.param.device, torch.float32), hw, p, self.margin) for s in styles]],
            [None if keys[0] is None else (("identity", keys[0]), self.size, shape)], [lambda: c])
        y = self.fuse_recipes(xc, grids, [r], self.permutations(xc, seed))
        m = self.margin
        colours = (content if keep_size else c[..., m:m + hw[0], m:m + hw[1]]) if preserve else None
        return self._finish(y, hw, orig if keep_size else None, colours)

    # -------------------------------------------------------------------------------- the stream

    @staticmethod
    def _write(img: torch.Tensor, job: Job, write=None) -> None:
        from PIL import Image
        image = Image.fromarray(img.permute(1, 2, 0).numpy())
        if write is None:
            save_image(image, job.output)
        else:
            write(image, job)

    def run(self, jobs: Iterable[Job], weights=None, mask=None, write=None) -> Iterator[tuple[Job, ImageError | None]]:
        """Stylize every job; yields, in input order, (job, None) once its output is written, or (job, error)
        for a job whose image could not be read or whose output could not be written (or whose content has not
        the mask's aspect ratio). weights, mask: how each job's styles are mixed or placed (see `stylize`); with
        the stylizer's strength and preserve_color. ValueError for controls that do not fit a job's styles.
        write: write(image, job) in place of writing job.output (a PIL RGB image, called in the writing
        threads; an ImageError it raises is the job's error), e.g. to encode outputs into a shard."""
        region = check_controls(None, weights, mask)[1]

        def checked(job: Job) -> Job:
            check_controls(len(job.styles), weights, region)
            return job
        jobs = (checked(job) for job in jobs)
        ahead = collections.deque()                       # futures of decoded items, in input order
        writes = collections.deque()                      # (job, future of the write)
        prefetch = min(2 * self.batch_size, 32) + self.workers   # decoded full-size images held ahead
        with cf.ThreadPoolExecutor(self.workers, thread_name_prefix="mambast-io") as pool:
            def fill():
                while len(ahead) < prefetch:
                    job = next(jobs, None)
                    if job is None:
                        return
                    ahead.append(pool.submit(self._load, job))

            def written(block: bool):
                while writes and (block or writes[0][1].done() or len(writes) > prefetch):
                    job, fut = writes.popleft()
                    try:
                        fut.result()
                        yield job, None
                    except ImageError as e:
                        yield job, e

            try:
                batch, shape, n_ok, n_fused = [], None, 0, 0   # batch: (item, prepared or None if it failed)
                fill()
                while ahead or batch:
                    item = ahead.popleft().result() if ahead else None
                    fill()
                    prepared, fused = None, 0
                    if item is not None and item.error is None:
                        try:
                            prepared = self._prepare(item, region)
                        except ImageError as e:   # e.g. a working size beyond MAX_WORKING_PIXELS
                            item.error = e
                        # token grids it fuses (several for mixed styles, masks, strength): they count for memory
                        fused = len(recipe(len(item.job.styles), self.strength, weights, region).styles)
                    full = len(batch) == self.batch_size or (prepared is not None and n_ok > 0 and (
                        tuple(prepared[0].shape) != shape
                        or (n_fused + fused) * prepared[0].shape[-2] * prepared[0].shape[-1] > self.max_batch_pixels))
                    if batch and (item is None or full):
                        images = iter(self._stylize_batch([b for b in batch if b[1] is not None], weights, region)
                                      if n_ok else [])
                        for it, prep in batch:
                            fut = pool.submit(self._write, next(images), it.job, write) if prep is not None \
                                else _failed(it.error)
                            writes.append((it.job, fut))
                        batch, n_ok, n_fused = [], 0, 0
                        yield from written(block=False)
                    if item is not None:
                        batch.append((item, prepared))
                        if prepared is not None:
                            n_ok += 1
                            n_fused += fused
                            shape = tuple(prepared[0].shape)
                yield from written(block=True)
            except BaseException:   # an interrupt: decode nothing more; outputs already computed are still
                for fut in ahead:     # written (atomically) before the pool closes
                    fut.cancel()
                raise


PairStylizer = Stylizer   # the name before evaluation and the Python API shared it


def stylize_tensor(model, content: torch.Tensor, style: torch.Tensor, size: int | None = DEFAULT_SIZE,
                   seed=None, shuffle: bool = True, keep_size: bool = True, autocast_dtype=None) -> torch.Tensor:
    """content [1, 3, H, W], style [1, 3, h, w] in [0, 1] -> stylized [1, 3, H, W] in [0, 1]: one `Stylizer.stylize`
    call. size: the content's working short side (see `working_size`; None: as is). keep_size: resize the result
    back to H x W (else it stays at the working size)."""
    stylizer = Stylizer(model, size=size, seed=seed, shuffle=shuffle, autocast_dtype=autocast_dtype, workers=1,
                        cache_bytes=0, cuda_graphs=False)
    return stylizer.stylize(content, style, keep_size=keep_size)
