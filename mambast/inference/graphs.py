"""CUDA graphs: replay a captured forward instead of launching its ~300 kernels one by one from Python.

At small sizes a Mamba-ST forward is bound by launching kernels, not by the GPU (512 x 512, batch 1:
about 15 ms of launches for about 7 ms of GPU work). `GraphCache(fn)` captures `fn` once per input
shape and dtype into a CUDA graph and replays it; inputs are copied into the graph's own tensors, and
the output is returned as a fresh tensor. `fn` must be free of host synchronisation and of random
draws (pass the style permutations in as a tensor, see `mambast.model.draw_permutations`).
"""

from __future__ import annotations

import collections
import contextlib
from typing import Callable

import torch

# Above this many pixels per call (batch x H x W) a replayed graph stopped paying on an H200 (bf16, random
# weights): 1.7-2.1x faster than launching at 512 x 512 batch 1, equal at 512 x 512 batch 16, and 15-35 %
# slower from 1024 x 1024 up in one run (benchmarks/efficiency.py, "ours" against "ours-eager").
GRAPH_MAX_PIXELS = 2 * 512 * 512


def graph_pays(batch: int, height: int, width: int) -> bool:
    """Whether a call of this many pixels is launch-bound enough for a CUDA graph to pay."""
    return batch * height * width <= GRAPH_MAX_PIXELS


_STREAMS: dict = {}


def _capture_stream(device: torch.device) -> torch.cuda.Stream:
    """One side stream per device for a GraphCache's eager calls, warm-ups and captures. Each new stream gets
    its own cuBLAS workspaces (32 MiB and 1 MiB on Hopper) on its first matrix products: they are made here,
    first, so that they take memory segments of their own; made within a first eager call, they shared
    segments with that call's activations and kept all of them reserved."""
    if device not in _STREAMS:
        stream = torch.cuda.Stream(device)
        with torch.cuda.stream(stream):
            a = torch.zeros(8, 8, device=device)
            torch.mm(a, a)                                               # cuBLAS
            torch.nn.functional.linear(a.bfloat16(), a.bfloat16(), a[0].bfloat16())   # cuBLASLt
        _STREAMS[device] = stream
    return _STREAMS[device]


@contextlib.contextmanager
def _on_capture_stream(device: torch.device):
    """Run the body on the device's capture stream, after the work queued so far on the current stream and
    before what the current stream runs next (also when the body raises); yields the current stream."""
    with torch.cuda.device(device):   # the inputs' device, whichever is current
        main, stream = torch.cuda.current_stream(), _capture_stream(device)
        stream.wait_stream(main)
        try:
            with torch.cuda.stream(stream):
                yield main
        finally:
            main.wait_stream(stream)


def _one_tensor(out):
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"GraphCache: fn must return one tensor; got {type(out).__name__}")
    return out


class GraphCache:
    """fn(*tensors) -> tensor, replayed from a CUDA graph captured per (shapes, dtypes) of the inputs.

    max_graphs: captured shapes kept (each holds its inputs, output and activation memory); the least
    recently used is dropped beyond it. warmup: eager calls before capturing (the first calls compile
    Triton kernels and pick cuBLAS / cuDNN algorithms). capture_after: the call of a shape that captures
    it (the calls before run eagerly; capturing costs about warmup + 1 calls, which
    pays only for a shape that comes back). pool: a CUDA-graph memory pool (`torch.cuda.graph_pool_handle()`)
    shared with other GraphCaches, so that their graphs' activations take the memory of the largest instead
    of their sum. Safe when all their calls run on one stream, one after another: a graph may overwrite
    another's memory, but every replay's output is cloned before anything else runs. Eager calls, warm-ups
    and captures all run on one side stream per device, ordered with the caller's current stream.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], max_graphs: int = 4, warmup: int = 2,
                 capture_after: int = 1, pool=None):
        self.fn, self.max_graphs, self.warmup, self.capture_after = fn, max_graphs, warmup, capture_after
        self.pool = pool
        self.graphs: collections.OrderedDict = collections.OrderedDict()
        self.seen: collections.Counter = collections.Counter()
        self.captures = 0

    @staticmethod
    def _key(tensors) -> tuple:
        return tuple((tuple(t.shape), t.dtype, t.device) for t in tensors)

    def _eager(self, tensors) -> torch.Tensor:
        """fn(*tensors) on the capture stream (`_on_capture_stream`): every call through this cache then runs
        on that one stream, so its calls make one set of cuBLAS workspaces (32 MiB on Hopper) and not also the
        caller's stream's, and their activations take segments of their own instead of fragmenting the
        caller's stream's."""
        with _on_capture_stream(tensors[0].device) as main:
            out = _one_tensor(self.fn(*tensors))
        out.record_stream(main)    # freed by the caller: not reused on the capture stream before main's use
        return out

    def _capture(self, tensors):
        device = tensors[0].device
        with torch.cuda.device(device):   # the inputs' device, whichever is current
            static = [t.clone() for t in tensors]
            with _on_capture_stream(device):
                for _ in range(self.warmup):
                    self.fn(*static)
            graph = torch.cuda.CUDAGraph()
            # thread_local: other threads may go on using CUDA while this one captures (video decoding into
            # page-locked memory, encoding waiting on events); the default mode fails their calls meanwhile
            with torch.cuda.graph(graph, pool=self.pool, stream=_capture_stream(device),
                                  capture_error_mode="thread_local"):
                out = self.fn(*static)
        _one_tensor(out)
        self.captures += 1
        return graph, static, out

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        if not all(t.is_cuda for t in tensors):
            raise ValueError("GraphCache replays CUDA graphs: every input must be a CUDA tensor")
        key = self._key(tensors)
        if key not in self.graphs:
            self.seen[key] += 1
            if self.seen[key] < self.capture_after:
                return self._eager(tensors)
            self.graphs[key] = self._capture(tensors)
            while len(self.graphs) > self.max_graphs:
                old, _ = self.graphs.popitem(last=False)
                self.seen.pop(old, None)    # an evicted shape runs eagerly again before a new capture
        self.graphs.move_to_end(key)
        graph, static, out = self.graphs[key]
        for s, t in zip(static, tensors):
            s.copy_(t, non_blocking=True)
        graph.replay()
        return out.clone()
