"""Optuna search over a study's space (the only package that imports Optuna).

``distributions`` (space -> Optuna distributions), ``samplers`` (the sampler registry),
``nsga`` (incremental NSGA-II), ``storages`` (journal checkpoints, RDB), ``budget``
(shared-storage accounting), ``loop`` (ask/tell, progress), ``workers`` (processes),
``export`` (result files).
"""

from dse.search.loop import run_study
from dse.search.workers import run_workers

__all__ = ["run_study", "run_workers"]
