"""The sampler registry: which Optuna class each study sampler name runs, its defaults and
the options a spec may set, each checked for type and range before anything is written.

The names themselves are the spec layer's (:data:`dse.spec.study.SAMPLERS`, which must not
import Optuna); this module maps each to its Optuna class. ``exhaustive`` is the sweep
(:mod:`dse.sweep.study`) and ``auto`` picks between it and ``nsga2``
(:func:`resolve_sampler`); neither is an Optuna sampler.
"""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass
from typing import Any

import optuna

from dse.search.nsga import IncrementalNSGAIISampler
from dse.spec.errors import SpecError, did_you_mean
from dse.spec.space import Space

MIN_POPULATION = 20  # a population of the batch size, but never a degenerate one (batch 1)
GRID_MAX_POINTS = 1_000_000


@dataclass(frozen=True)
class Option:
    """One sampler option a spec may set: ``int``, ``float``, ``bool`` or ``str`` (``choices``),
    within ``[low, high]`` when given; ``nullable``: ``null`` means Optuna's own default."""

    kind: type
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    nullable: bool = False

    def check(self, file: str, key: str, value: Any) -> None:
        if value is None and self.nullable:
            return
        if self.kind is bool:
            ok = isinstance(value, bool)
            rule = "must be true or false"
        elif self.kind is str:
            ok = value in self.choices
            rule = f"must be one of {list(self.choices)}"
        else:
            kinds = (int,) if self.kind is int else (int, float)
            ok = isinstance(value, kinds) and not isinstance(value, bool) and value == value
            rule = f"must be {'an integer' if self.kind is int else 'a number'}"
            if ok and self.low is not None and value < self.low:
                ok, rule = False, f"must be >= {self.low:g}"
            if ok and self.high is not None and value > self.high:
                ok, rule = False, f"must be <= {self.high:g}"
        if not ok:
            raise SpecError(file, key, rule, value)


_PROBABILITY = Option(float, 0.0, 1.0)
_NSGA_OPTIONS = {"population_size": Option(int, 2, 10**6), "mutation_prob": Option(float, 0.0, 1.0, nullable=True),
                 "crossover_prob": _PROBABILITY, "swapping_prob": _PROBABILITY}


@dataclass(frozen=True)
class SamplerEntry:
    """An Optuna sampler class (by name in ``optuna.samplers``), its defaults here and its settable options."""

    optuna_class: str
    options: dict[str, Option]
    defaults: dict[str, Any]


# population = batch: one generation per batch (optuna.md); None below means "the batch size"
SAMPLER_REGISTRY: dict[str, SamplerEntry | None] = {
    "nsga2": SamplerEntry("NSGAIISampler", _NSGA_OPTIONS, {"population_size": None}),
    "nsga3": SamplerEntry("NSGAIIISampler", {**_NSGA_OPTIONS, "dividing_parameter": Option(int, 1, 100)},
                          {"population_size": None}),
    "tpe": SamplerEntry("TPESampler", {"n_startup_trials": Option(int, 0), "n_ei_candidates": Option(int, 1, 10**5),
                                       "multivariate": Option(bool), "group": Option(bool),
                                       "constant_liar": Option(bool)}, {"multivariate": True}),
    "gp": SamplerEntry("GPSampler", {"n_startup_trials": Option(int, 0), "deterministic_objective": Option(bool)},
                       {}),
    "random": SamplerEntry("RandomSampler", {}, {}),
    "qmc": SamplerEntry("QMCSampler", {"qmc_type": Option(str, choices=("sobol", "halton")),
                                       "scramble": Option(bool)}, {}),
    "grid": SamplerEntry("GridSampler", {}, {}),
    "exhaustive": None,  # the sweep, not an Optuna sampler
    "auto": None,  # exhaustive or nsga2, see resolve_sampler
}
AUTO_SEARCH = "nsga2"
# A swept design costs about 1-2 us (vectorised), an asked-and-told trial 0.4-1 ms (optuna.md,
# and benchmarks/search_throughput.py): sweeping this many designs per trial of budget is cheaper.
SWEEP_DESIGNS_PER_TRIAL = 100


def resolve_sampler(name: str, space: Space, n_trials: int) -> tuple[str, str]:
    """(sampler to run, note for the user): ``auto`` sweeps a finite space exhaustively when that
    costs less than the search budget, else runs NSGA-II; other names are returned as given."""
    if name != "auto":
        return name, ""
    size = space.size
    if size is not None and size <= SWEEP_DESIGNS_PER_TRIAL * n_trials:
        return "exhaustive", (f"sampler auto: the space has {size:,} designs, cheaper to sweep than a search of "
                              f"{n_trials:,} trials: sweeping it exhaustively (exact front)")
    why = "a continuous space" if size is None else f"{size:,} designs"
    return AUTO_SEARCH, f"sampler auto: {why}, too many to sweep for a budget of {n_trials:,}: searching with NSGA-II"


def check_options(name: str, options: dict[str, Any], file: str = "") -> None:
    """SpecError for an option the sampler does not take, cannot take from a spec, or a bad value."""
    entry = SAMPLER_REGISTRY.get(name)
    if name not in SAMPLER_REGISTRY:
        raise SpecError(file, "sampler.name", f"unknown sampler{did_you_mean(name, SAMPLER_REGISTRY)}", name)
    allowed = entry.options if entry is not None else {}
    for key, value in options.items():
        where = f"sampler.options.{key}"
        if key not in allowed:
            known = entry is not None and key in inspect.signature(_optuna_class(entry).__init__).parameters
            rule = ("cannot be set from a spec (a Python object, a seed or a deprecated option)" if known else
                    f"not an option of sampler {name}{did_you_mean(str(key), allowed)}")
            if allowed:
                rule += f"; options: {sorted(allowed)}"
            raise SpecError(file, where, rule, value)
        allowed[key].check(file, where, value)


def _optuna_class(entry: SamplerEntry) -> type:
    return getattr(optuna.samplers, entry.optuna_class)


def make_sampler(name: str, options: dict[str, Any], seed: int, batch_size: int, space: Space, *,
                 file: str = "", append_only: bool = False) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for a study's ``sampler`` section; its options are checked first.

    ``append_only``: trials complete in number order in one process (see
    :class:`dse.search.nsga.IncrementalNSGAIISampler`)."""
    check_options(name, options, file)
    entry = SAMPLER_REGISTRY[name]
    if entry is None:
        raise SpecError(file, "sampler.name", "not an Optuna sampler (run it through run_study)", name)
    if name == "gp" and importlib.util.find_spec("torch") is None:
        raise SpecError(file, "sampler.name", "gp needs PyTorch: pip install torch (or use tpe or nsga2)", name)
    cls = _optuna_class(entry)
    opts = {k: (max(batch_size, MIN_POPULATION) if v is None else v) for k, v in entry.defaults.items()}
    opts.update(options)
    args: list[Any] = []
    if name == "grid":
        if (space.size or GRID_MAX_POINTS + 1) > GRID_MAX_POINTS:
            raise SpecError(file, "sampler.name", "grid materialises every point: use exhaustive above 1e6",
                            space.size)
        args = [{k.name: list(k.choices) if k.kind == "categorical" else k.values().tolist() for k in space.knobs}]
    if append_only and cls is optuna.samplers.NSGAIISampler:
        cls = IncrementalNSGAIISampler
    try:
        return cls(*args, seed=seed, **opts)
    except (TypeError, ValueError) as exc:
        raise SpecError(file, "sampler.options", f"rejected by {cls.__name__}: {exc}", options) from None
