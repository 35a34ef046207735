"""Shared fixtures: the built-in cards and presets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dse.spec.presets import builtin_names, load_model

MODELS = builtin_names("models")
PLATFORMS = builtin_names("platforms")


@pytest.fixture(scope="session")
def llama7b():
    return load_model("llama-2-7b")

# A small mixed space (memory technology, PIM with a condition, units, derived peak) shared by the
# space and search tests.
SMALL_SPACE = {
    "platform": "h100-sxm",
    "model": "llama-2-7b",
    "knobs": {
        "mem_technology": {"choices": ["hbm3", "gddr6x", "hbm2-pim"]},
        "n_mem_units": {"low": 1, "high": 4},
        "batch": {"choices": [1, 8, 64]},
        "w_bits": {"choices": [4, 16]},
        "pim_offload": {"choices": [0, 2], "when": "mem_pim_capable > 0", "default": 0},
        "flop16_peak_tflop_per_s": {"low": 100, "high": 1000, "step": 300},
    },
    "derived": {"flop8_peak_flop_per_s": "2 * flop16_peak_flop_per_s"},
    "fixed": {"in_len": 256, "out_len": 64},
}


def read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write: permission bits, or /proc where they do not bind (root)."""
    if os.geteuid() == 0:
        return Path("/proc")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return folder
