"""What trains and how: the trainable/frozen split, losses and metrics per task kind, the optax chain."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from zoohub.backend import ops
from zoohub.errors import InputError
from zoohub.presets.weights import flatten
from zoohub.tasks.training.data_tokens import question_answering_loss, token_classification_loss

LORA_LEAVES = (".lora_A.", ".lora_B.")


def is_lora(name: str) -> bool:
    return any(part in f".{name}" for part in LORA_LEAVES)


def split_params(params, heads: Sequence[str] | None = None) -> tuple[dict, dict]:
    """(trainable, frozen) flat dicts by checkpoint name.

    With LoRA adapters present only they and the `heads` modules (PEFT's modules_to_save, e.g. a
    new classifier) train; otherwise every floating tensor does. `lora_scaling` and integer buffers
    never train."""
    from zoohub.tasks.lora import in_modules

    flat = flatten(params)
    lora = any(is_lora(k) for k in flat)

    def trains(name: str, value) -> bool:
        if lora:
            return is_lora(name) or in_modules(name, heads)
        return np.dtype(value.dtype).kind == "f" and not name.endswith("lora_scaling")
    trainable = {k: v for k, v in flat.items() if trains(k, v)}
    frozen = {k: v for k, v in flat.items() if k not in trainable}
    return trainable, frozen


def decays(name: str, shape: tuple, layers: str | None = None) -> bool:
    """Weight decay applies to matrices and embeddings, never to biases or norm scales (HF Trainer's rule).

    `layers`: the path of stacked layers, whose tensors carry one extra leading axis."""
    per_layer = len(shape) - (1 if layers is not None and name.startswith(layers + ".") else 0)
    return per_layer >= 2 and "norm" not in name.lower()


# ---- losses: (outputs, batch) -> (loss sum, target count, correct count) --------------------

def _log_softmax(x):
    xp = ops().xp
    x = x.astype(xp.float32)
    shifted = x - x.max(-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(-1, keepdims=True))


def classification_loss(logits, batch):
    xp = ops().xp
    labels, weights = batch["labels"], batch["weights"]
    logp = _log_softmax(logits)
    nll = -xp.take_along_axis(logp, labels[:, None].astype(xp.int32), axis=-1)[:, 0]
    correct = (logp.argmax(-1) == labels).astype(xp.float32)
    return (nll * weights).sum(), weights.sum(), (correct * weights).sum()


def causal_lm_loss(logits, batch):
    """Next-token cross-entropy on positions whose *target* has loss_mask 1 (response tokens)."""
    xp = ops().xp
    targets = batch["input_ids"][:, 1:]
    mask = batch["loss_mask"][:, 1:] * batch["attention_mask"][:, 1:] * batch["weights"][:, None]
    logp = _log_softmax(logits[:, :-1])
    nll = -xp.take_along_axis(logp, targets[..., None].astype(xp.int32), axis=-1)[..., 0]
    correct = (logp.argmax(-1) == targets).astype(xp.float32)
    return (nll * mask).sum(), mask.sum(), (correct * mask).sum()


from zoohub.tasks.training.data_seq2seq import seq2seq_lm_loss  # noqa: E402

# task.TASK -> loss; metrics come from the three sums.
LOSSES: dict[str, Callable] = {
    "text_classifier": classification_loss,
    "image_classifier": classification_loss,
    "causal_lm": causal_lm_loss,
    "seq2seq_lm": seq2seq_lm_loss,
    "token_classifier": token_classification_loss,
    "question_answerer": question_answering_loss,
}


def metrics(task_kind: str, sums, aux: bool = False) -> dict[str, float]:
    """loss, accuracy (token accuracy for LMs) and perplexity for LMs, from (loss sum, count, correct);
    with `aux`, also `aux_loss` from a fourth sum (the auxiliary loss times the count; training only:
    `loss` then includes its weighted share, as transformers' loss does)."""
    loss_sum, count, correct = (float(v) for v in sums[:3])
    count = max(count, 1.0)
    out = {"loss": loss_sum / count, "accuracy": correct / count}
    if aux:
        out["aux_loss"] = float(sums[3]) / count
    if task_kind in ("causal_lm", "seq2seq_lm"):
        out["perplexity"] = float(np.exp(min(out["loss"], 80.0)))
    return out


# ---- the optimizer -------------------------------------------------------------------------

def learning_rate_schedule(learning_rate, *, schedule: str, warmup: int | float, total_steps: int | None):
    """A float or an optax schedule: constant, linear (HF's default decay to 0) or cosine, with linear warmup."""
    import optax

    if callable(learning_rate):
        return learning_rate
    if schedule not in ("constant", "linear", "cosine"):
        raise InputError(f"schedule={schedule!r} is not one of 'constant', 'linear', 'cosine' "
                         "(or pass learning_rate=<an optax schedule>)")
    if isinstance(warmup, float) and 0 < warmup < 1:
        if total_steps is None:
            raise InputError("warmup as a fraction needs a known number of steps; streamed data has none, "
                             "so pass warmup as a step count")
        warmup = int(round(warmup * total_steps))
    warmup = int(warmup)
    if schedule == "constant":
        if not warmup:
            return float(learning_rate)
        return optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup),
                                     optax.constant_schedule(learning_rate)], [warmup])
    if total_steps is None:
        raise InputError(f"schedule={schedule!r} needs the number of steps, which streamed data does not have; "
                         "use schedule='constant' or pass learning_rate=<an optax schedule>")
    decay_steps = max(total_steps - warmup, 1)
    if schedule == "linear":
        decay = optax.linear_schedule(learning_rate, 0.0, decay_steps)
    else:
        decay = optax.cosine_decay_schedule(learning_rate, decay_steps)
    if not warmup:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup), decay], [warmup])


def build_optimizer(trainable: dict, *, optimizer=None, learning_rate=5e-5, schedule: str = "constant",
                    warmup: int | float = 0, total_steps: int | None = None, weight_decay: float = 0.01,
                    max_grad_norm: float | None = 1.0, grad_accumulation: int = 1, layers: str | None = None):
    """AdamW with decoupled weight decay on matrices only, global-norm clipping, and optional
    gradient accumulation (optax.MultiSteps: one update per `grad_accumulation` batches)."""
    import optax

    if optimizer is None:
        lr = learning_rate_schedule(learning_rate, schedule=schedule, warmup=warmup, total_steps=total_steps)
        mask = {k: decays(k, tuple(v.shape), layers) for k, v in trainable.items()}
        optimizer = optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay, mask=mask)
        if max_grad_norm:
            optimizer = optax.chain(optax.clip_by_global_norm(max_grad_norm), optimizer)
    if grad_accumulation < 1:
        raise InputError(f"grad_accumulation must be >= 1, got {grad_accumulation}")
    if grad_accumulation > 1:
        optimizer = optax.MultiSteps(optimizer, every_k_schedule=grad_accumulation)
    return optimizer
