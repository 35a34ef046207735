"""arrays.fused (compiled rows kernels on numbers and arrays of any shape) and the compiled phase sums
(power.phase_time_and_dynamic_j) against the numpy formulation they replaced, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from dse.model import perf, power
from dse.model.arrays import fused


def _step(flop, nbytes, spf, spb, launch):  # noqa: ANN001, ANN202
    return np.maximum(np.multiply(flop, spf), np.multiply(nbytes, spb)) + launch


@pytest.mark.parametrize("args", [
    (np.arange(5.0), 2.0, 0.5, 3.0, 1e-6),  # a batch column and numbers
    (np.arange(5), np.arange(5) > 2, 0.5, np.float64(3.0), 1),  # int and bool columns, numpy scalars, ints
    (np.ones((2, 3)), np.arange(3.0), 2.0, np.array(3.0), 4.0),  # 2-D broadcast, a 0-d array
    (np.arange(3.0), np.ones(1), 1.0, 1.0, 0.0),  # length 1 against the batch
    (np.zeros(0), 1.0, 1.0, 1.0, 1.0),  # an empty batch
])
def test_fused_matches_numpy(args: tuple) -> None:
    (got,) = fused(perf._step_cost_rows, 1, *args)
    want = _step(*(np.asarray(a, dtype=float) for a in args))
    assert type(got) is np.ndarray and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_fused_numbers_give_floats() -> None:
    (got,) = fused(perf._step_cost_rows, 1, 2.0, np.array(3.0), np.int64(1), 1.0, 0.5)
    assert type(got) is float and got == 3.5


# the numpy formulation replaced by power.phase_time_and_dynamic_j (phase_sum, phase_dynamic_j)
def _phase_sum(costs: list[dict], key: str):  # noqa: ANN202
    per_step = [c[key] for c in costs if c["per_step"]]
    totals = [c[key] for c in costs if not c["per_step"]]
    out = None
    if per_step:
        part = per_step[0]
        for x in per_step[1:]:
            part = part + x
        out = costs[0]["steps"] * part
    for x in totals:
        out = x if out is None else out + x
    return 0.0 if out is None else out


def _reference(hw: dict, costs: dict) -> tuple:
    cs = list(costs.values())
    groups: dict[int, list[dict]] = {}
    for c in cs:
        groups.setdefault(id(c["j_per_flop"]), []).append(c)
    flop_j = None
    for g in groups.values():
        term = _phase_sum(g, "flop") * g[0]["j_per_flop"]
        flop_j = term if flop_j is None else flop_j + term
    dyn = _phase_sum(cs, "bytes") * power.j_per_dram_byte(hw) + flop_j
    for c in cs:
        if "energy_ratio" in c:
            steps = c["steps"] if c["per_step"] else 1.0
            f, b = (steps * c["flop"], steps * c["bytes"]) if c["per_step"] else (c["flop"], c["bytes"])
            dyn = dyn + (c["energy_ratio"] - 1.0) * (f * c["j_per_flop"] + b * power.j_per_dram_byte(hw))
    return _phase_sum(cs, "time_s"), dyn


@pytest.mark.parametrize("seed", range(6))
def test_phase_sums_match_the_numpy_formulation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 257
    col = (lambda: float(rng.uniform(0.1, 10))) if seed == 5 else (lambda: rng.uniform(0.1, 10, n))
    hw = {"mem_energy_pj_per_bit": rng.uniform(1, 5, n) if seed in (1, 3) else 3.0, "onchip_energy_pj_per_bit": 1.5,
          "sram_energy_pj_per_bit": 0.1}
    j_lin, j_attn = col(), (float(rng.uniform(0.1, 1)) if seed == 3 else col())
    steps = 1.0 if seed == 4 else (col() if seed != 5 else 7.0)
    costs = {}
    for o, name in enumerate(("qkv", "o", "attn", "ffn", "lm_head", "draft")[: 4 + seed % 3]):
        attn = name == "attn"
        per_step = not attn or seed == 2
        cost = {"time_s": col(), "flop": 1e9 * col() if o != 1 or seed != 1 else 0.0, "bytes": 1e8 * col(),
                "per_step": per_step, "steps": steps, "j_per_flop": j_attn if attn else j_lin}
        if attn and seed in (1, 3, 4):
            cost["energy_ratio"] = 1.0 + 0.5 * col() if seed != 4 else 1.3
        costs[name] = cost
    raw_s, dyn_j = power.phase_time_and_dynamic_j(hw, costs)
    want_s, want_j = _reference(hw, costs)
    if seed == 5:
        assert type(raw_s) is float and type(dyn_j) is float
    np.testing.assert_array_equal(raw_s, want_s)
    np.testing.assert_array_equal(dyn_j, want_j)


def test_phase_sums_take_read_only_and_strided_columns() -> None:
    """Inputs as the evaluator may hand them over (read-only, strided, int): one kernel type in the tuple."""
    n = 7
    base = np.linspace(1.0, 2.0, 2 * n)
    frozen = base[:n].copy()
    frozen.flags.writeable = False
    costs = {"a": {"time_s": frozen, "flop": base[::2], "bytes": np.arange(n), "per_step": True, "steps": 3.0,
                   "j_per_flop": 2.0},
             "b": {"time_s": base[n:], "flop": frozen, "bytes": 5.0, "per_step": False, "steps": 3.0,
                   "j_per_flop": frozen}}
    hw = {"mem_energy_pj_per_bit": 3.0, "onchip_energy_pj_per_bit": 1.5, "sram_energy_pj_per_bit": 0.1}
    raw_s, dyn_j = power.phase_time_and_dynamic_j(hw, costs)
    want_s, want_j = _reference(hw, costs)
    np.testing.assert_array_equal(raw_s, want_s)
    np.testing.assert_array_equal(dyn_j, want_j)


def test_phase_sums_of_an_empty_batch() -> None:
    costs = {"a": {"time_s": np.zeros(0), "flop": 1.0, "bytes": np.zeros(0), "per_step": True, "steps": 2.0,
                   "j_per_flop": 1.0}}
    hw = {"mem_energy_pj_per_bit": 3.0, "onchip_energy_pj_per_bit": 1.5, "sram_energy_pj_per_bit": 0.1}
    raw_s, dyn_j = power.phase_time_and_dynamic_j(hw, costs)
    assert raw_s.shape == dyn_j.shape == (0,)
    assert power.phase_dynamic_j(hw, costs).shape == (0,)
