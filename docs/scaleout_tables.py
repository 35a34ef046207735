"""Tables of docs/scaleout.md: the (tp, pp, ep) split that wins per system and batch, and pure TP
against pure PP at equal device counts, for the two scale-out studies (issue 11 item 4).

Evaluates every design of each study's space (``studies/scaleout-*.yaml``) with ``dse.evaluate``
and keeps the physical ones: fits memory, at most 8 devices, and whole sequences per ep group
and micro-batch (``batch % (ep * micro_batches) == 0``; the model itself accepts fractions).

    python docs/scaleout_tables.py            # both studies, Markdown tables on stdout
"""

from __future__ import annotations

import itertools
import sys

import pandas as pd

import dse
from dse.spec.study import load_study

STUDIES = ("scaleout-llama3-70b", "scaleout-mixtral")
OBJECTIVES = {"decode_tokens_per_s": False, "tokens_per_s": False, "decode_tokens_per_j": False,
              "usd_per_mtoken": True}  # True: lower is better


def grid(study: str) -> pd.DataFrame:
    """Every (knob values) combination of the study's space, evaluated, with the physical filter."""
    st = load_study(study)
    knobs = {k.name: list(k.choices) for k in st.space.knobs}
    rows = [dict(zip(knobs, values, strict=True)) for values in itertools.product(*knobs.values())]
    designs = pd.DataFrame(rows)
    designs = designs[(designs["pp"] > 1) | (designs["micro_batches"] == 1)]
    platforms = list(designs["platform"].unique())
    out = []
    for plat in platforms:
        d = designs[designs["platform"] == plat].drop(columns="platform").reset_index(drop=True)
        for key, value in st.space.fixed.items():
            if key not in ("model", "platform"):
                d[key] = value
        m = dse.evaluate(d, model=st.space.models[0], platform=plat)
        out.append(pd.concat([d.assign(platform=plat), m[[c for c in m.columns if c not in d.columns]]], axis=1))
    df = pd.concat(out, ignore_index=True)
    ok = (df["g_memory_bytes"] <= 0) & (df["n_devices"] <= 8) & (df["batch"] % (df["ep"] * df["micro_batches"]) == 0)
    return df[ok]


def split(r: pd.Series) -> str:
    mb = f" mb{int(r.micro_batches)}" if r.micro_batches > 1 else ""
    return f"tp{int(r.tp)} pp{int(r.pp)} ep{int(r.ep)}{mb} w{int(r.w_bits)}"


def winners(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (plat, batch), g in df.groupby(["platform", "batch"], sort=False):
        row = {"system": plat, "batch": int(batch)}
        for metric, lower in OBJECTIVES.items():
            best = g.loc[g[metric].idxmin() if lower else g[metric].idxmax()]
            row[metric] = f"{split(best)}: {best[metric]:.4g}"
        rows.append(row)
    return pd.DataFrame(rows)


def tp_vs_pp(df: pd.DataFrame, w_bits: int = 16) -> pd.DataFrame:
    """Best pure TP (tp = n) against best pure PP (pp = n, any micro-batches) at n devices."""
    rows = []
    d = df[(df["w_bits"] == w_bits) & (df["ep"] == 1)]
    for (plat, batch), g in d.groupby(["platform", "batch"], sort=False):
        for n in (2, 4, 8):
            tp = g[(g["tp"] == n) & (g["pp"] == 1)]
            pp = g[(g["pp"] == n) & (g["tp"] == 1)]
            if tp.empty or pp.empty:
                continue
            t, p = tp.loc[tp["decode_tokens_per_s"].idxmax()], pp.loc[pp["decode_tokens_per_s"].idxmax()]
            e2e = pp.loc[pp["tokens_per_s"].idxmax()]
            e2e_tp = tp.loc[tp["tokens_per_s"].idxmax()]
            rows.append({"system": plat, "batch": int(batch), "n": n,
                         "decode tok/s tp / pp (mb)": f"{t.decode_tokens_per_s:.4g} / {p.decode_tokens_per_s:.4g} "
                                                      f"({int(p.micro_batches)})",
                         "decode tok/J tp / pp": f"{t.decode_tokens_per_j:.3g} / {p.decode_tokens_per_j:.3g}",
                         "TTFT s tp / pp": f"{e2e_tp.ttft_s:.3g} / {e2e.ttft_s:.3g}",
                         "e2e tok/s tp / pp": f"{e2e_tp.tokens_per_s:.4g} / {e2e.tokens_per_s:.4g}",
                         "pp/tp e2e": round(e2e.tokens_per_s / e2e_tp.tokens_per_s, 2)})
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame) -> str:
    """A pipe table (no tabulate dependency)."""
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in df.itertuples(index=False)]
    return "\n".join(lines)


def main(names: list[str]) -> int:
    for name in names or STUDIES:
        df = grid(name)
        print(f"## {name}: {len(df)} physical designs\n")
        print(markdown(winners(df)), "\n")
        print(markdown(tp_vs_pp(df)), "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
