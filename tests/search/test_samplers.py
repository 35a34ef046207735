"""The sampler registry: the spec's names, Optuna classes, option checks."""

from __future__ import annotations

import inspect

import optuna
import pytest

from dse.loading import load_space
from dse.search.samplers import SAMPLER_REGISTRY, make_sampler
from dse.spec.study import SAMPLERS

SPACE = load_space({"platform": "h100-sxm", "model": "llama-2-7b",
                    "knobs": {"batch": {"low": 1, "high": 64}, "w_bits": {"choices": [4, 8, 16]}}})


def test_the_spec_names_and_the_registry_agree():
    assert set(SAMPLERS) == set(SAMPLER_REGISTRY)
    for name, entry in SAMPLER_REGISTRY.items():
        if entry is not None:
            cls = getattr(optuna.samplers, entry.optuna_class)
            assert issubclass(cls, optuna.samplers.BaseSampler)
            for option in entry.options:  # every settable option is a real constructor argument
                assert option in inspect.signature(cls.__init__).parameters, (name, option)


@pytest.mark.parametrize("name", [n for n, e in SAMPLER_REGISTRY.items() if e is not None and n != "gp"])
def test_every_optuna_sampler_builds_with_its_defaults(name):
    sampler = make_sampler(name, {}, seed=0, batch_size=10, space=SPACE)
    assert isinstance(sampler, optuna.samplers.BaseSampler)
