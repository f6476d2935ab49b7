"""``fit``: the training loop. SVI steps on in-memory minibatches, the test ELBO per epoch, checkpoints, resume.

One loop serves the built-in VAE and a user's own Pyro programs: a VAE is adapted at once into the same
:class:`~ppl_vae.programs.UserProgram` (model, guide, modules, binary, labels) that a user's programs make::

    history = fit(vae, load_dataset("digits"), TrainConfig(epochs=10))
    history = fit(program, data, config)                          # program: a UserProgram
    history = fit(model=model, guide=guide, modules={"encoder": encoder, "decoder": decoder}, data=data)

Each epoch shuffles the training set with a seeded ``torch.Generator``, slices minibatches from the tensors (no
DataLoader), binarizes them afresh for a binary likelihood, and calls the training step (see
:mod:`ppl_vae.objectives`) as ``step(x, *args, beta_t=...)``. The first update of a run is guarded
(:mod:`ppl_vae.guards`): a parameter that would never train stops the run with an error naming it. The history has one
record per epoch, in nats per example (higher is better)::

    {"epoch": 3, "train_elbo": -28.1, "test_elbo": -28.9, "test_elbo_se": 0.4, "seconds": 0.8}

With ``val_fraction > 0`` a validation set is held out of the training set (:func:`ppl_vae.data.validation_split`)
and the record has ``val_elbo``, ``val_elbo_se`` instead of ``test_elbo``, ``test_elbo_se``: the test set is left
for the one evaluation after training.

``train_elbo`` is the average of the minibatch objectives during the epoch (its estimator, e.g. Monte Carlo KL; the
IWAE bound for ``iwae``; the β_t-weighted objective with ``beta``/``anneal``, whose last ``β_t`` of the epoch is
recorded as ``latent_scale``); ``test_elbo`` is :func:`ppl_vae.evaluate.elbo` on the test set with
``eval_particles`` samples, after the epoch (always the plain ELBO, of ``log p(x | y)`` for a conditional model).

With ``run_dir`` a checkpoint (weights, optimizer and schedule state, RNG states, history, the schedule's horizon) is
written atomically after every epoch, and ``resume=True`` continues from it with the numbers an uninterrupted run
would have had (on the CPU).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro.infer.elbo import ELBO
from torch import nn
from tqdm.auto import tqdm

from ppl_vae import evaluate
from ppl_vae.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from ppl_vae.config import TrainConfig
from ppl_vae.data import Dataset, binarize, minibatches, validation_split
from ppl_vae.errors import InputError
from ppl_vae.guards import check_gradients, check_registration, forget_gradients
from ppl_vae.objectives import TrainingStep, latent_scale, make_step
from ppl_vae.programs import UserProgram, as_user_program
from ppl_vae.vae import VAE


def seed_everything(seed: int) -> None:
    """Seed Pyro's RNGs (torch, Python's ``random``, NumPy) so one seed gives the same numbers again."""
    pyro.set_rng_seed(seed)


def with_lr_horizon(config: TrainConfig, num_examples: int, started: int | None = None) -> TrainConfig:
    """``config`` with the schedule's horizon fixed: the horizon the run ``started`` with when resuming, else
    ``epochs x ceil(num_examples / batch_size)`` optimizer steps (unchanged without a schedule, or when set)."""
    if config.lr_schedule == "none":
        return config
    if config.lr_horizon is not None and started is not None and config.lr_horizon != started:
        raise InputError(
            f"lr_horizon {config.lr_horizon} differs from the {started} steps the run started with: a resumed "
            "schedule keeps its horizon"
        )
    horizon = config.lr_horizon or started or config.epochs * math.ceil(num_examples / config.batch_size)
    return dataclasses.replace(config, lr_horizon=horizon)


def fit(
    program: VAE | UserProgram | None = None,
    data: Dataset | None = None,
    config: TrainConfig | None = None,
    *,
    model: Callable | None = None,
    guide: Callable | None = None,
    modules: nn.Module | Mapping[str, nn.Module] | None = None,
    binarize_data: bool = False,
    labels: bool = False,
    elbo: ELBO | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train ``program`` (the built-in VAE, a :class:`~ppl_vae.programs.UserProgram`, or a user's ``model`` and
    ``guide``) on ``data.x_train``; returns the history (one dict per epoch, nats per example).

    Arguments:
        program: what to train, in place: the built-in :class:`~ppl_vae.vae.VAE` or a
            :class:`~ppl_vae.programs.UserProgram` (its programs, modules, ``binary`` and ``labels``); its modules are
            moved to ``config.device``. A conditional VAE, or a program with ``labels``, gets ``data.y_train``.
        data: the data set; ``x_train`` ``(N, D)`` grey levels in [0, 1] (``y_train`` ``(N,)`` labels if needed).
        config: epochs, batch size, objective, optimizer and learning-rate schedule, particles, beta and warm-up,
            seed, device (default ``TrainConfig()``).
        model, guide: instead of ``program``: Pyro programs ``model(x)`` / ``guide(x)`` (``model(x, y)`` /
            ``guide(x, y)`` with ``labels``) keeping the program contract of :mod:`ppl_vae.programs` (one data plate
            over the examples, any latent sites, nested plates allowed), whose networks are registered with
            ``pyro.module`` inside them under names that stay the same between processes (the optimizer state is
            saved under those names).
        modules: with ``model``/``guide``: the ``nn.Module`` (or a dict of them) holding every trained parameter;
            moved to ``config.device`` and saved in checkpoints.
        binarize_data: with ``model``/``guide``: train on 0/1 images drawn afresh per minibatch and evaluate on test
            images binarized once (for a Bernoulli likelihood); the grey levels as they are otherwise.
        labels: with ``model``/``guide``: pass the labels ``y`` ``(B,)`` to both programs.
        elbo: a Pyro ELBO instance to train with instead of ``config.elbo`` (which must then stay ``"trace"``), e.g.
            ``TraceEnum_ELBO(max_plate_nesting=1)``; used as given.
        run_dir: where to write ``checkpoint.pt`` after every epoch (``None``: nowhere).
        resume: continue from ``run_dir/checkpoint.pt`` (its history is returned in full).
        progress: show a tqdm bar per epoch with the running training ELBO.
        on_epoch: called with each epoch's record once it is in the history (and the checkpoint), e.g. a
            :class:`ppl_vae.tensorboard_log.TensorBoardLog`.

    Raises:
        InputError: bad input, or at the first update a parameter that would never train (see
            :mod:`ppl_vae.guards`), or programs that the objective refuses.
    """
    config = TrainConfig() if config is None else config
    if data is None:
        raise InputError("fit needs data=: a Dataset (ppl_vae.load_dataset)")
    held_out = "test"
    if config.val_fraction:  # from here on data's test part is the validation set; the test set is not touched
        data, held_out = validation_split(data, config.val_fraction, config.seed), "val"
    program = _program(program, data, model, guide, modules, binarize_data, labels)
    if program.labels and (data.y_train is None or data.y_test is None):
        raise InputError(f"data set {data.name!r} has no labels: a conditional model needs y_train and y_test")
    device = torch.device(config.device)
    program.modules.to(device)
    x_train = data.x_train.to(device)
    x_test, y_test = evaluate.program_test_set(program, data)
    train_args = (data.y_train.to(device),) if program.labels else ()
    test_args = () if y_test is None else (y_test,)

    checkpoint_path = Path(run_dir) / CHECKPOINT_FILE if run_dir is not None else None
    snapshot = None
    if resume:
        if checkpoint_path is None:
            raise InputError("resume=True needs the run_dir to resume from")
        snapshot = load_checkpoint(checkpoint_path, map_location=device)
    elif checkpoint_path is not None:
        checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
    config = with_lr_horizon(config, x_train.shape[0], snapshot.get("lr_horizon") if snapshot else None)

    seed_everything(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    step = make_step(program, config, elbo=elbo)
    history = _restore(snapshot, program.modules, step, generator) if snapshot else []
    first = _guarded_first_step(program, config)

    for epoch in range(len(history) + 1, config.epochs + 1):
        started = time.perf_counter()
        train_loss, scale = _train_epoch(step, first, program, x_train, train_args, generator, config, epoch, progress)
        seconds = time.perf_counter() - started
        record = {"epoch": epoch, "train_elbo": -train_loss / x_train.shape[0], "seconds": seconds}
        if step.latent_scaled:
            record["latent_scale"] = scale
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            test = evaluate.elbo(
                program.model, program.guide, x_test, num_particles=config.eval_particles, args=test_args
            )
            record.update({f"{held_out}_elbo": test.mean, f"{held_out}_elbo_se": test.se})
        history.append(record)
        if not math.isfinite(record["train_elbo"]):
            raise FloatingPointError(
                f"training ELBO is {record['train_elbo']} at epoch {epoch}: lower --lr (now {config.lr}); "
                "the last finite checkpoint is kept"
            )
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, _snapshot(program.modules, step, generator, history, config))
        if on_epoch is not None:
            on_epoch(record)
        if progress:
            tqdm.write(_describe(record, config.epochs))
    return history


def _program(program, data: Dataset, model, guide, modules, binarize_data: bool, labels: bool) -> UserProgram:
    """The :class:`UserProgram` to train: ``program`` (a VAE checked against ``data``), or one made of the user's
    ``model``, ``guide`` and ``modules``."""
    if program is not None:
        if any(part is not None for part in (model, guide, modules)) or binarize_data or labels:
            raise InputError(
                "fit takes either a VAE or a UserProgram, or model=, guide=, modules= (with binarize_data=, labels=)"
            )
        if isinstance(program, UserProgram):
            return program
        if not isinstance(program, VAE):
            raise InputError(f"fit trains a VAE or a ppl_vae.UserProgram, got {type(program).__name__}")
        if data.x_dim != program.config.x_dim:
            raise InputError(
                f"data set {data.name!r} has {data.x_dim} pixels per example, the VAE expects {program.config.x_dim}"
            )
        if data.num_classes > program.config.num_classes > 0:
            raise InputError(
                f"data set {data.name!r} has {data.num_classes} classes, the conditional VAE knows "
                f"{program.config.num_classes}"
            )
        return as_user_program(program)
    if model is None or guide is None or modules is None:
        raise InputError(
            "fit needs a VAE or a UserProgram, or model=, guide= and modules= (the nn.Modules they register with "
            "pyro.module)"
        )
    return UserProgram(model, guide, modules, binary=binarize_data, labels=labels)


def _guarded_first_step(program: UserProgram, config: TrainConfig) -> Callable:
    """``first(step, x, args, beta_t)``: the first update of the run, with the parameter guards around it (once)."""
    done = []

    def first(step: TrainingStep, x: torch.Tensor, args: tuple, beta_t: float | None) -> float:
        if done:
            return step(x, *args, beta_t=beta_t)
        check_registration(program, config, x, args)
        forget_gradients(program.modules)
        loss = step(x, *args, beta_t=beta_t)
        check_gradients(program.modules)
        done.append(True)
        return loss

    return first


def _describe(record: dict, epochs: int) -> str:
    text = f"epoch {record['epoch']:>3}/{epochs}  train ELBO {record['train_elbo']:9.3f}"
    for key, name in (("test_elbo", "test"), ("val_elbo", "validation")):
        if key in record:
            text += f"  {name} ELBO {record[key]:9.3f} +- {record[f'{key}_se']:.3f}"
    return text + f"  nats per example  ({record['seconds']:.1f} s)"


def _train_epoch(
    step: TrainingStep, update: Callable, program: UserProgram, x_train, train_args, generator, config, epoch, progress
) -> tuple[float, float]:
    """One pass over the shuffled training set through ``update(step, x, args, beta_t)``; returns the summed loss
    (negative objective, nats) and the last latent scale ``β_t`` used (1 for an unscaled step)."""
    total, seen, scale = 0.0, 0, 1.0
    batch_size = config.batch_size
    batches = list(minibatches(x_train.shape[0], batch_size, generator, device=x_train.device))
    if step.fixed_batch_shape and len(batches) > 1 and len(batches[-1]) != batch_size:
        # a compiled step is traced for one batch shape; the remainder waits for the next shuffle
        batches = batches[:-1]
    bar = tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", leave=False, disable=not progress, unit="batch")
    for number, index in enumerate(bar):
        x = x_train[index]
        if program.binary:
            x = binarize(x, generator)
        beta_t = None
        if step.latent_scaled:
            beta_t = scale = latent_scale(config, epoch - 1 + number / len(batches))
        total += update(step, x, tuple(arg[index] for arg in train_args), beta_t)
        seen += len(index)
        bar.set_postfix(elbo=f"{-total / seen:.2f}", refresh=False)
    return total * x_train.shape[0] / seen, scale


def _snapshot(
    modules: nn.Module, step: TrainingStep, generator: torch.Generator, history: list[dict], config: TrainConfig
) -> dict:
    return {
        "model": modules.state_dict(),
        "step": step.state_dict(),
        "history": history,
        "lr_horizon": config.lr_horizon,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
            "numpy": [int(v) for v in np.random.get_state()[1]],
            "generator": generator.get_state(),
        },
    }


def _restore(snapshot: dict, modules: nn.Module, step: TrainingStep, generator: torch.Generator) -> list[dict]:
    modules.load_state_dict(snapshot["model"])
    step.load_state_dict(snapshot["step"])
    rng = snapshot["rng"]
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"]:
        torch.cuda.set_rng_state_all([state.cpu() for state in rng["cuda"]])
    random.setstate(_as_tuple(rng["python"]))
    np.random.set_state(("MT19937", np.array(rng["numpy"], dtype=np.uint32), 624, 0, 0.0))
    generator.set_state(rng["generator"].cpu() if generator.device.type == "cpu" else rng["generator"])
    return list(snapshot["history"])


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
