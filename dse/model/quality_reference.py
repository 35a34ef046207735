"""Scalar reference of :func:`dse.model.quality.ppl_delta`: one design, plain Python, straight
from the table rows (no compiled grids), so the vectorised lookup can be checked against it.

Same rules as the module docstring of :mod:`dse.model.quality`; read it first.
"""

from __future__ import annotations

import math

from dse.model.quality import BITS_GRID, FRAC_GRID, GROUP_MAX_FINE, KV_METHODS

INF = math.inf
GRID = [float(x) for x in BITS_GRID]
FRACS = [float(x) for x in FRAC_GRID]


def _snap_bits(bits: float) -> float | None:
    """Largest grid level <= bits, None below the grid."""
    below = [x for x in GRID if x <= bits]
    return below[-1] if below else None


def _rows(table: dict, keep) -> list[dict]:
    """Rows of one kind as dicts, in table order, filtered by ``keep(row)``."""
    n = len(table["delta"])
    rows = [{k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in table.items()} for i in range(n)]
    return [r for r in rows if keep(r)]


def _envelope(rows: list[dict], at_least_as_precise) -> list[float]:
    """Each row's delta raised to the max delta of the rows at least as precise as it."""
    return [max(s["delta"] for s in rows if at_least_as_precise(s, r)) for r in rows]


def _choose(cands: list[tuple], better) -> tuple:
    """Best (value, same, transferred, index) candidate; ties: same coordinates, then own row, then first."""
    best = None
    for c in cands:
        if best is None or better(c[0], best[0]):
            best = c
        elif c[0] == best[0] and (c[1], not c[2]) > (best[1], not best[2]):
            best = c
    return best


def kv_point(rows: dict, family: int, kv_method: int, kv_level: float) -> tuple[float, float, bool, bool]:
    """(upper bound, measured lower bound, transferred, exact) of the KV-only delta at a grid level."""
    if kv_level >= 16:
        return 0.0, 0.0, False, True
    if kv_method == 0:  # "any": the worst method that has data for this family
        present = [m for m in range(1, len(KV_METHODS)) if any(
            f == family and mm == m for f, mm in zip(rows["kv"]["family"], rows["kv"]["method"], strict=True))]
        if not present:
            return INF, 0.0, False, False
        points = [kv_point(rows, family, m, kv_level) for m in present]
        worst = max(range(len(points)), key=lambda i: (points[i][0], -i))
        up, _, tr, ex = points[worst]
        return up, max(p[1] for p in points), tr, ex and len(present) == 1
    kv = _rows(rows["kv"], lambda r: r["family"] == family and r["method"] == kv_method)
    if not kv:
        return INF, 0.0, False, False
    env = _envelope(kv, lambda s, r: s["bits"] >= r["bits"])
    low = max([e for r, e in zip(kv, env, strict=True) if r["bits"] >= kv_level], default=0.0)
    cands = [(e, r["bits"] == kv_level, r["transferred"] > 0) for r, e in zip(kv, env, strict=True)
             if r["bits"] <= kv_level]
    if not cands:
        return INF, low, False, False
    up, same, tr = _choose(cands, lambda x, y: x < y)
    return up, low, tr, same


def wa_point(tables: dict, family: int, method: int, wl: float, al: float, grank: int, kl: float,
             kv_method: int) -> tuple[float, bool, bool, bool]:
    """(delta, transferred, exact, combined) of the weight/activation + KV part at grid levels."""
    rows = tables["rows"]
    anchor = {"w_bits": 16.0, "a_bits": 16.0, "group_rank": 0, "kv_bits": 16.0, "delta": 0.0, "transferred": 0}
    wa = [anchor] + _rows(rows["wa"], lambda r: r["family"] == family and r["method"] == method)

    def ge(s, r):
        return (s["w_bits"] >= r["w_bits"] and s["a_bits"] >= r["a_bits"] and s["group_rank"] >= r["group_rank"]
                and s["kv_bits"] >= r["kv_bits"])

    env = _envelope(wa, ge)
    kv_q, kv_low_q, kv_tr, kv_exact = kv_point(rows, family, kv_method, kl)
    upper, lower = [], []
    for i, (r, e) in enumerate(zip(wa, env, strict=True)):
        same = (r["w_bits"] == wl and r["a_bits"] == al and (r["group_rank"] == grank or r["w_bits"] >= 16)
                and r["kv_bits"] == kl)
        tr = r["transferred"] > 0
        if r["w_bits"] <= wl and r["a_bits"] <= al and r["group_rank"] <= grank:  # the query dominates the row
            inc = 0.0
            if kl < _snap_bits(r["kv_bits"]):  # the query's KV is less precise than the row's
                kv_r = kv_point(rows, family, kv_method, _snap_bits(r["kv_bits"]))[0]
                inc = INF if kv_q == INF else kv_q - kv_r
            both = e > 0 and inc > 0
            value = tables["wa_kv_margin"] * (e + inc) if both else e + inc
            upper.append((value, same, tr, i, inc, both))
        g_hi = 1 if r["w_bits"] >= 16 else r["group_rank"]
        if r["w_bits"] >= wl and r["a_bits"] >= al and g_hi >= grank and r["kv_bits"] >= kl:  # row at least as precise
            lower.append((e, same, tr, i))
    if not upper:
        best = (INF, False, False, 0, 0.0, False)
    else:
        best = _choose(upper, lambda x, y: x < y)
    lo_best = _choose(lower, lambda x, y: x > y)
    lo = max(lo_best[0], kv_low_q)
    value, same, tr, i, inc, both = best
    if lo > value:  # a measured point at least as precise is worse: never go below it
        from_row = lo_best[0] >= lo
        return lo, (lo_best[2] if from_row else kv_tr), lo_best[1] and from_row, False
    kv_only = i == 0 and inc > 0
    exact = (same and inc == 0) or (kv_only and kv_exact)
    return value, tr or (inc > 0 and kv_tr), exact and value < INF, both


def sparse_point(tables: dict, family: int, method: int, pattern: int, level: int) -> tuple[float, bool, bool]:
    """(delta, transferred, exact) of the sparsity part at a FRAC_GRID level (2:4 uses level 1)."""
    if level == 0:
        return 0.0, False, True

    def one(p):
        sp = _rows(tables["rows"]["sparse"], lambda r: r["family"] == family and r["method"] == method
                   and r["pattern"] == p)
        if not sp:
            return INF, False, False
        env = _envelope(sp, lambda s, r: s["frac"] <= r["frac"])
        cands = [(e, r["frac"] == FRACS[level], r["transferred"] > 0) for r, e in zip(sp, env, strict=True)
                 if r["frac"] >= FRACS[level]]
        if not cands:
            return INF, False, False
        value, same, tr = _choose(cands, lambda x, y: x < y)
        return value, tr, same

    unstructured = one(0)
    if pattern == 0:
        return unstructured
    nm = one(1)
    if unstructured[0] > nm[0]:  # 2:4 is a constrained unstructured mask: never better
        return unstructured[0], unstructured[1], False
    return nm


def ppl_delta_scalar(tables: dict, family: int, method: int, w_bits: float, a_bits: float, kv_bits: float,
                     w_sparsity_frac: float, nm_sparse: float, w_group_size: float = 128, kv_method: int = 0,
                     sparse_method: int = 0) -> tuple[float, int, int]:
    """(ppl_delta, quality_extrapolated, quality_interpolated) for one design."""
    wl, al, kl = _snap_bits(w_bits), _snap_bits(a_bits), _snap_bits(kv_bits)
    grank = 1 if 1 <= w_group_size <= GROUP_MAX_FINE and method not in tables["per_channel_methods"] else 0
    pattern = 1 if nm_sparse > 0 else 0
    if pattern == 1:
        level = 1
    else:
        above = [i for i, x in enumerate(FRACS) if x >= w_sparsity_frac]
        level = above[0] if above else None
    if None in (wl, al, kl, level):
        return INF, 1, 0
    d_wa, tr_wa, ex_wa, comb = wa_point(tables, family, method, wl, al, grank, kl, kv_method)
    d_sp, tr_sp, ex_sp = sparse_point(tables, family, sparse_method, pattern, level)
    both = d_wa > 0 and d_sp > 0
    total = tables["sparse_margin"] * (d_wa + d_sp) if both else d_wa + d_sp
    extrapolated = total == INF or both or comb or tr_wa or tr_sp
    on_grid = ((w_bits == wl or w_bits >= 16) and (a_bits == al or a_bits >= 16) and (kv_bits == kl or kv_bits >= 16)
               and (w_group_size in (0, GROUP_MAX_FINE) or w_bits >= 16 or method in tables["per_channel_methods"])
               and (pattern == 1 or w_sparsity_frac == FRACS[level]))
    exact = on_grid and ex_wa and ex_sp and not both
    return total, int(extrapolated), int(not exact and not extrapolated)
