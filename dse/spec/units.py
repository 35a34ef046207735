"""Unit prefixes and the one place where YAML's prefixed keys become SI keys.

YAML files may write ``mem_bw_tb_per_s: 3.35``; the spec layer turns that into
``mem_bw_bytes_per_s: 3.35e12`` once, with :func:`to_si`. Decimal prefixes
everywhere; binary (``gib``/``mib``/``kib``) only when the key says so.
"""

from __future__ import annotations

KILO = 1e3
MEGA = 1e6
GIGA = 1e9
TERA = 1e12
PETA = 1e15
KIB = 2.0**10
MIB = 2.0**20
GIB = 2.0**30
BITS_PER_BYTE = 8.0
PJ = 1e-12  # joule per picojoule

# YAML key suffix -> (SI key suffix, factor). Longest suffixes are tried first.
_PREFIXED_SUFFIXES: dict[str, tuple[str, float]] = {
    "_pb_per_s": ("_bytes_per_s", PETA),
    "_tb_per_s": ("_bytes_per_s", TERA),
    "_gb_per_s": ("_bytes_per_s", GIGA),
    "_mb_per_s": ("_bytes_per_s", MEGA),
    "_pflop_per_s": ("_flop_per_s", PETA),
    "_tflop_per_s": ("_flop_per_s", TERA),
    "_gflop_per_s": ("_flop_per_s", GIGA),
    "_tb": ("_bytes", TERA),
    "_gb": ("_bytes", GIGA),
    "_mb": ("_bytes", MEGA),
    "_kb": ("_bytes", KILO),
    "_gib": ("_bytes", GIB),
    "_mib": ("_bytes", MIB),
    "_kib": ("_bytes", KIB),
    "_ghz": ("_hz", GIGA),
    "_mhz": ("_hz", MEGA),
    "_ms": ("_s", 1e-3),
    "_us": ("_s", 1e-6),
    "_ns": ("_s", 1e-9),
    "_kw": ("_w", KILO),
    "_mj": ("_j", 1e-3),
}
_ORDERED = sorted(_PREFIXED_SUFFIXES.items(), key=lambda kv: -len(kv[0]))


def to_si(key: str) -> tuple[str, float]:
    """Return ``(si_key, factor)`` for a possibly prefixed key; factor 1 when already SI."""
    for suffix, (si_suffix, factor) in _ORDERED:
        if key.endswith(suffix):
            return key[: -len(suffix)] + si_suffix, factor
    return key, 1.0


def prefixed_aliases(si_key: str) -> list[str]:
    """All prefixed spellings a YAML file may use for ``si_key`` (for error hints)."""
    out = []
    for suffix, (si_suffix, _factor) in _PREFIXED_SUFFIXES.items():
        if si_key.endswith(si_suffix):
            out.append(si_key[: -len(si_suffix)] + suffix)
    return out
