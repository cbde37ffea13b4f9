"""fit and evaluate: a jitted train step over a flat dict of trainable params, on the jax backend."""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from zoohub.backend import ops, using
from zoohub.errors import InputError
from zoohub.hub import env
from zoohub.presets.weights import unflatten
from zoohub.tasks.training.checkpoint import load_checkpoint, save_checkpoint
from zoohub.tasks.training.data import LOSS_KEYS, Dataset, make_dataset
from zoohub.tasks.training.optim import LOSSES, build_optimizer, metrics, split_params

log = logging.getLogger("zoohub")

# A callback gets (event, logs): event "step" (logs: epoch, step, loss) or "epoch" (logs: epoch and
# the epoch's metrics). Returning True stops training after that step or epoch.
Callback = Callable[[str, dict], "bool | None"]


def _model_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k not in LOSS_KEYS}


def _cast(params: dict, dtype) -> dict:
    """bfloat16 compute copies of floating params (float32 masters stay outside the loss)."""
    import jax.numpy as jnp

    return {k: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v for k, v in params.items()}


def _train_step(task, optimizer, *, seed: int, compute_dtype: str | None):
    import jax
    import jax.numpy as jnp
    import optax

    loss_of = LOSSES[task.TASK]
    dtype = jnp.bfloat16 if compute_dtype in ("bfloat16", "bf16") else None

    def loss_fn(trainable, frozen, batch, key):
        params = {**frozen, **trainable}
        params = _cast(params, dtype) if dtype is not None else params
        inputs = _model_inputs(batch)
        if dtype is not None and "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].astype(dtype)
        outputs = task._outputs(unflatten(params), inputs, key)
        total, count, correct = loss_of(outputs.astype(jnp.float32), batch)
        return total / jnp.maximum(count, 1.0), jnp.stack([total, count, correct])

    def step(trainable, opt_state, frozen, batch, step_index):
        # Dropout keys depend only on (seed, global step): resuming replays the same masks.
        key = jax.random.fold_in(jax.random.PRNGKey(seed), step_index)
        grads, sums = jax.grad(loss_fn, has_aux=True)(trainable, frozen, batch, key)
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, sums

    # Donating params and optimizer state lets XLA update them in place (no second copy per step).
    return jax.jit(step, donate_argnums=(0, 1))


def _eval_step(task):
    loss_of = LOSSES[task.TASK]
    xp = ops().xp

    def step(params, batch):
        outputs = task._outputs(unflatten(params), _model_inputs(batch))
        return xp.stack(list(loss_of(outputs.astype(xp.float32), batch)))
    return ops().jit(step)


def _run_eval(task, params: dict, data: Dataset, batch_size: int) -> dict[str, float]:
    key = ("eval_step", task.TASK)
    if key not in task._compiled:
        task._compiled[key] = _eval_step(task)
    fn = task._compiled[key]
    sums = np.zeros(3)
    for batch in data.batches(batch_size):
        sums += ops().to_numpy(fn(params, batch)).astype(np.float64)
    return metrics(task.TASK, sums)


def evaluate(task, x, y=None, *, batch_size: int = 32, max_length: int | None = None) -> dict[str, float]:
    """Loss and accuracy (and perplexity for causal LMs) of the task on labelled data. Works on both backends.

    Example:
        >>> clf.evaluate(["good film", "bad film"], [1, 0])   # {"loss": 0.12, "accuracy": 1.0}  # doctest: +SKIP
    """
    with using(task.backend):
        data = make_dataset(task, x, y, max_length=max_length)
        from zoohub.presets.weights import flatten

        return _run_eval(task, flatten(task.params), data, batch_size)


def _validation(task, validation_data, max_length):
    if validation_data is None:
        return None
    if isinstance(validation_data, tuple) and len(validation_data) in (1, 2):
        return make_dataset(task, *validation_data, what="validation_data", max_length=max_length)
    return make_dataset(task, validation_data, what="validation_data", max_length=max_length)


def _early_stopping(spec) -> dict | None:
    if spec is None or spec is False:
        return None
    spec = {"patience": int(spec)} if isinstance(spec, (int, float)) and not isinstance(spec, bool) else dict(spec or {})
    spec.setdefault("monitor", "val_loss")
    spec.setdefault("patience", 2)
    spec.setdefault("mode", "max" if "accuracy" in spec["monitor"] else "min")
    spec.setdefault("restore_best", True)
    return spec


def fit(task, x, y=None, *, validation_data=None, epochs: int = 1, batch_size: int = 16,
        learning_rate: float | Callable = 5e-5, optimizer=None, schedule: str = "constant",
        warmup: int | float = 0, weight_decay: float = 0.01, max_grad_norm: float | None = 1.0,
        grad_accumulation: int = 1, compute_dtype: str | None = None, seed: int = 0, shuffle: bool = True,
        callbacks: Sequence[Callback] = (), early_stopping: int | dict | None = None,
        checkpoint_dir: str | os.PathLike | None = None, resume: bool = False, verbose: bool | None = None,
        max_length: int | None = None) -> dict[str, list]:
    """Fine-tune `task` in place on the jax backend and return the history.

    Args:
        x, y: training data; see `zoohub.tasks.training.data` for the forms each task takes.
        validation_data: `(x, y)` (or `x` for causal LMs), evaluated after each epoch (`val_*` keys).
        epochs: total epochs; with `resume=True` training continues from the last checkpoint's epoch.
        batch_size: rows per step; an update sees `batch_size * grad_accumulation` rows.
        learning_rate, schedule ("constant" | "linear" | "cosine"), warmup (steps, or a fraction):
            AdamW's step size; `learning_rate` may be an optax schedule. `optimizer` replaces the
            whole optax chain (AdamW with `weight_decay` on matrices only, clipping at `max_grad_norm`).
        compute_dtype: "bfloat16" runs the forward/backward in bfloat16 with float32 master weights.
        seed: fixes shuffling, dropout and nothing else; the same seed gives the same run.
        callbacks: functions `(event, logs)` called per "step" and "epoch"; returning True stops.
        early_stopping: patience (epochs without improvement of val_loss) or a dict with `monitor`,
            `patience`, `mode`, `restore_best`.
        checkpoint_dir, resume: a preset + optimizer state per epoch; `resume=True` continues exactly.
        verbose: progress bar; default on for a terminal unless ZOOHUB_QUIET is on (1/true/yes/on).
    Returns:
        {"loss": [...], "accuracy": [...], "val_loss": [...], ..., "step_loss": [...], "examples_per_second": [...]}

    Example:
        >>> history = clf.fit(texts, labels, epochs=3, validation_data=(val_texts, val_labels))  # doctest: +SKIP
    """
    import jax.numpy as jnp

    from zoohub.backend.sharding import shard_batch

    ops(task.backend).require_training("fit")
    with using(task.backend):
        if epochs < 1 or batch_size < 1:
            raise InputError(f"epochs and batch_size must be >= 1, got epochs={epochs}, batch_size={batch_size}")
        train = make_dataset(task, x, y, epochs=epochs, max_length=max_length)
        val = _validation(task, validation_data, max_length)
        stopping = _early_stopping(early_stopping)
        if stopping and val is None and stopping["monitor"].startswith("val_"):
            raise InputError(f"early_stopping monitors {stopping['monitor']!r}, which needs validation_data")

        heads = (getattr(task, "lora_config", None) or {}).get("modules_to_save")
        trainable, frozen = split_params(task.params, heads)
        dtypes = {k: v.dtype for k, v in trainable.items()}
        # Float32 master copies: the step donates (overwrites) them, the task's own arrays stay valid.
        trainable = {k: jnp.array(v, dtype=jnp.float32, copy=True) for k, v in trainable.items()}
        steps_per_epoch = train.num_batches(batch_size)
        total = None if steps_per_epoch is None else -(-steps_per_epoch * epochs // grad_accumulation)
        # The same settings reuse the compiled step (a new optax chain would mean a new compile).
        cache_key = ("train_step", id(optimizer) if optimizer is not None else None,
                     learning_rate if not callable(learning_rate) else id(learning_rate), schedule, warmup,
                     total if schedule != "constant" or isinstance(warmup, float) else None, weight_decay,
                     max_grad_norm, grad_accumulation, seed, compute_dtype, tuple(sorted(trainable)))
        if cache_key not in task._compiled:
            opt = build_optimizer(trainable, optimizer=optimizer, learning_rate=learning_rate, schedule=schedule,
                                  warmup=warmup, total_steps=total, weight_decay=weight_decay,
                                  max_grad_norm=max_grad_norm, grad_accumulation=grad_accumulation)
            task._compiled[cache_key] = (opt, _train_step(task, opt, seed=seed, compute_dtype=compute_dtype))
        opt, train_step = task._compiled[cache_key]
        opt_state = opt.init(trainable)

        history: dict[str, list] = {"epoch": [], "step_loss": []}
        start_epoch, step, best, waited, best_params = 0, 0, None, 0, None
        run_args = {"seed": seed, "batch_size": batch_size, "grad_accumulation": grad_accumulation}
        if resume:
            if checkpoint_dir is None:
                raise InputError("resume=True needs checkpoint_dir= (where the earlier run wrote its checkpoints)")
            found = load_checkpoint(Path(checkpoint_dir), trainable=trainable, opt_state=opt_state)
            if found is None:
                log.info("no checkpoint in %s yet; starting from epoch 1", checkpoint_dir)
            else:
                trainable, opt_state, state = found
                if state.get("run_args") != run_args:
                    log.warning("resuming with %s but the checkpoint was written with %s; the run will not "
                                "match an uninterrupted one", run_args, state.get("run_args"))
                start_epoch, step, history = state["epoch"], state["step"], state["history"]
                best, waited = state.get("best"), state.get("waited", 0)

        quiet = env.quiet() if verbose is None else not verbose
        stop = False
        for epoch in range(start_epoch, epochs):
            from tqdm.auto import tqdm

            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{epochs}", unit="step",
                       disable=quiet, leave=True, dynamic_ncols=True)
            sums, seen, started, pending = np.zeros(3), 0, time.perf_counter(), None

            def report(result) -> bool:
                nonlocal sums
                s = np.asarray(result, np.float64)  # waits for that step only
                sums += s
                loss = s[0] / max(s[1], 1.0)
                history["step_loss"].append(float(loss))
                rate = seen / max(time.perf_counter() - started, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{sums[0] / max(sums[1], 1):.4f}", ex_s=f"{rate:.1f}")
                logs = {"epoch": epoch + 1, "step": len(history["step_loss"]), "loss": float(loss)}
                return any(cb("step", logs) for cb in callbacks)

            for batch in train.batches(batch_size, epoch=epoch, seed=seed, shuffle=shuffle):
                if task.mesh is not None:  # data parallel: rows split over the mesh's "data" axis
                    batch = shard_batch(batch, task.mesh)
                trainable, opt_state, result = train_step(trainable, opt_state, frozen, batch, jnp.int32(step))
                step += 1
                seen += int(batch["weights"].sum())
                # Report the previous step while this one runs, so reading the loss never stalls the device.
                if pending is not None and report(pending):
                    stop = True
                    break
                pending = result
            if pending is not None and not stop and report(pending):
                stop = True
            elapsed = time.perf_counter() - started
            bar.close()
            epoch_logs = {k: v for k, v in metrics(task.TASK, sums).items()}
            epoch_logs["examples_per_second"] = seen / max(elapsed, 1e-9)
            if val is not None:
                epoch_logs.update({f"val_{k}": v for k, v in _run_eval(task, {**frozen, **trainable}, val, batch_size).items()})
            history["epoch"].append(epoch + 1)
            for k, v in epoch_logs.items():
                history.setdefault(k, []).append(v)
            if not quiet:
                print(f"epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k}={v:.4g}" for k, v in epoch_logs.items()),
                      file=sys.stderr)
            if stopping:
                value = epoch_logs.get(stopping["monitor"])
                if value is None:
                    raise InputError(f"early_stopping monitors {stopping['monitor']!r}; available: {sorted(epoch_logs)}")
                better = best is None or (value < best if stopping["mode"] == "min" else value > best)
                if better:
                    best, waited = value, 0
                    if stopping["restore_best"]:
                        best_params = {k: np.array(v) for k, v in trainable.items()}
                else:
                    waited += 1
                    stop = stop or waited >= stopping["patience"]
            if any(cb("epoch", {"epoch": epoch + 1, **epoch_logs}) for cb in callbacks):
                stop = True
            if checkpoint_dir is not None:
                task.params = _write_back({**frozen, **{k: jnp.copy(v) for k, v in trainable.items()}}, dtypes)
                save_checkpoint(Path(checkpoint_dir), epoch=epoch + 1, task=task, trainable=trainable,
                                opt_state=opt_state, state={"step": step, "history": history, "best": best,
                                                            "waited": waited, "run_args": run_args})
            if stop:
                break
        if best_params is not None:
            trainable = {k: jnp.asarray(v) for k, v in best_params.items()}
        task.params = _write_back({**frozen, **trainable}, dtypes)
        return history


def _write_back(flat: dict, dtypes: dict) -> dict:
    """Nested task params, trained tensors cast back to the dtype they were loaded in."""
    return unflatten({k: v.astype(dtypes[k]) if k in dtypes and v.dtype != dtypes[k] else v for k, v in flat.items()})
