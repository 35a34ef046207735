"""Distributed sweeps: a local Dask cluster of separate worker processes, and shards, give the
exact single-process front."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from dse.loading import load_study
from dse.sweep.study import SweepOptions, merge_shards, run_exhaustive


def front_indices(df: pd.DataFrame) -> list[int]:
    return sorted(df["design_index"].tolist())


@pytest.fixture()
def study(tmp_path):
    return replace(load_study("memory-decode"), output=tmp_path / "single")


def test_shards_merge_into_the_single_run_front(study, tmp_path):
    single = run_exhaustive(study, progress=False, options=SweepOptions(n_jobs=1))
    fronts = []
    for i in range(3):
        shard = replace(study, output=tmp_path / f"shard{i}")
        run_exhaustive(shard, progress=False, options=SweepOptions(n_jobs=1, shard=(i, 3)))
        fronts.append(pd.read_parquet(shard.output / "front.parquet"))
    merged = merge_shards(fronts, study)
    assert front_indices(merged) == front_indices(pd.read_parquet(single.paths["front"]))


@pytest.mark.slow
def test_dask_cluster_front_equals_single_process(study, tmp_path):
    distributed = pytest.importorskip("distributed")
    single = run_exhaustive(study, progress=False, options=SweepOptions(n_jobs=1))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
            distributed.Client(cl) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        on_dask = replace(study, output=tmp_path / "dask")
        run_exhaustive(on_dask, progress=False, options=SweepOptions(backend="dask", chunk_size=1024))
    assert front_indices(pd.read_parquet(on_dask.output / "front.parquet")) == \
        front_indices(pd.read_parquet(single.paths["front"]))
