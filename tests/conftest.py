"""Shared fixtures: the built-in cards and presets."""

from __future__ import annotations

import pytest

from dse.spec.presets import builtin_names, load_model

MODELS = builtin_names("models")
PLATFORMS = builtin_names("platforms")


@pytest.fixture(scope="session")
def llama7b():
    return load_model("llama-2-7b")
