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

    {"epoch": 3, "train_elbo": -28.1, "test_elbo": -28.9, "test_elbo_se": 0.4, "seconds": 0.8, "updates": 24}

With ``val_fraction > 0`` a validation set is held out of the training set (:func:`ppl_vae.data.validation_split`)
and the record has ``val_elbo``, ``val_elbo_se`` instead of ``test_elbo``, ``test_elbo_se``: the test set is left
for the one evaluation after training.

``train_elbo`` is the average of the minibatch objectives during the epoch (its estimator, e.g. Monte Carlo KL; the IWAE
bound for ``iwae``; the β_t-weighted objective with ``beta``/``anneal``, whose last ``β_t`` of the epoch is recorded as
``latent_scale``); ``test_elbo`` is :func:`ppl_vae.evaluate.elbo` on the test set with ``eval_particles`` samples, after
the epoch (always the plain ELBO, of ``log p(x | y)`` for a conditional model). ``updates`` counts the optimizer steps
the epoch applied (minibatches less the steps ``on_nan='skip'`` dropped).

With ``run_dir`` a checkpoint (weights, optimizer and schedule state, every RNG's whole state, history, the schedule's
horizon, the training config) is written atomically after every epoch, and ``resume=True`` continues from it with the
numbers an uninterrupted run would have had (on the CPU); settings that would change them are refused
(:mod:`ppl_vae.resume`).

What goes wrong is handled where it happens:

- SIGINT or SIGTERM (:mod:`ppl_vae.interrupt`): the step in progress finishes, a checkpoint is written part-way through
  the epoch (its minibatch order, the steps done, the running sums), and :class:`~ppl_vae.interrupt.Interrupted` is
  raised; a resume continues at the next step with the same numbers.
- A step whose loss or gradients are not finite applies no update (:mod:`ppl_vae.nonfinite`); with ``on_nan="stop"``
  the run stops with a ``FloatingPointError`` naming the epoch, the step and the site whose log-density is not finite,
  with ``"skip"`` the step is dropped and counted (``"nan_skips"`` in the epoch's record) up to ``max_nan_skips``.
- A run whose test ELBO falls below :func:`~ppl_vae.nonfinite.divergence_threshold` of the untrained model's (measured
  before the first step, RNG left as it was) stops with :class:`~ppl_vae.nonfinite.Diverged` before that epoch's
  checkpoint is written.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pyro
import torch
from pyro.infer.elbo import ELBO
from torch import nn
from tqdm.auto import tqdm

from ppl_vae import distributed, evaluate
from ppl_vae.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from ppl_vae.config import TrainConfig
from ppl_vae.data import Dataset, binarize, minibatches, validation_split
from ppl_vae.errors import InputError
from ppl_vae.guards import check_gradients, check_registration, forget_gradients
from ppl_vae.interrupt import Interrupted, stop_requests
from ppl_vae.nonfinite import Diverged, NonFiniteStep, bad_site, divergence_threshold, is_invalid_values
from ppl_vae.objectives import TrainingStep, latent_scale, make_step
from ppl_vae.programs import UserProgram, as_user_program, rng_preserved
from ppl_vae.resume import check_epochs, check_resume, rng_state, set_rng_state
from ppl_vae.sharding import Sharding
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
    extra: Mapping | None = None,
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
        extra: plain values (numbers, strings, lists, dicts, tensors) stored under their keys in every checkpoint
            (:func:`ppl_vae.run.train_run` stores the run's config and its resumes there).
        on_epoch: called with each epoch's record once it is in the history (and the checkpoint), e.g. a
            :class:`ppl_vae.tensorboard_log.TensorBoardLog`.

    Raises:
        InputError: bad input, or at the first update a parameter that would never train (see
            :mod:`ppl_vae.guards`), or programs that the objective refuses; on resume, settings that would change the
            numbers (:mod:`ppl_vae.resume`) or a checkpoint that does not fit.
        FloatingPointError: a training step whose loss or gradients are not finite (its update is not applied;
            with ``config.on_nan="skip"`` only past ``config.max_nan_skips``), naming the epoch, the step and the
            site; :class:`~ppl_vae.nonfinite.Diverged` when the test ELBO falls below
            :func:`~ppl_vae.nonfinite.divergence_threshold` of the untrained model's. The last checkpoint written
            stays.
        Interrupted: SIGINT or SIGTERM (:mod:`ppl_vae.interrupt`), after the step in progress and a checkpoint.
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
    device = torch.device(distributed.rank_device(config.device))
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
        _check_resumable(snapshot, config, checkpoint_path)
    elif checkpoint_path is not None and distributed.is_main():
        checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
    config = with_lr_horizon(config, x_train.shape[0], snapshot.get("lr_horizon") if snapshot else None)

    seed_everything(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    step = make_step(program, config, elbo=elbo)
    sharding = Sharding.of_run(config.seed, config.keyed_noise)
    if snapshot:
        history, partial, untrained = _restore(snapshot, program.modules, step, generator, checkpoint_path)
    else:
        history, partial = [], None
        untrained = _untrained_elbo(program, x_test, test_args, config, sharding)
    first = _guarded_first_step(program, config)
    run = _Run(program, step, generator, config, checkpoint_path, dict(extra or {}), untrained, history)
    run.sharding = sharding
    progress = progress and distributed.is_main()

    with stop_requests() as request:
        for epoch in range(len(history) + 1, config.epochs + 1):
            progress_now = partial if partial is not None and partial["epoch"] == epoch else None
            epoch_state = (
                _EpochState.resumed(progress_now)
                if progress_now
                else _EpochState.start(
                    epoch, x_train.shape[0], config.batch_size, generator, step.fixed_batch_shape, run.world
                )
            )
            _train_epoch(run, first, epoch_state, x_train, train_args, progress, request)
            record = {
                "epoch": epoch,
                "train_elbo": -(epoch_state.total * x_train.shape[0] / epoch_state.seen) / x_train.shape[0],
                "seconds": epoch_state.seconds,
                "updates": len(epoch_state.batches) - epoch_state.nan_skips,
            }
            if step.latent_scaled:
                record["latent_scale"] = epoch_state.scale
            if epoch_state.nan_skips:
                record["nan_skips"] = epoch_state.nan_skips
            if epoch % config.eval_every == 0 or epoch == config.epochs:
                mean, se = held_out_elbo(program, x_test, test_args, config.eval_particles, run.sharding, epoch)
                record.update({f"{held_out}_elbo": mean, f"{held_out}_elbo_se": se})
                run.check_divergence(record, f"{held_out}_elbo")
            history.append(record)
            run.save()
            if on_epoch is not None:
                on_epoch(record)
            if progress:
                tqdm.write(_describe(record, config.epochs))
            if distributed.any_rank(request.signum is not None):  # during the epoch's last step or its evaluation
                raise Interrupted(_signal_of(request), epoch, len(epoch_state.batches))
    return history


class _Run:
    """What the loop needs to write a checkpoint and to explain a failure: the programs, the step, the shuffling
    generator, the config, where checkpoints go (``None``: nowhere), the caller's extra checkpoint values, the untrained
    model's test ELBO (``None`` for a run resumed from a checkpoint that did not store it) and the history so far."""

    def __init__(self, program, step, generator, config, path, extra, untrained, history):
        self.program, self.step, self.generator, self.config = program, step, generator, config
        self.path, self.extra, self.untrained, self.history = path, extra, untrained, history
        self.nan_skips = sum(record.get("nan_skips", 0) for record in history)
        self.sharding: Sharding | None = None  # this rank's share of a run in several processes or with keyed noise

    @property
    def world(self) -> int:
        return 1 if self.sharding is None else self.sharding.world

    def save(self, partial: dict | None = None) -> None:
        """Write the checkpoint (atomically) after the last finished epoch, or part-way through one (``partial``); in
        a group of processes rank 0 writes it (every rank holds the same weights, optimizer state and history)."""
        if self.path is None or not distributed.is_main():
            return
        state = {
            **self.extra,
            "model": self.program.modules.state_dict(),
            "step": self.step.state_dict(),
            "history": self.history,
            "lr_horizon": self.config.lr_horizon,
            "train": dataclasses.asdict(self.config),
            "untrained_test_elbo": self.untrained,
            "rng": rng_state(self.generator),
            "world_size": distributed.world_size(),
        }
        if partial is not None:
            state["partial"] = partial
        save_checkpoint(self.path, state)

    def kept(self) -> str:
        """Which checkpoint a failed run leaves, in words."""
        if self.path is None:
            return "no checkpoint is written (no run folder)"
        if not self.history and not self.path.is_file():
            return "no checkpoint was written yet"
        return f"the last finite checkpoint is kept in {str(self.path.parent)!r}"

    def check_divergence(self, record: dict, key: str = "test_elbo") -> None:
        """Stop the run (:class:`~ppl_vae.nonfinite.Diverged`) when its test ELBO is not finite or is below the
        divergence threshold of the untrained model's (:func:`~ppl_vae.nonfinite.divergence_threshold`)."""
        value = record[key]
        threshold = -math.inf if self.untrained is None else divergence_threshold(self.untrained)
        if math.isfinite(value) and value >= threshold:
            return
        baseline = (
            ""
            if self.untrained is None
            else (f", far below the untrained model's {self.untrained:.4g} (diverged: below {threshold:.4g})")
        )
        raise Diverged(
            f"training diverged: {'validation' if key == 'val_elbo' else 'test'} ELBO {value:.4g} nats per example "
            f"at epoch {record['epoch']}{baseline}; "
            f"lower --lr (now {self.config.lr:g}); {self.kept()}"
        )

    def non_finite(self, epoch: int, number: int, reason: str, x: torch.Tensor, args: tuple) -> None:
        """A step that was not applied: count it, or (``on_nan="stop"``, or past ``max_nan_skips``) stop the run with
        one line naming the epoch, the step, the reason and the site whose log-density is not finite."""
        config = self.config
        if config.on_nan == "skip" and self.nan_skips < config.max_nan_skips:
            self.nan_skips += 1
            forget_gradients(self.program.modules)
            return
        site = bad_site(self.program.model, self.program.guide, x, *args)
        where = f"the log-density of site {site} is not finite" if site else "every site's log-density is finite"
        skipping = config.on_nan == "skip"
        limit = f" after {self.nan_skips} skipped steps (--max-nan-skips)" if skipping else ""
        other = "raise --max-nan-skips" if skipping else "pass --on-nan skip"
        raise FloatingPointError(
            f"non-finite training step at epoch {epoch}, step {number + 1}{limit}: {reason}; {where}; the update was "
            f"not applied and training stopped; lower --lr (now {config.lr:g}) or {other}; {self.kept()}"
        )


@dataclasses.dataclass
class _EpochState:
    """An epoch in progress: its minibatches (index tensors), how many are done, the summed loss over ``seen``
    examples, the last latent scale, the seconds spent and the steps skipped."""

    epoch: int
    batches: list[torch.Tensor]
    done: int = 0
    total: float = 0.0
    seen: int = 0
    scale: float = 1.0
    seconds: float = 0.0
    nan_skips: int = 0

    @classmethod
    def start(cls, epoch: int, num_examples: int, batch_size: int, generator, fixed_batch_shape: bool, world: int = 1):
        batches = list(minibatches(num_examples, batch_size, generator, device=generator.device))
        if fixed_batch_shape and len(batches) > 1 and len(batches[-1]) != batch_size:
            # a compiled step is traced for one batch shape; the remainder waits for the next shuffle
            batches = batches[:-1]
        if len(batches) > 1 and len(batches[-1]) < world:  # a rank would get no example (see ppl_vae.sharding)
            batches = batches[:-1]
        return cls(epoch, batches)

    @classmethod
    def resumed(cls, partial: dict):
        order, sizes = partial["order"], partial["sizes"]
        fields = {key: partial[key] for key in ("done", "total", "seen", "scale", "seconds", "nan_skips")}
        return cls(partial["epoch"], list(torch.split(order, sizes)), **fields)

    def as_partial(self) -> dict:
        return {
            "epoch": self.epoch,
            "order": torch.cat(self.batches),
            "sizes": [len(index) for index in self.batches],
            **{key: getattr(self, key) for key in ("done", "total", "seen", "scale", "seconds", "nan_skips")},
        }


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


def _train_epoch(run: _Run, update: Callable, state: _EpochState, x_train, train_args, progress, request) -> None:
    """Go on with the epoch ``state`` through ``update(step, x, args, beta_t)`` until its last minibatch, adding to
    its summed loss (negative objective, nats) and recording the last latent scale ``β_t`` (1 for an unscaled step).
    A step that is not finite is handled by :meth:`_Run.non_finite`; a signal recorded in ``request`` ends the epoch
    after the step in progress with a checkpoint and :class:`~ppl_vae.interrupt.Interrupted`."""
    step, program, config, generator = run.step, run.program, run.config, run.generator
    batches = state.batches
    device = x_train.device
    bar = tqdm(
        total=len(batches),
        initial=state.done,
        desc=f"epoch {state.epoch}/{config.epochs}",
        leave=False,
        disable=not progress,
        unit="batch",
    )
    started = time.perf_counter()
    for number in range(state.done, len(batches)):
        index = batches[number].to(device)
        if run.sharding is None:
            x = x_train[index]
            if program.binary:
                x = binarize(x, generator)
            args = tuple(arg[index] for arg in train_args)
        else:  # this rank's rows of the global minibatch, and its noise (see ppl_vae.sharding)
            x, args = run.sharding.batch(x_train, train_args, index, program.binary, state.epoch, number)
            step.at(state.epoch, number, len(index))
        beta_t = None
        if step.latent_scaled:
            beta_t = state.scale = latent_scale(config, state.epoch - 1 + number / len(batches))
        try:
            loss = update(step, x, args, beta_t)
        except NonFiniteStep as error:
            run.non_finite(state.epoch, number, error.reason, x, args)
            state.nan_skips += 1
        except ValueError as error:
            if not is_invalid_values(error):
                raise
            said = str(error).splitlines()[0].split(" of distribution")[0]  # "Expected parameter loc (Tensor ...)"
            reason = f"a distribution's parameters are not finite ({said})"
            run.non_finite(state.epoch, number, reason, x, args)
            state.nan_skips += 1
        else:
            state.total += loss
            state.seen += len(index)
        state.done = number + 1
        bar.update(1)
        if state.seen:
            bar.set_postfix(elbo=f"{-state.total / state.seen:.2f}", refresh=False)
        if state.done < len(batches) and distributed.any_rank(request.signum is not None):
            state.seconds += time.perf_counter() - started
            bar.close()
            run.save(partial=state.as_partial())
            raise Interrupted(_signal_of(request), state.epoch, state.done)
    bar.close()
    state.seconds += time.perf_counter() - started
    if not state.seen:
        raise FloatingPointError(f"every step of epoch {state.epoch} was skipped as not finite: lower --lr")


def _untrained_elbo(
    program: UserProgram, x_test: torch.Tensor, test_args: tuple, config: TrainConfig, sharding: Sharding | None
) -> float:
    """The test ELBO of the programs before training (nats per example), the baseline of the divergence check;
    computed with the RNG left as it was, so that the run's numbers do not depend on it."""
    with rng_preserved(x_test.device):
        mean, _ = held_out_elbo(program, x_test, test_args, config.eval_particles, sharding, epoch=0)
    return mean


def held_out_elbo(
    program: UserProgram, x: torch.Tensor, args: tuple, num_particles: int, sharding: Sharding | None, epoch: int
) -> tuple[float, float]:
    """``(mean, standard error)`` of the ELBO of ``x`` ``(N, ...)`` with ``num_particles`` samples per example,
    nats per example (:func:`ppl_vae.evaluate.elbo`): the one evaluation inside the training loop (the held-out ELBO
    after ``epoch``, and the untrained baseline as epoch 0).

    The default single-process path (``sharding`` is ``None``) draws from torch's RNG as it is. A sharded run (more
    than one process, or ``--keyed-noise``) keys the evaluation to the epoch (:meth:`Sharding.evaluation_seed`): its
    batches are shared out over the ranks (:mod:`ppl_vae.eval_shards`), every rank gets the same numbers, and they
    are the numbers of any other number of processes."""
    keyed_seed = None if sharding is None else sharding.evaluation_seed(epoch)
    estimate = evaluate.elbo(
        program.model, program.guide, x, num_particles=num_particles, args=args, keyed_seed=keyed_seed
    )
    return estimate.mean, estimate.se


def _signal_of(request) -> int:
    """The signal that stops the run: this process's, or SIGTERM where only another rank received one."""
    return signal.SIGTERM if request.signum is None else request.signum


def _check_resumable(snapshot: dict, config: TrainConfig, path: Path) -> None:
    """Refuse to resume with training settings that change the numbers (see :mod:`ppl_vae.resume`), compared with the
    ones the checkpoint was written with (a checkpoint written before they were stored is not compared), or with
    fewer epochs than it has trained."""
    missing = sorted({"model", "step", "history", "rng"} - set(snapshot))
    if missing:
        raise InputError(f"checkpoint {str(path)!r} lacks {missing}: expected a file written by 'ppl-vae train'")
    where = repr(str(path.parent))
    if "train" in snapshot:
        requested = dataclasses.asdict(dataclasses.replace(config, lr_horizon=snapshot["train"].get("lr_horizon")))
        stored = {**dataclasses.asdict(TrainConfig()), **snapshot["train"]}  # a field added since: its default
        check_resume(where, {"train": stored}, {"train": requested})
    check_epochs(where, config.epochs, len(snapshot["history"]))


def _restore(
    snapshot: dict, modules: nn.Module, step: TrainingStep, generator: torch.Generator, path: Path
) -> tuple[list[dict], dict | None, float | None]:
    """Load weights, optimizer state and RNG states; returns the history, the epoch in progress (``None`` if the
    checkpoint was written after a whole epoch) and the untrained model's test ELBO (``None`` if not stored)."""
    try:
        modules.load_state_dict(snapshot["model"])
    except (RuntimeError, KeyError, TypeError) as error:
        reason = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error).strip())
        raise InputError(f"checkpoint {str(path)!r} does not match the model: {reason}") from None
    try:
        step.load_state_dict(snapshot["step"])
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as error:
        raise InputError(
            f"the optimizer state in checkpoint {str(path)!r} does not fit this objective and optimizer "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}): resume with the --elbo "
            "and --optim the run was trained with"
        ) from None
    set_rng_state(snapshot["rng"], generator)
    return list(snapshot["history"]), snapshot.get("partial"), snapshot.get("untrained_test_elbo")
