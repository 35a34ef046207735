"""Declarative search spaces (``spaces/*.yaml``): knobs, fixed values, derived expressions.

A space names a base platform preset (or lets ``platform`` be a knob), declares knobs
that map one-to-one to Optuna distributions (float/int ``low``/``high``/``step``/``log``,
categorical ``choices``), conditional knobs (``when``: an expression; elsewhere the
knob takes its ``default``), fixed overrides and derived fields (expressions of other
names, evaluated on arrays by :mod:`dse.spec.expr`). ``mem_technology`` is a categorical
whose choices carry per-unit bandwidth, capacity and energy from
``spaces/memory_technologies.yaml``; with ``n_mem_units`` they set the memory fields.

YAML may use prefixed units (``mem_bw_tb_per_s``); the space converts to SI once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dse.spec.errors import SpecError, check_keys, did_you_mean
from dse.spec.expr import Expr, order_derived, parse
from dse.spec.presets import (
    builtin_names,
    data_dir,
    is_finite_number,
    load_model,
    load_platform,
    near,
    read_yaml,
    resolve,
)
from dse.spec.registry import INPUT_COLUMNS, INPUT_FIELDS, MEMORY_TECHNOLOGIES, RESERVED_NAMES
from dse.spec.units import to_si

MAX_SPACE_SIZE = 10**15
CATEGORICAL_STRINGS = ("platform", "model", "mem_technology")
_TECH_FIELDS = {  # technology table key (SI) -> variable exposed to expressions
    "bw_per_unit_bytes_per_s": "mem_unit_bw_bytes_per_s",
    "capacity_per_unit_bytes": "mem_unit_capacity_bytes",
    "energy_pj_per_bit": "mem_energy_pj_per_bit",
    "pim_bw_per_unit_bytes_per_s": "pim_unit_bw_bytes_per_s",
    "pim_peak_per_unit_flop_per_s": "pim_unit_flop_per_s",
    "pim_energy_pj_per_bit": "pim_energy_pj_per_bit",
    "pim_energy_pj_per_flop": "pim_energy_pj_per_flop",
    "pim_capable": "mem_pim_capable",
}
_SPACE_KEYS = ("name", "description", "platform", "model", "knobs", "fixed", "derived")
_KNOB_KEYS = ("type", "low", "high", "step", "log", "choices", "when", "default", "description")


@dataclass(frozen=True)
class Knob:
    """One searched dimension, SI units. ``choices`` for categoricals, else a numeric range."""

    name: str
    kind: str  # "float" | "int" | "categorical"
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False
    choices: tuple = ()
    when: Expr | None = None
    default: Any = None

    @property
    def n_values(self) -> int | None:
        """Number of distinct values, None for a continuous float range."""
        if self.kind == "categorical":
            return len(self.choices)
        if self.step is None:  # continuous float range
            return 1 if self.low == self.high else None
        return int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1

    def values(self) -> np.ndarray:
        """All values of a finite knob (codes 0..n-1 for string categoricals)."""
        if self.kind == "categorical":
            return np.arange(len(self.choices), dtype=float) if _is_strings(self.choices) else \
                np.asarray(self.choices, dtype=float)
        return self.value_at(np.arange(self.n_values or 0))

    def value_at(self, index: np.ndarray) -> np.ndarray:
        """The values at positions ``index`` of :meth:`values`, without building them all."""
        if self.kind == "categorical":
            return self.values()[index]
        step = self.step if self.step is not None else 1.0
        return self.low + step * np.asarray(index, dtype=float)


def _is_strings(choices: tuple) -> bool:
    return bool(choices) and isinstance(choices[0], str)


# every named categorical input (workload, quant_method, mem_technology_code, ...) -> the names of its codes
_NAMED_CODES: dict[str, list[str]] = {f.name: list(f.choices) for f in INPUT_FIELDS.values() if f.choices}


def _named_codes(name: str) -> list[str]:
    """The registry's choice names of a categorical input field (codes are their positions), or []."""
    return _NAMED_CODES.get(name, [])


@dataclass
class Space:
    """A validated search space; see the module docstring for the YAML form."""

    name: str
    file: str
    knobs: list[Knob]
    fixed: dict[str, Any]
    derived: dict[str, Expr]
    derived_order: list[str]
    platforms: list[str]
    models: list[str]
    technologies: dict[str, dict[str, float]] = field(default_factory=dict)  # code order
    description: str = ""
    origins: dict[str, tuple[str, str]] = field(default_factory=dict)  # column -> (file, key path) that set it

    @property
    def serves(self) -> bool:
        """True when the space sets a ``workload``: its designs get the serving stage's metrics."""
        return "workload" in self.fixed or any(k.name == "workload" for k in self.knobs)

    def fingerprint(self) -> dict[str, Any]:
        """What the space searches, resolved: knobs, fixed and derived columns, technologies and the
        fields of its platform presets and model cards (a spec hash covers files a study only names)."""
        knobs = {k.name: {"kind": k.kind, "low": k.low, "high": k.high, "step": k.step, "log": k.log,
                          "choices": list(k.choices), "when": k.when.text if k.when is not None else None,
                          "default": k.default} for k in self.knobs}  # by name: the file's key order is no change
        return {"knobs": knobs, "fixed": self.fixed, "derived": {n: self.derived[n].text for n in self.derived_order},
                "technologies": self.technologies,
                "platforms": {p: load_platform(p).fields for p in self.platforms},
                "models": {m: load_model(m).fields for m in self.models}}

    # ---- finite enumeration (exhaustive sweep) ------------------------------------------
    @property
    def size(self) -> int | None:
        """Number of designs, None if any knob is continuous."""
        total = 1
        for k in self.knobs:
            n = k.n_values
            if n is None:
                return None
            total *= n
        return total

    def params_at(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """Knob values (string categoricals as codes) of flat design indices (mixed radix, last knob fastest)."""
        rest = np.asarray(index, dtype=np.int64)
        params: dict[str, np.ndarray] = {}
        for knob in reversed(self.knobs):
            n = knob.n_values
            params[knob.name] = knob.value_at(rest % n)
            rest = rest // n
        return {k.name: params[k.name] for k in self.knobs}

    def columns_at(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """Evaluator columns of flat design indices (see :meth:`params_at`); a derived value may be
        non-finite for some (the evaluator of a sweep flags those designs)."""
        return self.columns(self.params_at(index), strict=False)

    # ---- params -> evaluator columns ----------------------------------------------------
    def categories(self) -> dict[str, list[str]]:
        """String categoricals and their choices (codes index these lists)."""
        out = {"platform": self.platforms, "model": self.models}
        for knob in self.knobs:
            if _is_strings(knob.choices) and _named_codes(knob.name):
                out[knob.name] = list(knob.choices)
        if self.technologies:
            out["mem_technology"] = list(self.technologies)
        return out

    def columns(self, params: dict[str, Any], *, strict: bool = True) -> dict[str, np.ndarray]:
        """Evaluator columns from knob values (string categoricals as codes), SI units.

        Applies conditions (``when``), fixed values, the memory-technology table and the
        derived expressions, then keeps the columns the evaluator reads. ``strict``: a
        derived value that is not finite raises; else it is passed on, for the evaluator of
        a study to flag the design infeasible (:class:`dse.loading.SpaceEvaluator`).
        """
        env, cats, _ = self._conditioned(params)
        for name in self.derived_order:  # cats: the names of the codes in env, as the `when`s read them
            value = self.derived[name](env, cats)
            if strict and not np.all(np.isfinite(value)):
                raise SpecError(self.file, f"derived.{name}", "expression gives a non-finite value",
                                self.derived[name].text)
            env[name] = value
        return {k: v for k, v in env.items() if k in INPUT_COLUMNS}

    def _conditioned(self, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]], Any]:
        """The expression environment after fixed values, the technology table and the ``when``
        conditions; the names its codes index (what a name compared in an expression means); and
        whether each setting stands for its design (see :meth:`distinct_at`).

        Every string categorical is coded once, before any expression reads it: a named
        categorical (workload, quant_method, ...) by the registry's code of its name, as the
        evaluator reads it (a fixed one already is); platform, model and memory technology by
        position in the space's lists (:meth:`categories`).
        """
        cats = {**self.categories(), **_NAMED_CODES}
        env: dict[str, Any] = {}
        for name, value in self.fixed.items():
            env[name] = float(cats[name].index(value)) if isinstance(value, str) else value
        for knob in self.knobs:
            env[knob.name] = np.asarray(params[knob.name], dtype=float)
            if _is_strings(knob.choices):  # positions in the knob's choices -> codes of the names
                codes = np.array([float(cats[knob.name].index(c)) for c in knob.choices])
                env[knob.name] = codes[env[knob.name].astype(np.int64)]
        if "mem_technology" in env:
            self._apply_technology(env)
        stands: Any = True
        for knob in self.knobs:
            if knob.when is not None:
                cond = np.asarray(knob.when(env, cats)) != 0
                stands = stands & (cond | (np.asarray(params[knob.name], dtype=float) == knob.value_at(np.array(0))))
                default = float(cats[knob.name].index(knob.default)) if isinstance(knob.default, str) else knob.default
                env[knob.name] = np.where(cond, env[knob.name], default)
        return env, cats, stands

    def distinct_at(self, index: np.ndarray) -> np.ndarray | None:
        """Whether each design index stands for its design (None: all do, no knob has a condition).

        A knob that its ``when`` switches off takes its default whatever its value, so the
        settings that differ only in it are one design: the one with the knob at its first
        value stands for it, the others repeat it (an exhaustive sweep skips them).
        """
        if not any(k.when is not None for k in self.knobs):
            return None
        index = np.asarray(index, dtype=np.int64)
        return np.broadcast_to(self._conditioned(self.params_at(index))[2], index.shape)

    def _apply_technology(self, env: dict[str, Any]) -> None:
        codes = np.asarray(env["mem_technology"], dtype=np.int64)
        table = list(self.technologies.values())
        for key, var in _TECH_FIELDS.items():
            env[var] = np.array([t.get(key, 0.0) for t in table])[codes]
        # the cost/area/static-power stages read the technology by its registry code, not the space's
        registry_code = np.array([float(MEMORY_TECHNOLOGIES.index(name)) for name in self.technologies])
        env["mem_technology_code"] = registry_code[codes]
        n_units = env.get("n_mem_units")
        if n_units is not None:
            env["mem_bw_bytes_per_s"] = n_units * env["mem_unit_bw_bytes_per_s"]
            env["mem_capacity_bytes"] = n_units * env["mem_unit_capacity_bytes"]
            env["pim_bw_bytes_per_s"] = n_units * env["pim_unit_bw_bytes_per_s"]
            env["pim_peak_flop_per_s"] = n_units * env["pim_unit_flop_per_s"]

    def decode(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Replace string-categorical codes by their names (for tables and plots): platform, model
        and memory technology by position in the space's lists; named categoricals (workload,
        quant_method, ...) by the registry's codes, as :meth:`columns` gives them."""
        out = dict(columns)
        categories = self.categories()
        for name, choices in categories.items():
            if name in out and np.ndim(out[name]) > 0:
                names = _named_codes(name) or choices
                out[name] = np.asarray(names, dtype=object)[np.asarray(out[name], dtype=np.int64)]
        for name, value in columns.items():  # fixed or derived named categoricals (a study's workload)
            names = _named_codes(name) if name not in categories else ()
            if names and np.asarray(value).dtype.kind in "iuf":
                decoded = np.asarray(names, dtype=object)[np.asarray(value, dtype=np.int64)]
                out[name] = decoded if np.ndim(decoded) else str(decoded)
        return out


def load_technologies() -> dict[str, dict[str, float]]:
    """The memory-technology table (SI keys) from ``spaces/memory_technologies.yaml``."""
    path = data_dir("spaces") / "memory_technologies.yaml"
    raw = read_yaml(path)
    out = {}
    for name, entry in (raw or {}).get("technologies", {}).items():
        row = {}
        for key, value in entry.items():
            si_key, factor = to_si(key)
            if isinstance(value, bool) or isinstance(value, (int, float)):
                row[si_key] = float(value) * factor
        out[name] = row
    return out


def _finite(file: str, key: str, value: Any) -> float:
    if not is_finite_number(value):
        raise SpecError(file, key, "must be a finite number", value)
    return float(value)


def _knob(file: str, path: str, name: str, raw: Any) -> Knob:
    """One knob from its YAML (a mapping, or a list of choices) at key path ``path``."""
    if isinstance(raw, list):
        raw = {"choices": raw}
    if not isinstance(raw, dict):
        raise SpecError(file, path, "must be a mapping (low/high/step/log or choices)", raw)
    check_keys(file, path, raw, _KNOB_KEYS)
    si_name, factor = to_si(name)
    when = parse(raw["when"], file=file, key=f"{path}.when") if "when" in raw else None
    if when is not None and "default" not in raw:
        raise SpecError(file, f"{path}.default", "a conditional knob needs a default", None)
    if "choices" in raw:
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise SpecError(file, f"{path}.choices", "must be a non-empty list", choices)
        kinds = {type(c) for c in choices}
        if kinds <= {str}:
            if si_name not in CATEGORICAL_STRINGS and not _named_codes(si_name):
                named = [*CATEGORICAL_STRINGS, *(f.name for f in INPUT_FIELDS.values() if f.choices)]
                raise SpecError(file, f"{path}.choices", f"string choices only for {named}", choices)
            for c in choices if _named_codes(si_name) else ():
                if c not in _named_codes(si_name):
                    hint = did_you_mean(c, _named_codes(si_name))
                    raise SpecError(file, f"{path}.choices", f"must be one of {list(_named_codes(si_name))}{hint}", c)
        elif kinds <= {int, float}:
            bad = [c for c in choices if not is_finite_number(c)]
            if bad:
                raise SpecError(file, f"{path}.choices", "must be finite numbers", bad[0])
            choices = [float(c) * factor for c in choices]
        else:
            raise SpecError(file, f"{path}.choices", "must be all numbers or all strings", choices)
        if len(set(choices)) != len(choices):
            raise SpecError(file, f"{path}.choices", "must not repeat a value", choices)
        default = raw.get("default", choices[0])
        if "default" in raw and _is_strings(tuple(choices)) and default not in choices:
            raise SpecError(file, f"{path}.default", "must be one of the choices", default)
        if "default" in raw and not _is_strings(tuple(choices)):
            default = _finite(file, f"{path}.default", default) * factor
        return Knob(si_name, "categorical", choices=tuple(choices), when=when, default=default)
    for key in ("low", "high"):
        if key not in raw:
            raise SpecError(file, f"{path}.{key}", "required (or give choices)", None)
        _finite(file, f"{path}.{key}", raw[key])
    kind = raw.get("type", "int" if all(isinstance(raw[k], int) for k in ("low", "high")) and
                   isinstance(raw.get("step", 1), int) else "float")
    if kind not in ("int", "float"):
        raise SpecError(file, f"{path}.type", "must be int or float", kind)
    low, high = float(raw["low"]) * factor, float(raw["high"]) * factor
    if low > high:
        raise SpecError(file, f"{path}.low", f"must be <= high ({raw['high']})", raw["low"])
    step = raw.get("step")
    if step is not None:
        if not is_finite_number(step) or step <= 0:
            raise SpecError(file, f"{path}.step", "must be a positive number", step)
        step = float(step) * factor
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise SpecError(file, f"{path}.log", "must be true or false", log)
    if log and (low <= 0 or step is not None and kind == "float"):
        raise SpecError(file, f"{path}.log", "log needs low > 0 and no float step", raw.get("low"))
    if kind == "int" and (low != int(low) or high != int(high)):
        raise SpecError(file, f"{path}.low", "int knob bounds must be integers", raw["low"])
    if kind == "int":
        step = step or 1.0
        if step != int(step):
            raise SpecError(file, f"{path}.step", "an int knob needs an integer step", raw.get("step"))
        if log and step != 1.0:
            raise SpecError(file, f"{path}.step", "an int log knob must have step 1", raw.get("step"))
    if step is not None and (high - low) / step > MAX_SPACE_SIZE:
        key = f"{path}.step" if "step" in raw else f"{path}.high"
        raise SpecError(file, key, f"gives more than {MAX_SPACE_SIZE:.0e} values", raw.get("step", raw["high"]))
    default = _finite(file, f"{path}.default", raw["default"]) * factor if "default" in raw else low
    return Knob(si_name, kind, low, high, step, log, (), when, default)


def load_space(source: str | Path | dict, *, file: str | None = None, platform: str | list | None = None,
               model: str | list[str] | None = None, extra_fixed: dict | None = None,
               extra_knobs: dict | None = None, origin: str = "") -> Space:
    """Load and validate a space from a built-in name, a YAML path or a mapping.

    ``platform``/``model`` replace the space's own; ``extra_fixed``/``extra_knobs`` (from a
    study's ``workload`` section) replace the space's knob or fixed value of the same name.
    Errors are one-line SpecErrors naming the file and key that set the bad value: ``origin``
    (the study's file) for the arguments, the space's file for its own keys.
    """
    if isinstance(source, dict):
        raw, file = source, file or "<space>"
    else:
        path = resolve("spaces", source)
        raw, file = read_yaml(path), str(path)
    origin = origin or file
    if not isinstance(raw, dict):
        raise SpecError(file, "", "top level must be a mapping", type(raw).__name__)
    check_keys(file, "", raw, _SPACE_KEYS)
    sections = {key: raw.get(key) or {} for key in ("knobs", "fixed", "derived")}
    for key, section in sections.items():
        if not isinstance(section, dict):
            raise SpecError(file, key, "must be a mapping", section)
    # name -> (file, key path, value); a study's workload entry replaces the space's of that name
    knobs_raw = {str(n): (file, f"knobs.{n}", v) for n, v in sections["knobs"].items()}
    fixed_raw = {str(n): (file, f"fixed.{n}", v) for n, v in sections["fixed"].items()}
    for extra, mine, other in ((extra_knobs, knobs_raw, fixed_raw), (extra_fixed, fixed_raw, knobs_raw)):
        for n, v in (extra or {}).items():
            other.pop(str(n), None)
            mine[str(n)] = (origin, f"workload.{n}", v)
    entries: list[tuple[str, str, str]] = []  # (SI name, file, key path) of every knob, fixed and derived
    knobs = []
    for name, (at, key, value) in knobs_raw.items():
        knobs.append(_knob(at, key, name, value))
        entries.append((knobs[-1].name, at, key))
    names = [k.name for k in knobs]
    fixed: dict[str, Any] = {}
    for name, (at, key, value) in fixed_raw.items():
        si, factor = to_si(name)
        if isinstance(value, str) and _named_codes(si):
            if value not in _named_codes(si):
                hint = did_you_mean(value, _named_codes(si))
                raise SpecError(at, key, f"must be one of {list(_named_codes(si))}{hint}", value)
            value = float(_named_codes(si).index(value))  # the registry's code of the name
        if isinstance(value, str) and si not in CATEGORICAL_STRINGS:
            raise SpecError(at, key, "must be a number", value)
        fixed[si] = value if isinstance(value, str) else _finite(at, key, value) * factor
        entries.append((si, at, key))
    derived: dict[str, Expr] = {}
    for name, text in sections["derived"].items():
        si, factor = to_si(str(name))
        if factor != 1.0:
            raise SpecError(file, f"derived.{name}", f"a derived value is in SI units: name it {si}", name)
        if si in CATEGORICAL_STRINGS:
            raise SpecError(file, f"derived.{name}", "a name, not a number: make it a knob or a fixed value", name)
        derived[si] = parse(text, file=file, key=f"derived.{name}")
        entries.append((si, file, f"derived.{name}"))
    where: dict[str, tuple[str, str]] = {}  # SI name -> (file, key path) that set it
    for si, at, key in entries:
        if si in RESERVED_NAMES:
            raise SpecError(at, key, "reserved: a result column (trial, design_index, feasible or a metric), "
                            "not a design variable", si)
        if si in where:
            raise SpecError(at, key, f"set twice (also by {where[si][1]})", si)
        where[si] = (at, key)

    # platforms and models: knob choices, fixed values, or the arguments / space defaults
    at_platform = (origin, "platform") if platform is not None else (file, "platform")
    at_model = (origin, "model") if model is not None else (file, "model")
    platforms = _names_for("platform", knobs, fixed, where, platform if platform is not None
                           else near(file, raw.get("platform")), at_platform)
    models = _names_for("model", knobs, fixed, where, model if model is not None else near(file, raw.get("model")),
                        at_model)
    if "platform" not in names and "platform" in fixed:
        fixed.pop("platform")
    if "model" not in names and "model" in fixed:
        fixed.pop("model")
    technologies = load_technologies() if ("mem_technology" in names or "mem_technology" in fixed) else {}
    for knob in knobs:
        if knob.name == "mem_technology":
            for c in knob.choices:
                if c not in technologies:
                    at, key = where["mem_technology"]
                    raise SpecError(at, f"{key}.choices", f"unknown memory technology{did_you_mean(c, technologies)}",
                                    c)
    if "mem_technology" in fixed and fixed["mem_technology"] not in technologies:
        hint = did_you_mean(str(fixed["mem_technology"]), technologies)
        raise SpecError(*where["mem_technology"], f"unknown memory technology{hint}", fixed["mem_technology"])
    if technologies:  # keep the used ones, in the order their codes index
        used = next((list(k.choices) for k in knobs if k.name == "mem_technology"), [fixed.get("mem_technology")])
        technologies = {name: technologies[name] for name in used}

    known = set(INPUT_COLUMNS) | set(names) | set(fixed) | set(_TECH_FIELDS.values()) | {"n_mem_units"}
    order = order_derived(derived, known, file=file)
    used = set().union(*(e.names for e in derived.values()), *(k.when.names for k in knobs if k.when)) \
        if (derived or any(k.when for k in knobs)) else set()
    for name in names + list(fixed) + list(derived):
        if name not in INPUT_COLUMNS and name not in used and name not in ("mem_technology", "n_mem_units"):
            hint = did_you_mean(name, INPUT_COLUMNS)
            raise SpecError(*where[name], f"not a design column and not used by any expression{hint}", name)
    space = Space(raw.get("name", Path(file).stem), file, knobs, fixed, derived, order, platforms, models,
                  technologies, raw.get("description", ""), where)
    size = space.size
    if size is not None and size > MAX_SPACE_SIZE:
        raise SpecError(file, "knobs", f"space has more than {MAX_SPACE_SIZE:.0e} designs", size)
    return space


def _names_for(what: str, knobs: list[Knob], fixed: dict, where: dict[str, tuple[str, str]], given: Any,
               at: tuple[str, str]) -> list[str]:
    """The platforms (or models) of a space: a knob's choices, else a fixed value, else ``given``
    (set at ``at``, a file and key); each must load."""
    loader = load_platform if what == "platform" else load_model
    knob = next((k for k in knobs if k.name == what), None)
    if knob is not None:
        at, values = (where[what][0], f"{where[what][1]}.choices"), list(knob.choices)
    elif what in fixed:
        at, values = where[what], [fixed[what]]
    elif given is None:
        kind = "platforms" if what == "platform" else "models"
        raise SpecError(at[0], what, f"required: a {what} name (one of {builtin_names(kind)[:4]}...)", None)
    else:
        values = given if isinstance(given, list) else [given]
        if len(values) != 1:
            raise SpecError(*at, f"must be one name (several: make {what} a knob with choices)", given)
    for v in values:
        if not isinstance(v, str):
            raise SpecError(*at, "must be names or YAML paths", v)
        try:
            loader(v)
        except SpecError as exc:
            if exc.file:  # the card or preset file itself is invalid: its own file and key
                raise
            raise SpecError(*at, exc.rule, v) from None
    return list(values)

