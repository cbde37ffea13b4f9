"""fit and evaluate: a jitted train step over a flat dict of trainable params, on the jax backend."""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoohub.backend import ops, using
from zoohub.errors import InputError
from zoohub.hub import env
from zoohub.backend.distributed import gather
from zoohub.presets.weights import flatten, unflatten
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
        if task.family.aux_loss is None:
            outputs, aux_loss, weight = task._outputs(unflatten(params), inputs, key), jnp.float32(0.0), 0.0
        else:  # e.g. MoE load balancing: objective = task loss + weight * aux loss, as transformers sums them
            aux = {}
            outputs = task._outputs(unflatten(params), inputs, key, aux=aux)
            aux_loss, weight = task.family.aux_loss(task.config, aux, inputs)
        total, count, correct = loss_of(outputs.astype(jnp.float32), batch)
        total = total + weight * aux_loss * count  # total / count is then the objective
        return total / jnp.maximum(count, 1.0), jnp.stack([total, count, correct, aux_loss * count])

    def step(trainable, opt_state, frozen, batch, step_index):
        # Dropout keys depend only on (seed, global step): resuming replays the same masks.
        key = jax.random.fold_in(jax.random.PRNGKey(seed), step_index)
        grads, sums = jax.grad(loss_fn, has_aux=True)(trainable, frozen, batch, key)
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, sums

    return step


def _jit_step(task, step, trainable: dict, opt_state):
    """The train step, compiled. Donating params and optimizer state lets XLA update them in place (no
    second copy per step). On a mesh, both come out laid out as they went in (FSDP shards stay shards;
    the optimizer's counters are replicated) and the loss sums replicated, so every process reads them."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    if task.mesh is None:
        return jax.jit(step, donate_argnums=(0, 1))
    replicated = NamedSharding(task.mesh, PartitionSpec())

    def on_mesh(a):
        s = a.sharding
        return s if isinstance(s, NamedSharding) and s.mesh == task.mesh else replicated
    shardings = (jax.tree.map(on_mesh, trainable), jax.tree.map(on_mesh, opt_state), replicated)
    return jax.jit(step, donate_argnums=(0, 1), out_shardings=shardings)


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
        >>> import zoohub
        >>> clf = zoohub.TextClassifier.from_preset("starter_bert_tiny_en")   # bundled toy, head untrained
        >>> result = clf.evaluate(["great film", "awful film", "i loved it"], [1, 0, 1])
        >>> sorted(result), round(result["loss"], 1)                    # an untrained head: chance, ln 2
        (['accuracy', 'loss'], 0.7)
    """
    with using(task.backend):
        data = make_dataset(task, x, y, max_length=max_length)
        return _run_eval(task, flatten(task.params), data, batch_size)


def _validation(task, validation_data, max_length):
    if validation_data is None:
        return None
    if isinstance(validation_data, tuple) and len(validation_data) in (1, 2):
        return make_dataset(task, *validation_data, what="validation_data", max_length=max_length)
    return make_dataset(task, validation_data, what="validation_data", max_length=max_length)


class EarlyStopping:
    """Stop when the monitored metric has not improved for `patience` epochs in a row.

    State: the `best` value, the epochs `waited` since it, and (with `restore_best`) a host copy of the
    trainable params of the best epoch, which `fit` puts back at the end. Checkpoints keep `best` and
    `waited`, so a resumed run goes on counting.
    """

    def __init__(self, *, monitor: str = "val_loss", patience: int | float = 2, mode: str | None = None,
                 restore_best: bool = True):
        self.monitor, self.patience, self.restore_best = monitor, patience, restore_best
        self.mode = mode or ("max" if "accuracy" in monitor else "min")
        self.best: float | None = None
        self.waited = 0
        self.best_params: dict[str, np.ndarray] | None = None

    @classmethod
    def from_spec(cls, spec: int | dict | None) -> EarlyStopping | None:
        """fit's `early_stopping=`: None or False (off), a patience, or a dict of the constructor's arguments."""
        if spec is None or spec is False:
            return None
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            return cls(patience=int(spec))
        spec = dict(spec or {})
        known = ("monitor", "patience", "mode", "restore_best")
        unknown = sorted(set(spec) - set(known))
        if unknown:  # ignored, as they always were; the warning catches typos
            log.warning("early_stopping ignores %s; it takes %s", unknown, ", ".join(known))
        return cls(**{k: v for k, v in spec.items() if k in known})

    def update(self, logs: dict[str, float], params: dict) -> bool:
        """Record an epoch's metrics; True when training should stop. `params` are the trainable params
        after the epoch, copied to the host when they are the best so far."""
        value = logs.get(self.monitor)
        if value is None:
            raise InputError(f"early_stopping monitors {self.monitor!r}; available: {sorted(logs)}")
        if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            self.best, self.waited = value, 0
            if self.restore_best:
                self.best_params = {k: np.array(gather(v)) for k, v in params.items()}
            return False
        self.waited += 1
        return self.waited >= self.patience


@dataclass
class _Run:
    """What one `fit` call carries from step to step, and what a checkpoint saves and resume restores."""

    trainable: dict
    opt_state: Any
    epoch: int = 0  # epochs completed
    step: int = 0  # train steps taken: dropout keys are folded from it
    history: dict[str, list] = field(default_factory=lambda: {"epoch": [], "step_loss": []})


def _optimizer_and_step(task, trainable: dict, *, total_steps: int | None, seed: int, compute_dtype: str | None,
                        **opt_args):
    """(optax chain, jitted train step), cached on the task: the same settings reuse the compiled step
    (a new optax chain would mean a new compile)."""
    lr, optimizer, schedule, warmup = (opt_args[k] for k in ("learning_rate", "optimizer", "schedule", "warmup"))
    # Callables by identity; the step count only where the chain depends on it.
    key = ("train_step", id(optimizer) if optimizer is not None else None, id(lr) if callable(lr) else lr,
           schedule, warmup, total_steps if schedule != "constant" or isinstance(warmup, float) else None,
           opt_args["weight_decay"], opt_args["max_grad_norm"], opt_args["grad_accumulation"], seed, compute_dtype,
           tuple(sorted(trainable)))
    if key not in task._compiled:
        opt = build_optimizer(trainable, total_steps=total_steps, layers=task.family.layers_path(task.head), **opt_args)
        step = _train_step(task, opt, seed=seed, compute_dtype=compute_dtype)
        layouts: dict = {}

        def compiled(trainable, opt_state, *args):
            # One program per layout of the params (sharding= may change it between fit calls).
            layout = tuple(getattr(v, "sharding", None) for v in trainable.values())
            if layout not in layouts:
                layouts[layout] = _jit_step(task, step, trainable, opt_state)
            return layouts[layout](trainable, opt_state, *args)
        task._compiled[key] = (opt, compiled)
    return task._compiled[key]


def _resume(task, run: _Run, checkpoint_dir, run_args: dict, stopping: EarlyStopping | None) -> None:
    """Continue `run` (params, optimizer state, step, history) and the early-stopping counters from the
    latest checkpoint in `checkpoint_dir`, when there is one."""
    if checkpoint_dir is None:
        raise InputError("resume=True needs checkpoint_dir= (where the earlier run wrote its checkpoints)")
    found = load_checkpoint(Path(checkpoint_dir), task=task, trainable=run.trainable, opt_state=run.opt_state)
    if found is None:
        log.info("no checkpoint in %s yet; starting from epoch 1", checkpoint_dir)
        return
    run.trainable, run.opt_state, state = found
    if state.get("run_args") != run_args:
        log.warning("resuming with %s but the checkpoint was written with %s; the run will not "
                    "match an uninterrupted one", run_args, state.get("run_args"))
    run.epoch, run.step, run.history = state["epoch"], state["step"], state["history"]
    if stopping is not None:
        stopping.best, stopping.waited = state.get("best"), state.get("waited", 0)


def _run_epoch(run: _Run, train_step, frozen: dict, batches: Iterable[dict], *, mesh, bar,
               callbacks: Sequence[Callback]) -> tuple[np.ndarray, int, float, bool]:
    """Train on `batches`, reporting each step to the bar, `history["step_loss"]` and the callbacks.

    Returns (loss, count and correct sums, examples seen, seconds, whether a step callback asked to stop).
    """
    import jax.numpy as jnp

    from zoohub.backend.sharding import shard_batch

    sums, seen, started, pending = np.zeros(4), 0, time.perf_counter(), None

    def report(result) -> bool:
        nonlocal sums
        s = np.asarray(result, np.float64)  # waits for that step only
        sums += s
        loss = s[0] / max(s[1], 1.0)
        run.history["step_loss"].append(float(loss))
        rate = seen / max(time.perf_counter() - started, 1e-9)
        bar.update(1)
        bar.set_postfix(loss=f"{sums[0] / max(sums[1], 1):.4f}", ex_s=f"{rate:.1f}")
        logs = {"epoch": run.epoch + 1, "step": len(run.history["step_loss"]), "loss": float(loss)}
        return any(cb("step", logs) for cb in callbacks)

    for batch in batches:
        if mesh is not None:  # data parallel: rows split over the mesh's "data" axis
            batch = shard_batch(batch, mesh)
        run.trainable, run.opt_state, result = train_step(run.trainable, run.opt_state, frozen, batch,
                                                          jnp.int32(run.step))
        run.step += 1
        seen += int(batch["weights"].sum())
        # Report the previous step while this one runs, so reading the loss never stalls the device.
        if pending is not None and report(pending):
            return sums, seen, time.perf_counter() - started, True
        pending = result
    stop = pending is not None and report(pending)
    return sums, seen, time.perf_counter() - started, stop


def _epoch_logs(task, sums: np.ndarray, seen: int, seconds: float, params: dict, val: Dataset | None,
                batch_size: int) -> dict[str, float]:
    """The epoch's training metrics and throughput, and `val_*` metrics when there is validation data."""
    logs = dict(metrics(task.TASK, sums, aux=task.family.aux_loss is not None))
    logs["examples_per_second"] = seen / max(seconds, 1e-9)
    if val is not None:
        logs.update({f"val_{k}": v for k, v in _run_eval(task, params, val, batch_size).items()})
    return logs


def _save(task, checkpoint_dir, run: _Run, frozen: dict, dtypes: dict, stopping: EarlyStopping | None,
          run_args: dict) -> None:
    """Write the epoch's checkpoint: the task as a preset (its params updated first) plus the training state."""
    import jax.numpy as jnp

    # Copies: the next step donates (overwrites) the trainable buffers.
    task.params = _write_back({**frozen, **{k: jnp.copy(v) for k, v in run.trainable.items()}}, dtypes)
    state = {"step": run.step, "history": run.history, "best": stopping.best if stopping else None,
             "waited": stopping.waited if stopping else 0, "run_args": run_args}
    save_checkpoint(Path(checkpoint_dir), epoch=run.epoch, task=task, trainable=run.trainable,
                    opt_state=run.opt_state, state=state)


def fit(task, x, y=None, *, validation_data=None, epochs: int = 1, batch_size: int = 16,
        learning_rate: float | Callable = 5e-5, optimizer=None, schedule: str = "constant",
        warmup: int | float = 0, weight_decay: float = 0.01, max_grad_norm: float | None = 1.0,
        grad_accumulation: int = 1, compute_dtype: str | None = None, seed: int = 0, shuffle: bool = True,
        callbacks: Sequence[Callback] = (), early_stopping: int | dict | None = None,
        checkpoint_dir: str | os.PathLike | None = None, resume: bool = False, verbose: bool | None = None,
        max_length: int | None = None, sharding: str | None = None) -> dict[str, list]:
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
            `patience`, `mode`, `restore_best` (see `EarlyStopping`).
        checkpoint_dir, resume: a preset + optimizer state per epoch; `resume=True` continues exactly.
        verbose: progress bar; default on for a terminal unless ZOOHUB_QUIET is on (1/true/yes/on).
        sharding: on a mesh, lay the params out anew before training: "fsdp" shards them (and so the
            optimizer state) over the data axis as well, "tensor" back to the tensor-parallel rules;
            None keeps them as loaded. They stay that way afterwards.
    Returns:
        {"loss": [...], "accuracy": [...], "val_loss": [...], ..., "step_loss": [...], "examples_per_second": [...]}

    Example:
        >>> import zoohub
        >>> from zoohub.backend import using
        >>> with using("jax"):                                    # fit needs the jax backend
        ...     clf = zoohub.TextClassifier.from_preset("starter_bert_tiny_en")   # the bundled toy BERT
        >>> texts, labels = ["great film", "awful film", "i loved it", "i hated it"], [1, 0, 1, 0]
        >>> history = clf.fit(texts, labels, epochs=3, batch_size=2, learning_rate=1e-3, seed=0,
        ...                   validation_data=(["what a gem", "what a bore"], [1, 0]))
        >>> history["epoch"], len(history["step_loss"]), [k for k in history if k.startswith("val_")]
        ([1, 2, 3], 6, ['val_loss', 'val_accuracy'])
    """
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    ops(task.backend).require_training("fit")
    with using(task.backend):
        if epochs < 1 or batch_size < 1:
            raise InputError(f"epochs and batch_size must be >= 1, got epochs={epochs}, batch_size={batch_size}")
        train = make_dataset(task, x, y, epochs=epochs, max_length=max_length)
        val = _validation(task, validation_data, max_length)
        stopping = EarlyStopping.from_spec(early_stopping)
        if stopping and val is None and stopping.monitor.startswith("val_"):
            raise InputError(f"early_stopping monitors {stopping.monitor!r}, which needs validation_data")

        if sharding is not None:
            _lay_out(task, sharding)
        heads = (getattr(task, "lora_config", None) or {}).get("modules_to_save")
        trainable, frozen = split_params(task.params, heads)
        dtypes = {k: v.dtype for k, v in trainable.items()}
        # Float32 master copies: the step donates (overwrites) them, the task's own arrays stay valid.
        trainable = {k: jnp.array(v, dtype=jnp.float32, copy=True) for k, v in trainable.items()}
        steps_per_epoch = train.num_batches(batch_size)
        total = None if steps_per_epoch is None else -(-steps_per_epoch * epochs // grad_accumulation)
        opt, train_step = _optimizer_and_step(
            task, trainable, total_steps=total, seed=seed, compute_dtype=compute_dtype, optimizer=optimizer,
            learning_rate=learning_rate, schedule=schedule, warmup=warmup, weight_decay=weight_decay,
            max_grad_norm=max_grad_norm, grad_accumulation=grad_accumulation)
        run = _Run(trainable, opt.init(trainable))
        run_args = {"seed": seed, "batch_size": batch_size, "grad_accumulation": grad_accumulation}
        if resume:
            _resume(task, run, checkpoint_dir, run_args, stopping)

        quiet = env.quiet() if verbose is None else not verbose
        while run.epoch < epochs:
            bar = tqdm(total=steps_per_epoch, desc=f"epoch {run.epoch + 1}/{epochs}", unit="step",
                       disable=quiet, leave=True, dynamic_ncols=True)
            batches = train.batches(batch_size, epoch=run.epoch, seed=seed, shuffle=shuffle)
            sums, seen, seconds, stop = _run_epoch(run, train_step, frozen, batches, mesh=task.mesh, bar=bar,
                                                   callbacks=callbacks)
            bar.close()
            logs = _epoch_logs(task, sums, seen, seconds, {**frozen, **run.trainable}, val, batch_size)
            run.epoch += 1
            run.history["epoch"].append(run.epoch)
            for k, v in logs.items():
                run.history.setdefault(k, []).append(v)
            if not quiet:
                print(f"epoch {run.epoch}/{epochs}: " + ", ".join(f"{k}={v:.4g}" for k, v in logs.items()),
                      file=sys.stderr)
            if stopping and stopping.update(logs, run.trainable):
                stop = True
            if any(cb("epoch", {"epoch": run.epoch, **logs}) for cb in callbacks):
                stop = True
            if checkpoint_dir is not None:
                _save(task, checkpoint_dir, run, frozen, dtypes, stopping, run_args)
            if stop:
                break
        if stopping and stopping.best_params is not None:
            from zoohub.backend.sharding import put_like

            run.trainable = {k: put_like(v, run.trainable[k]) for k, v in stopping.best_params.items()}
        task.params = _write_back({**frozen, **run.trainable}, dtypes)
        return run.history


def _lay_out(task, sharding: str) -> None:
    """Move the task's params to `sharding` on its mesh (device to device)."""
    from zoohub.backbones.layout import SHARDINGS, mesh_specs
    from zoohub.backend.sharding import reshard

    if sharding not in SHARDINGS:
        raise InputError(f"sharding={sharding!r} is not one of {SHARDINGS}")
    if task.mesh is None:
        raise InputError(f"sharding={sharding!r} needs a mesh: load with from_preset(..., mesh=make_mesh(...))")
    if sharding == task.sharding:
        return
    flat = flatten(task.params)
    specs = mesh_specs(task.family, task.family.layers_path(task.head), {k: v.shape for k, v in flat.items()},
                       dict(task.mesh.shape), sharding)
    task.params, task.sharding = unflatten(reshard(flat, task.mesh, specs)), sharding


def _write_back(flat: dict, dtypes: dict) -> dict:
    """Nested task params, trained tensors cast back to the dtype they were loaded in."""
    return unflatten({k: v.astype(dtypes[k]) if k in dtypes and v.dtype != dtypes[k] else v for k, v in flat.items()})
