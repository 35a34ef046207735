"""Discrete-event reference for the analytic serving stage (:mod:`dse.model.serving`).

Not a test module (no ``test_`` prefix): ``tests/model/test_serving.py`` imports it. It
simulates, iteration by iteration, the scheduler the analytic model approximates:

* Poisson arrivals (or all at t = 0), lengths drawn from the workload distribution;
* continuous batching (Orca): every running sequence in decode contributes
  ``dec_queries`` tokens to each iteration; the rest of the **token budget** goes to prefill
  chunks (Sarathi-Serve stall-free batching: ongoing prefills first, then new requests
  FCFS, each chunk ``min(remaining prompt, remaining budget)``), at most ``max_seqs``
  running sequences;
* paged KV cache of ``kv_blocks`` blocks of ``block_tokens`` tokens (vLLM): a sequence holds
  ``ceil(tokens / block_tokens)`` blocks; a new request is admitted only if the blocks of its
  whole prompt leave ``watermark_blocks`` free (they are reserved then, as vLLM v0's
  ``can_allocate``); when decode growth does not fit, the most recently
  admitted running sequence is **preempted by recomputation** (its blocks freed; it
  re-enters the head of the queue and later re-prefills prompt + generated tokens);
* iteration time from the same coefficients (:func:`iteration_time_one`, a plain-Python
  reference of :func:`dse.model.serving_iteration.iteration_time_s`, decode attention's stream
  limit included: its bytes at ``max(1, attn_stream_seqs / decoding sequences)`` times their
  time), times ``stretch``.

A request's TTFT is the end of the iteration that completes its (first) prefill minus its
arrival; TPOT is (completion - first token) / output tokens, as ``tpot_s`` of the static
model. Speculative decoding advances every decode sequence by ``dec_tokens_per_iter``
(expected) tokens per iteration, deterministically.

Pipeline mode (:func:`simulate_pipeline`, per-stage coefficients from :func:`pipeline_stage_coeffs`):
the same scheduler as ``pp`` virtual engines whose micro-batches move through ``pp`` stages, the
reference of the analytic model's pipeline rounds (``tests/model/test_serving_pipeline.py``).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

ROWS = 5  # qkv, o, ffn, lm_head, draft


def _row(c: dict, key: str, r: int) -> float:
    v = c[key]
    return float(np.ravel(v[r])[0]) if np.ndim(v) else float(v)


def comm_time_one(c: dict, f: dict) -> float:
    """Seconds of the replica's collectives in one iteration (zero on one device)."""
    return c["fixed_s"] + c["fixed_s_per_tok"] * f["n_tok"] + c["fixed_s_per_head"] * f["n_head"]


def iteration_time_one(c: dict, f: dict) -> float:
    """Seconds of one iteration, one design, plain Python (reference of ``iteration_time_s``)."""
    return ops_time_one(c, f) + comm_time_one(c, f)


def ops_time_one(c: dict, f: dict) -> float:
    """Seconds of the operators of one iteration (no collectives)."""
    drivers = [f["n_tok"], f["n_tok"], f["n_tok"], f["n_head"], f["n_draft"]]
    t = 0.0
    for r in range(ROWS):
        x = drivers[r]
        if x <= 0:
            continue
        w = _row(c, "lin_w_s", r)
        if r == 2:  # ffn: the experts the tokens touch
            e, k = c["moe_n_experts"], c["moe_top_k"]
            w += c["moe_expert_w_s"] * e * (1.0 - (1.0 - k / e) ** x)
        compute = x * _row(c, "lin_flop_s_per_tok", r)
        memory = w + x * _row(c, "lin_act_s_per_tok", r)
        t += max(compute, memory) + _row(c, "lin_launch_s", r)
    for pairs, tok, kv, streams in ((f["pf_pairs"], f["pf_tok"], f["pf_kv"], 1.0),
                                    (f["dec_pairs"], f["dec_tok"], f["dec_kv"], stream_factor_one(c, f))):
        if tok > 0:
            compute = pairs * c["attn_flop_s_per_pair"]
            memory = (tok * c["attn_act_s_per_tok"] + kv * c["attn_kv_s_per_tok"]) * streams
            t += max(compute, memory) + c["attn_launch_s"]
    return t


def stream_factor_one(c: dict, f: dict) -> float:
    """Decode attention's byte time over its unlimited one: ``max(1, attn_stream_seqs / n_dec)``
    with ``n_dec = dec_tok / dec_queries`` decoding sequences (1 without decode)."""
    if f["dec_tok"] <= 0:
        return 1.0
    return max(1.0, c["attn_stream_seqs"] * c["dec_queries"] / f["dec_tok"])


def iteration_energy_one(c: dict, f: dict) -> float:
    """Dynamic joules of one iteration, one design, plain Python: the operators, the compute power
    the devices draw while waiting in the collectives (operator power x collective seconds) and
    the links."""
    link_j = c["fixed_j"] + c["fixed_j_per_tok"] * f["n_tok"] + c["fixed_j_per_head"] * f["n_head"]
    return device_energy_one(c, f) + link_j


def device_energy_one(c: dict, f: dict) -> float:
    """The devices' dynamic joules of one iteration (operators and waiting; what the power cap limits)."""
    ops_j = ops_energy_one(c, f)
    comm_s, ops_s = comm_time_one(c, f), ops_time_one(c, f)
    return ops_j + (ops_j * comm_s / ops_s if comm_s > 0 and ops_s > 0 else 0.0)  # no operator: no waiting power


def ops_energy_one(c: dict, f: dict) -> float:
    """Dynamic joules of the operators of one iteration."""
    drivers = [f["n_tok"], f["n_tok"], f["n_tok"], f["n_head"], f["n_draft"]]
    e_total = 0.0
    for r in range(ROWS):
        x = drivers[r]
        if x <= 0:
            continue
        w = _row(c, "lin_w_j", r)
        if r == 2:
            e, k = c["moe_n_experts"], c["moe_top_k"]
            w += c["moe_expert_w_j"] * e * (1.0 - (1.0 - k / e) ** x)
        e_total += w + x * (_row(c, "lin_flop_j_per_tok", r) + _row(c, "lin_act_j_per_tok", r))
    for pairs, tok, kv, ratio in ((f["pf_pairs"], f["pf_tok"], f["pf_kv"], 1.0),
                                  (f["dec_pairs"], f["dec_tok"], f["dec_kv"], c["attn_dec_energy_ratio"])):
        if tok > 0:
            e_total += (pairs * c["attn_flop_j_per_pair"] + tok * c["attn_act_j_per_tok"]
                        + kv * c["attn_kv_j_per_tok"]) * ratio
    return e_total


def _grow(prompt, steps, held, block_tokens, tpv):
    """Extra KV blocks each sequence needs to hold ``prompt + tpv * steps`` tokens."""
    return np.maximum(np.ceil((prompt + tpv * steps) / block_tokens) - held, 0.0)


def _decode_run(c, f, t1, e1, stretch, headroom_w, prompt, steps_done, steps_total, held, free, block_tokens,
                until_s):
    """How many identical pure-decode iterations (>= 1) can run before an event: the first
    completion, the next arrival, or the KV cache running out; their times and energies.

    ``t1`` is the first iteration's time before the power cap. ``held`` already holds the
    blocks of the first iteration. Iteration ``r`` (0-based) has every context ``r * tpv``
    tokens longer, which changes only the decode-attention term.
    """
    tpv = float(c["dec_tokens_per_iter"])
    m = max(min(int(np.min(steps_total - steps_done)), 4096), 1)
    if m == 1:
        return 1, max(t1, device_energy_one(c, f) / headroom_w), e1
    r = np.arange(m, dtype=float)
    nd = len(prompt)
    q = f["dec_tok"] / nd
    ctx = f["dec_kv"] + r * (tpv * nd)
    fa, ma, ka = c["attn_flop_s_per_pair"], c["attn_act_s_per_tok"], c["attn_kv_s_per_tok"]
    sf = stream_factor_one(c, f)  # the same sequences throughout the run
    att0 = max(f["dec_pairs"] * fa, (f["dec_tok"] * ma + f["dec_kv"] * ka) * sf)
    grow_s = np.maximum(q * ctx * fa, (f["dec_tok"] * ma + ctx * ka) * sf) - att0
    t = t1 + grow_s * stretch
    # energy: operators grow with the attention; the waiting in the collectives follows their power
    ops_j1, ops_s1, comm_s = ops_energy_one(c, f), ops_time_one(c, f), comm_time_one(c, f)
    per_token_j = (q * c["attn_flop_j_per_pair"] + c["attn_kv_j_per_tok"]) * c["attn_dec_energy_ratio"]
    ops_j = ops_j1 + r * (tpv * nd) * per_token_j
    wait_j = ops_j * comm_s / (ops_s1 + grow_s) if comm_s > 0 else 0.0 * ops_j
    e = e1 - ops_j1 - (ops_j1 * comm_s / ops_s1 if comm_s > 0 else 0.0) + ops_j + wait_j
    t = np.maximum(t, (ops_j + wait_j) / headroom_w)  # the power cap, iteration by iteration
    starts = np.concatenate([[0.0], np.cumsum(t)[:-1]])
    m = max(min(m, int(np.searchsorted(starts, until_s, side="left"))), 1)  # runs starting before the arrival
    while m > 1 and _grow(prompt, steps_done + m, held, block_tokens, tpv).sum() > free:
        m //= 2
    return m, t[:m], e[:m]


def simulate(c: dict, prompt: np.ndarray, output: np.ndarray, arrival_s: np.ndarray, *, token_budget: float,
             max_seqs: int, kv_blocks: int, block_tokens: int, watermark_blocks: int = 0,
             stretch: float = 1.0, headroom_w: float = math.inf,
             max_iterations: int = 10**7) -> dict[str, np.ndarray]:
    """Run the scheduler over the requests (``arrival_s`` sorted ascending). Iteration times are
    multiplied by ``stretch``, then held to ``device joules / headroom_w`` at least (a power cap
    iteration by iteration, as the static model's per phase; ``inf``: none).

    Returns per-request ``ttft_s``, ``tpot_s``, ``end_s`` (NaN where unfinished) and the
    totals ``busy_s`` (sum of iteration times), ``energy_j`` (dynamic), ``n_iterations``,
    ``n_preemptions``, and the iteration log ``iter_s``/``iter_end_s``/``iter_batch``/``iter_j``.
    """
    q, tpv = float(c["dec_queries"]), float(c["dec_tokens_per_iter"])
    n = len(prompt)
    prompt = prompt.astype(float)
    steps_total = np.ceil(output / tpv)
    pf_total = prompt.copy()  # tokens to prefill (prompt, or prompt + generated after a preemption)
    pf_done = np.zeros(n)
    steps_done = np.zeros(n)
    held = np.zeros(n, dtype=np.int64)  # KV blocks held
    admit_order = np.zeros(n, dtype=np.int64)
    first = np.full(n, np.nan)
    end = np.full(n, np.nan)
    waiting: deque[int] = deque()
    prefilling: list[int] = []
    decoding = np.zeros(0, dtype=np.int64)
    free = kv_blocks
    now, nxt, n_admit = 0.0, 0, 0
    busy = energy = pf_processed = 0.0
    n_pre = 0
    log_s, log_end, log_batch, log_pf, log_j = [], [], [], [], []
    for _ in range(max_iterations):
        while nxt < n and arrival_s[nxt] <= now:
            waiting.append(nxt)
            nxt += 1
        if not prefilling and len(decoding) == 0 and not waiting:
            if nxt >= n:
                break
            now = float(arrival_s[nxt])
            continue
        # decode growth: every decoding sequence needs the KV of its next step
        if len(decoding):
            ctx = prompt[decoding] + tpv * (steps_done[decoding] + 1.0)
            need = np.ceil(ctx / block_tokens).astype(np.int64) - held[decoding]
            growth = int(need.sum())
            while growth > free:  # preempt the latest admitted running sequence (recompute)
                cand = prefilling + decoding.tolist()
                victim = max(cand, key=lambda i: admit_order[i])
                free += int(held[victim])
                held[victim] = 0
                pf_total[victim] = prompt[victim] + math.floor(tpv * steps_done[victim])
                pf_done[victim] = 0.0
                waiting.appendleft(victim)
                n_pre += 1
                if victim in prefilling:
                    prefilling.remove(victim)
                else:
                    keep = decoding != victim
                    decoding, need = decoding[keep], need[keep]
                    ctx = ctx[keep]
                    growth = int(need.sum())
            free -= growth
            held[decoding] += need
        budget = token_budget - q * len(decoding)
        chunks: list[tuple[int, float]] = []
        for i in prefilling:  # ongoing prefills first (their blocks were reserved at admission)
            if budget <= 0:
                break
            k = min(pf_total[i] - pf_done[i], budget)
            chunks.append((i, k))
            budget -= k
        while waiting and budget > 0 and len(prefilling) + len(decoding) < max_seqs:
            i = waiting[0]
            k = min(pf_total[i] - pf_done[i], budget)
            blocks = math.ceil(pf_total[i] / block_tokens)  # the whole prompt's blocks (vLLM v0 can_allocate)
            if free - blocks < watermark_blocks:
                break
            waiting.popleft()
            free -= blocks
            held[i] = blocks
            n_admit += 1
            admit_order[i] = n_admit
            prefilling.append(i)
            chunks.append((i, k))
            budget -= k
        if not chunks and len(decoding) == 0:  # nothing schedulable (memory): wait for an arrival
            if nxt >= n:
                break
            now = max(now, float(arrival_s[nxt]))
            continue
        completing = [i for i, k in chunks if pf_done[i] + k >= pf_total[i]]
        pf_tok = sum(k for _, k in chunks)
        pf_pairs = sum(k * pf_done[i] + k * (k + 1.0) * 0.5 for i, k in chunks)
        pf_kv = sum(pf_done[i] for i, _ in chunks)
        nd = len(decoding)
        ctx_sum = float(ctx.sum()) if nd else 0.0
        f = {"n_tok": pf_tok + q * nd, "n_head": len(completing) + q * nd, "n_draft": float(nd),
             "pf_pairs": pf_pairs, "pf_tok": pf_tok, "pf_kv": pf_kv,
             "dec_pairs": q * ctx_sum, "dec_tok": q * nd, "dec_kv": ctx_sum}
        t_free = iteration_time_one(c, f) * stretch
        t = max(t_free, device_energy_one(c, f) / headroom_w)
        e = iteration_energy_one(c, f)
        reps = 1
        if not chunks and nd:  # pure decode: repeat while nothing but the contexts changes
            reps, t, e = _decode_run(c, f, t_free, e, stretch, headroom_w, prompt[decoding], steps_done[decoding],
                                     steps_total[decoding], held[decoding], free, block_tokens,
                                     float(arrival_s[nxt]) - now if nxt < n else np.inf)
            extra = _grow(prompt[decoding], steps_done[decoding] + reps, held[decoding], block_tokens, tpv)
            free -= int(extra.sum())
            held[decoding] += extra.astype(np.int64)
        t = np.atleast_1d(t)
        ends = now + np.cumsum(t)
        now = float(ends[-1])
        busy += float(t.sum())
        energy += float(np.sum(e))
        log_s.extend(t.tolist())
        log_j.extend(np.broadcast_to(e, t.shape).tolist())
        log_end.extend(ends.tolist())
        log_batch.extend([nd] * reps)
        log_pf.extend([pf_tok] + [0.0] * (reps - 1))
        # advance decode
        if nd:
            steps_done[decoding] += float(reps)
            done = steps_done[decoding] >= steps_total[decoding]
            if done.any():
                fin = decoding[done]
                end[fin] = now
                free += int(held[fin].sum())
                held[fin] = 0
                decoding = decoding[~done]
        for i, k in chunks:
            pf_done[i] += k
            pf_processed += k
        if completing:
            for i in completing:
                prefilling.remove(i)
                if np.isnan(first[i]):
                    first[i] = now
            decoding = np.concatenate([decoding, np.array(completing, dtype=np.int64)])
    ttft = first - arrival_s
    tpot = (end - first) / output
    return {"ttft_s": ttft, "tpot_s": tpot, "end_s": end, "busy_s": busy, "energy_j": energy,
            "n_iterations": len(log_s), "n_preemptions": n_pre, "prefill_tokens": pf_processed,
            "prompt_tokens": prompt, "iter_s": np.array(log_s), "iter_j": np.array(log_j),
            "iter_end_s": np.array(log_end), "iter_batch": np.array(log_batch),
            "iter_prefill_tokens": np.array(log_pf)}


def steady_stats(res: dict, arrival_s: np.ndarray, tpv: float = 1.0, saturated: bool = False,
                 warm_frac: float = 0.2, tail_frac: float = 0.1) -> dict[str, float]:
    """p50/p90 of TTFT and TPOT over requests arriving in the steady window (the first
    ``warm_frac`` and the last ``tail_frac`` of arrivals dropped), the output-token throughput
    (decode sequences x ``tpv`` per iteration) and the mean decode batch and iteration time
    over that window (``saturated``: over 10-50% of the run, for an overloaded run)."""
    n = len(arrival_s)
    lo, hi = int(warm_frac * n), int((1.0 - tail_frac) * n)
    sel = slice(lo, hi)
    t0, t1 = arrival_s[lo], arrival_s[hi - 1]
    ends = res["end_s"]
    if saturated:  # queue never empties: measure over the first half of the run (no drain)
        t0, t1 = 0.1 * res["iter_end_s"][-1], 0.5 * res["iter_end_s"][-1]
    it = (res["iter_end_s"] >= t0) & (res["iter_end_s"] <= t1)
    return {
        "ttft_p50_s": float(np.nanpercentile(res["ttft_s"][sel], 50)),
        "ttft_p90_s": float(np.nanpercentile(res["ttft_s"][sel], 90)),
        "tpot_p50_s": float(np.nanpercentile(res["tpot_s"][sel], 50)),
        "tpot_p90_s": float(np.nanpercentile(res["tpot_s"][sel], 90)),
        "tokens_per_s": float(res["iter_batch"][it].sum() * tpv / (t1 - t0)),
        "mean_batch": float(res["iter_batch"][it].mean()) if it.any() else 0.0,
        "mean_iter_s": float(res["iter_s"][it].mean()) if it.any() else 0.0,
        "unfinished_frac": float(np.isnan(ends[sel]).mean()),
        "recompute_frac": float(res["prefill_tokens"] / np.sum(res["prompt_tokens"]) - 1.0),
    }


# ---- pipeline mode: pp stages run by pp virtual engines ----------------------------------------

def pipeline_stage_coeffs(c_round: dict, m: dict, k: dict, hw: dict) -> dict:
    """One micro-batch's coefficients on each stage, from what :func:`dse.model.serving_mapping.replica_coeffs`
    prices a round with (one design, scalars; ``m, k, hw`` its inputs): the round is ``pp`` passes
    of the last stage over ``1 / pp`` of the round's tokens plus one micro-batch's sends, so a pass
    keeps the per-token terms and takes ``1 / pp`` of the per-pass ones (weights, launches, experts;
    ``attn_stream_seqs``: one micro-batch's sequences stream at once). The collectives are the
    stage's (``parallel.stage_comm`` at the points ``replica_coeffs`` uses, per micro-batch token),
    the sends a separate hop (``p2p_path_s / (pp - 1)``, affine in the micro-batch's tokens).
    Earlier stages carry their layers' share of the last stage's per-layer terms (``L - ceil(L/pp)``
    layers over ``pp - 1`` stages; equal stages when ``pp`` divides ``L``), no LM head, no draft.

    Returns ``{"last": c, "other": c, "hop_s": s, "hop_s_per_tok": s, "pp": pp}``; features passed
    to the stage coefficients are one micro-batch's token counts."""
    from dse.model import parallel  # local: the single-engine DES needs numpy only

    pp = float(np.ravel(k["pp"])[0])
    kp = {**k, "micro_batches": k["pp"]}
    per_pass = ("lin_w_s", "lin_launch_s", "moe_expert_w_s", "attn_launch_s", "attn_stream_seqs")
    last = {key: (np.asarray(v, dtype=float) / pp if key in per_pass else v) for key, v in c_round.items()}
    comm = [parallel.stage_comm(m, kp, hw, tok, head) for tok, head in ((1.0, 1.0), (2.0, 1.0), (1.0, 2.0))]
    one, tok, head = (float(np.ravel(x["comm_s"])[0]) for x in comm)
    # replica tokens at micro_batches = pp are pp times one micro-batch's: per micro-batch token x pp
    last["fixed_s_per_tok"], last["fixed_s_per_head"] = (tok - one) * pp, (head - one) * pp
    last["fixed_s"] = max(one - (tok - one) - (head - one), 0.0)
    path1, path2 = (float(np.ravel(x["p2p_path_s"])[0]) for x in comm[:2])
    layers = float(np.ravel(m["n_layers"])[0])
    share = (layers - math.ceil(layers / pp)) / (pp - 1.0) / math.ceil(layers / pp)
    other = dict(last)
    for key in ("lin_flop_s_per_tok", "lin_w_s", "lin_act_s_per_tok", "lin_launch_s"):
        other[key] = np.asarray(last[key], dtype=float) * np.array([share, share, share, 0.0, 0.0]).reshape(
            (ROWS,) + (1,) * (np.ndim(last[key]) - 1))
    for key in ("moe_expert_w_s", "attn_flop_s_per_pair", "attn_act_s_per_tok", "attn_kv_s_per_tok",
                "attn_launch_s", "fixed_s", "fixed_s_per_tok"):
        other[key] = last[key] * share
    other["fixed_s_per_head"] = 0.0
    return {"last": last, "other": other, "hop_s": (2.0 * path1 - path2) / (pp - 1.0),
            "hop_s_per_tok": (path2 - path1) * pp / (pp - 1.0), "pp": int(pp)}


def simulate_pipeline(stages: dict, prompt: np.ndarray, output: np.ndarray, arrival_s: np.ndarray, *,
                      token_budget: float, max_seqs: int, kv_blocks: int, block_tokens: int,
                      watermark_blocks: int = 0, max_iterations: int = 10**7) -> dict[str, np.ndarray]:
    """The scheduler of :func:`simulate` as ``pp`` virtual engines over ``pp`` pipeline stages
    (vLLM's pipeline-parallel scheduler): a request is bound at arrival to the engine with the
    fewest unfinished requests; each engine has its own token budget, ``max_seqs`` and ``1 / pp``
    of the KV blocks, and forms one micro-batch at a time (the single-engine rules, preemption
    included), when its previous one has left the last stage. A micro-batch occupies stage ``s``
    for that stage's time (``stages`` from :func:`pipeline_stage_coeffs`; the LM head on the last
    stage), then travels to the next stage (``hop_s``; the link, not the stage, is busy); each
    stage serves micro-batches in the order they reach it, so stages work on different
    micro-batches at once. No power cap, no energy.

    Returns what :func:`simulate` returns for :func:`steady_stats`, one log row per micro-batch
    (``iter_end_s`` its exit from the last stage, ``iter_batch`` its decode sequences, ``iter_s`` its
    time from entering the first stage)."""
    pp = stages["pp"]
    last, other = stages["last"], stages["other"]
    q, tpv = float(last["dec_queries"]), float(last["dec_tokens_per_iter"])
    n = len(prompt)
    prompt = prompt.astype(float)
    steps_total = np.ceil(output / tpv)
    pf_total, pf_done, steps_done = prompt.copy(), np.zeros(n), np.zeros(n)
    held = np.zeros(n, dtype=np.int64)
    admit_order = np.zeros(n, dtype=np.int64)
    first, end = np.full(n, np.nan), np.full(n, np.nan)
    engines = [{"waiting": deque(), "prefilling": [], "decoding": [], "free": kv_blocks // pp, "finishing": 0}
               for _ in range(pp)]
    ready = [math.inf] * pp  # when each engine schedules next (inf: idle until an arrival)
    stage_free = [0.0] * pp
    nxt, n_admit, n_pre, pf_processed = 0, 0, 0, 0.0
    log_s, log_end, log_batch = [], [], []

    def unfinished(e):
        return len(e["waiting"]) + len(e["prefilling"]) + len(e["decoding"]) + e["finishing"]

    for _ in range(max_iterations):
        v = min(range(pp), key=ready.__getitem__)
        if nxt < n and arrival_s[nxt] <= ready[v]:  # an arrival first: bind it to the least loaded engine
            u = min(range(pp), key=lambda j: unfinished(engines[j]))
            engines[u]["waiting"].append(nxt)
            ready[u] = min(ready[u], float(arrival_s[nxt]))
            nxt += 1
            continue
        if ready[v] == math.inf:
            break
        now, e = ready[v], engines[v]
        e["finishing"] = 0  # its last micro-batch has left the pipeline
        dec = e["decoding"]
        if dec:  # decode growth; preempt the latest admitted by recomputation when it does not fit
            need = np.ceil((prompt[dec] + tpv * (steps_done[dec] + 1.0)) / block_tokens).astype(np.int64) - held[dec]
            while int(need.sum()) > e["free"]:
                victim = max(e["prefilling"] + dec, key=lambda i: admit_order[i])
                e["free"] += int(held[victim])
                held[victim] = 0
                pf_total[victim], pf_done[victim] = prompt[victim] + math.floor(tpv * steps_done[victim]), 0.0
                e["waiting"].appendleft(victim)
                n_pre += 1
                if victim in e["prefilling"]:
                    e["prefilling"].remove(victim)
                else:
                    need = need[[i != victim for i in dec]]
                    dec.remove(victim)
            e["free"] -= int(need.sum())
            held[dec] += need
        budget = token_budget - q * len(dec)
        chunks: list[tuple[int, float]] = []
        for i in e["prefilling"]:
            if budget <= 0:
                break
            chunks.append((i, min(pf_total[i] - pf_done[i], budget)))
            budget -= chunks[-1][1]
        while e["waiting"] and budget > 0 and len(e["prefilling"]) + len(dec) < max_seqs:
            i = e["waiting"][0]
            blocks = math.ceil(pf_total[i] / block_tokens)
            if e["free"] - blocks < watermark_blocks:
                break
            e["waiting"].popleft()
            e["free"] -= blocks
            held[i] = blocks
            n_admit += 1
            admit_order[i] = n_admit
            e["prefilling"].append(i)
            chunks.append((i, min(pf_total[i], budget)))
            budget -= chunks[-1][1]
        if not chunks and not dec:
            ready[v] = math.inf  # wakes at its next arrival
            continue
        completing = [i for i, kk in chunks if pf_done[i] + kk >= pf_total[i]]
        nd = len(dec)
        ctx_sum = float((prompt[dec] + tpv * (steps_done[dec] + 1.0)).sum()) if nd else 0.0
        pf_tok = sum(kk for _, kk in chunks)
        f = {"n_tok": pf_tok + q * nd, "n_head": len(completing) + q * nd, "n_draft": float(nd),
             "pf_pairs": sum(kk * pf_done[i] + kk * (kk + 1.0) * 0.5 for i, kk in chunks), "pf_tok": pf_tok,
             "pf_kv": sum(pf_done[i] for i, _ in chunks), "dec_pairs": q * ctx_sum, "dec_tok": q * nd,
             "dec_kv": ctx_sum}
        t_other = iteration_time_one(other, {**f, "n_head": 0.0, "n_draft": 0.0})
        t_last = iteration_time_one(last, f)
        hop = stages["hop_s"] + stages["hop_s_per_tok"] * f["n_tok"]
        t = start = max(now, stage_free[0])
        for s in range(pp):  # FIFO at each stage, the send between stages on the link
            t = max(t, stage_free[s]) + (t_last if s == pp - 1 else t_other)
            stage_free[s] = t
            t += hop if s < pp - 1 else 0.0
        ready[v] = t
        log_s.append(t - start)
        log_end.append(t)
        log_batch.append(nd)
        if nd:
            steps_done[dec] += 1.0
            done = [i for i in dec if steps_done[i] >= steps_total[i]]
            for i in done:
                end[i] = t
                e["free"] += int(held[i])
                held[i] = 0
                dec.remove(i)
            e["finishing"] = len(done)
        for i, kk in chunks:
            pf_done[i] += kk
            pf_processed += kk
        for i in completing:
            e["prefilling"].remove(i)
            if np.isnan(first[i]):
                first[i] = t
            dec.append(i)
    order = np.argsort(log_end, kind="stable")
    return {"ttft_s": first - arrival_s, "tpot_s": (end - first) / output, "end_s": end,
            "n_iterations": len(log_s), "n_preemptions": n_pre, "prefill_tokens": pf_processed,
            "prompt_tokens": prompt, "iter_s": np.array(log_s)[order], "iter_end_s": np.array(log_end)[order],
            "iter_batch": np.array(log_batch)[order]}
