"""Board energy of one decode step of ``dse measure``'s decoder, whole and in parts: its weight
GEMMs, its attention, and its small kernels (norms, activation, KV write, embedding, argmax).

Run on a GPU machine from the repository root: ``PYTHONPATH=. python benchmarks/decode_parts_probe.py
[--model llama-3-8b] [--layers N] [--seconds 3] [--out FILE.csv]``. The project's decode rows read more power
than the model, by more as the batch grows (validation/README.md, decode power), while each
decode-shaped kernel alone costs about what the presets charge or less. This probe replays, from
CUDA graphs, the same step of the same decoder (``dse.validation.measure_decoder.Decoder``) and
each part alone with the step's shapes and buffers, so that the parts' energies beyond idle can be
set against the whole step's: a sum below the step's means the parts cost more together than apart.

Per case (batch, context): ``step`` (``Decoder.decode_step``, position held fixed), ``gemm`` (every
layer's four weight GEMMs and the LM head), ``attn`` (every layer's decode attention over the
context) and ``small`` (everything else of the step: norms, SiLU-and-multiply, the KV write,
embedding, argmax). Needs torch with CUDA and nvidia-ml-py.
"""

from __future__ import annotations

import dataclasses

from gpu_power import open_gpu, probe_parser, replay_power, write_rows

CASES = ((1, 576), (16, 576), (64, 576), (16, 2048), (64, 2048))  # (sequences, attended context)


def main() -> None:
    import pynvml as nvml
    import torch
    import torch.nn.functional as F  # noqa: N812

    from dse.spec.presets import load_model
    from dse.validation.measure_decoder import Decoder, Shapes

    parser = probe_parser(__doc__, 3.0)
    parser.add_argument("--model", default="llama-3-8b")
    parser.add_argument("--layers", type=int, default=0, help="build only this many layers (0: the card's)")
    args = parser.parse_args()
    handle, dev, idle_w = open_gpu(nvml, torch, max(args.seconds, 2.0))
    s = Shapes.from_card(load_model(args.model))
    if args.layers:
        s = dataclasses.replace(s, n_layers=args.layers)
    dec = Decoder(s, dev)
    rows = []
    for batch, ctx in CASES:
        for part, fn in parts(dec, s, batch, ctx, torch, F).items():
            sec, watts = replay_power(fn, args.seconds, nvml, handle, torch, per_graph=4)
            rows.append({"model": args.model, "layers": s.n_layers, "batch": batch, "context": ctx + 1, "part": part,
                         "s_per_call": sec, "board_w": watts, "idle_w": idle_w, "dynamic_j": (watts - idle_w) * sec})
            print(f"{args.model} batch {batch:3d} context {ctx + 1:5d} {part:5s} {sec * 1e3:8.3f} ms "
                  f"{watts:6.1f} W  {(watts - idle_w) * sec:7.4f} J beyond idle", flush=True)
        torch.cuda.empty_cache()
    if args.out:
        write_rows(args.out, rows)


def parts(dec, s, batch: int, ctx: int, torch, F) -> dict:
    """The step and its three parts as callables over one KV cache of ``batch`` x ``ctx + 1`` positions."""
    dev, dtype = dec.device, dec.dtype
    cache = [torch.randn(2, batch, s.n_kv_heads, ctx + 1, s.head_dim, device=dev, dtype=dtype)
             for _ in range(s.n_layers)]
    tokens = torch.randint(0, s.vocab, (batch,), device=dev)
    pos = torch.full((1,), ctx, device=dev, dtype=torch.long)
    x = torch.randn(batch, s.d_model, device=dev, dtype=dtype)
    h_q = torch.randn(batch, s.q_dim, device=dev, dtype=dtype)
    h_f = torch.randn(batch, s.d_ff, device=dev, dtype=dtype)
    q = torch.randn(batch, s.n_kv_heads, s.group, s.head_dim, device=dev, dtype=dtype)
    new = torch.randn(2, batch, s.n_kv_heads, 1, s.head_dim, device=dev, dtype=dtype)
    u = torch.randn(batch, (2 if s.gated else 1) * s.d_ff, device=dev, dtype=dtype)
    logits = torch.randn(batch, s.vocab, device=dev, dtype=dtype)

    def step():
        dec.decode_step(tokens, cache, pos, ctx + 1)
        pos.sub_(1)  # the same position every replay

    def gemm():
        for layer in dec.layers:
            F.linear(x, layer["wqkv"])
            torch.addmm(x, h_q, layer["wo"].t())
            F.linear(x, layer["w1"])
            torch.addmm(x, h_f, layer["w2"].t())
        F.linear(x, dec.lm_head)

    def attn():
        for kv in cache:
            F.scaled_dot_product_attention(q, kv[0, :, :, :ctx + 1], kv[1, :, :, :ctx + 1])

    def small():
        y = F.embedding(tokens, dec.emb)
        for layer, kv in zip(dec.layers, cache, strict=True):
            dec.norm(y, layer["ln1"])
            kv.index_copy_(3, pos, new)
            dec.norm(y, layer["ln2"])
            F.silu(u[:, : s.d_ff]) * u[:, s.d_ff:] if s.gated else F.relu(u)
        dec.norm(y, dec.ln_f)
        tokens.copy_(torch.argmax(logits, dim=-1))

    return {"step": step, "gemm": gemm, "attn": attn, "small": small}


if __name__ == "__main__":
    main()
