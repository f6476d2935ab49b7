"""Watch a run in TensorBoard while it trains (``ppl-vae train --tensorboard``): ``tensorboard --logdir runs/``.

:class:`TensorBoardLog` writes, through ``torch.utils.tensorboard`` into ``RUN_DIR/tensorboard``, after every epoch::

    elbo/train            the epoch's training objective, nats per example (higher is better)
    elbo/test | elbo/val  the held-out ELBO of the epoch (validation with --val-fraction), nats per example
    elbo/test_se ...      its standard error
    beta_t                the latent sites' weight at the end of the epoch (beta times the warm-up; 1 without either)
    learning_rate         the base learning rate of the next step (lr times the schedule's factor)
    grad_norm/total       root mean square over the epoch's steps of the gradient's L2 norm over every parameter
    grad_norm/<module>    the same over the parameters of each top-level module (encoder, decoder, ...)
    seconds               the epoch's training time
    images/reconstructions, images/samples   held-out images above their reconstructions; prior samples
                          (where the program offers reconstruct / sample)

and once, ``config`` (the run's config.json) as text. Gradient norms come from hooks on the parameters, registered
only here: a run without ``--tensorboard`` imports nothing of TensorBoard and pays nothing. The ``tensorboard`` package
is an optional extra (``pip install 'ppl_vae[tensorboard]'``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ppl_vae.errors import InputError
from ppl_vae.optim import lr_factor
from ppl_vae.programs import UserProgram

TENSORBOARD_DIR = "tensorboard"


class TensorBoardLog:
    """An ``on_epoch(record)`` callback for :func:`ppl_vae.train.fit` that writes the record (and the figures) to
    TensorBoard.

    Arguments:
        log_dir: the event files' folder.
        program: the program being trained (its modules get gradient hooks).
        config: the run's :class:`~ppl_vae.config.RunConfig` (the training part gives beta, the schedule, the lr).
        x_shown: ``(n, D)`` held-out observations whose reconstructions are drawn each epoch (labels ``y_shown``).
        image_shape: ``(C, H, W)``.
        first_epoch: the first epoch this log will see (a resumed run's), so that events a crash left beyond it are
            dropped.
    """

    def __init__(
        self,
        log_dir: str | Path,
        program: UserProgram,
        config,
        x_shown: torch.Tensor,
        image_shape: tuple[int, int, int],
        *,
        y_shown: torch.Tensor | None = None,
        first_epoch: int = 1,
    ):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise InputError(
                "--tensorboard needs the tensorboard package: pip install 'ppl_vae[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(str(log_dir), purge_step=first_epoch)
        self.program, self.train, self.image_shape = program, config.train, image_shape
        self.x_shown, self.y_shown = x_shown, y_shown
        self.squared: dict[str, float] = {}
        self.backward_calls: dict[int, int] = {}
        self.steps_before = 0
        self.hooks = [
            parameter.register_hook(self._hook(name.split(".")[0], index))
            for index, (name, parameter) in enumerate(program.modules.named_parameters())
            if parameter.requires_grad
        ]
        if first_epoch == 1:
            self.writer.add_text("config", "```json\n" + config.to_json() + "\n```", 0)

    def _hook(self, module: str, index: int):
        def hook(grad: torch.Tensor) -> None:
            self.squared[module] = self.squared.get(module, 0.0) + float(grad.detach().pow(2).sum())
            self.backward_calls[index] = self.backward_calls.get(index, 0) + 1

        return hook

    def __call__(self, record: dict) -> None:
        epoch = record["epoch"]
        scalars = {"elbo/train": record["train_elbo"], "seconds": record["seconds"]}
        for key in ("test_elbo", "val_elbo"):
            if key in record:
                scalars[f"elbo/{key[: -len('_elbo')]}"] = record[key]
                scalars[f"elbo/{key[: -len('_elbo')]}_se"] = record[f"{key}_se"]
        scalars["beta_t"] = record.get("latent_scale", self.train.beta)
        steps = max(self.backward_calls.values(), default=0)  # backward passes (a checked update has two)
        scalars["learning_rate"] = self._learning_rate(self.steps_before + record["updates"])
        if steps:
            for module, total in self.squared.items():
                scalars[f"grad_norm/{module}"] = math.sqrt(total / steps)
            scalars["grad_norm/total"] = math.sqrt(sum(self.squared.values()) / steps)
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, epoch)
        self._images(epoch)
        self.writer.flush()
        self.steps_before += record["updates"]
        self.squared, self.backward_calls = {}, {}

    def _learning_rate(self, steps_done: int) -> float:
        if self.train.lr_schedule == "none":
            return self.train.lr
        return self.train.lr * lr_factor(self.train.lr_schedule, self.train.lr_decay, self.train.lr_horizon)(steps_done)

    def _images(self, epoch: int) -> None:
        program, shape = self.program, self.image_shape
        labels = () if self.y_shown is None else (self.y_shown,)
        with torch.no_grad():
            if program.reconstruct is not None:
                shown = torch.cat([self.x_shown, program.reconstruct(self.x_shown, *labels)])
                self.writer.add_images("images/reconstructions", _as_images(shown, shape), epoch)
            if program.sample is not None:
                count = self.x_shown.shape[0]
                samples = program.sample(count) if self.y_shown is None else program.sample(count, self.y_shown)
                self.writer.add_images("images/samples", _as_images(samples, shape), epoch)

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.writer.close()


def _as_images(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    return x.detach().float().cpu().reshape(-1, *shape).clamp(0, 1)
