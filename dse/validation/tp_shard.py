"""Shard arithmetic of ``dse measure --tp`` (pure Python, no torch): per-rank sizes of a
Megatron-style tensor-parallel split (Shoeybi et al. 2019, arXiv:1909.08053, section 3), the
collectives of one decode step, per-rank memory, and all-reduce bandwidth definitions.
Used by :mod:`dse.validation.measure_tp` (driver) and :mod:`dse.validation.tp_decoder` (GPU side).
"""

from __future__ import annotations

from dataclasses import dataclass

from dse.spec.errors import DseError
from dse.validation.measure import Shapes, _prefill_chunk, _round_up

#: Environment forced in every worker: NVLink multicast (NVLS) off, as the device notes require.
SAFE_ENV: dict[str, str] = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                            "NVSHMEM_DISABLE_NVLS": "1"}


@dataclass(frozen=True)
class TpShard:
    """Per-rank sizes of a Megatron-style tensor-parallel split of one decoder (all counts)."""

    tp: int
    n_heads: int          #: query heads per rank
    n_kv_heads: int       #: key/value heads per rank
    n_kv_copies: int      #: ranks holding each K/V head (1 unless the card has fewer K/V heads than ranks)
    d_ff: int             #: FFN width per rank
    vocab_rows: tuple[int, ...]     #: LM-head rows of each rank
    vocab_offsets: tuple[int, ...]  #: first vocabulary id of each rank

    def kv_head_start(self, rank: int, group: int) -> int:
        """First K/V head (of the full model) used by ``rank``; ``group`` = full n_heads / n_kv_heads."""
        return (rank * self.n_heads) // group


def shard(shapes: Shapes, tp: int) -> TpShard:
    """Split ``shapes`` over ``tp`` ranks; raises :class:`DseError` where the split is not even.

    Query heads and FFN columns must divide by ``tp``; K/V heads must divide by ``tp`` or
    ``tp`` by them (then each is copied on ``tp / n_kv_heads`` ranks). The vocabulary is
    cut in ``ceil(V / tp)``-row pieces, the last one shorter.
    """
    if tp < 1:
        raise DseError(f"tp must be >= 1 (got {tp})")
    name = shapes.name
    if shapes.n_heads % tp:
        raise DseError(f"{name}: tp={tp} does not divide n_heads={shapes.n_heads}")
    if shapes.d_ff % tp:
        raise DseError(f"{name}: tp={tp} does not divide d_ff={shapes.d_ff}")
    if shapes.n_kv_heads >= tp:
        if shapes.n_kv_heads % tp:
            raise DseError(f"{name}: tp={tp} does not divide n_kv_heads={shapes.n_kv_heads}")
        kv, copies = shapes.n_kv_heads // tp, 1
    else:
        if tp % shapes.n_kv_heads:
            raise DseError(f"{name}: n_kv_heads={shapes.n_kv_heads} does not divide tp={tp}")
        kv, copies = 1, tp // shapes.n_kv_heads
    piece = -(-shapes.vocab // tp)
    offsets = tuple(min(r * piece, shapes.vocab) for r in range(tp))
    rows = tuple(min(piece, shapes.vocab - off) for off in offsets)
    return TpShard(tp=tp, n_heads=shapes.n_heads // tp, n_kv_heads=kv, n_kv_copies=copies, d_ff=shapes.d_ff // tp,
                   vocab_rows=rows, vocab_offsets=offsets)


def rank_weight_bytes(shapes: Shapes, tp: int, rank: int = 0, elem_bytes: int = 2) -> int:
    """Weight bytes held by ``rank``: its shards, the replicated norms and the full (replicated) embedding."""
    sh = shard(shapes, tp)
    d, hd = shapes.d_model, shapes.head_dim
    qkv_rows = (sh.n_heads + 2 * sh.n_kv_heads) * hd
    ffn_in_rows = (2 if shapes.gated else 1) * sh.d_ff
    per_layer = qkv_rows * d + d * sh.n_heads * hd + ffn_in_rows * d + d * sh.d_ff + 2 * d
    emb = shapes.vocab * d
    head = 0 if shapes.tied else sh.vocab_rows[rank] * d
    return (shapes.n_layers * per_layer + emb + head + d) * elem_bytes


def decode_comm(shapes: Shapes, batch: int, tp: int, elem_bytes: int = 2) -> dict[str, int]:
    """Collectives of one TP decode step: ``n_allreduce`` all-reduces of ``allreduce_msg_bytes`` each
    (``[batch, d_model]`` activations) and one all-gather of ``allgather_bytes`` (``tp x batch``
    fp32 (value, index) pairs). All zero for ``tp = 1``."""
    if tp == 1:
        return {"n_allreduce": 0, "allreduce_msg_bytes": 0, "allgather_bytes": 0}
    return {"n_allreduce": 2 * shapes.n_layers, "allreduce_msg_bytes": batch * shapes.d_model * elem_bytes,
            "allgather_bytes": tp * batch * 2 * 4}


def estimate_rank_bytes(shapes: Shapes, tp: int, batch: int, in_len: int, out_len: int, *, kv_bucket: int = 16,
                        max_prefill_tokens: int = 16384, elem_bytes: int = 2) -> dict[str, int]:
    """GPU memory per rank (weights, decode phase, prefill phase), conservative, as
    :func:`dse.validation.measure.estimate_bytes` with the rank's shard widths."""
    sh = shard(shapes, tp)
    hd, d = shapes.head_dim, shapes.d_model
    q, kvd = sh.n_heads * hd, sh.n_kv_heads * hd
    kv_tok = 2 * shapes.n_layers * kvd * elem_bytes
    ffn_w = (2 if shapes.gated else 1) * sh.d_ff
    max_len = _round_up(in_len + out_len, kv_bucket)
    v_rows = max(sh.vocab_rows)
    dec = kv_tok * batch * max_len + batch * (4 * d + 2 * (q + 2 * kvd) + 3 * ffn_w) * elem_bytes + batch * v_rows * 8
    bc = _prefill_chunk(batch, in_len, max_prefill_tokens)
    tok = bc * in_len
    pre = kv_tok * tok + tok * (6 * d + 3 * (q + 2 * kvd) + 3 * ffn_w) * elem_bytes + bc * v_rows * 8
    return {"weights": rank_weight_bytes(shapes, tp, 0, elem_bytes), "decode": dec, "prefill": pre}


def allreduce_bandwidths(msg_bytes: float, time_s: float, n_ranks: int) -> tuple[float, float]:
    """(algorithm, bus) bandwidth in bytes/s of one all-reduce, as nccl-tests defines them
    (NVIDIA nccl-tests doc/PERFORMANCE.md): algbw = bytes / time, busbw = algbw * 2(n-1)/n."""
    alg = msg_bytes / time_s
    return alg, alg * 2.0 * (n_ranks - 1) / n_ranks


def allreduce_sizes(min_bytes: int = 1024, max_bytes: int = 256 << 20) -> list[int]:
    """Powers of two from ``min_bytes`` to ``max_bytes`` inclusive."""
    out, size = [], 1 << max(0, (int(min_bytes) - 1).bit_length())
    while size <= max_bytes:
        out.append(size)
        size *= 2
    return out


def gpu_platform(gpu_name: str) -> str:
    """Platform preset for a GPU name: ``h200-sxm`` for "NVIDIA H200", ``h100-sxm`` for an H100 SXM."""
    upper = gpu_name.upper()
    if "H200" in upper and "NVL" not in upper:
        return "h200-sxm"
    if "H100" in upper and ("SXM" in upper or "HBM3" in upper):
        return "h100-sxm"
    return gpu_name
