"""The vectorised model equals the scalar, step-by-step reference on random batches."""

from __future__ import annotations

import numpy as np
import pytest

from dse.model.pipeline import evaluate_arrays
from dse.model.reference import evaluate_one
from dse.spec.metrics import PERFORMANCE_METRICS
from dse.spec.presets import load_model, load_platform
from dse.spec.registry import CARD_FIELD_NAMES, HARDWARE_FIELD_NAMES, KNOB_NAMES
from dse.testing.conformance import assert_finite, assert_matches_reference
from tests.conftest import MODELS, PLATFORMS


def random_batch(rng, n):
    return {
        "batch": rng.integers(1, 65, n).astype(float),
        "in_len": rng.integers(1, 3000, n).astype(float),
        "out_len": rng.integers(1, 300, n).astype(float),
        "w_bits": rng.choice([2.0, 3.0, 4.0, 8.0, 16.0, 32.0], n),
        "a_bits": rng.choice([4.0, 8.0, 16.0], n),
        "kv_bits": rng.choice([4.0, 8.0, 16.0], n),
        "w_sparsity_frac": rng.choice([0.0, 0.3, 0.7], n),
        "nm_sparse": rng.choice([0.0, 1.0], n),
        "pim_offload": rng.choice([0.0, 1.0, 2.0], n),
        "spec_len": rng.choice([0.0, 0.0, 1.0, 4.0, 7.0], n),
        "spec_accept_frac": rng.uniform(0.0, 0.99, n),
        "spec_draft_frac": rng.choice([0.01, 0.1, 0.3], n),
        # parallelism: about half the rows on one device
        "tp": np.where(rng.random(n) < 0.5, 1.0, rng.choice([1.0, 2.0, 4.0, 8.0], n)),
        "pp": np.where(rng.random(n) < 0.6, 1.0, rng.choice([2.0, 3.0, 4.0], n)),
        "ep": np.where(rng.random(n) < 0.7, 1.0, rng.choice([2.0, 4.0], n)),
        "dp": rng.choice([1.0, 1.0, 2.0, 3.0], n),
        "micro_batches": rng.choice([1.0, 1.0, 2.0, 4.0], n),
        "comm_overlap_frac": rng.uniform(0.0, 1.0, n),
        "collective_algo": rng.choice([0.0, 1.0, 2.0, 3.0], n),
        "quant_method": rng.integers(0, 10, n).astype(float),  # integer-GEMM methods change the energy
    }


def random_system(rng, n):
    """Link and network fields per row (every collective finite)."""
    return {
        "n_devices_per_node": rng.choice([2.0, 4.0, 8.0], n),
        "link_topology": rng.choice([0.0, 1.0, 2.0, 3.0], n),
        "link_bw_bytes_per_s": rng.uniform(1e10, 1e12, n),
        "link_bw_eff_frac": rng.uniform(0.5, 1.0, n),
        "link_latency_s": rng.uniform(0.0, 5e-6, n),
        "link_energy_pj_per_bit": rng.uniform(0.0, 10.0, n),
        "fabric_bw_bytes_per_s": rng.choice([0.0, 6.4e10], n),
        "collective_overhead_s": rng.uniform(0.0, 1e-5, n),
        "internode_bw_bytes_per_s": rng.uniform(1e10, 1e11, n),
        "internode_latency_s": rng.uniform(1e-6, 1e-5, n),
        "internode_energy_pj_per_bit": rng.uniform(0.0, 100.0, n),
    }


@pytest.mark.parametrize("platform", PLATFORMS)
def test_vectorised_matches_reference(platform):
    rng = np.random.default_rng(abs(hash(platform)) % 2**32)
    n = 40
    k = random_batch(rng, n)
    models = [load_model(m) for m in MODELS]
    codes = rng.integers(0, len(models), n)
    m = {f: np.array([models[c].fields[f] for c in codes]) for f in CARD_FIELD_NAMES}
    hw = {f: np.full(n, load_platform(platform).fields[f]) for f in HARDWARE_FIELD_NAMES}
    # perturb the hardware per row as a search would
    hw["mem_bw_bytes_per_s"] = hw["mem_bw_bytes_per_s"] * rng.uniform(0.3, 3.0, n)
    hw["flop16_peak_flop_per_s"] = hw["flop16_peak_flop_per_s"] * rng.uniform(0.3, 3.0, n)
    hw["attn_stream_bw_bytes_per_s"] = rng.choice([0.0, 1e10, 4.21e10, 2e11], n)  # decode-attention stream limit
    hw["int_op_energy_ratio"] = rng.choice([1.0, 1.36, 2.5], n)  # integer weight GEMMs' energy
    hw["fp8_native"] = rng.choice([0.0, 1.0], n)  # FP8 designs without FP8 units run W8A16
    hw["decode_attn_energy_ratio"] = rng.choice([1.0, 0.8, 1.47], n)  # decode attention's kernels' energy
    hw["fp8_rate_frac"] = rng.choice([1.0, 0.5], n)  # FP8 GEMMs below the 8-bit peak (GeForce Ada)
    hw.update(random_system(rng, n))
    batch = {**m, **k, **hw}
    assert_matches_reference(lambda b: evaluate_arrays(*_split(b)), lambda r: evaluate_one(*_split(r)), batch,
                             rtol=1e-9, outputs=PERFORMANCE_METRICS)
    assert_finite(evaluate_arrays(m, k, hw))


def _split(batch):
    """(card fields, knobs, hardware fields) of a flat batch."""
    return ({f: batch[f] for f in CARD_FIELD_NAMES}, {f: batch[f] for f in KNOB_NAMES if f in batch},
            {f: batch[f] for f in HARDWARE_FIELD_NAMES})
