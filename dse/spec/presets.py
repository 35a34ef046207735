"""Load and validate model cards and platform presets (YAML -> SI dicts).

Cards live in ``models/``, presets in ``spaces/platforms/``; both are shipped as
package data (``dse/data``) so built-in names resolve in a wheel too. A path to
a user's own file works wherever a name does.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import yaml

from dse.spec.errors import SpecError, did_you_mean
from dse.spec.registry import (
    CARD_DEFAULTS,
    CARD_FIELD_NAMES,
    HARDWARE_DEFAULTS,
    HARDWARE_FIELD_NAMES,
    INPUT_FIELDS,
    MEMORY_TECHNOLOGIES,
    PLATFORM_CLASSES,
    REQUIRED_CARD_FIELDS,
    REQUIRED_HARDWARE_FIELDS,
)
from dse.spec.units import prefixed_aliases, to_si

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
_SOURCE_ROOT = _PACKAGE_DIR.parent


@cache
def data_dir(kind: str) -> Path:
    """Folder of built-in data for ``kind`` in ('models', 'platforms', 'spaces', 'studies', 'validation').

    A source checkout uses the repository folders; an installed wheel uses ``dse/data``.
    """
    rel = {"models": "models", "platforms": "spaces/platforms", "spaces": "spaces",
           "studies": "studies", "validation": "validation"}[kind]
    checkout = _SOURCE_ROOT / rel
    if checkout.is_dir() and (_SOURCE_ROOT / "pyproject.toml").is_file():
        return checkout
    return _PACKAGE_DIR / "data" / rel


def builtin_names(kind: str) -> list[str]:
    """Sorted stems of the built-in YAML files of ``kind``."""
    folder = data_dir(kind)
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


_KIND_KEY = {"models": "model", "platforms": "platform", "spaces": "space", "studies": "study"}


def resolve(kind: str, name_or_path: str | Path) -> Path:
    """Path of a built-in name or of a user's file; SpecError names the closest built-in.

    The error's file is empty and its key is the kind (``model``, ...): the caller that
    read the name from a file re-raises it with that file and key.
    """
    text = str(name_or_path)
    path = Path(text)
    try:
        is_path = path.suffix in (".yaml", ".yml") or path.exists()
        found = path.is_file() if is_path else (data_dir(kind) / f"{text}.yaml").is_file()
    except (OSError, ValueError):  # a name too long or with a NUL byte for the file system
        raise SpecError("", _KIND_KEY[kind], "not a valid name or path", text) from None
    if is_path and not found:
        raise SpecError("", _KIND_KEY[kind], "file not found", text)
    if found:
        return path if is_path else data_dir(kind) / f"{text}.yaml"
    raise SpecError("", _KIND_KEY[kind], f"unknown name{did_you_mean(text, builtin_names(kind))}", text)


def near(file: str, value: Any) -> Any:
    """``value`` (a name, path or list of them) with each relative YAML path that does not
    exist from the working directory taken relative to ``file``'s folder instead, so a spec
    may name files next to it; other values are returned unchanged."""
    if isinstance(value, list):
        return [near(file, v) for v in value]
    if not isinstance(value, str) or not value.endswith((".yaml", ".yml")) or Path(value).is_absolute():
        return value
    try:
        beside = Path(file).parent / value
        return str(beside) if not Path(value).exists() and beside.exists() else value
    except (OSError, ValueError):
        return value


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _value in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if (key_node.tag, key_node.value) in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark)
                seen.add((key_node.tag, key_node.value))
        return super().construct_mapping(node, deep=deep)


MAX_YAML_VALUES = 100_000
MAX_YAML_DEPTH = 32


def _check_size(data: Any, file: str) -> None:
    """SpecError if ``data`` expands (through YAML aliases) to too many values or levels."""
    stack = [(data, 0)]
    count = 0
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise SpecError(file, "", f"YAML expands to more than {MAX_YAML_VALUES} values (aliases?)", "<yaml>")
        if depth > MAX_YAML_DEPTH:
            raise SpecError(file, "", f"YAML nested deeper than {MAX_YAML_DEPTH} levels", "<yaml>")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for kv in item.items() for v in kv)
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def read_yaml(path: Path) -> Any:
    """Parse one YAML file; syntax errors, duplicate keys and alias bombs become a one-line
    SpecError (with the line where known)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), "", f"cannot read file: {exc.__class__.__name__}", str(path)) from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise SpecError(str(path), "", f"invalid YAML at {where}: {problem}", "<yaml>") from None
    except RecursionError:
        raise SpecError(str(path), "", f"YAML nested deeper than {MAX_YAML_DEPTH} levels", "<yaml>") from None
    _check_size(data, str(path))
    return data


def is_finite_number(value: Any) -> bool:
    """True for an int or float (not a bool) that is finite as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the float range
        return False


def as_number(file: str, key: str, value: Any, *, minimum: float = 0.0) -> float:
    """A finite number >= ``minimum`` (booleans count as 0/1), else SpecError."""
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, (int, float)):
        raise SpecError(file, key, "must be a number", value)
    if not is_finite_number(value):
        raise SpecError(file, key, "must be finite", value)
    number = float(value)
    if number < minimum:
        raise SpecError(file, key, f"must be >= {minimum:g}", value)
    return number


def _numeric_fields(file: str, raw: dict, allowed: tuple[str, ...], descriptive: dict[str, type],
                    required: frozenset[str], defaults: dict[str, float],
                    inherited: Collection[str] = ()) -> tuple[dict[str, float], dict]:
    """Split a flat YAML mapping into SI numeric fields and descriptive fields (``str`` or
    ``float``); check sources. ``info["keys"]`` maps each SI field to the key the file wrote.
    A ``code`` field (registry) may be written as its choice's name. ``inherited``: the fields a
    base preset already gave (required fields may come from there)."""
    if not isinstance(raw, dict):
        raise SpecError(file, "", "top level must be a mapping", type(raw).__name__)
    sources = raw.get("sources", {})
    if not isinstance(sources, dict):
        raise SpecError(file, "sources", "must be a mapping of key -> source", sources)
    values: dict[str, float] = dict(defaults)
    info: dict[str, Any] = {}
    given: dict[str, str] = {}
    for key, value in raw.items():
        if key == "sources":
            continue
        if key in descriptive:
            kind = descriptive[key]
            if not (is_finite_number(value) if kind is float else isinstance(value, kind)):
                raise SpecError(file, key, f"must be a {'number' if kind is float else 'string'}", value)
            info[key] = value
            continue
        si_key, factor = to_si(str(key))
        if si_key not in allowed:
            valid = [*allowed, *(a for k in allowed for a in prefixed_aliases(k)), *descriptive, "sources"]
            raise SpecError(file, str(key), f"unknown key{did_you_mean(str(key), valid)}", value)
        if si_key in given:
            raise SpecError(file, str(key), "given twice (in two unit spellings)", value)
        field_def = INPUT_FIELDS.get(si_key)
        if isinstance(value, str) and field_def is not None and field_def.choices:
            code = field_def.code_of(value)
            if code is None:
                raise SpecError(file, str(key), f"must be one of {list(field_def.choices)}"
                                f"{did_you_mean(value, field_def.choices)}", value)
            value = code
        values[si_key] = as_number(file, str(key), value) * factor
        given[si_key] = str(key)
        source = sources.get(key)
        if not isinstance(source, str) or not source.strip():
            raise SpecError(file, f"sources.{key}", "every number needs a source string", source)
    for key in sources:
        if key not in raw:
            raise SpecError(file, f"sources.{key}", "source for a key the file does not set", key)
    missing = sorted(required - given.keys() - set(inherited))
    if missing:
        raise SpecError(file, missing[0], "required field missing", None)
    info["sources"] = dict(sources)
    info["keys"] = given
    return values, info


@dataclass(frozen=True)
class ModelCard:
    """An LLM architecture: integer shape fields plus provenance."""

    name: str
    fields: dict[str, float]
    description: str = ""
    n_params: float | None = None
    sources: dict[str, str] = field(default_factory=dict)
    path: str = ""

    def __getattr__(self, item: str) -> float:
        try:
            return self.__dict__["fields"][item]
        except KeyError:
            raise AttributeError(item) from None


@dataclass(frozen=True)
class Platform:
    """A hardware platform: SI hardware fields (dse.spec.registry) plus provenance."""

    name: str
    platform_class: str
    fields: dict[str, float]
    description: str = ""
    process_nm: float | None = None
    mem_technology: str = ""
    sources: dict[str, str] = field(default_factory=dict)
    path: str = ""
    base: str = ""  # the preset this one starts from (``base:``), if any

    def __getattr__(self, item: str) -> float:
        try:
            return self.__dict__["fields"][item]
        except KeyError:
            raise AttributeError(item) from None

    def with_fields(self, name: str | None = None, **updates: float) -> Platform:
        """A copy with some hardware fields replaced (SI values)."""
        unknown = set(updates) - set(HARDWARE_FIELD_NAMES)
        if unknown:
            key = sorted(unknown)[0]
            raise SpecError(self.name, key, f"unknown hardware field{did_you_mean(key, HARDWARE_FIELD_NAMES)}", key)
        return Platform(name or self.name, self.platform_class, {**self.fields, **updates},
                        self.description, self.process_nm, self.mem_technology, self.sources, self.path, self.base)


def _card_from_mapping(raw: dict, file: str) -> ModelCard:
    values, info = _numeric_fields(file, raw, CARD_FIELD_NAMES + ("n_params",), {"name": str, "description": str},
                                   REQUIRED_CARD_FIELDS, CARD_DEFAULTS)
    n_params = values.pop("n_params", None)
    for key in ("n_layers", "d_model", "n_heads", "n_kv_heads", "head_dim", "d_ff", "vocab_size",
                "n_experts", "n_experts_active"):
        if values[key] < 1 or values[key] != int(values[key]):
            raise SpecError(file, key, "must be a positive integer", values[key])
    if values["n_heads"] % values["n_kv_heads"]:
        raise SpecError(file, "n_kv_heads", "must divide n_heads", values["n_kv_heads"])
    if values["n_experts_active"] > values["n_experts"]:
        raise SpecError(file, "n_experts_active", "must be <= n_experts", values["n_experts_active"])
    name = info.get("name") or Path(file).stem
    return ModelCard(name, values, info.get("description", ""), n_params, info["sources"], file)


def _platform_from_mapping(raw: dict, file: str) -> Platform:
    if not isinstance(raw, dict):
        raise SpecError(file, "", "top level must be a mapping", type(raw).__name__)
    base = _base_platform(raw, file)
    raw = {k: v for k, v in raw.items() if k != "base"}
    descriptive = {"name": str, "description": str, "platform_class": str, "mem_technology": str}
    values, info = _numeric_fields(file, raw, HARDWARE_FIELD_NAMES, descriptive, REQUIRED_HARDWARE_FIELDS,
                                   base.fields if base else HARDWARE_DEFAULTS, base.fields if base else ())

    def bad(key: str, rule: str) -> SpecError:  # named as the file wrote it (mem_bw_tb_per_s: 0)
        written = info["keys"].get(key, key)
        return SpecError(file, written, rule, raw.get(written, values[key]))

    cls = info.get("platform_class", base.platform_class if base else None)
    if cls not in PLATFORM_CLASSES:
        raise SpecError(file, "platform_class", f"must be one of {list(PLATFORM_CLASSES)}", cls)
    values["platform_class_code"] = float(PLATFORM_CLASSES.index(cls))
    memory = info.get("mem_technology", base.mem_technology if base else "")
    if memory:
        if memory not in MEMORY_TECHNOLOGIES:
            hint = did_you_mean(memory, MEMORY_TECHNOLOGIES)
            raise SpecError(file, "mem_technology", f"unknown memory technology{hint}", memory)
        values["mem_technology_code"] = float(MEMORY_TECHNOLOGIES.index(memory))
    if values["tdp_w"] <= values["static_power_w"]:
        raise bad("tdp_w", f"must exceed static_power_w ({values['static_power_w']:g})")
    for key in ("compute_eff_frac", "mem_bw_eff_frac"):
        if not 0.0 < values[key] <= 1.0:
            raise bad(key, "must be in (0, 1]")
    for key in ("flop32_peak_flop_per_s", "mem_bw_bytes_per_s", "mem_capacity_bytes"):
        if values[key] <= 0:
            raise bad(key, "must be > 0")
    for key in info["keys"]:
        rule = _range_rule(key, values[key])
        if rule:
            raise bad(key, rule)
    name = info.get("name") or Path(file).stem
    sources = {**(base.sources if base else {}), **info["sources"]}
    description = info.get("description", base.description if base else "")
    return Platform(name, cls, values, description, values["process_nm"], memory, sources, file,
                    base.name if base else "")


def _base_platform(raw: dict, file: str) -> Platform | None:
    """The preset named by ``base:`` (its fields are the defaults), or None."""
    if "base" not in raw:
        return None
    name = raw["base"]
    if not isinstance(name, str):
        raise SpecError(file, "base", "must be a preset name or YAML path", name)
    try:
        return load_platform(near(file, name))
    except SpecError as exc:
        if exc.file:
            raise
        raise SpecError(file, "base", exc.rule, name) from None


def _range_rule(key: str, value: float) -> str:
    """The registry's range rule that ``value`` breaks for hardware field ``key``, or ``""``."""
    f = INPUT_FIELDS[key]
    if value > f.high:
        return f"must be <= {f.high:g} (beyond any real device)"
    if f.positive and value <= f.low:
        return f"must be > {f.low:g}"
    if value < f.low:
        return f"must be >= {f.low:g}"
    return ""


@lru_cache(maxsize=256)
def _load_card_path(path: str, mtime: float) -> ModelCard:
    return _card_from_mapping(read_yaml(Path(path)), path)


@lru_cache(maxsize=256)
def _load_platform_path(path: str, mtime: float) -> Platform:
    return _platform_from_mapping(read_yaml(Path(path)), path)


def load_model(name_or_path: str | Path | ModelCard) -> ModelCard:
    """Load a model card by built-in name (``"llama-2-7b"``) or YAML path."""
    if isinstance(name_or_path, ModelCard):
        return name_or_path
    path = resolve("models", name_or_path)
    return _load_card_path(str(path), path.stat().st_mtime)


def load_platform(name_or_path: str | Path | Platform) -> Platform:
    """Load a platform preset by built-in name (``"h100-sxm"``) or YAML path."""
    if isinstance(name_or_path, Platform):
        return name_or_path
    path = resolve("platforms", name_or_path)
    return _load_platform_path(str(path), path.stat().st_mtime)
