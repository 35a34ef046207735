"""llm-dse: design-space exploration of LLM inference hardware (tokens/s vs tokens/J).

The stable API (DESIGN.md 3.1): :func:`evaluate`, :class:`Evaluator`, :func:`load_model`,
:func:`load_platform`, :func:`load_study`, :func:`run_study`, :func:`read_front`,
:func:`calibrate`. Study and calibration functions import Optuna/SciPy on first use.
"""

from __future__ import annotations

from typing import Any

from dse.api import Evaluator, evaluate
from dse.model.pipeline import METRICS
from dse.results.io import read_front
from dse.spec.errors import DseError, SpecError
from dse.spec.presets import ModelCard, Platform, load_model, load_platform

__version__ = "0.1.0"

__all__ = ["METRICS", "DseError", "Evaluator", "ModelCard", "Platform", "SpecError", "calibrate", "evaluate",
           "load_model", "load_platform", "load_study", "read_front", "run_study", "__version__"]


def load_study(source: Any, **kwargs: Any) -> Any:
    """Load and validate a study spec (see :func:`dse.spec.study.load_study`)."""
    from dse.spec.study import load_study as _load_study

    return _load_study(source, **kwargs)


def run_study(study: Any, **kwargs: Any) -> Any:
    """Run or resume a study and write its results (see :func:`dse.search.run.run_study`)."""
    from dse.search.run import run_study as _run_study

    return _run_study(study, **kwargs)


def calibrate(platform: Any, measurements: Any, **kwargs: Any) -> Any:
    """Fit a preset's efficiencies and power terms to measurements (:func:`dse.validation.calibration.calibrate`)."""
    from dse.validation.calibration import calibrate as _calibrate

    return _calibrate(platform, measurements, **kwargs)
