"""llm-dse: design-space exploration of LLM inference hardware (tokens/s vs tokens/J)."""

from dse.api import Evaluator, evaluate
from dse.errors import DseError, SpecError
from dse.model import METRICS
from dse.spec import ModelCard, Platform, load_model, load_platform

__version__ = "0.1.0"

__all__ = ["METRICS", "DseError", "Evaluator", "ModelCard", "Platform", "SpecError", "evaluate",
           "load_model", "load_platform", "__version__"]
