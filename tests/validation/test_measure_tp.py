"""dse.validation.measure_tp: shard arithmetic and CLI, without torch or a GPU."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

import dse.validation.measure_tp as mtp
from dse.spec.errors import DseError
from dse.validation.measure import Shapes, estimate_bytes

ROOT = Path(__file__).resolve().parents[2]


def _shapes(name: str) -> Shapes:
    return mtp._shapes_of(name)


def _tiny(**kw) -> Shapes:
    base = dict(name="tiny", n_layers=3, d_model=64, n_heads=8, n_kv_heads=2, head_dim=8, d_ff=96, gated=True,
                vocab=101, tied=False)
    base.update(kw)
    return Shapes(**base)


def test_import_does_not_need_torch():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['pynvml'] = None\n"
            "import dse.validation.measure_tp as m\n"
            "import dse.validation.tp_decoder\n"
            "assert m.ALL_COLUMNS[-len(m.TP_COLUMNS):] == m.TP_COLUMNS and 'tp' in m.ALL_COLUMNS\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_columns_extend_the_single_gpu_schema():
    from dse.validation.measure import COLUMNS, EXTRA_COLUMNS

    assert mtp.ALL_COLUMNS[: len(COLUMNS) + len(EXTRA_COLUMNS)] == COLUMNS + EXTRA_COLUMNS
    assert {"tp", "n_devices"} <= set(mtp.TP_COLUMNS)
    assert len(set(mtp.ALL_COLUMNS)) == len(mtp.ALL_COLUMNS)


def test_shard_llama3_70b_by_hand():
    s = _shapes("llama-3-70b")  # 64 heads, 8 K/V heads, d_ff 28672, vocab 128256
    sh = mtp.shard(s, 2)
    assert (sh.n_heads, sh.n_kv_heads, sh.n_kv_copies, sh.d_ff) == (32, 4, 1, 14336)
    assert sh.vocab_rows == (64128, 64128) and sh.vocab_offsets == (0, 64128)
    sh8 = mtp.shard(s, 8)
    assert (sh8.n_heads, sh8.n_kv_heads, sh8.n_kv_copies, sh8.d_ff) == (8, 1, 1, 3584)
    sh16 = mtp.shard(s, 16)  # fewer K/V heads than ranks: each copied on 2 ranks
    assert (sh16.n_heads, sh16.n_kv_heads, sh16.n_kv_copies) == (4, 1, 2)
    # ranks 2r and 2r+1 share K/V head r: their query heads 8r..8r+7 all map to it (group 8)
    assert [sh16.kv_head_start(r, 8) for r in range(16)] == [r // 2 for r in range(16)]


@pytest.mark.parametrize("tp", [1, 2, 3, 4, 7])
def test_vocab_pieces_cover_the_vocabulary(tp):
    sh = mtp.shard(_tiny(n_heads=tp * 2, n_kv_heads=1, d_ff=tp * 12), tp)
    assert sum(sh.vocab_rows) == 101
    ends = [o + r for o, r in zip(sh.vocab_offsets, sh.vocab_rows, strict=True)]
    assert list(sh.vocab_offsets[1:]) == ends[:-1] and ends[-1] == 101
    assert max(sh.vocab_rows) == -(-101 // tp)


def test_uneven_splits_are_refused():
    with pytest.raises(DseError, match="n_heads"):
        mtp.shard(_tiny(), 3)
    with pytest.raises(DseError, match="d_ff"):
        mtp.shard(_tiny(d_ff=99), 2)
    with pytest.raises(DseError, match="n_kv_heads"):
        mtp.shard(_tiny(n_heads=12, n_kv_heads=6, d_ff=96), 4)
    with pytest.raises(DseError, match="tp must be"):
        mtp.shard(_tiny(), 0)


@pytest.mark.parametrize("name", ["llama-3-8b", "llama-2-13b", "llama-3-70b", "llama-3.2-1b", "mistral-7b",
                                  "opt-6.7b"])
def test_tp1_equals_the_single_gpu_decoder(name):
    s = _shapes(name)
    assert mtp.rank_weight_bytes(s, 1) == 2 * s.n_params()
    for b, i, o in [(1, 512, 128), (64, 512, 128), (8, 2048, 33)]:
        assert mtp.estimate_rank_bytes(s, 1, b, i, o) == estimate_bytes(s, b, i, o)
    assert mtp.decode_comm(s, 8, 1) == {"n_allreduce": 0, "allreduce_msg_bytes": 0, "allgather_bytes": 0}


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("tp,kv", [(2, 2), (4, 2), (8, 8)])
def test_rank_bytes_add_up_to_the_model_plus_replicas(tp, kv, tied):
    """Sum over ranks = the model + (tp - 1) copies of the replicated embedding, norms and (for K/V
    heads copied over ranks) the extra K/V rows."""
    s = _tiny(n_heads=8, n_kv_heads=kv, tied=tied)
    sh = mtp.shard(s, tp)
    total = sum(mtp.rank_weight_bytes(s, tp, r) for r in range(tp))
    d, L = s.d_model, s.n_layers
    extra_kv = L * 2 * (tp * sh.n_kv_heads - s.n_kv_heads) * s.head_dim * d  # copied K/V rows
    assert (extra_kv > 0) == (kv < tp)
    assert total == 2 * (s.n_params() + (tp - 1) * (s.vocab * d + 2 * d * L + d) + extra_kv)


def test_rank_bytes_llama3_70b_tp2_by_hand():
    s = _shapes("llama-3-70b")
    d, L = 8192, 80
    per_layer = (32 + 2 * 4) * 128 * d + d * 32 * 128 + 2 * 14336 * d + d * 14336 + 2 * d
    want = 2 * (L * per_layer + 128256 * d + 64128 * d + d)
    assert mtp.rank_weight_bytes(s, 2, 0) == want
    assert 70e9 < want < 73e9  # 71.6 GB per GPU: fits 141 GB, the whole model (141 GB) does not fit one


def test_decode_comm_by_hand():
    s = _shapes("llama-3-8b")  # 32 layers, d_model 4096
    assert mtp.decode_comm(s, 8, 2) == {"n_allreduce": 64, "allreduce_msg_bytes": 8 * 4096 * 2,
                                        "allgather_bytes": 2 * 8 * 8}


def test_estimate_per_rank_shrinks_with_tp():
    s = _shapes("llama-3-70b")
    one = mtp.estimate_rank_bytes(s, 1, 64, 512, 128)
    two = mtp.estimate_rank_bytes(s, 2, 64, 512, 128)
    assert two["weights"] < one["weights"] and two["decode"] < one["decode"] and two["prefill"] < one["prefill"]
    # K/V cache per rank halves exactly: 64 x 640 positions x 80 layers x 2 x (4 heads x 128) x 2 bytes
    kv2 = 64 * 640 * 80 * 2 * 4 * 128 * 2
    assert two["decode"] - kv2 == pytest.approx(
        64 * (4 * 8192 + 2 * (32 * 128 + 2 * 4 * 128) + 3 * 2 * 14336) * 2 + 64 * 64128 * 8)


def test_allreduce_bandwidths_and_sizes():
    assert mtp.allreduce_bandwidths(1e6, 1e-5, 2) == pytest.approx((1e11, 1e11))
    assert mtp.allreduce_bandwidths(1e6, 1e-5, 8) == pytest.approx((1e11, 1.75e11))
    sizes = mtp.allreduce_sizes(8192, 256 << 20)
    assert sizes[0] == 8192 and sizes[-1] == 256 << 20 and len(sizes) == 16
    assert all(b == 2 * a for a, b in zip(sizes, sizes[1:], strict=False))
    assert mtp.allreduce_sizes(1000, 4096) == [1024, 2048, 4096]


def test_gpu_platform():
    assert mtp.gpu_platform("NVIDIA H200") == "h200-sxm"
    assert mtp.gpu_platform("NVIDIA H100 80GB HBM3") == "h100-sxm"
    assert mtp.gpu_platform("NVIDIA L4") == "NVIDIA L4"


def test_argument_parser_and_early_errors():
    parser = argparse.ArgumentParser()
    mtp.add_arguments(parser)
    args = parser.parse_args(["--model", "llama-3-8b", "llama-3-70b", "--tp", "1", "2", "--batch", "1", "64",
                              "--out", "x.csv", "--allreduce-out", "ar.csv", "--deadline-s", "500"])
    assert args.tp == [1, 2] and args.batch == [1, 64] and args.in_len == [512] and args.out_len == [128]
    assert args.comm == "nccl" and args.deadline_s == 500
    with pytest.raises(DseError, match="n_heads"):  # before torch is needed
        mtp.run_group([("llama-2-13b", 1, 8, 8)], 3)
    with pytest.raises(DseError, match="comm"):
        mtp.run_group([("llama-2-13b", 1, 8, 8)], 2, comm="gloo")
