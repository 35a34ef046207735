"""dse.validation.measure: runs without a GPU (and without torch, except the one CPU-path test)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import dse.validation.measure as measure
from dse.spec.errors import DseError
from dse.validation.measure_gpu import run_timed
from dse.validation.measure_graphs import DecodeGraphs, decode_lengths, prefill_graph

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "validation" / "measurements_h100.csv"

TINY_CARD = """\
name: tiny-{tag}
n_layers: 2
d_model: 64
n_heads: 4
n_kv_heads: {kv}
head_dim: 16
d_ff: 96
ffn_gated: {gated}
vocab_size: 101
tied_embeddings: {tied}
max_seq_len: 512
sources: {{n_layers: t, d_model: t, n_heads: t, n_kv_heads: t, head_dim: t, d_ff: t, ffn_gated: t,
  vocab_size: t, tied_embeddings: t, max_seq_len: t}}
"""


def _card(tmp_path: Path, tag: str, kv: int = 2, gated: str = "true", tied: str = "true") -> Path:
    path = tmp_path / f"tiny-{tag}.yaml"
    path.write_text(TINY_CARD.format(tag=tag, kv=kv, gated=gated, tied=tied), encoding="utf-8")
    return path


def test_import_does_not_need_torch():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['pynvml'] = None\n"
            "import dse.validation.measure as m\n"
            "import dse.validation.measure_decoder, dse.validation.measure_gpu, dse.validation.measure_graphs\n"
            "assert 'ttft_s' in m.COLUMNS\n"
            "try:\n"
            "    m.measure(['x'], [1], [1], [1])\n"
            "except m.DseError as e:\n"
            "    assert 'PyTorch' in str(e), e\n"
            "else:\n"
            "    raise SystemExit('no DseError')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_platform_name():
    assert measure.platform_name("NVIDIA H100 80GB HBM3") == "h100-sxm"
    assert measure.platform_name("NVIDIA H100 SXM5 80GB") == "h100-sxm"
    assert measure.platform_name("NVIDIA H100 PCIe") == "NVIDIA H100 PCIe"


def test_shapes_and_memory_estimate(tmp_path):
    import dse

    card = dse.load_model(_card(tmp_path, "s", kv=2))
    shapes = measure.Shapes.from_card(card)
    assert (shapes.q_dim, shapes.kv_dim, shapes.group) == (64, 32, 2)
    per_layer = 64 * (64 + 2 * 32) + 64 * 64 + 3 * 64 * 96 + 2 * 64
    assert shapes.n_params() == 2 * per_layer + 101 * 64 + 64
    est = measure.estimate_bytes(shapes, 4, 100, 28, kv_bucket=16)
    assert est["weights"] == 2 * shapes.n_params()
    assert est["decode"] >= shapes.kv_bytes_per_token() * 4 * 128
    assert measure._prefill_chunk(64, 2048, 16384) == 8
    assert measure._prefill_chunk(6, 2048, 16384) == 6
    assert measure._prefill_chunk(64, 128, 16384) == 64
    assert measure._prefill_chunk(3, 100000, 16384) == 1


def test_write_measurements_atomic(tmp_path):
    row = {c: 1 for c in measure.COLUMNS}
    path = measure.write_measurements(pd.DataFrame([row]), tmp_path / "sub" / "m.csv")
    assert list(pd.read_csv(path).columns) == list(measure.COLUMNS)
    assert [p.name for p in path.parent.iterdir()] == ["m.csv"]  # no temporary left behind
    with pytest.raises(DseError):
        measure.write_measurements(pd.DataFrame([{"model": "x"}]), tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped measurements yet")
def test_shipped_measurements_are_sane():
    df = pd.read_csv(SHIPPED)
    assert set(measure.COLUMNS) <= set(df.columns)
    assert len(df) >= 12
    assert df["model"].nunique() >= 3
    assert df["batch"].min() == 1 and df["batch"].max() >= 32
    assert df["in_len"].min() <= 128 and df["in_len"].max() >= 2048
    assert (df[["w_bits", "a_bits", "kv_bits"]] == 16).all().all()
    assert (df["platform"] == "h100-sxm").all()
    for col in ("ttft_s", "tpot_s", "decode_tokens_per_s", "decode_power_w", "decode_tokens_per_j", "idle_power_w"):
        assert (df[col] > 0).all() and df[col].map(math.isfinite).all(), col
    assert ((df["decode_tokens_per_s"] - df["batch"] / df["tpot_s"]).abs()
            <= 1e-4 * df["decode_tokens_per_s"]).all()
    # tokens/J = tokens/s / W for steady decode
    ratio = df["decode_tokens_per_j"] * df["decode_power_w"] / df["decode_tokens_per_s"]
    assert ratio.between(0.9, 1.1).all()
    # physically sensible for one H100: board power between idle and 800 W, decode slower than 3.35 TB/s
    # of weight reads (every step reads all weights once)
    assert (df["decode_power_w"] > df["idle_power_w"]).all() and (df["decode_power_w"] < 800).all()
    assert (df["weight_bytes"] / df["tpot_s"] < 3.35e12).all()
    # repeatable: the spread of the decode loops is small
    assert ((df["tpot_max_s"] - df["tpot_min_s"]) / df["tpot_s"] < 0.1).all()
    # more batch -> more tokens/s for the same model and lengths
    for _, grp in df.groupby(["model", "in_len", "out_len"]):
        grp = grp.sort_values("batch")
        assert grp["decode_tokens_per_s"].is_monotonic_increasing


def test_cpu_path_tiny_cards(tmp_path):
    torch = pytest.importorskip("torch")
    cards = [str(_card(tmp_path, "gqa", kv=2)), str(_card(tmp_path, "plain", kv=4, gated="false", tied="false"))]
    df = measure.measure(cards, [1, 2], [5, 20], [6], device="cpu", repeats=2, min_decode_s=0.0,
                         min_prefill_s=0.0, idle_s=0)
    assert len(df) == 8
    assert list(df.columns[: len(measure.COLUMNS)]) == list(measure.COLUMNS)
    assert set(df["model"]) == {"tiny-gqa", "tiny-plain"}
    assert (df["ttft_s"] > 0).all() and (df["tpot_s"] > 0).all()
    assert ((df["decode_tokens_per_s"] - df["batch"] / df["tpot_s"]).abs() < 1e-6 * df["decode_tokens_per_s"]).all()
    path = measure.write_measurements(df, tmp_path / "m.csv")
    back = pd.read_csv(path)
    assert len(back) == 8 and back["source"].str.contains("torch").all()

    # decode over the cache reproduces prefill of the longer prompt (cache layout, GQA folding)
    for card in cards:
        import dse

        s = measure.Shapes.from_card(dse.load_model(card))
        dec = measure.Decoder(s, "cpu", dtype=torch.float32, seed=1)
        b, t = 3, 9
        toks = torch.randint(0, s.vocab, (b, t + 1))
        full = [torch.empty(2, b, s.n_kv_heads, t + 1, s.head_dim) for _ in range(s.n_layers)]
        want = dec.prefill(toks, full)
        part = [torch.empty(2, b, s.n_kv_heads, t, s.head_dim) for _ in range(s.n_layers)]
        dec.prefill(toks[:, :t], part)
        cache = [torch.randn(2, b, s.n_kv_heads, 16, s.head_dim) for _ in range(s.n_layers)]
        for c, p in zip(cache, part, strict=True):
            c[:, :, :, :t] = p
        cur, pos = toks[:, t].clone(), torch.tensor([t])
        dec.decode_step(cur, cache, pos, t + 1)
        assert cur.tolist() == want.tolist() and int(pos) == t + 1
        for c, f in zip(cache, full, strict=True):
            assert torch.allclose(c[:, :, :, : t + 1], f, atol=1e-5)


def test_moe_card_is_skipped(tmp_path, capsys):
    pytest.importorskip("torch")
    path = tmp_path / "moe.yaml"
    path.write_text(TINY_CARD.format(tag="moe", kv=2, gated="true", tied="true")
                    + "n_experts: 4\nn_experts_active: 2\n", encoding="utf-8")
    text = path.read_text().replace("max_seq_len: t}", "max_seq_len: t, n_experts: t, n_experts_active: t}")
    path.write_text(text, encoding="utf-8")
    df = measure.measure([str(path)], [1], [4], [2], device="cpu", repeats=1, min_decode_s=0.0,
                         min_prefill_s=0.0, idle_s=0)
    assert df.empty and "MoE" in capsys.readouterr().err


class _CpuGpu:
    """Stand-in for :class:`dse.validation.measure_gpu.Gpu` on the CPU without torch: no graphs, no NVML."""

    is_cuda, nvml, energy_ok, torch = False, None, False, None

    def __init__(self) -> None:
        self.syncs = 0

    def sync(self) -> None:
        self.syncs += 1

    def energy_mj(self) -> float:
        return math.nan


class _Pos:
    """The device-side position tensor: ``fill_`` and the step's increment."""

    def __init__(self, value: int) -> None:
        self.value = value

    def fill_(self, value: int) -> None:
        self.value = value


def test_decode_lengths_are_bucketed():
    assert decode_lengths(14, 5, 16) == [16, 16, 32, 32, 32]
    assert decode_lengths(16, 16, 16) == [32] * 16
    assert decode_lengths(3, 4, 1) == [4, 5, 6, 7]


def test_decode_graphs_replay_the_steps_in_order():
    gpu, pos, calls = _CpuGpu(), _Pos(14), []

    def step(kv_len: int) -> None:
        calls.append((pos.value, kv_len))
        pos.value += 1

    graphs = DecodeGraphs(gpu, step, pos, 14, 5, 16, None)
    assert calls == [(14, 16)]  # one warm-up step before the first capture (on the CPU: the steps themselves)
    calls.clear()
    graphs.loop()
    graphs.loop()
    assert calls == 2 * [(14, 16), (15, 16), (16, 32), (17, 32), (18, 32)]
    calls.clear()
    syncs = []
    assert graphs.host_step_s(lambda: syncs.append(1)) >= 0
    assert calls == [(14, 16), (15, 16), (16, 32), (17, 32), (18, 32)] and len(syncs) == 2  # min(8, out_len) steps


def test_prefill_graph_runs_every_micro_batch():
    gpu, calls = _CpuGpu(), []
    run_all = prefill_graph(gpu, lambda: calls.append(1), None, 4)
    assert len(calls) == 1  # warm-up
    run_all()
    assert len(calls) == 5


@pytest.mark.parametrize(("repeats", "min_s", "soft_s", "min_runs", "want"), [
    (2, 1.0, 1.0, 1, 4),  # lasts min_s: 1.0 / 0.25 runs
    (5, 0.0, 0.5, 1, 2),  # capped where the runs would take over soft_s
    (5, 0.0, 0.5, 3, 3),  # but not below min_runs
    (3, 0.0, 100.0, 1, 3),
])
def test_run_timed_counts(repeats, min_s, soft_s, min_runs, want):
    gpu, calls, agreed, ready = _CpuGpu(), [], [], []

    def agree(seconds: float) -> float:
        agreed.append(seconds)
        return 0.25  # the warm-up time every rank uses

    res = run_timed(gpu, lambda: calls.append(1), repeats=repeats, min_s=min_s, soft_s=soft_s, min_runs=min_runs,
                    agree=agree, ready=lambda: ready.append(1))
    assert res["n"] == want and len(res["times"]) == want and len(calls) == want + 1
    assert len(agreed) == 1 and len(ready) == 1 and gpu.syncs == 1  # ready replaces the sync before the window
    assert res["method"] == "none" and math.isnan(res["energy_j"]) and res["wall_s"] >= 0
    plain = run_timed(gpu, lambda: None, repeats=2, min_s=0.0, soft_s=100.0)
    assert plain["n"] == 2 and gpu.syncs == 3  # default: gpu.sync before the window and after it
