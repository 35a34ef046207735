"""Property-based fuzzing of the spec loaders, the expression language and the evaluator.

Whatever the input, only the project's own errors (SpecError) escape the loaders and the
expression evaluator, and no expression reaches Python; valid designs never give NaN or
infinite metrics.
"""

from __future__ import annotations

import ast
import itertools
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dse
from dse.loading import load_space, load_study
from dse.spec.errors import SpecError
from dse.spec.expr import FUNCTIONS, parse
from dse.spec.metrics import METRICS
from dse.spec.presets import (
    _card_from_mapping,
    _platform_from_mapping,
    builtin_names,
    load_model,
    load_platform,
    read_yaml,
)
from dse.spec.registry import KNOBS as KNOB_FIELDS

# DSE_FUZZ_EXAMPLES=5000 for a long hunt; the default keeps each test to a few seconds
FUZZ = settings(max_examples=int(os.environ.get("DSE_FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
MODELS = builtin_names("models")
PLATFORMS = builtin_names("platforms")

# ---- YAML-ish documents: mostly the shape each loader expects, with junk anywhere ------------
JUNK = (st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats() | st.text(max_size=12)
        | st.sampled_from(["", "\x00", "a" * 300, "1e999", "../x", "/tmp/x", "__import__('os')"]))
JUNK_VALUES = st.recursive(JUNK, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=6), inner, max_size=3), max_leaves=8)


def _or_junk(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """``strategy`` most of the time, else anything."""
    return st.one_of(*[strategy] * 5, JUNK_VALUES)


def _mapping(required: dict, optional: dict, junk_keys: bool = True) -> st.SearchStrategy[dict]:
    """A mapping with the given keys (each value possibly junk) and, at times, an unknown key."""
    base = st.fixed_dictionaries({k: _or_junk(v) for k, v in required.items()},
                                 optional={k: _or_junk(v) for k, v in optional.items()})
    if not junk_keys:
        return base
    extra = st.dictionaries(st.text(max_size=8), JUNK, max_size=1)
    return st.one_of(base, base, base, st.tuples(base, extra).map(lambda t: {**t[0], **t[1]}))


NUMBERS = st.sampled_from([0, 1, 2, 4, 8, 16, 64, 0.5, 1e9, 1e12, -1, 2**32, 10**400]) | st.floats() \
    | st.integers(-10, 10**6)
NAMES = ["batch", "in_len", "out_len", "w_bits", "a_bits", "kv_bits", "w_sparsity_frac", "nm_sparse", "pim_offload",
         "mem_technology", "n_mem_units", "mem_bw_tb_per_s", "mem_capacity_gib", "flop16_peak_tflop_per_s",
         "tdp_w", "static_power_w", "platform", "model", "x"]
CONDITIONS = st.sampled_from(["batch > 8", "mem_pim_capable > 0", "mem_technology == 'hbm3'", "platform == 'l4'",
                              "bacth < 2", "x", "1/0", "-(not batch)", "where(batch, 1, 0)", "__class__", "1 +"])
EXPRESSION_TEXTS = st.sampled_from(["2 * flop16_peak_flop_per_s", "0.15 * tdp_w", "100 + 0.6e-12 * batch", "tdp_w",
                                    "n_mem_units * 1e12", "1/0", "-1", "x * 2", "9 ** 9 ** 9", "batch > 1",
                                    "min(batch, 8)", "(lambda: 1)()", "'a'"])
CHOICES = st.lists(NUMBERS, max_size=4) | st.lists(st.sampled_from(["h100-sxm", "l4", "llama-2-7b", "hbm3", "hbm2-pim",
                                                                    "gddr6", "nope", ""]), max_size=3, unique=True)
KNOBS = _or_junk(_mapping({}, {"low": NUMBERS, "high": NUMBERS, "step": NUMBERS, "log": st.booleans(),
                               "type": st.sampled_from(["int", "float", "categorical"]), "choices": CHOICES,
                               "when": CONDITIONS, "default": NUMBERS | st.sampled_from(["hbm3", "l4"]),
                               "description": st.text(max_size=5)}) | CHOICES)
FIXED = NUMBERS | st.sampled_from(["h100-sxm", "llama-2-7b", "hbm3", "512 tokens"])
PLATFORM = st.sampled_from(["h100-sxm", "l4", "hbm-pim", "h100-sxm", "l4", "h100-sxn", "x.yaml"]) \
    | st.lists(st.sampled_from(["h100-sxm", "l4"]), max_size=2)
MODEL = st.sampled_from(["llama-2-7b", "mixtral-8x7b", "llama-2-7b", "llama-9"]) \
    | st.lists(st.sampled_from(MODELS), max_size=2)
SPACES = _mapping({"platform": PLATFORM, "model": MODEL}, {
    "knobs": st.dictionaries(st.sampled_from(NAMES), KNOBS, max_size=4),
    "fixed": st.dictionaries(st.sampled_from(NAMES), FIXED, max_size=3),
    "derived": st.dictionaries(st.sampled_from(NAMES), EXPRESSION_TEXTS, max_size=3),
    "name": st.text(max_size=5), "description": st.text(max_size=5)})
METRIC = st.sampled_from([*METRICS, "tokens_per_sec", "memory"])
STUDIES = _mapping({"space": st.sampled_from(["quickstart", "reference", "quickstrat", "x.yaml"]) | SPACES}, {
    "name": st.sampled_from(["s", "a/b", ".x", "ok-name"]), "description": st.text(max_size=5),
    "model": MODEL, "platform": PLATFORM,
    "workload": st.dictionaries(st.sampled_from(NAMES), FIXED | KNOBS, max_size=3),
    "objectives": st.lists(METRIC | _mapping({"metric": METRIC}, {"direction": st.sampled_from(["maximize", "up"])}),
                           max_size=3),
    "constraints": st.lists(_mapping({"metric": METRIC}, {"max": NUMBERS, "min": NUMBERS}), max_size=2),
    "sampler": st.sampled_from(["nsga2", "tpe", "grid", "exhaustive", "nsgaii"])
    | _mapping({"name": st.sampled_from(["random", "gp"])}, {"options": st.dictionaries(st.text(max_size=5), JUNK)}),
    "budget": _mapping({}, {"n_trials": NUMBERS, "timeout_s": NUMBERS}),
    "batch_size": NUMBERS, "seed": NUMBERS,
    "storage": st.sampled_from(["sqlite:///results/x.db", "sqlite:////tmp/x.db", "results/s.journal", "../s.journal",
                                "postgresql://u:p@h/db", "redis://h", "x"]),
    "output": st.sampled_from(["results/x", "results", "/tmp/x", "results/../../x", "", "x/y"]),
})


def _loads_or_spec_error(load, *args, **kwargs) -> None:
    try:
        load(*args, **kwargs)
    except SpecError as exc:
        assert len(str(exc).splitlines()) == 1, str(exc)


@FUZZ
@given(STUDIES)
def test_study_loader_raises_only_spec_errors(raw):
    _loads_or_spec_error(load_study, raw)


@FUZZ
@given(SPACES)
def test_space_loader_raises_only_spec_errors(raw):
    _loads_or_spec_error(load_space, raw)


def _file_fields(kind: str) -> dict:
    base = load_model("llama-2-7b") if kind == "card" else load_platform("hbm-pim")
    return {k: v for k, v in read_yaml(Path(base.path)).items() if k != "sources"}


@FUZZ
@given(st.sampled_from(["card", "preset"]).flatmap(lambda kind: st.tuples(st.just(kind), st.dictionaries(
    st.sampled_from([*_file_fields(kind), "mem_bw_gb_per_s", "mem_bw_tb_per_sec", "sources"]) | st.text(max_size=6),
    NUMBERS | JUNK, max_size=4))))
def test_card_and_preset_loaders_raise_only_spec_errors(kind_and_changes):
    kind, changes = kind_and_changes
    doc = {**_file_fields(kind), **changes}  # a valid file changed, so that the later checks are reached
    doc.setdefault("sources", {k: "s" for k in doc})
    loader = _card_from_mapping if kind == "card" else _platform_from_mapping
    _loads_or_spec_error(loader, doc, "fuzz.yaml")


YAML_TEXT = st.text(alphabet=st.sampled_from(list("abz019 :-[]{},&*!|>'\"#%@`\n\t.?~") + ["\x00", "\ufeff", "é"]),
                    max_size=120)


@FUZZ
@given(YAML_TEXT, st.sampled_from(["study", "space", "model", "platform"]))
def test_yaml_files_raise_only_spec_errors(text, kind):
    loader = {"study": load_study, "space": load_space, "model": load_model, "platform": load_platform}[kind]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzz-{kind}.yaml"
        path.write_text(text, encoding="utf-8")
        _loads_or_spec_error(loader, str(path))


@FUZZ
@given(st.text(max_size=300), st.sampled_from(["study", "space", "model", "platform"]))
def test_names_and_paths_raise_only_spec_errors(name, kind):
    loader = {"study": load_study, "space": load_space, "model": load_model, "platform": load_platform}[kind]
    _loads_or_spec_error(loader, name)


# ---- expressions --------------------------------------------------------------------------
EXPR_NAMES = ["batch", "w_bits", "tdp_w", "mem_technology", "platform", "x"]
CATEGORIES = {"mem_technology": ["hbm3", "hbm2-pim"], "platform": ["h100-sxm", "l4"]}
ENV = {"batch": np.array([1.0, 8.0, 64.0]), "w_bits": np.array([4.0, 8.0, 16.0]), "tdp_w": 700.0,
       "mem_technology": np.array([0.0, 1.0, 0.0]), "platform": np.array([1.0, 0.0, 1.0])}
ATOMS = st.sampled_from([*EXPR_NAMES, "'hbm3'", "'h100-sxm'", "'x'", "0", "1", "2.5", "1e308", "-1", "True", "None",
                         "__import__", "_x", "os", "open", "eval", "...", "b'x'", "1j"]) \
    | st.integers(-(10**20), 10**20).map(str) | st.floats(allow_nan=False).map(repr)
BINARY = st.sampled_from(["+", "-", "*", "/", "//", "%", "**", "<", "<=", ">", ">=", "==", "!=", " and ", " or ",
                          " in ", " is ", "@", "&", "|", "^", "<<"])
CALLS = st.sampled_from([*FUNCTIONS, "getattr", "exec", "__import__", "type", "range", "print"])


def _compose(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, BINARY, inner).map("".join),
        inner.map(lambda e: f"({e})"),
        inner.map(lambda e: f"-{e}"),
        inner.map(lambda e: f"not {e}"),
        st.tuples(CALLS, st.lists(inner, max_size=4)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.tuples(inner, inner, inner).map(lambda t: f"{t[0]} if {t[1]} else {t[2]}"),
        inner.map(lambda e: f"{e}.__class__"),
        inner.map(lambda e: f"{e}[0]"),
        inner.map(lambda e: f"(lambda: {e})()"),
        inner.map(lambda e: f"[{e} for _ in range(9)]"),
        inner.map(lambda e: f"f'{{{e}}}'"),
        inner.map(lambda e: f"(y := {e})"),
    )


EXPRESSIONS = st.recursive(ATOMS, _compose, max_leaves=12) | st.text(
    alphabet=st.sampled_from(list("abtchw_0123456789 +-*/%<>=!()[]{}.,:'\"")), max_size=60)


@FUZZ
@given(EXPRESSIONS)
def test_expressions_raise_only_spec_errors_and_never_reach_python(text):
    try:
        expr = parse(text, file="fuzz.yaml", key="derived.x")
    except SpecError:
        return
    tree = ast.parse(text, mode="eval")
    for node in ast.walk(tree):  # what parse accepts holds no door into Python
        assert not isinstance(node, (ast.Attribute, ast.Subscript, ast.Lambda, ast.comprehension, ast.Starred,
                                     ast.JoinedStr, ast.NamedExpr))
        if isinstance(node, ast.Name):
            assert not node.id.startswith("_")
    try:
        value = expr(ENV, CATEGORIES)
    except SpecError as exc:
        assert exc.file == "fuzz.yaml" and exc.key_path == "derived.x"
        return
    assert isinstance(value, (np.ndarray, np.generic, float, bool)), type(value)
    assert np.asarray(value).dtype.kind in "fb", np.asarray(value).dtype


def test_expressions_that_reach_for_python_are_refused():
    for text in ("__import__('os').system('true')", "().__class__.__bases__[0].__subclasses__()",
                 "open('/etc/passwd')", "eval('1')", "getattr(batch, 'real')", "batch.real",
                 "[x for x in range(10**9)]", "(lambda: 1)()", "f'{batch}'", "batch[0]", "*batch",
                 "(y := 1)", "'a' * 10**9", "9" * 400, "1e999"):
        with pytest.raises(SpecError):
            expr = parse(text, file="f.yaml", key="derived.x")
            expr(ENV, CATEGORIES)


# ---- the evaluator ------------------------------------------------------------------------
def _knob_value(f) -> st.SearchStrategy[float]:
    """A valid value of knob ``f``: any float in range, whole numbers for the whole-number kinds."""
    if f.kind == "float":
        return st.floats(f.low, f.high) | st.sampled_from([f.low, f.high])
    return st.integers(int(f.low), int(f.high)).map(float)


def _knob_values(n: int) -> st.SearchStrategy[dict[str, np.ndarray]]:
    return st.fixed_dictionaries({
        f.name: st.lists(_knob_value(f), min_size=n, max_size=n).map(np.array) for f in KNOB_FIELDS})


# hardware overrides within what a preset may hold (dse.spec.presets checks), over many orders of magnitude:
# field -> (smallest non-zero value, largest value, may be 0)
_HW_RANGES = {
    "flop32_peak_flop_per_s": (1e6, 1e18, False), "flop16_peak_flop_per_s": (1e6, 1e18, True),
    "flop8_peak_flop_per_s": (1e6, 1e18, True), "flop4_peak_flop_per_s": (1e6, 1e18, True),
    "mem_bw_bytes_per_s": (1e6, 1e15, False), "mem_capacity_bytes": (1e6, 1e15, False),
    "mem_energy_pj_per_bit": (1e-3, 1e3, True), "flop16_energy_pj_per_flop": (1e-3, 1e3, True),
    "sram_bytes": (1e3, 1e10, True), "compute_eff_frac": (1e-3, 1.0, False), "mem_bw_eff_frac": (1e-3, 1.0, False),
    "kernel_overhead_s": (1e-9, 1e-2, True), "pim_bw_bytes_per_s": (1e6, 1e16, True),
    "pim_peak_flop_per_s": (1e6, 1e16, True), "static_power_w": (1e-3, 1e4, True),
    "host_link_bw_bytes_per_s": (1e6, 1e13, True),
}


def _hardware_value(name: str) -> st.SearchStrategy[float]:
    lo, hi, zero = _HW_RANGES[name]
    log_uniform = st.floats(0.0, 1.0).map(lambda u: lo * (hi / lo) ** u)
    return (st.just(0.0) | log_uniform) if zero else log_uniform


HARDWARE = st.lists(st.sampled_from(sorted(_HW_RANGES)), max_size=6, unique=True).flatmap(
    lambda names: st.fixed_dictionaries({n: _hardware_value(n) for n in names}))


def _beyond_float(system_cost_usd, tokens_per_s):
    """Where a cost per million tokens may be inf: nothing served, or capex alone (amortised over
    the longest lifetime the registry allows, 50 years) per million tokens beyond ~1e300 USD."""
    capex_per_hour = np.asarray(system_cost_usd) / (50.0 * 8784.0)
    with np.errstate(divide="ignore"):
        log_usd = np.log10(capex_per_hour) - np.log10(np.asarray(tokens_per_s) * 3600.0) + 6.0
    return (np.asarray(tokens_per_s) < 1e-100) | (log_usd > 300.0)


@FUZZ
@given(st.integers(1, 6).flatmap(_knob_values), st.sampled_from(MODELS), st.sampled_from(PLATFORMS), HARDWARE)
def test_valid_designs_give_finite_metrics(knobs, model, platform, hw):
    columns = {**knobs, **hw}
    if "static_power_w" in columns:  # a preset needs tdp_w > static_power_w
        columns["tdp_w"] = columns["static_power_w"] * 1.5 + 1.0
    out = dse.Evaluator(model, platform)(columns)
    for name in METRICS:
        if name not in out:  # the serving stage runs only with a workload column
            continue
        values = out[name]
        assert not np.any(np.isnan(values)), (name, values)
        if name == "ppl_delta":  # inf is the documented "no data" value (flagged)
            assert np.all(out["quality_extrapolated"][np.isinf(values)] == 1)
        elif name == "serving_usd_per_mtoken":  # inf where nothing is served, or beyond the float range
            assert np.all(_beyond_float(out["system_cost_usd"], out["serving_tokens_per_s"])[np.isinf(values)])
        elif name == "usd_per_mtoken":
            assert np.all(_beyond_float(out["system_cost_usd"], out["decode_tokens_per_s"])[np.isinf(values)])
        elif name == "ttft_p90_s":  # inf where the offered rate reaches capacity
            assert np.all(out["serving_capacity_req_per_s"][np.isinf(values)] * 0 == 0)
        else:
            assert np.all(np.isfinite(values)), (name, values)


def test_every_preset_and_card_at_the_corners_gives_finite_metrics():
    """Every corner of the workload knobs, and of the mapping knobs, on every card and preset."""
    groups = [[f for f in KNOB_FIELDS if f.stage == "workload"], [f for f in KNOB_FIELDS if f.stage == "mapping"]]
    for fields in groups:
        corners = list(itertools.product(*[(f.low, f.high) for f in fields]))
        designs = pd.DataFrame(corners, columns=[f.name for f in fields])
        for model, platform in itertools.product(MODELS, PLATFORMS):
            out = dse.evaluate(designs, model=model, platform=platform)
            metrics = out[[m for m in METRICS if m in out and m != "ppl_delta"]].to_numpy()
            assert np.all(np.isfinite(metrics)), (model, platform)
            assert not out["ppl_delta"].isna().any()


def test_pim_compute_without_pim_bandwidth_gives_finite_metrics():
    out = dse.Evaluator("llama-2-7b", "h100-sxm")({"pim_offload": 2.0, "pim_peak_flop_per_s": 1e12})
    assert all(np.all(np.isfinite(out[name])) for name in METRICS if name in out)
