"""Study specs (``studies/*.yaml``): a space, model(s), objectives, constraints, sampler,
budget, storage and output folder. Loading validates everything up front."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dse.spec.errors import SpecError, check_keys, did_you_mean, redact
from dse.spec.metrics import MAXIMISED_METRICS, METRICS
from dse.spec.presets import is_finite_number, near, read_yaml, resolve
from dse.spec.space import Space, load_space

RESULTS_ROOT = Path("results")  # where a spec file may write, relative to the working directory
MAX_NAME_CHARS = 128  # a study name is a folder name (255 bytes at most on common file systems)
# Sampler names (the search layer maps each to its Optuna class: dse.search.samplers). "auto": sweep a
# finite space exhaustively when that costs less than the budget, else NSGA-II.
SAMPLERS = ("auto", "nsga2", "nsga3", "tpe", "gp", "random", "qmc", "grid", "exhaustive")
DEFAULT_OBJECTIVES = (("decode_tokens_per_s", True), ("decode_tokens_per_j", True))
_RESUMABLE_KEYS = ("budget", "batch_size", "storage", "output", "description")
_STUDY_KEYS = ("name", "description", "space", "model", "platform", "workload", "objectives", "constraints",
               "sampler", "budget", "batch_size", "seed", "storage", "output")


@dataclass(frozen=True)
class Constraint:
    """``metric <= max`` and/or ``metric >= min``; violation as Optuna wants it (<= 0 feasible)."""

    metric: str
    max: float | None = None
    min: float | None = None


@dataclass
class Study:
    """A validated study spec."""

    name: str
    file: str
    space: Space
    objectives: list[tuple[str, bool]]  # (metric, maximise)
    constraints: list[Constraint]
    sampler: str
    sampler_options: dict[str, Any]
    n_trials: int
    timeout_s: float | None
    batch_size: int
    seed: int
    storage: str | None
    output: Path
    raw: dict = field(default_factory=dict)
    description: str = ""

    @property
    def spec_hash(self) -> str:
        """Hash of what is searched: a resumed run must match the stored one. Covers the spec and
        the resolved space (:meth:`dse.spec.space.Space.fingerprint`: a named space file, preset or
        card edited between runs changes it). The budget, batch size, storage, output folder and
        description may change between runs."""
        searched = {k: v for k, v in self.raw.items() if k not in _RESUMABLE_KEYS}
        searched["resolved_space"] = self.space.fingerprint()
        text = json.dumps(searched, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _number(file: str, key: str, value: Any, *, integer: bool = False, minimum: float | None = None,
            maximum: float | None = None) -> float:
    if not is_finite_number(value):
        raise SpecError(file, key, "must be a finite number", value)
    if integer and value != int(value):
        raise SpecError(file, key, "must be an integer", value)
    if minimum is not None and value < minimum:
        raise SpecError(file, key, f"must be >= {minimum:.10g}", value)
    if maximum is not None and value > maximum:
        raise SpecError(file, key, f"must be <= {maximum:.10g}", value)
    return value


def _metric(file: str, key: str, name: Any) -> str:
    if not isinstance(name, str) or name not in METRICS:
        raise SpecError(file, key, f"unknown metric{did_you_mean(str(name), METRICS)}", name)
    return name


def _list(file: str, key: str, value: Any, default: list) -> list:
    if value is None:
        return default
    if not isinstance(value, list) or not value:
        raise SpecError(file, key, "must be a non-empty list", value)
    return value


def _inside_results(file: str, key: str, value: Any) -> Path:
    """``value`` as a relative path strictly inside :data:`RESULTS_ROOT`: a spec file may not
    write anywhere else (the command line may: ``--output``, ``--storage``)."""
    root = RESULTS_ROOT.resolve()
    try:
        inside = isinstance(value, str) and not Path(value).is_absolute() and root in Path(value).resolve().parents
    except (OSError, ValueError):
        inside = False
    if not inside:
        raise SpecError(file, key, f"must be a relative path inside {RESULTS_ROOT}/ (else give it on the command "
                        "line)", value)
    return Path(value)


def _storage_file(url: str) -> str | None:
    """The local file a storage URL writes (a journal or an SQLite database), None for a server."""
    if url.startswith("sqlite:///"):
        return url.removeprefix("sqlite:///").split("?", 1)[0]
    return None if "://" in url else url


def load_study(source: str | Path | dict, *, file: str | None = None, output: str | Path | None = None,
               storage: str | None = None) -> Study:
    """Load and validate a study from a built-in name, a YAML path or a mapping.

    ``output``/``storage`` override the spec's (the CLI's ``--output``/``--storage``); a
    spec's own output folder and storage file must lie inside :data:`RESULTS_ROOT`.
    Relative YAML paths in ``space``, ``platform`` and ``model`` may be next to the study.
    """
    if isinstance(source, dict):
        raw, file = source, file or "<study>"
    else:
        path = resolve("studies", source)
        raw, file = read_yaml(path), str(path)
    if not isinstance(raw, dict):
        raise SpecError(file, "", "top level must be a mapping", type(raw).__name__)
    check_keys(file, "", raw, _STUDY_KEYS)
    if "space" not in raw:
        raise SpecError(file, "space", "required: a space name, path or mapping", None)
    workload = raw.get("workload") or {}
    if not isinstance(workload, dict):
        raise SpecError(file, "workload", "must be a mapping of knob -> value or knob spec", workload)
    fixed = {k: v for k, v in workload.items() if not isinstance(v, (dict, list))}
    knobs = {k: v for k, v in workload.items() if isinstance(v, (dict, list))}
    space_src = raw["space"]
    if not isinstance(space_src, (str, dict)):
        raise SpecError(file, "space", "must be a space name, path or mapping", space_src)
    try:
        space_arg = resolve("spaces", near(file, space_src)) if isinstance(space_src, str) else space_src
    except SpecError as exc:
        raise SpecError(file, "space", exc.rule, space_src) from None
    try:
        space = load_space(space_arg, platform=near(file, raw.get("platform")), model=near(file, raw.get("model")),
                           extra_fixed=fixed, extra_knobs=knobs, origin=file)
    except SpecError as exc:
        if exc.file in ("", "<space>"):
            raise SpecError(file, f"space.{exc.key_path}".rstrip("."), exc.rule, exc.value) from None
        raise

    objectives = []
    default_objectives = [{"metric": m, "direction": "maximize" if up else "minimize"} for m, up in DEFAULT_OBJECTIVES]
    for i, obj in enumerate(_list(file, "objectives", raw.get("objectives"), default_objectives)):
        key = f"objectives[{i}]"
        if isinstance(obj, str):
            obj = {"metric": obj}
        if not isinstance(obj, dict):
            raise SpecError(file, key, "must be a metric name or {metric, direction}", obj)
        check_keys(file, key, obj, ("metric", "direction"))
        metric = _metric(file, f"{key}.metric", obj.get("metric"))
        direction = obj.get("direction", "maximize" if metric in MAXIMISED_METRICS else "minimize")
        if direction not in ("maximize", "minimize"):
            raise SpecError(file, f"{key}.direction", "must be maximize or minimize", direction)
        objectives.append((metric, direction == "maximize"))
    if len({m for m, _ in objectives}) != len(objectives):
        raise SpecError(file, "objectives", "need distinct metrics", raw.get("objectives"))

    constraints = []
    for i, con in enumerate(_list(file, "constraints", raw.get("constraints"), [])):
        key = f"constraints[{i}]"
        if not isinstance(con, dict):
            raise SpecError(file, key, "must be {metric, max and/or min}", con)
        check_keys(file, key, con, ("metric", "max", "min"))
        metric = _metric(file, f"{key}.metric", con.get("metric"))
        if "max" not in con and "min" not in con:
            raise SpecError(file, key, "needs max or min", con)
        hi = _number(file, f"{key}.max", con["max"]) if "max" in con else None
        lo = _number(file, f"{key}.min", con["min"]) if "min" in con else None
        if hi is not None and lo is not None and lo > hi:
            raise SpecError(file, f"{key}.min", f"must be <= max ({hi})", lo)
        constraints.append(Constraint(metric, hi, lo))

    sampler_raw = raw.get("sampler", {"name": "auto"})
    if isinstance(sampler_raw, str):
        sampler_raw = {"name": sampler_raw}
    if not isinstance(sampler_raw, dict):
        raise SpecError(file, "sampler", "must be a name or {name, options}", sampler_raw)
    check_keys(file, "sampler", sampler_raw, ("name", "options"))
    sampler = sampler_raw.get("name")
    if sampler not in SAMPLERS:
        raise SpecError(file, "sampler.name", f"unknown sampler{did_you_mean(str(sampler), SAMPLERS)}", sampler)
    options = sampler_raw.get("options") or {}
    if not isinstance(options, dict):
        raise SpecError(file, "sampler.options", "must be a mapping", options)
    if sampler in ("exhaustive", "grid") and space.size is None:
        raise SpecError(file, "sampler.name", f"{sampler} needs a finite space (every float knob needs a step)",
                        sampler)

    budget = raw.get("budget") or {}
    if not isinstance(budget, dict):
        raise SpecError(file, "budget", "must be a mapping {n_trials, timeout_s}", budget)
    check_keys(file, "budget", budget, ("n_trials", "timeout_s"))
    n_trials = int(_number(file, "budget.n_trials", budget.get("n_trials", 1000), integer=True, minimum=1))
    timeout = budget.get("timeout_s")
    timeout_s = float(_number(file, "budget.timeout_s", timeout, minimum=0)) if timeout is not None else None
    batch_size = int(_number(file, "batch_size", raw.get("batch_size", 100), integer=True, minimum=1))
    seed = int(_number(file, "seed", raw.get("seed", 0), integer=True, minimum=0, maximum=2**32 - 1))
    storage_url = storage if storage is not None else raw.get("storage")
    if storage_url is not None:
        if not isinstance(storage_url, str) or not (storage_url.startswith(("sqlite:///", "postgresql", "mysql"))
                                                    or storage_url.endswith((".journal", ".log"))):
            raise SpecError(file if storage is None else "--storage", "storage", "must be an Optuna storage URL "
                            "(sqlite:///, postgresql+psycopg://, mysql://) or a .journal file", storage_url)
        if storage is None and _storage_file(storage_url) is not None:
            _inside_results(file, "storage", _storage_file(storage_url))
    name = raw.get("name", Path(file).stem)
    if not isinstance(name, str) or not name or any(c in name for c in "/\\") or name.startswith("."):
        raise SpecError(file, "name", "must be a plain name (no path separators)", name)
    if len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise SpecError(file, "name", f"must be at most {MAX_NAME_CHARS} printable characters (it names the "
                        "output folder)", name)
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise SpecError(file, "description", "must be a string", description)
    out = Path(output) if output is not None else \
        _inside_results(file, "output", raw["output"]) if "output" in raw else RESULTS_ROOT / name
    if isinstance(raw.get("storage"), str):  # the spec is written into the result files: no password there
        raw = {**raw, "storage": redact(raw["storage"])}
    return Study(name, file, space, objectives, constraints, sampler, dict(options), n_trials, timeout_s,
                 batch_size, seed, storage_url, out, raw, description)
