"""Energy of a device waiting in its collectives (:func:`dse.model.parallel.device_dynamic_j`):
closed form by hand, scalar reference on random batches, properties."""

from __future__ import annotations

import numpy as np

from dse.model import parallel as par
from dse.model import parallel_reference as ref
from dse.spec.registry import KNOB_DEFAULTS


def knobs(**kw):
    return {**KNOB_DEFAULTS, **kw}


def test_closed_form_by_hand():
    # 2 J of operators over 10 ms of compute (200 W); 1 ms of collectives per step, 3 steps, no
    # overlap: 3 ms exposed at 200 W = 0.6 J more; two micro-batches double the operators' part
    comm = {"comm_s": 1e-3}
    got = par.device_dynamic_j(2.0, 10e-3, comm, knobs(micro_batches=2.0), steps=3.0)
    assert np.isclose(got, 2.0 * 2.0 * (1.0 + 3e-3 / 10e-3))
    # half overlapped: exposed = 3 ms - 0.5 * min(10, 3) ms = 1.5 ms
    got = par.device_dynamic_j(2.0, 10e-3, comm, knobs(comm_overlap_frac=0.5), steps=3.0)
    assert np.isclose(got, 2.0 * (1.0 + 1.5e-3 / 10e-3))
    # fully hidden communication costs no energy beyond the operators'
    got = par.device_dynamic_j(2.0, 10e-3, comm, knobs(comm_overlap_frac=1.0), steps=3.0)
    assert np.isclose(got, 2.0)


def test_no_communication_is_exactly_the_operators_energy():
    dyn = np.array([0.1, 2.0, 30.0])
    got = par.device_dynamic_j(dyn, np.array([1e-3, 1e-2, 1.0]), {"comm_s": 0.0}, knobs(micro_batches=4.0))
    assert np.array_equal(got, dyn * 4.0)


def test_zero_compute_time_never_nan():
    got = par.device_dynamic_j(np.array([0.0, 1.0]), np.array([0.0, 0.0]), {"comm_s": np.array([1e-3, 1e-3])},
                               knobs())
    assert np.all(np.isfinite(got))


def test_matches_scalar_reference_and_never_below_operators():
    rng = np.random.default_rng(23)
    n = 500
    dyn = rng.uniform(0.0, 50.0, n)
    compute = rng.uniform(1e-5, 1.0, n)
    comm = {"comm_s": rng.choice([0.0, 1e-6, 1e-4, 1e-2], n)}
    k = knobs(micro_batches=rng.choice([1.0, 2.0, 8.0], n), comm_overlap_frac=rng.uniform(0.0, 1.0, n))
    steps = rng.integers(1, 300, n).astype(float)
    got = par.device_dynamic_j(dyn, compute, comm, k, steps)
    for i in range(n):
        ki = {key: float(v[i]) if np.ndim(v) else float(v) for key, v in k.items()}
        want = ref.device_dynamic_j_one(float(dyn[i]), float(compute[i]), {"comm_s": float(comm["comm_s"][i])}, ki,
                                        float(steps[i]))
        np.testing.assert_allclose(got[i], want, rtol=1e-12, atol=0.0)
    assert np.all(got >= dyn * k["micro_batches"] * (1 - 1e-12))
    # more overlap never costs more energy
    hidden = par.device_dynamic_j(dyn, compute, comm, {**k, "comm_overlap_frac": np.ones(n)}, steps)
    assert np.all(hidden <= got * (1 + 1e-12))
