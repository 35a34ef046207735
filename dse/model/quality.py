"""Model quality: WikiText-2 perplexity increase over the 16-bit dense model (``ppl_delta``).

Pure functions of arrays (the lookup is one compiled kernel, :mod:`dse.model.jit`); the sourced
table (``spaces/quality.yaml``) is read and turned into row
arrays by :mod:`dse.quality_table`, compiled here once by :func:`compile_quality_tables`
into lookup grids, and :func:`ppl_delta` only indexes them. Speculative decoding is lossless
(the target model verifies every token), so it contributes 0 and is not an input.

Rules (each row's delta is ``ppl - ref_ppl`` inside one paper's table, clamped at 0):

* **Monotone envelope.** Within one family and method a row's delta is raised to the largest
  delta of any row that is at least as precise in every coordinate (bits, group rank, included
  KV bits); duplicates at one point keep the worse value. Inconsistent sources therefore never
  make fewer bits look better.
* **Conservative interpolation.** A query is bounded by the table points it dominates (rows
  with at most its bits and at most its group precision); the bound is the smallest of them.
  Bits are snapped *down* to :data:`BITS_GRID`, group sizes 1..128 rank as g128 and anything
  coarser as per-channel (a method that is per-channel by construction, ``per_channel_methods``
  in the YAML, e.g. SmoothQuant, reads per-channel at any group size), unstructured sparsity
  snaps *up* to :data:`FRAC_GRID`. No dominated
  row: ``ppl_delta = inf`` (no data; infeasible under any ``ppl_delta`` bound).
* **Never below a measurement.** The bound is raised to the largest delta measured (same family
  and method, or the KV curve) at a point at least as precise as the query, so combining one
  paper's row with another paper's KV increment can never undercut a direct measurement.
* **KV cache.** Per family and KV method a monotone curve ``D_kv(bits)``; ``any`` (code 0) is
  the worst method with data. A weight/activation row measured with KV at ``b`` bits adds
  ``max(0, D_kv(kv_bits) - D_kv(b))``; a weight-only row (``b = 16``) adds ``D_kv(kv_bits)``.
* **Combination.** Effects add (first order: small independent log-likelihood perturbations add).
  An unmeasured weight/activation + KV combination is multiplied by ``wa_kv_margin`` (1.25) and
  any combination with sparsity by ``sparse_margin`` (1.5; Harma et al., arXiv:2405.20935 prove
  sparsity and quantization errors compound). Both margins are assumptions, not fits.

Flags: ``quality_extrapolated`` = 1 where no own measurement of the family bounds the point
(transferred rows, unmeasured combinations, no data); ``quality_interpolated`` = 1 where the
point is bounded by, but not equal to, a table point. Both 0: an exact table point.
"""

from __future__ import annotations

import numpy as np

from dse.model import jit
from dse.spec.registry import KNOB_BY_NAME

# --- categorical codes ------------------------------------------------------------------------
FAMILIES = ("llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3-8b", "llama-3-70b", "llama-3.2-1b",
            "mistral-7b", "mixtral-8x7b", "opt-6.7b")
QUANT_METHODS = KNOB_BY_NAME["quant_method"].choices  # the knobs' choices (dse.spec.registry)
KV_METHODS = KNOB_BY_NAME["kv_method"].choices
SPARSE_METHODS = KNOB_BY_NAME["sparse_method"].choices
SPARSE_PATTERNS = ("unstructured", "2:4")

BITS_GRID = np.array([2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 16.0])  # bits snap down to these levels
FRAC_GRID = np.array([0.0, 0.5])  # unstructured sparsity snaps up to these levels
GROUP_MAX_FINE = 128  # group sizes 1..128 count as "g128" (rank 1), others as per-channel (rank 0)
NO_DATA = np.inf

F_TRANSFERRED, F_EXACT, F_COMBINED = 1, 2, 4  # bit flags stored in the compiled grids
F_POSITIVE, F_NO_DATA = 8, 16  # the cell's value is > 0 / is NO_DATA (set last, so lookups read flags only)
OFF_GRID = 1 << 40  # a level below the grid: a flat-index offset that keeps any index sum negative


def code(names: tuple[str, ...], name: str) -> int:
    """Code of ``name`` in one of the code tuples above (ValueError names the choices)."""
    if name not in names:
        raise ValueError(f"unknown {name!r}; choose from {', '.join(names)}")
    return names.index(name)


def group_rank(group_size):
    """1 for group-wise scales with 1..128 weights per group, 0 for per-channel or coarser."""
    g = np.asarray(group_size, dtype=float)
    return ((g >= 1) & (g <= GROUP_MAX_FINE)).astype(np.int64)


_WHOLE_BITS = np.arange(BITS_GRID[-1] + 1)  # 0..16: whole parts of bits clipped to the grid's top
_LEVEL_OF_WHOLE_BITS = np.searchsorted(BITS_GRID, _WHOLE_BITS, side="right") - 1
_N_WHOLE = len(_WHOLE_BITS)
_ON_GRID = np.isin(_WHOLE_BITS, BITS_GRID)  # by whole bits: a level of the grid
_FRAC_OFFSET = np.array([0, 1, -OFF_GRID])  # by sparsity level (smallest >= frac): itself, or off the grid


def bits_level(bits):
    """Index into BITS_GRID of the largest level <= bits (-1: below the grid, no data).

    The grid holds whole numbers, so the level of ``bits`` is that of ``floor(bits)``: a
    lookup over 0..16 (bits beyond 16 share 16's level)."""
    return _LEVEL_OF_WHOLE_BITS.take(np.clip(np.asarray(bits, dtype=float), 0.0, BITS_GRID[-1]).astype(np.intp))


def _bits_offsets(strides: tuple[int, ...]) -> np.ndarray:
    """Flat-index offset of the weight, activation and KV levels of each bits key
    ``(w * 17 + a) * 17 + kv`` (whole bits clipped to 0..16) in the
    ``wa_value`` grid of ``strides``; negative where a level is below the grid."""
    off = np.where(_LEVEL_OF_WHOLE_BITS >= 0, _LEVEL_OF_WHOLE_BITS, -OFF_GRID)
    return (off[:, None, None] * strides[2] + off[None, :, None] * strides[3] + off[None, None, :] * strides[5]).ravel()


def monotone_envelope(coords: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Raise each row's delta to the max delta of rows at least as precise in every coordinate.

    ``coords`` (rows, dims): larger = more precise. Returns the envelope (rows,).
    """
    ge = np.all(coords[None, :, :] >= coords[:, None, :], axis=2)  # [r, s]: s at least as precise as r
    return np.max(np.where(ge, delta[None, :], -np.inf), axis=1)


def _kv_curves(rows: dict, n_fam: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """D_kv[f, kv_method, level] (inf where no data), its flags, and the measured lower bound."""
    nl, nm = len(BITS_GRID), len(KV_METHODS)
    val = np.full((n_fam, nm, nl), NO_DATA)
    flg = np.zeros((n_fam, nm, nl), dtype=np.int8)
    low = np.zeros((n_fam, nm, nl))
    val[:, :, -1] = 0.0
    flg[:, :, -1] = F_EXACT
    kv = rows["kv"]
    for f in range(n_fam):
        present = []
        for m in range(1, nm):
            sel = (kv["family"] == f) & (kv["method"] == m)
            if not sel.any():
                continue
            present.append(m)
            b, d, tr = kv["bits"][sel], kv["delta"][sel], kv["transferred"][sel]
            env = monotone_envelope(b[:, None], d)
            for lv in range(nl - 1):
                low[f, m, lv] = np.max(env[b >= BITS_GRID[lv]], initial=0.0)
                ok = b <= BITS_GRID[lv]
                if ok.any():
                    i = _pick(np.where(ok, env, np.inf), b == BITS_GRID[lv], tr > 0)
                    val[f, m, lv] = env[i]
                    flg[f, m, lv] = (F_TRANSFERRED * tr[i]) | (F_EXACT * (b[i] == BITS_GRID[lv]))
        if present:
            pick = np.array(present)[np.argmax(val[f, present, :], axis=0)]
            val[f, 0] = val[f, pick, np.arange(nl)]
            flg[f, 0] = flg[f, pick, np.arange(nl)] & ~np.int8(F_EXACT * (len(present) > 1))
            flg[f, 0, -1] = F_EXACT
            low[f, 0] = np.max(low[f, present], axis=0)
    return val, flg, low


def _pick(score: np.ndarray, same: np.ndarray, transferred: np.ndarray, best=np.min) -> np.ndarray:
    """Row index (axis 0) reaching ``best(score)``; ties go to the row at the cell's own coordinates,
    then to an own (not transferred) row, then to the first row."""
    hit = score == best(score, axis=0)[None]
    pref = np.where(hit, 1 + 2 * same + ~transferred[(slice(None),) + (None,) * (score.ndim - 1)], 0)
    return np.argmax(pref, axis=0)


def _wa_cells(rows_fm: tuple, env: np.ndarray, cells: list, kv: tuple, m_kv: float) -> tuple[np.ndarray, np.ndarray]:
    """Value and flags of every (w, a, group, kv) cell for one family, method and KV method.

    Upper bound: min over dominated rows of ``env + KV increment`` (x ``m_kv`` when both are > 0);
    lower bound: max over rows at least as precise (and the KV curve's measured lower bound).
    """
    w, a, g, kvb, tr = rows_fm
    kv_val, kv_flg, kv_low = kv
    wq, aq, gq, kq = cells
    x = (slice(None),) + (None,) * 4  # row axis first, then the cell axes
    dom = (w[x] <= wq) & (a[x] <= aq) & (g[x] <= gq)
    g_hi = np.where(w >= 16, 1, g)  # the dense anchor is at least as precise as any group size
    prec = (w[x] >= wq) & (a[x] >= aq) & (g_hi[x] >= gq) & (kvb[x] >= BITS_GRID[kq])
    same = (w[x] == wq) & (a[x] == aq) & ((g[x] == gq) | (w[x] >= 16)) & (kvb[x] == BITS_GRID[kq])
    r_lv = bits_level(kvb)
    with np.errstate(invalid="ignore"):
        inc = kv_val[kq][None] - kv_val[r_lv][x]
    inc = np.where(kq[None] < r_lv[x], np.where(np.isnan(inc), np.inf, inc), 0.0)  # query KV less precise
    both = (env[x] > 0) & (inc > 0)
    cand = np.where(dom, np.where(both, m_kv * (env[x] + inc), env[x] + inc), np.inf)
    best = _pick(cand, same, tr, np.min)
    lo_row = np.where(prec, env[x], -np.inf)
    lo_best = _pick(lo_row, same, tr, np.max)

    def at(arr, idx):
        return np.take_along_axis(np.broadcast_to(arr, cand.shape), idx[None], axis=0)[0]

    val, inc_b = at(cand, best), at(inc, best)
    lo_rows = np.max(lo_row, axis=0)
    lo = np.maximum(lo_rows, kv_low[kq])
    raised = lo > val
    kv_only = (best == 0) & (inc_b > 0)  # 16-bit weights: the KV curve itself is the table point
    kv_tr, kv_exact = (kv_flg[kq] & F_TRANSFERRED) > 0, (kv_flg[kq] & F_EXACT) > 0
    lo_from_row = lo_rows >= lo
    exact = np.where(raised, at(same, lo_best) & lo_from_row, (at(same, best) & (inc_b == 0)) | (kv_only & kv_exact))
    transferred = np.where(raised, np.where(lo_from_row, tr[lo_best], kv_tr), tr[best] | ((inc_b > 0) & kv_tr))
    val = np.maximum(val, lo)
    flags = (F_TRANSFERRED * transferred | F_EXACT * (exact & np.isfinite(val))
             | F_COMBINED * (at(both, best) & ~raised)).astype(np.int8)
    return val, flags


def compile_quality_tables(rows: dict, combination: dict, per_channel_methods: tuple[str, ...] = ()) -> dict:
    """Lookup grids from the row arrays of :func:`dse.quality_table.load_rows`.

    ``wa_value[f, method, w_lv, a_lv, group_rank, kv_lv, kv_method]`` is the weight/activation +
    KV delta (margin applied), ``sp_value[f, sparse_method, pattern, frac_lv]`` the sparsity delta;
    ``*_flags`` hold F_TRANSFERRED / F_EXACT / F_COMBINED bits and the value's F_POSITIVE /
    F_NO_DATA bits; ``bits_offset`` is the flat offset in ``wa_value`` of each bits key. Methods in
    ``per_channel_methods`` (per-channel scales by construction) read their per-channel cells at
    every group size.
    """
    n_fam, n_meth, nl, nkm = len(FAMILIES), len(QUANT_METHODS), len(BITS_GRID), len(KV_METHODS)
    m_kv = float(combination["wa_kv_margin"])
    kv_val, kv_flg, kv_low = _kv_curves(rows, n_fam)
    wa_val = np.full((n_fam, n_meth, nl, nl, 2, nl, nkm), NO_DATA)
    wa_flg = np.zeros(wa_val.shape, dtype=np.int8)
    cells = np.meshgrid(BITS_GRID, BITS_GRID, np.arange(2), np.arange(nl), indexing="ij")  # w, a, group rank, kv lv
    wa = rows["wa"]
    for f in range(n_fam):
        for m in range(n_meth):
            sel = (wa["family"] == f) & (wa["method"] == m)
            w = np.concatenate([[16.0], wa["w_bits"][sel]])  # row 0: the 16-bit dense anchor
            a = np.concatenate([[16.0], wa["a_bits"][sel]])
            g = np.concatenate([[0], wa["group_rank"][sel]])
            kvb = np.concatenate([[16.0], wa["kv_bits"][sel]])
            tr = np.concatenate([[0], wa["transferred"][sel]]) > 0
            env = monotone_envelope(np.stack([w, a, g, kvb], axis=1), np.concatenate([[0.0], wa["delta"][sel]]))
            rows_fm = (w, a, g, kvb, tr)
            for km in range(nkm):
                val, flg = _wa_cells(rows_fm, env, cells, (kv_val[f, km], kv_flg[f, km], kv_low[f, km]), m_kv)
                wa_val[f, m, ..., km], wa_flg[f, m, ..., km] = val, flg
    per_channel = tuple(code(QUANT_METHODS, name) for name in per_channel_methods)
    for m in per_channel:  # the group size does not apply: the group-rank slice is the per-channel one
        wa_val[:, m, :, :, 1], wa_flg[:, m, :, :, 1] = wa_val[:, m, :, :, 0], wa_flg[:, m, :, :, 0]
    sp_val, sp_flg = _sparse_grids(rows, n_fam)
    wa_flg, sp_flg = wa_flg | _value_flags(wa_val), sp_flg | _value_flags(sp_val)
    return {"wa_value": wa_val, "wa_flags": wa_flg, "sp_value": sp_val, "sp_flags": sp_flg,
            "sparse_margin": float(combination["sparse_margin"]), "wa_kv_margin": m_kv, "rows": rows,
            "per_channel_methods": per_channel, "per_channel": np.isin(np.arange(n_meth), per_channel),
            "bits_offset": _bits_offsets(_strides(wa_val.shape))}


def _value_flags(val: np.ndarray) -> np.ndarray:
    """F_POSITIVE where a cell's value is > 0, F_NO_DATA where it is NO_DATA."""
    return (F_POSITIVE * (val > 0) | F_NO_DATA * (val == NO_DATA)).astype(np.int8)


def _sparse_grids(rows: dict, n_fam: int) -> tuple[np.ndarray, np.ndarray]:
    """S[f, method, pattern, frac_level]: monotone in sparsity, 2:4 never better than unstructured."""
    ns, nf = len(SPARSE_METHODS), len(FRAC_GRID)
    val = np.full((n_fam, ns, 2, nf), NO_DATA)
    flg = np.zeros(val.shape, dtype=np.int8)
    val[..., 0] = 0.0
    flg[..., 0] = F_EXACT
    sp = rows["sparse"]
    for f in range(n_fam):
        for m in range(ns):
            for p in range(2):
                sel = (sp["family"] == f) & (sp["method"] == m) & (sp["pattern"] == p)
                if not sel.any():
                    continue
                fr, d, tr = sp["frac"][sel], sp["delta"][sel], sp["transferred"][sel]
                env = monotone_envelope(-fr[:, None], d)  # less sparse = more precise
                for lv in range(1, nf):
                    ok = fr >= FRAC_GRID[lv]
                    if ok.any():
                        i = _pick(np.where(ok, env, np.inf), fr == FRAC_GRID[lv], tr > 0)
                        val[f, m, p, lv] = env[i]
                        flg[f, m, p, lv] = (F_TRANSFERRED * tr[i]) | (F_EXACT * (fr[i] == FRAC_GRID[lv]))
            worse = val[f, m, 0] > val[f, m, 1]  # 2:4 is a constrained unstructured mask: never better
            flg[f, m, 1] = np.where(worse, flg[f, m, 0] & ~np.int8(F_EXACT), flg[f, m, 1])
            val[f, m, 1] = np.maximum(val[f, m, 1], val[f, m, 0])
    return val, flg


def ppl_delta(tables: dict, family_code, quant_method_code, w_bits, a_bits, kv_bits, w_sparsity_frac, nm_sparse,
              w_group_size=128, kv_method_code=0, sparse_method_code=0, interpolated: bool = True,
              ) -> dict[str, np.ndarray]:
    """Perplexity increase over the 16-bit dense model (WikiText-2 points) per design.

    Inputs broadcast against each other: codes index FAMILIES / QUANT_METHODS / KV_METHODS /
    SPARSE_METHODS; bits per element; ``w_group_size`` weights per scale (0 = per-channel);
    ``w_sparsity_frac`` pruned fraction; ``nm_sparse`` > 0 selects 2:4 (takes precedence, as in
    the workload model). Returns ``ppl_delta`` (inf = no data), ``quality_extrapolated`` and
    ``quality_interpolated`` (int8; not computed with ``interpolated`` False, which the evaluator
    passes), each of the inputs' broadcast shape. One compiled pass per design
    (:func:`_lookup_rows`): a bit or sparsity level off the grid makes its flat index negative,
    so one sign test finds them all.
    """
    args, n, shape = jit.columns(family_code, quant_method_code, kv_method_code, sparse_method_code, w_bits, a_bits,
                                 kv_bits, w_sparsity_frac, nm_sparse, w_group_size)
    wv, sv = tables["wa_value"], tables["sp_value"]
    delta, extrap, interp = np.empty(n), np.empty(n, dtype=np.int8), np.empty(n if interpolated else 0, dtype=np.int8)
    _lookup_rows(*args, wv.ravel(), tables["wa_flags"].ravel(), sv.ravel(), tables["sp_flags"].ravel(),
                 np.asarray(wv.shape, dtype=np.int64), np.asarray(_strides(wv.shape), dtype=np.int64),
                 np.asarray(sv.shape, dtype=np.int64), np.asarray(_strides(sv.shape), dtype=np.int64),
                 tables["bits_offset"], tables["per_channel"].astype(np.int8), tables["sparse_margin"],
                 delta, extrap, interp)
    out = {"ppl_delta": delta.reshape(shape), "quality_extrapolated": extrap.reshape(shape)}
    if interpolated:
        out["quality_interpolated"] = interp.reshape(shape)
    return out


@jit.kernel
def _lookup_rows(fam_code, meth_code, kvm_code, spm_code, w_bits, a_bits, kv_bits, frac, nm, grp,  # noqa: ANN001
                 wa_value, wa_flags, sp_value, sp_flags, wa_shape, ws, sp_shape, ss, bits_offset, per_channel,
                 sparse_margin, delta, extrap, interp):
    """:func:`ppl_delta` row by row into ``delta``, ``extrap`` and (where it has rows) ``interp``."""
    top = BITS_GRID[-1]
    frac_grid = FRAC_GRID
    on_grid_bits = _ON_GRID
    level_offset = _FRAC_OFFSET
    for i in range(delta.shape[0]):
        fam, meth = int(jit.at(fam_code, i)), int(jit.at(meth_code, i))
        kvm, spm = int(jit.at(kvm_code, i)), int(jit.at(spm_code, i))
        codes_ok = (0 <= fam < wa_shape[0] and 0 <= meth < wa_shape[1] and 0 <= kvm < wa_shape[6]
                    and 0 <= spm < sp_shape[1])
        if not codes_ok:
            fam = meth = kvm = spm = 0
        # whole parts of the three widths clipped to 0..16 (bits beyond 16 read as 16)
        w = min(max(jit.at(w_bits, i), 0.0), top)
        a = min(max(jit.at(a_bits, i), 0.0), top)
        kv = min(max(jit.at(kv_bits, i), 0.0), top)
        w_whole, a_whole, kv_whole = np.floor(w), np.floor(a), np.floor(kv)
        key = int((w_whole * _N_WHOLE + a_whole) * _N_WHOLE + kv_whole)
        g = jit.at(grp, i)
        rank = 1 if 1.0 <= g <= GROUP_MAX_FINE else 0
        flat = (fam * ws[0] + meth * ws[1] + rank * ws[4] + kvm * ws[6]) + bits_offset[key]
        f = jit.at(frac, i)
        fl = 0  # the smallest sparsity level >= frac (len(FRAC_GRID): above the grid)
        while fl < frac_grid.shape[0] and frac_grid[fl] < f:
            fl += 1
        if f != f:
            fl = frac_grid.shape[0]
        pattern = 1 if jit.at(nm, i) > 0 else 0  # 2:4 reads the 0.5 level
        frac_off = level_offset[fl]
        flat_sp = (fam * ss[0] + spm * ss[1] + frac_off) + pattern * (ss[2] + 1 - frac_off)
        valid = codes_ok and (flat | flat_sp) >= 0
        if not valid:
            flat = flat_sp = 0
        f_wa, f_sp = wa_flags[flat], sp_flags[flat_sp]
        total = wa_value[flat] + sp_value[flat_sp]
        f_both = f_wa & f_sp
        both = (f_both & F_POSITIVE) > 0
        if both:
            total *= 1.0 + (sparse_margin - 1.0)
        extrapolated = both or ((f_wa | f_sp) & (F_TRANSFERRED | F_COMBINED | F_NO_DATA)) > 0
        if not valid:
            total, extrapolated = NO_DATA, True
        delta[i] = total
        extrap[i] = extrapolated
        if interp.shape[0]:
            on_grid = (w == w_whole and a == a_whole and kv == kv_whole
                       and on_grid_bits[int(w_whole)] and on_grid_bits[int(a_whole)] and on_grid_bits[int(kv_whole)]
                       and (g == 0.0 or g == GROUP_MAX_FINE or per_channel[min(max(meth, 0), per_channel.shape[0] - 1)]
                            or w_whole >= top)
                       and (pattern == 1 or (fl < frac_grid.shape[0] and f == frac_grid[fl])))
            exact = on_grid and (f_both & F_EXACT) > 0 and not both
            interp[i] = not exact and not extrapolated


def _strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Element strides of a C-ordered array of ``shape``."""
    out, step = [], 1
    for size in reversed(shape):
        out.append(step)
        step *= size
    return tuple(reversed(out))
