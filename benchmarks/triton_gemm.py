"""One Triton GEMM kernel for 8-bit operands, integer (INT8 -> int32) or floating point (FP8 E4M3 ->
BF16), for ``gemm_precision_probe.py --dtypes int8-triton fp8-triton``: the same kernel, tiles and
autotuning for both formats, so that their energy per operation differs by the tensor-core path,
not by the library. Not a script; needs triton and a GPU with 8-bit tensor cores."""

from __future__ import annotations

import triton
import triton.language as tl

_CONFIGS = [triton.Config({"BM": bm, "BN": bn, "BK": bk}, num_warps=w, num_stages=s)
            for bm, bn, bk, w, s in ((128, 256, 128, 8, 3), (128, 128, 128, 8, 4), (256, 128, 128, 8, 3),
                                     (64, 256, 128, 4, 4), (128, 128, 64, 4, 4))]


@triton.autotune(configs=_CONFIGS, key=["M", "N", "K"])
@triton.jit
def _gemm(a, b, c, M, N, K, sam, sak, sbk, sbn, scm, scn, INT: tl.constexpr,
          BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid_m, pid_n = tl.program_id(0), tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    a_ptr = a + rm[:, None] * sam + rk[None, :] * sak
    b_ptr = b + rk[:, None] * sbk + rn[None, :] * sbn
    acc = tl.zeros((BM, BN), dtype=tl.int32 if INT else tl.float32)
    for _ in range(0, tl.cdiv(K, BK)):
        acc += tl.dot(tl.load(a_ptr), tl.load(b_ptr))
        a_ptr += BK * sak
        b_ptr += BK * sbk
    out = acc if INT else acc.to(tl.bfloat16)
    tl.store(c + rm[:, None] * scm + rn[None, :] * scn, out, mask=(rm[:, None] < M) & (rn[None, :] < N))


def gemm(x, w, out):
    """``out = x @ w.T`` for 8-bit ``x`` (M, K) and ``w`` (N, K); M, N, K multiples of the tiles (256, 128)."""
    m, k = x.shape
    n = w.shape[0]
    grid = lambda meta: (triton.cdiv(m, meta["BM"]), triton.cdiv(n, meta["BN"]))  # noqa: E731
    _gemm[grid](x, w, out, m, n, k, x.stride(0), x.stride(1), w.stride(1), w.stride(0), out.stride(0),
                out.stride(1), INT=out.dtype.is_floating_point is False)
    return out
