"""Load the sourced quality table (``spaces/quality.yaml``) into row arrays and compiled grids.

The I/O side of :mod:`dse.model.quality`: parse the YAML once, turn every published row into a
delta inside its own table (``ppl - ref_ppl``, clamped at 0), append the explicitly transferred
rows and apply the ``transfers`` rules (point-level gap filling from a donor family or method,
effective delta ``max(d, d / ref_donor * ref_target) * factor``), then compile the lookup grids.

Also the validation set: :func:`quality_points` flattens the table's own (not transferred) rows,
:func:`write_quality_points_csv` writes ``validation/quality_points.csv`` and
:func:`reproduce_quality_points` evaluates the model at every point (error = model - source).
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import numpy as np
import yaml

from dse.model import quality as q
from dse.spec.presets import data_dir

QUALITY_YAML = data_dir("spaces") / "quality.yaml"
QUALITY_POINTS_CSV = data_dir("validation") / "quality_points.csv"
KINDS = ("wa", "kv", "sparse")
_METHODS = {"wa": q.QUANT_METHODS, "kv": q.KV_METHODS, "sparse": q.SPARSE_METHODS}
_KEYS = {"wa": ("w_bits", "a_bits", "kv_bits", "group_size"), "kv": ("kv_bits",),
         "sparse": ("pattern", "sparsity_frac")}
CSV_FIELDS = ("point_id", "kind", "family", "method", "w_bits", "a_bits", "kv_bits", "group_size", "pattern",
              "sparsity_frac", "ppl", "ref_ppl", "ppl_delta", "source", "cite")


def _record(kind: str, fields: list[str], row: list, spec: dict) -> dict:
    rec = dict(zip(fields, row, strict=True))
    rec["kind"] = kind
    rec["method"] = rec.pop({"wa": "method", "kv": "kv_method", "sparse": "sparse_method"}[kind])
    for name in ("ppl", "ref_ppl"):
        rec[name] = float(rec[name])
    if rec["source"] not in spec["sources"]:
        raise ValueError(f"quality.yaml: row {row} cites unknown source {rec['source']!r}")
    if rec["family"] not in q.FAMILIES or rec["method"] not in _METHODS[kind]:
        raise ValueError(f"quality.yaml: row {row} has an unknown family or method")
    rec["delta"] = max(0.0, rec["ppl"] - rec["ref_ppl"])
    rec["transferred"], rec["scale_ref"] = 0, rec["ref_ppl"]
    return rec


def _key(rec: dict) -> tuple:
    return (rec["kind"], rec["family"], rec["method"]) + tuple(float(rec[k]) if k != "pattern" else rec[k]
                                                                for k in _KEYS[rec["kind"]])


def _transfer(rec: dict, family: str, method: str, factor: float, ref: dict, note: str,
              same_model: bool = False) -> dict:
    """Copy of ``rec`` for ``family``: delta max(d, d / scale_ref * ref[family]) * factor, or
    d * factor with ``same_model`` (another method's row of the same model and evaluation, a
    ``donor: same`` rule: no baseline to convert; rescaling it to the family's reference moved
    FP8's copy of SmoothQuant's +0.125 to +0.125131, a difference below the data's precision that
    kept dominated designs on fronts).

    ``scale_ref`` is the 16-bit perplexity the delta is relative to: the row's own table
    reference for a published row, the target family's reference once transferred.
    """
    d = rec["delta"]
    if same_model:
        return dict(rec, method=method, transferred=1, note=note, delta=d * factor)
    out = dict(rec, family=family, method=method, transferred=1, note=note, scale_ref=ref[family])
    out["delta"] = max(d, d / rec["scale_ref"] * ref[family]) * factor
    return out


def _apply_rule(records: list[dict], rule: dict, ref: dict) -> list[dict]:
    kinds = KINDS if rule["kind"] == "*" else (rule["kind"],)
    targets = q.FAMILIES if rule["families"] == "*" else rule["families"]
    have = {_key(r) for r in records}
    added = []
    for fam in targets:
        donor_fam = fam if rule["donor"] == "same" else rule["donor"]
        for rec in records:
            if rec["kind"] not in kinds or rec["family"] != donor_fam:
                continue
            if "donor_method" in rule:
                if rec["method"] != rule["donor_method"]:
                    continue
                method = rule["method"]
            else:
                if rule["methods"] != "*" and rec["method"] not in rule["methods"]:
                    continue
                method = rec["method"]
            if any(float(rec[k]) != float(v) for k, v in rule.get("where", {}).items()):
                continue
            new = _transfer(rec, fam, method, float(rule["factor"]), ref,
                            f"transferred from {donor_fam}/{rec['method']}: {rule['reason']}",
                            same_model=rule["donor"] == "same")
            if _key(new) not in have:
                have.add(_key(new))
                added.append(new)
    return records + added


@functools.lru_cache(maxsize=4)
def _spec(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def load_records(path: str | Path = QUALITY_YAML) -> tuple[list[dict], dict]:
    """All rows as dicts (own rows first, then transferred rows in rule order) and the spec."""
    spec = _spec(str(path))
    ref = {fam: float(v["ref_ppl"]) for fam, v in spec["families"].items()}
    records = [_record(kind, spec[f"{kind}_fields"], row, spec) for kind in KINDS for row in spec[f"{kind}_rows"]]
    for item in spec.get("transferred_rows", []):
        kind = item["kind"]
        rec = _record(kind, spec[f"{kind}_fields"], item["row"], spec)
        records.append(_transfer(rec, rec["family"], rec["method"], float(item["factor"]), ref,
                                 f"transferred row measured on {item['donor']}"))
    for rule in spec.get("transfers", []):
        records = _apply_rule(records, rule, ref)
    return records, spec


def load_rows(path: str | Path = QUALITY_YAML) -> dict:
    """Row arrays per kind (codes, coordinates, delta, transferred) for compile/reference."""
    records, _ = load_records(path)
    out = {}
    for kind in KINDS:
        recs = [r for r in records if r["kind"] == kind]
        cols = {"family": [q.FAMILIES.index(r["family"]) for r in recs],
                "method": [_METHODS[kind].index(r["method"]) for r in recs],
                "delta": [r["delta"] for r in recs], "transferred": [r["transferred"] for r in recs]}
        if kind == "wa":
            cols.update(w_bits=[r["w_bits"] for r in recs], a_bits=[r["a_bits"] for r in recs],
                        kv_bits=[r["kv_bits"] for r in recs],
                        group_rank=[int(q.group_rank(r["group_size"])) for r in recs])
        elif kind == "kv":
            cols["bits"] = [r["kv_bits"] for r in recs]
        else:
            cols.update(pattern=[q.SPARSE_PATTERNS.index(r["pattern"]) for r in recs],
                        frac=[r["sparsity_frac"] for r in recs])
        out[kind] = {k: np.asarray(v, dtype=np.int64 if k in ("family", "method", "transferred", "group_rank",
                                                              "pattern") else float) for k, v in cols.items()}
    return out


def load_quality_tables(path: str | Path = QUALITY_YAML) -> dict:
    """Compiled lookup grids for :func:`dse.model.quality.ppl_delta` (read the YAML once)."""
    return _compiled(str(path))


@functools.lru_cache(maxsize=4)
def _compiled(path: str) -> dict:
    spec = _spec(path)
    return q.compile_quality_tables(load_rows(path), spec["combination"], tuple(spec["per_channel_methods"]))


def quality_points(path: str | Path = QUALITY_YAML) -> list[dict]:
    """The table's own published rows, flattened (one dict per point, CSV_FIELDS keys)."""
    records, spec = load_records(path)
    points = []
    for i, r in enumerate(x for x in records if not x["transferred"]):
        p = {k: r.get(k, "") for k in CSV_FIELDS}
        if r["kind"] == "kv":
            p.update(w_bits=16, a_bits=16)
        if r["kind"] == "sparse":
            p.update(w_bits=16, a_bits=16, kv_bits=16)
        p.update(point_id=f"q{i:03d}", ppl_delta=round(r["delta"], 6), cite=spec["sources"][r["source"]]["cite"])
        points.append(p)
    return points


def write_quality_points_csv(path: str | Path = QUALITY_POINTS_CSV, yaml_path: str | Path = QUALITY_YAML) -> int:
    """Write the validation set; returns the number of points."""
    points = quality_points(yaml_path)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(points)
    return len(points)


def read_quality_points(path: str | Path = QUALITY_POINTS_CSV) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def point_inputs(points: list[dict]) -> dict[str, np.ndarray]:
    """ppl_delta keyword arrays that place each point exactly on its table coordinates."""
    def num(key, default):
        return np.array([float(p[key]) if str(p[key]) != "" else default for p in points])

    def codes(kind, names):
        return np.array([names.index(p["method"]) if p["kind"] == kind else 0 for p in points])

    unstructured = np.array([p["pattern"] == "unstructured" for p in points])
    return {"family_code": np.array([q.FAMILIES.index(p["family"]) for p in points]),
            "quant_method_code": codes("wa", q.QUANT_METHODS), "kv_method_code": codes("kv", q.KV_METHODS),
            "sparse_method_code": codes("sparse", q.SPARSE_METHODS),
            "w_bits": num("w_bits", 16.0), "a_bits": num("a_bits", 16.0), "kv_bits": num("kv_bits", 16.0),
            "w_group_size": num("group_size", 0.0),
            "nm_sparse": np.array([1.0 if p["pattern"] == "2:4" else 0.0 for p in points]),
            "w_sparsity_frac": np.where(unstructured, num("sparsity_frac", 0.0), 0.0)}


def reproduce_quality_points(tables: dict | None = None, points: list[dict] | None = None) -> dict[str, np.ndarray]:
    """Model vs source at every validation point: ``predicted``, ``published``, ``error`` (ppl points).

    Nonzero errors mark where the conservative rules move a published point: duplicates at one
    coordinate (the worse source wins) and rows raised to the monotone envelope.
    """
    tables = load_quality_tables() if tables is None else tables
    points = read_quality_points() if points is None else points
    out = q.ppl_delta(tables, **point_inputs(points))
    published = np.array([float(p["ppl_delta"]) for p in points])
    return {"point_id": np.array([p["point_id"] for p in points]), "predicted": out["ppl_delta"],
            "published": published, "error": out["ppl_delta"] - published,
            "quality_extrapolated": out["quality_extrapolated"], "quality_interpolated": out["quality_interpolated"]}
