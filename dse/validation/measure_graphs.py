"""CUDA-graph capture and replay for ``dse measure`` (one GPU) and ``dse measure --tp`` (one rank).

One prefill micro-batch is one graph, replayed once per micro-batch. One decode step is one
graph per *bucket* of attended length (multiples of ``kv_bucket``): the step writes its K/V at
the device-side position ``pos`` and advances it, so a decode loop is ``pos = in_len`` then
one replay per step and the host only enqueues. On the CPU (``gpu.is_cuda`` false) the same
calls run the functions eagerly. The method is in :mod:`dse.validation.measure`'s docstring.
Torch comes from ``gpu.torch``; callers run these under ``torch.inference_mode()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dse.validation.measure_decoder import _round_up
from dse.validation.measure_gpu import Gpu


def capture(gpu: Gpu, fn: Callable[[], Any], pool: Any, stream: Any, *,
            capture_error_mode: str = "global") -> Callable[[], Any]:
    """A callable that runs ``fn`` (a CUDA graph replay on the GPU, a plain call on the CPU)."""
    if not gpu.is_cuda:
        return fn
    torch = gpu.torch
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, pool=pool, stream=stream, capture_error_mode=capture_error_mode):
        fn()
    return g.replay


def warm(gpu: Gpu, fn: Callable[[], Any], stream: Any) -> None:
    """Run ``fn`` once eagerly (on the capture stream on a GPU) before capturing it."""
    if not gpu.is_cuda:
        fn()
        return
    torch = gpu.torch
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    gpu.sync()


def _pool(gpu: Gpu) -> Any:
    return gpu.torch.cuda.graph_pool_handle() if gpu.is_cuda else None


def prefill_graph(gpu: Gpu, fn: Callable[[], Any], stream: Any, n_chunks: int, *,
                  capture_error_mode: str = "global") -> Callable[[], None]:
    """Warm and capture one prefill micro-batch ``fn``; returns a callable running ``n_chunks`` replays."""
    warm(gpu, fn, stream)
    replay = capture(gpu, fn, _pool(gpu), stream, capture_error_mode=capture_error_mode)

    def prefill_all() -> None:
        for _ in range(n_chunks):
            replay()

    return prefill_all


def decode_lengths(in_len: int, out_len: int, kv_bucket: int) -> list[int]:
    """Attended length of each of the ``out_len`` steps: the step's position rounded up to ``kv_bucket``."""
    max_len = _round_up(in_len + out_len, kv_bucket)
    return [min(max_len, _round_up(in_len + step + 1, kv_bucket)) for step in range(out_len)]


class DecodeGraphs:
    """The ``out_len`` decode steps from position ``in_len``, one captured graph per attended length.

    ``step(kv_len)`` runs one decode step attending ``kv_len`` cache positions and advances
    ``pos`` (a one-element device tensor). The first length is warmed before any capture;
    all graphs share one memory pool.
    """

    def __init__(self, gpu: Gpu, step: Callable[[int], Any], pos: Any, in_len: int, out_len: int, kv_bucket: int,
                 stream: Any, *, capture_error_mode: str = "global") -> None:
        self.pos, self.in_len = pos, in_len
        lengths = decode_lengths(in_len, out_len, kv_bucket)
        steps: dict[int, Callable[[], Any]] = {}
        pool = _pool(gpu)
        for kv_len in sorted(set(lengths)):
            def step_fn(kv_len: int = kv_len) -> None:
                step(kv_len)
            if not steps:
                warm(gpu, step_fn, stream)
            steps[kv_len] = capture(gpu, step_fn, pool, stream, capture_error_mode=capture_error_mode)
        self.sequence = [steps[n] for n in lengths]

    def loop(self) -> None:
        """One decode loop: ``pos = in_len``, then every step's replay."""
        self.pos.fill_(self.in_len)
        for replay in self.sequence:
            replay()

    def host_step_s(self, sync: Callable[[], None]) -> float:
        """Host seconds to enqueue one step, on an idle queue (a full launch queue would block the host):
        ``sync()``, then up to 8 steps enqueued and timed, then ``sync()`` again."""
        probe = min(8, len(self.sequence))
        sync()
        h0 = time.perf_counter()
        self.pos.fill_(self.in_len)
        for replay in self.sequence[:probe]:
            replay()
        host_step_s = (time.perf_counter() - h0) / probe
        sync()
        return host_step_s
