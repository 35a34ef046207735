"""A finished (or interrupted) search as result files: every completed trial's metrics rebuilt
(the model is deterministic), the feasible front, Parquet and a plot."""

from __future__ import annotations

import numpy as np
import optuna
from optuna.trial import TrialState

from dse.results.tables import design_table, front_of, write_results
from dse.search.designs import design_keys, first_of_each
from dse.search.distributions import distributions, is_valid_trial, params_arrays
from dse.spec.errors import redact
from dse.spec.study import Study
from dse.sweep.study import RunResult


def export(study: Study, work: optuna.Study) -> RunResult:
    """Write ``trials.parquet`` (one row per distinct design), ``front.parquet`` and ``front.png``
    of the study's completed trials."""
    dists = distributions(study.space)
    trials = [t for t in work.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if is_valid_trial(dists, len(study.objectives), t)]
    if trials:  # one row per distinct design: its first trial
        keep = first_of_each(design_keys(study.space, params_arrays(study.space, trials)))
        trials = [trials[i] for i in keep]
    params = params_arrays(study.space, trials) if trials else {k.name: np.zeros(0) for k in study.space.knobs}
    table = design_table(study, params, np.array([t.number for t in trials], dtype=np.int64))
    front = front_of(table, study.objectives, [k.name for k in study.space.knobs])
    paths = write_results(study, table, front, {"sampler": study.sampler,
                                                "storage": redact(study.storage or "journal")})
    return RunResult(len(table), 0, int(table["feasible"].sum()), len(front), 0.0, paths)
