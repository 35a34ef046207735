"""Quality model (ppl_delta): table points, conservative interpolation, monotonicity, flags, scalar reference."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from dse import quality_table as qt
from dse.model import quality as q
from dse.model.quality_reference import ppl_delta_scalar

FAM, METH, KVM, SPM = q.FAMILIES.index, q.QUANT_METHODS.index, q.KV_METHODS.index, q.SPARSE_METHODS.index


@pytest.fixture(scope="module")
def tables():
    return qt.load_quality_tables()


def delta(tables, family, method="rtn", w=16, a=16, kv=16, frac=0.0, nm=0, group=128, kv_method="any",
          sparse_method="sparsegpt"):
    out = q.ppl_delta(tables, FAM(family), METH(method), w, a, kv, frac, nm, group, KVM(kv_method), SPM(sparse_method))
    return float(out["ppl_delta"]), int(out["quality_extrapolated"]), int(out["quality_interpolated"])


def random_designs(n, seed):
    rng = np.random.default_rng(seed)
    bits = np.array([1, 2, 3, 4, 4.5, 5, 6, 7, 8, 12, 16, 32], dtype=float)
    return {"family_code": rng.integers(0, len(q.FAMILIES), n),
            "quant_method_code": rng.integers(0, len(q.QUANT_METHODS), n),
            "w_bits": rng.choice(bits, n), "a_bits": rng.choice(bits, n), "kv_bits": rng.choice(bits, n),
            "w_sparsity_frac": rng.choice([0.0, 0.0, 0.2, 0.5, 0.6], n), "nm_sparse": rng.choice([0.0, 0.0, 1.0], n),
            "w_group_size": rng.choice([0.0, 64.0, 128.0, 256.0], n),
            "kv_method_code": rng.integers(0, len(q.KV_METHODS), n),
            "sparse_method_code": rng.integers(0, len(q.SPARSE_METHODS), n)}


def test_every_source_is_cited():
    records, spec = qt.load_records()
    for key, src in spec["sources"].items():
        assert src.get("cite") and src.get("read_from"), key
    for r in records:
        assert r["source"] in spec["sources"]
        assert r["delta"] >= 0
        assert not r["transferred"] or r.get("note"), r  # a transferred row says where from


def test_validation_csv_in_sync_with_yaml():
    on_disk = qt.read_quality_points()
    fresh = qt.quality_points()
    assert len(on_disk) == len(fresh) > 200
    for a, b in zip(on_disk, fresh, strict=True):
        assert {k: str(v) for k, v in b.items()} == a


def test_table_points_reproduced(tables):
    """Every published point comes back exactly, except where an own row at least as precise (same family,
    kind, method) is worse: there the conservative envelope wins. Computed independently here."""
    points = qt.read_quality_points()
    res = qt.reproduce_quality_points(tables, points)

    def coords(p):
        n = {k: float(p[k]) if p[k] != "" else 16.0 for k in ("w_bits", "a_bits", "kv_bits")}
        g = q.group_rank(float(p["group_size"]) if p["group_size"] != "" else 0.0)
        frac = float(p["sparsity_frac"]) if p["sparsity_frac"] != "" else 0.0
        return n["w_bits"], n["a_bits"], int(g), n["kv_bits"], -frac, p["pattern"]

    expected = []
    for p in points:
        c = coords(p)
        peers = [float(s["ppl_delta"]) for s in points
                 if (s["family"], s["kind"], s["method"]) == (p["family"], p["kind"], p["method"])
                 and coords(s)[5] == c[5] and all(x >= y for x, y in zip(coords(s)[:5], c[:5], strict=True))]
        expected.append(max(peers))
    assert_allclose(res["predicted"], expected, rtol=0, atol=1e-9)
    assert np.all(res["error"] >= -1e-12)  # never optimistic at a published point
    raised = np.flatnonzero(np.abs(res["error"]) > 1e-9)
    assert len(raised) == 11  # duplicates across papers and one inversion (AWQ W2): see the report
    assert res["quality_extrapolated"].sum() == 0 and res["quality_interpolated"].sum() == 0


def test_closed_forms(tables):
    assert delta(tables, "llama-2-7b", "awq", w=16, a=16, kv=16) == (0.0, 0, 0)  # dense 16-bit
    assert delta(tables, "llama-2-7b", "quarot", 4, 4, 4, group=0) == (pytest.approx(6.10 - 5.47), 0, 0)
    # AWQ W4 g128: AWQ Table 4 (0.13) and OmniQuant Table 1 (0.15) disagree: the worse one
    assert delta(tables, "llama-2-7b", "awq", 4)[0] == pytest.approx(0.15)
    # + KIVI 4-bit KV (0.02): additive with the 1.25 margin, flagged as an unmeasured combination
    assert delta(tables, "llama-2-7b", "awq", 4, kv=4, kv_method="kivi") == (pytest.approx((0.15 + 0.02) * 1.25), 1, 0)
    # QuaRot W4A4KV4 row, KV pushed to 2 bit with the same rotated quantizer: increment D(2) - D(4)
    d = delta(tables, "llama-2-7b", "quarot", 4, 4, 2, group=0, kv_method="quarot_kv")[0]
    assert d == pytest.approx((0.63 + (9.23 - 5.47) - (5.51 - 5.47)) * 1.25)
    # 2:4 SparseGPT + AWQ W4: sum with the 1.5 sparsity margin
    assert delta(tables, "llama-2-7b", "awq", 4, nm=1) == (pytest.approx((0.15 + 10.17 - 5.12) * 1.5), 1, 0)
    # KV-only table point, and the 'any' method is the worst method with data
    assert delta(tables, "llama-2-7b", kv=2, kv_method="kvquant") == (pytest.approx(5.99 - 5.47), 0, 0)
    assert delta(tables, "llama-2-7b", kv=2)[0] == pytest.approx(9.23 - 5.47)


def test_conservative_interpolation_and_flags(tables):
    w4 = delta(tables, "llama-2-7b", "awq", 4)[0]
    assert delta(tables, "llama-2-7b", "awq", 5) == (w4, 0, 1)  # 5 bits bounded by the 4-bit point
    assert delta(tables, "llama-2-7b", "awq", 4, group=64) == (w4, 0, 1)  # finer groups bounded by g128
    assert delta(tables, "llama-2-7b", "awq", 4, group=256)[0] == pytest.approx(6.15 - 5.47)  # coarser: per-channel
    assert delta(tables, "llama-2-7b", frac=0.3, sparse_method="wanda") == (pytest.approx(6.42 - 5.12), 0, 1)
    for args in ({"w": 1.0}, {"frac": 0.6}, {"kv": 1.5}):  # below every table point: no data
        d, ext, itp = delta(tables, "llama-2-7b", "gptq", **args)
        assert d == np.inf and ext == 1 and itp == 0
    assert delta(tables, "llama-2-7b", "awq", 4, a=8)[0] == np.inf  # weight-only method has no W4A8 row
    assert delta(tables, "llama-3.2-1b", "awq", 4)[1] == 1  # every 1B value is transferred
    assert delta(tables, "mistral-7b", "awq", 4)[1] == 1  # instruct-model row
    assert delta(tables, "llama-2-7b", "fp8", 8, 8, 8, group=0)[1] == 1  # FP8 bounded by INT8 SmoothQuant


@pytest.mark.parametrize("method", ["smoothquant", "fp8"])
def test_per_channel_methods_ignore_the_group_size(tables, method):
    """SmoothQuant and FP8 scale weights per channel by construction: a group size reads per-channel
    (at g128 Llama-3-70B W8A8 KV8 read 0.02, under its direct per-channel measurement, +0.125)."""
    for fam in q.FAMILIES:
        for w, a, kv in ((8, 8, 8), (8, 8, 16), (8, 8, 4), (4, 4, 16), (6, 6, 16)):
            per_channel = delta(tables, fam, method, w, a, kv, group=0)
            for group in (32, 128, 256):
                assert delta(tables, fam, method, w, a, kv, group=group) == per_channel, (fam, w, a, kv, group)
    assert delta(tables, "llama-3-70b", "smoothquant", 8, 8, 8, group=128)[0] == pytest.approx(2.982 - 2.857)
    assert delta(tables, "llama-2-7b", "awq", 4, group=128) != delta(tables, "llama-2-7b", "awq", 4, group=0)


def test_eight_bit_weights_and_fp8_near_lossless(tables):
    for fam in q.FAMILIES:
        ref = qt._spec(str(qt.QUALITY_YAML))["families"][fam]["ref_ppl"]
        for method in ("rtn", "gptq", "awq"):
            d, ext, _ = delta(tables, fam, method, 8, group=0)
            assert d <= (0.07 if ext else 0.035) * ref, (fam, method, d)
        d, ext, _ = delta(tables, fam, "fp8", 8, 8, group=0)
        assert d <= (0.07 if ext else 0.035) * ref, (fam, d)


def test_fewer_bits_or_more_sparsity_never_improve(tables):
    k = random_designs(20000, seed=1)
    base = q.ppl_delta(tables, **k)["ppl_delta"]
    lower = {"w_bits": np.maximum(k["w_bits"] - 1.5, 0.5), "a_bits": np.maximum(k["a_bits"] - 3.0, 0.5),
             "kv_bits": k["kv_bits"] / 2, "w_sparsity_frac": np.minimum(k["w_sparsity_frac"] + 0.25, 1.0),
             "nm_sparse": np.where(k["w_sparsity_frac"] <= 0.5, 1.0, k["nm_sparse"]),  # 2:4 is 50% sparse
             "w_group_size": np.zeros_like(k["w_group_size"])}
    for key, worse in lower.items():
        after = q.ppl_delta(tables, **{**k, key: worse})["ppl_delta"]
        assert np.all(after >= base - 1e-12), key
    assert np.all(base >= 0)


def test_scalar_reference_matches_vectorised(tables):
    k = random_designs(600, seed=2)
    out = q.ppl_delta(tables, **k)
    ref = np.array([ppl_delta_scalar(tables, *(k[name][i] for name in (
        "family_code", "quant_method_code", "w_bits", "a_bits", "kv_bits", "w_sparsity_frac", "nm_sparse",
        "w_group_size", "kv_method_code", "sparse_method_code"))) for i in range(600)])
    assert_allclose(out["ppl_delta"], ref[:, 0], rtol=1e-12, atol=0)
    assert_array_equal(out["quality_extrapolated"], ref[:, 1])
    assert_array_equal(out["quality_interpolated"], ref[:, 2])


def test_broadcasting_and_codes(tables):
    out = q.ppl_delta(tables, FAM("llama-2-70b"), METH("gptq"), np.array([16, 8, 4, 3]), 16, 16, 0.0, 0)
    assert out["ppl_delta"].shape == (4,)
    assert np.all(np.diff(out["ppl_delta"]) >= 0)
    bad = q.ppl_delta(tables, np.array([-1, 99]), 0, 4, 16, 16, 0.0, 0)
    assert np.all(np.isinf(bad["ppl_delta"])) and np.all(bad["quality_extrapolated"] == 1)
    assert q.code(q.QUANT_METHODS, "awq") == 3
    with pytest.raises(ValueError, match="choose from"):
        q.code(q.QUANT_METHODS, "bitsandbytes")
