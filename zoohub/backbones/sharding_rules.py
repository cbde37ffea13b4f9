"""Tensor-parallel rules for every family, by tensor name (Megatron-style).

torch Linear weights are [out, in]: projections that fan out (q/k/v, MLP up/gate) split their
output rows over "model"; projections that fan in (attention output, MLP down) split their input
columns, so each layer needs one all-reduce. GPT-2's Conv1D weights are [in, out], hence swapped.
Embedding tables split over the vocabulary. Anything unmatched is replicated.
"""
from jax.sharding import PartitionSpec as P

_COLUMN = r"(query|key|value|q_proj|k_proj|v_proj|q_lin|k_lin|v_lin|gate_proj|up_proj|intermediate\.dense|lin1|fc1)"
_ROW = r"(o_proj|down_proj|attention\.output\.dense|out_lin|lin2|layer\.\d+\.output\.dense|fc2)"

RULES = [
    (rf"\.{_COLUMN}\.weight$", P("model", None)),
    (rf"\.{_COLUMN}\.bias$", P("model")),
    (rf"\.{_ROW}\.weight$", P(None, "model")),
    (r"\.(c_attn|c_fc)\.weight$", P(None, "model")),   # GPT-2 Conv1D [in, out]
    (r"\.(c_attn|c_fc)\.bias$", P("model")),
    (r"\.c_proj\.weight$", P("model", None)),
    (r"(word_embeddings|embed_tokens|wte)\.weight$", P("model", None)),
    (r"^lm_head\.weight$", P("model", None)),
]
