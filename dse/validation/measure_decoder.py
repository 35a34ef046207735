"""The random-weight decoder of ``dse measure``: shapes from a model card, memory estimate, the model.

The method (what the decoder runs and omits) is in :mod:`dse.validation.measure`'s docstring.
PyTorch is imported lazily (by :class:`Decoder`), so the shape arithmetic works without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dse.spec.errors import DseError
from dse.validation.measure_gpu import import_torch

# --------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Shapes:
    """Integer decoder shapes taken from a model card."""

    name: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    gated: bool
    vocab: int
    tied: bool
    n_experts: int = 1

    @classmethod
    def from_card(cls, card: Any) -> Shapes:
        def get(key: str, default: float | None = None) -> int:
            value = getattr(card, key, default)
            if value is None:
                raise DseError(f"model card {getattr(card, 'name', '?')}: missing {key}")
            return int(value)

        return cls(
            name=str(getattr(card, "name", "model")),
            n_layers=get("n_layers"), d_model=get("d_model"), n_heads=get("n_heads"),
            n_kv_heads=get("n_kv_heads"), head_dim=get("head_dim"), d_ff=get("d_ff"),
            gated=bool(get("ffn_gated")), vocab=get("vocab_size"), tied=bool(get("tied_embeddings")),
            n_experts=get("n_experts", 1),
        )

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def group(self) -> int:
        return self.n_heads // self.n_kv_heads

    def n_params(self) -> int:
        """Parameters of the built decoder (norm vectors included)."""
        per_layer = (self.d_model * (self.q_dim + 2 * self.kv_dim) + self.q_dim * self.d_model
                     + (3 if self.gated else 2) * self.d_model * self.d_ff + 2 * self.d_model)
        emb = self.vocab * self.d_model
        return self.n_layers * per_layer + emb * (1 if self.tied else 2) + self.d_model

    def kv_bytes_per_token(self, elem_bytes: int = 2) -> int:
        return 2 * self.n_layers * self.kv_dim * elem_bytes


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _prefill_chunk(batch: int, in_len: int, max_tokens: int) -> int:
    """Largest divisor of ``batch`` whose micro-batch has <= ``max_tokens`` tokens (at least 1)."""
    limit = max(1, max_tokens // max(1, in_len))
    return max(d for d in range(1, batch + 1) if batch % d == 0 and d <= limit)


def estimate_bytes(shapes: Shapes, batch: int, in_len: int, out_len: int, *, kv_bucket: int = 16,
                   max_prefill_tokens: int = 16384, elem_bytes: int = 2) -> dict[str, int]:
    """GPU memory needed (weights, decode phase, prefill phase), conservative."""
    weights = shapes.n_params() * elem_bytes
    max_len = _round_up(in_len + out_len, kv_bucket)
    kv = shapes.kv_bytes_per_token(elem_bytes) * batch * max_len
    ffn_w = (2 if shapes.gated else 1) * shapes.d_ff
    dec_act = batch * (4 * shapes.d_model + 2 * (shapes.q_dim + 2 * shapes.kv_dim) + 3 * ffn_w) * elem_bytes \
        + batch * shapes.vocab * 8
    bc = _prefill_chunk(batch, in_len, max_prefill_tokens)
    tok = bc * in_len
    pre_kv = shapes.kv_bytes_per_token(elem_bytes) * tok
    pre_act = tok * (6 * shapes.d_model + 3 * (shapes.q_dim + 2 * shapes.kv_dim) + 3 * ffn_w) * elem_bytes \
        + bc * shapes.vocab * 8
    return {"weights": weights, "decode": kv + dec_act, "prefill": pre_kv + pre_act}


# --------------------------------------------------------------------------- model


class Decoder:
    """Random-weight decoder with a card's shapes (see the module docstring)."""

    def __init__(self, shapes: Shapes, device: Any, dtype: Any = None, seed: int = 0) -> None:
        torch = import_torch()
        if shapes.n_experts > 1:
            raise DseError(f"{shapes.name}: MoE cards (n_experts={shapes.n_experts}) are not supported by "
                           "dse measure")
        if shapes.n_heads % shapes.n_kv_heads:
            raise DseError(f"{shapes.name}: n_kv_heads must divide n_heads")
        self.torch = torch
        self.s = shapes
        self.device = torch.device(device)
        self.dtype = dtype if dtype is not None else torch.bfloat16
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed)

        def w(rows: int, cols: int) -> Any:
            t = torch.empty(rows, cols, device=self.device, dtype=self.dtype)
            return t.normal_(0.0, 1.0 / math.sqrt(cols), generator=gen)

        def ones(n: int) -> Any:
            return torch.ones(n, device=self.device, dtype=self.dtype)

        s = shapes
        ffn_rows = (2 if s.gated else 1) * s.d_ff
        self.layers = [
            {"ln1": ones(s.d_model), "wqkv": w(s.q_dim + 2 * s.kv_dim, s.d_model), "wo": w(s.d_model, s.q_dim),
             "ln2": ones(s.d_model), "w1": w(ffn_rows, s.d_model), "w2": w(s.d_model, s.d_ff)}
            for _ in range(s.n_layers)
        ]
        self.emb = w(s.vocab, s.d_model)
        self.ln_f = ones(s.d_model)
        self.lm_head = self.emb if s.tied else w(s.vocab, s.d_model)
        self.eps = 1e-5
        import torch.nn.functional as F  # noqa: N812

        self.F = F
        self._rms = getattr(F, "rms_norm", None)

    def weight_bytes(self) -> int:
        seen: set[int] = set()
        total = 0
        tensors = [t for layer in self.layers for t in layer.values()] + [self.emb, self.ln_f, self.lm_head]
        for t in tensors:
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
        return total

    def norm(self, x: Any, weight: Any) -> Any:
        if self._rms is not None:
            return self._rms(x, (x.shape[-1],), weight, self.eps)
        xf = x.float()
        return (xf * self.torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * weight

    def _ffn(self, x: Any, layer: dict) -> Any:
        """x: [N, d] -> x + FFN(norm(x))."""
        F, s = self.F, self.s
        h = self.norm(x, layer["ln2"])
        u = F.linear(h, layer["w1"])
        a = F.silu(u[:, : s.d_ff]) * u[:, s.d_ff:] if s.gated else F.relu(u)
        return self.torch.addmm(x, a, layer["w2"].t())

    # -- prefill: tokens [b, T] -> next tokens [b]; writes K/V into kv_bufs[l] [2, b, n_kv, T, hd]
    def prefill(self, tokens: Any, kv_bufs: list) -> Any:
        torch, F, s = self.torch, self.F, self.s
        b, T = tokens.shape
        x = F.embedding(tokens, self.emb).view(b * T, s.d_model)
        for layer, kv in zip(self.layers, kv_bufs, strict=True):
            h = self.norm(x, layer["ln1"])
            qkv = F.linear(h, layer["wqkv"])
            q = qkv[:, : s.q_dim].view(b, T, s.n_heads, s.head_dim).transpose(1, 2)
            kv.copy_(qkv[:, s.q_dim:].view(b, T, 2, s.n_kv_heads, s.head_dim).permute(2, 0, 3, 1, 4))
            o = self._sdpa_causal(q, kv[0], kv[1])
            o = o.transpose(1, 2).reshape(b * T, s.q_dim)
            x = torch.addmm(x, o, layer["wo"].t())
            x = self._ffn(x, layer)
        last = x.view(b, T, s.d_model)[:, -1]
        logits = F.linear(self.norm(last, self.ln_f), self.lm_head)
        return torch.argmax(logits, dim=-1)

    def _sdpa_causal(self, q: Any, k: Any, v: Any) -> Any:
        F, s = self.F, self.s
        if s.group == 1:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        try:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        except TypeError:  # torch < 2.5: no enable_gqa
            return F.scaled_dot_product_attention(q, k.repeat_interleave(s.group, 1),
                                                  v.repeat_interleave(s.group, 1), is_causal=True)

    # -- one decode step over cache [2, B, n_kv, max_len, hd] per layer, attending kv_len positions
    def decode_step(self, tokens: Any, cache: list, pos: Any, kv_len: int) -> None:
        torch, F, s = self.torch, self.F, self.s
        B = tokens.shape[0]
        x = F.embedding(tokens, self.emb)
        for layer, kv in zip(self.layers, cache, strict=True):
            h = self.norm(x, layer["ln1"])
            qkv = F.linear(h, layer["wqkv"])
            q = qkv[:, : s.q_dim].view(B, s.n_kv_heads, s.group, s.head_dim)
            new = qkv[:, s.q_dim:].view(B, 2, s.n_kv_heads, 1, s.head_dim).transpose(0, 1)
            kv.index_copy_(3, pos, new)
            o = F.scaled_dot_product_attention(q, kv[0, :, :, :kv_len], kv[1, :, :, :kv_len])
            x = torch.addmm(x, o.reshape(B, s.q_dim), layer["wo"].t())
            x = self._ffn(x, layer)
        logits = F.linear(self.norm(x, self.ln_f), self.lm_head)
        tokens.copy_(torch.argmax(logits, dim=-1))
        pos.add_(1)
