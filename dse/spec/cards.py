"""LLM architecture fields: what a model card (``models/*.yaml``) gives.

All counts are plain integers; the workload model turns them into per-operator
FLOPs and bytes (:mod:`dse.model.workload`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CardField:
    name: str
    default: float | None  # None: the card must give it
    doc: str


CARD_FIELDS: tuple[CardField, ...] = (
    CardField("n_layers", None, "decoder blocks"),
    CardField("d_model", None, "hidden size"),
    CardField("n_heads", None, "query heads"),
    CardField("n_kv_heads", None, "key/value heads (= n_heads for MHA, 1 for MQA, else GQA)"),
    CardField("head_dim", None, "dimension of one head"),
    CardField("d_ff", None, "FFN inner size (per expert for MoE)"),
    CardField("ffn_gated", None, "1 for gated FFN (SwiGLU/GeGLU: 3 matrices), 0 for plain (2 matrices)"),
    CardField("vocab_size", None, "vocabulary size"),
    CardField("tied_embeddings", None, "1 if the LM head shares the input embedding matrix"),
    CardField("n_experts", 1, "FFN experts per layer (1 = dense)"),
    CardField("n_experts_active", 1, "experts each token is routed to (top-k)"),
    CardField("max_seq_len", None, "context length the model was trained for"),
)
CARD_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in CARD_FIELDS)
REQUIRED_CARD_FIELDS: frozenset[str] = frozenset(f.name for f in CARD_FIELDS if f.default is None)
CARD_DEFAULTS: dict[str, float] = {f.name: f.default for f in CARD_FIELDS if f.default is not None}
