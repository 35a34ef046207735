"""llm-dse: design-space exploration of LLM inference hardware.

The stable API (DESIGN.md 3.1): :func:`evaluate`, :class:`Evaluator`, :func:`load_model`,
:func:`load_platform`, :func:`load_study`, :func:`run_study`, :func:`read_front`,
:func:`calibrate`. ``import dse`` loads neither Optuna, SciPy nor PyTorch: the study and
calibration functions import them on first use.

>>> import dse
>>> df = dse.evaluate({"batch": [1, 8]}, model="llama-2-7b", platform="h100-sxm")
>>> bool((df["decode_tokens_per_s"].diff().dropna() > 0).all())
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dse._version import __version__

if TYPE_CHECKING:
    import pandas as pd

    from dse.api import Evaluator, evaluate
    from dse.results.io import read_front
    from dse.search.run import RunResult
    from dse.spec.errors import DseError, SpecError
    from dse.spec.metrics import METRICS
    from dse.spec.presets import ModelCard, Platform, load_model, load_platform
    from dse.spec.study import Study
    from dse.validation.calibration import CalibrationResult

# Public names and the module each comes from, imported on first use (PEP 562) so that
# ``import dse`` and ``dse --help`` stay fast (no pandas until a table is needed).
_LAZY: dict[str, str] = {
    "Evaluator": "dse.api", "evaluate": "dse.api", "read_front": "dse.results.io", "DseError": "dse.spec.errors",
    "SpecError": "dse.spec.errors", "METRICS": "dse.spec.metrics", "ModelCard": "dse.spec.presets",
    "Platform": "dse.spec.presets", "load_model": "dse.spec.presets", "load_platform": "dse.spec.presets",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = ["METRICS", "DseError", "Evaluator", "ModelCard", "Platform", "SpecError", "calibrate", "evaluate",
           "load_model", "load_platform", "load_study", "read_front", "run_study", "__version__"]


def load_study(source: str | Path | dict, *, output: str | Path | None = None, storage: str | None = None) -> Study:
    """Load and validate a study spec (a built-in name, a YAML path or a mapping); its space is
    evaluated at its corners so that bad bounds fail here (:func:`dse.loading.load_study`)."""
    from dse.loading import load_study as _load_study

    return _load_study(source, output=output, storage=storage)


def run_study(study: Study, *, progress: bool = True, stop: Callable[[], bool] | None = None) -> RunResult:
    """Run or resume a study to its budget and write its result files (:func:`dse.search.loop.run_study`)."""
    from dse.search import run_study as _run_study

    return _run_study(study, progress=progress, stop=stop)


def calibrate(platform: str | Path | Platform, measurements: pd.DataFrame, *, fit: Sequence[str] | None = None,
              name: str | None = None) -> CalibrationResult:
    """Fit a preset's efficiencies and power terms to measurement rows; the result's ``.platform``
    is usable as ``platform=`` (:func:`dse.validation.calibration.calibrate`)."""
    from dse.validation.calibration import DEFAULT_FIT
    from dse.validation.calibration import calibrate as _calibrate

    return _calibrate(platform, measurements, fit=DEFAULT_FIT if fit is None else fit, name=name)
