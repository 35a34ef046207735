"""Merging sweep shards: exactly the shards 0/N .. N-1/N of one study, else one SpecError."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from dse.loading import load_study
from dse.spec.errors import SpecError
from dse.sweep.study import SweepOptions, merge_shard_folders, run_exhaustive

SPEC = {"name": "m", "platform": "h100-sxm", "model": "llama-2-7b", "sampler": "exhaustive",
        "space": {"knobs": {"batch": {"choices": [1, 2, 4, 8, 16, 32, 64]}, "w_bits": {"choices": [4, 8, 16]},
                            "kv_bits": {"choices": [8, 16]}, "in_len": {"choices": [128, 512, 2048]}}}}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    study = load_study(SPEC, output=root / "single")
    run_exhaustive(study, progress=False, options=SweepOptions(n_jobs=1))
    for i in range(3):
        run_exhaustive(replace(study, output=root / f"s{i}"), progress=False,
                       options=SweepOptions(n_jobs=1, shard=(i, 3), chunk_size=16))
    other = load_study({**SPEC, "name": "other"}, output=root / "other0")
    run_exhaustive(other, progress=False, options=SweepOptions(n_jobs=1, shard=(0, 3), chunk_size=16))
    return root, study


def test_the_complete_shard_set_merges_to_the_single_run_front(shards, tmp_path):
    root, study = shards
    result = merge_shard_folders(replace(study, output=tmp_path / "merged"), [root / f"s{i}" for i in range(3)])
    merged = pd.read_parquet(tmp_path / "merged" / "front.parquet")
    single = pd.read_parquet(root / "single" / "front.parquet")
    assert sorted(merged["design_index"]) == sorted(single["design_index"]) and result.front_size == len(single)
    assert result.n_trials == study.space.size


@pytest.mark.parametrize("folders, rule", [
    (["s0", "s1"], "the shard set is incomplete: missing 2/3"),
    (["s0", "s1", "s1", "s2"], "shard 1/3 given twice"),
    (["s0", "s1", "other0"], "not a shard of this study"),
    (["s0", "s1", "s2", "single"], "not a shard (a whole sweep or a search)"),
    (["s0", "nowhere"], "file not found"),
])
def test_a_wrong_shard_set_is_one_error(shards, tmp_path, folders, rule):
    root, study = shards
    with pytest.raises(SpecError, match=rule.replace("(", r"\(").replace(")", r"\)")):
        merge_shard_folders(replace(study, output=tmp_path / "merged"), [root / f for f in folders])
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize("kwargs, rule", [({"n_jobs": 0}, "must be >= 1 processes"),
                                           ({"backend": "foo"}, "must be one of"),
                                           ({"shard": (3, 3)}, "0 <= I < N")])
def test_bad_sweep_options_are_refused(kwargs, rule):
    with pytest.raises(SpecError, match=rule):
        SweepOptions(**kwargs)
