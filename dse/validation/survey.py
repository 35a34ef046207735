"""The survey reproduction's data: the published points and llm-dse's predictions for them.

Li et al., "Large Language Model Inference Acceleration: A Comprehensive Hardware
Perspective" (arXiv 2410.04466) compares ~7B decode at batch 1 (and batch 8) on CPU, GPU,
FPGA, ASIC and PIM/NDP platforms in one log-log scatter of decode tokens/s against power.
This module holds

* the survey's published batch-1 points (``validation/survey_points.csv``, :func:`load_points`);
* what llm-dse predicts for every preset (Llama-2-7B, the study's lengths): every design of
  the survey study (:func:`compute_predictions`, or a results folder of
  ``dse run studies/survey-bs{1,8}.yaml`` with ``trials.parquet``/``front.parquet``:
  :func:`load_predictions`, :func:`results_for`), and per preset the default software setting
  and the best one (:func:`preset_predictions`).

The figure is drawn by :mod:`dse.validation.survey_plot`; the published points are compared
with the predictions by :mod:`dse.validation.survey_compare`.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd

from dse.api import evaluate
from dse.results.io import read_table
from dse.results.tables import front_of
from dse.spec.errors import SpecError
from dse.spec.presets import load_platform, read_yaml, resolve
from dse.validation.validate import validation_dir

#: The software knobs of the survey study and their default values: uncompressed and dense, with
#: every decode GEMV on the PIM units where the preset has them (the device's own mapping; the
#: knob has no effect on a preset without PIM units).
DEFAULT_SETTING: dict[str, float] = {"w_bits": 16.0, "a_bits": 16.0, "kv_bits": 16.0, "nm_sparse": 0.0,
                                     "pim_offload": 2.0}
OBJECTIVES: list[tuple[str, bool]] = [("decode_tokens_per_s", True), ("decode_tokens_per_j", True)]
#: The survey studies' names (``studies/survey-bs<B>.yaml``).
STUDY = "survey-bs{batch}"


# ---- predictions ---------------------------------------------------------------------------

def compute_predictions(batch: int, *, study: str = "survey-bs1") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, front) of the survey study at ``batch``, computed with :func:`dse.evaluate`.

    Every design of the study's space (every preset x software setting, ``choices`` knobs),
    the study's model and fixed lengths, the batch given; ``feasible`` = fits in memory
    (the survey studies have no other constraint); the front is that of ``dse run``.
    """
    spec = read_yaml(resolve("studies", study))
    space = read_yaml(resolve("spaces", spec["space"]))
    knobs = space.get("knobs", {})
    names, values = [], []
    for name, knob in knobs.items():
        if not isinstance(knob, dict) or "choices" not in knob:
            raise SpecError(str(spec["space"]), f"knobs.{name}", "survey predictions need `choices` knobs", knob)
        names.append(name)
        values.append(list(knob["choices"]))
    designs = pd.DataFrame(list(itertools.product(*values)), columns=names)
    for name, value in {**space.get("fixed", {}), **spec.get("workload", {}), "batch": batch}.items():
        designs[name] = value
    trials = evaluate(designs, model=spec["model"])
    for col in names:
        if col != "platform":
            trials[col] = trials[col].astype(float)
    trials["feasible"] = trials["g_memory_bytes"] <= 0
    return trials, front_of(trials, OBJECTIVES, names)


def load_predictions(results_dir: str | Path | None, batch: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, front) from a study folder (``trials.parquet``, ``front.parquet``), else computed."""
    if results_dir is None:
        return compute_predictions(batch)
    folder = Path(results_dir)
    trials, front = read_table(folder / "trials.parquet"), read_table(folder / "front.parquet")
    batches = set(pd.to_numeric(trials["batch"]).unique()) if "batch" in trials else {float(batch)}
    if batches != {float(batch)}:
        raise SpecError(str(folder / "trials.parquet"), "batch", f"results are for batch {sorted(batches)}, "
                        f"not {batch}", sorted(batches))
    return trials, front



def results_for(results: str | Path | None, batch: int) -> Path | None:
    """The results folder of ``batch`` under ``results`` (``dse plot --survey --results DIR``): DIR/survey-bs<B>,
    DIR/bs<B> or DIR itself; None to compute the predictions."""
    if results is None:
        return None
    base = Path(results)
    for folder in (base / STUDY.format(batch=batch), base / f"bs{batch}", base):
        if (folder / "trials.parquet").is_file() and (folder / "front.parquet").is_file():
            trials = read_table(folder / "trials.parquet")
            if "batch" not in trials or set(pd.to_numeric(trials["batch"]).unique()) == {float(batch)}:
                return folder
    raise SpecError(str(base), "--results", f"no trials.parquet/front.parquet of batch {batch} "
                    f"(looked in {STUDY.format(batch=batch)}/, bs{batch}/ and the folder itself)", str(base))


def setting_mask(df: pd.DataFrame, setting: dict[str, float]) -> pd.Series:
    """Rows of ``df`` at ``setting`` (knobs ``df`` lacks are not checked)."""
    mask = pd.Series(True, index=df.index)
    for knob, value in setting.items():
        if knob in df:
            mask &= np.isclose(df[knob].astype(float), value)
    return mask


def setting_label(row: pd.Series | dict) -> str:
    """Short label of a software setting, e.g. ``w4a8kv4 2:4 pim``."""
    def bits(x: float) -> str:
        return f"{x:g}"
    text = f"w{bits(row['w_bits'])}a{bits(row['a_bits'])}kv{bits(row['kv_bits'])}"
    if row.get("nm_sparse", 0) > 0:
        text += " 2:4"
    if row.get("pim_offload", 0) > 0 and "platform" in row and _has_pim(str(row["platform"])):
        text += " pim"
    return text


def _has_pim(platform: str) -> bool:
    try:
        return load_platform(platform).fields.get("pim_peak_flop_per_s", 0.0) > 0
    except SpecError:
        return False


def preset_predictions(trials: pd.DataFrame) -> pd.DataFrame:
    """Two rows per preset: ``kind`` = ``default`` (:data:`DEFAULT_SETTING`; the widest weights
    that fit where 16-bit does not) and ``best`` (highest decode tokens/J among the settings that
    fit, then highest tokens/s), with ``platform_class``, ``tdp_w`` and ``setting``."""
    rows = []
    for platform, group in trials.groupby("platform", sort=False):
        preset = load_platform(str(platform))
        default = None
        for w_bits in sorted(group["w_bits"].unique(), reverse=True):
            cand = group[setting_mask(group, {**DEFAULT_SETTING, "w_bits": float(w_bits)})]
            if len(cand) and (default is None or cand["feasible"].any()):
                default = cand[cand["feasible"]].iloc[0] if cand["feasible"].any() else cand.iloc[0]
                if default["feasible"]:
                    break
        feasible = group[group["feasible"]]
        best = (feasible.sort_values(["decode_tokens_per_j", "decode_tokens_per_s"], ascending=False).iloc[0]
                if len(feasible) else None)
        for kind, row in (("default", default), ("best", best)):
            if row is None:
                continue
            rows.append({**row.to_dict(), "kind": kind, "platform_class": preset.platform_class,
                         "tdp_w": preset.fields["tdp_w"], "setting": setting_label(row)})
    return pd.DataFrame(rows)


# ---- published points ----------------------------------------------------------------------

def load_points() -> pd.DataFrame:
    """The survey's 180 published batch-1 points (``validation/survey_points.csv``)."""
    return pd.read_csv(validation_dir() / "survey_points.csv")


def cell_text(value: object) -> str:
    """A CSV cell as stripped text (empty for a missing value)."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()

