"""Run configuration: frozen dataclasses, checked when built, saved as JSON beside the weights.

A run is ``RunConfig(data, model, train, evaluation)``. Every value is checked in ``__post_init__``, so a bad flag or a
hand-edited ``config.json`` fails at once with an :class:`~ppl_vae.errors.InputError` naming the value.

Example::

    config = RunConfig(model=ModelConfig(x_dim=64, image_shape=(1, 8, 8), z_dim=2))
    text = config.to_json()
    assert RunConfig.from_json(text) == config
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from ppl_vae.errors import InputError


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(message)


def _positive_int(value: Any, flag: str) -> None:
    _require(
        isinstance(value, int) and not isinstance(value, bool) and value >= 1,
        f"{flag} must be an integer >= 1, got {value!r}",
    )


def _registered(registry, value: str, flag: str) -> None:
    _require(
        value in registry, f"{flag}: unknown {registry.what} {value!r}: expected one of {', '.join(sorted(registry))}"
    )


@dataclass(frozen=True)
class DataConfig:
    """Which data set: a registered name (``digits``, ``mnist``, ...) or a path to an ``.npz`` file.

    ``root`` is the folder for torchvision data sets; ``download`` lets torchvision fetch them.
    """

    name: str = "digits"
    root: str | None = None
    download: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """The VAE's shape and parts.

    Attributes:
        x_dim: pixels per image ``D`` (the data's flattened size).
        image_shape: ``(C, H, W)`` with ``C * H * W == x_dim``; used by plots and convolutional networks.
        z_dim: latent dimensions.
        hidden: hidden-layer widths from the data side inwards (the decoder uses them reversed).
        likelihood, prior, guide, scale_param, net: registry names (see ``ppl_vae.likelihoods`` and friends).
        num_classes: 0 for a plain VAE; ``C > 0`` for a conditional VAE on labels ``0..C-1`` (``--conditional``):
            one-hot ``y`` is concatenated to ``x`` for the encoder and to ``z`` for the decoder (``--net mlp``).
    """

    x_dim: int
    image_shape: tuple[int, int, int]
    z_dim: int = 8
    hidden: tuple[int, ...] = (128,)
    likelihood: str = "bernoulli"
    prior: str = "normal"
    guide: str = "diagonal"
    scale_param: str = "log_scale"
    net: str = "mlp"
    num_classes: int = 0

    def __post_init__(self):
        from ppl_vae.guides import GUIDES
        from ppl_vae.heads import HEADS
        from ppl_vae.likelihoods import LIKELIHOODS
        from ppl_vae.nets import NETS
        from ppl_vae.priors import PRIORS

        object.__setattr__(self, "image_shape", tuple(self.image_shape))
        object.__setattr__(self, "hidden", tuple(self.hidden))
        _positive_int(self.x_dim, "x_dim")
        _positive_int(self.z_dim, "--z-dim")
        _require(len(self.hidden) >= 1, "--hidden must list at least one layer width, e.g. --hidden 128 or 256,128")
        for width in self.hidden:
            _positive_int(width, "--hidden widths")
        _require(
            len(self.image_shape) == 3 and math.prod(self.image_shape) == self.x_dim,
            f"image_shape {self.image_shape} must be (C, H, W) with C*H*W == x_dim == {self.x_dim}",
        )
        _registered(LIKELIHOODS, self.likelihood, "--likelihood")
        _registered(PRIORS, self.prior, "--prior")
        _registered(GUIDES, self.guide, "--guide")
        _registered(HEADS, self.scale_param, "--scale-param")
        _registered(NETS, self.net, "--net")
        _require(
            isinstance(self.num_classes, int) and not isinstance(self.num_classes, bool) and self.num_classes >= 0,
            f"num_classes must be an integer >= 0 (0: not conditional), got {self.num_classes!r}",
        )
        _require(
            self.num_classes == 0 or self.net == "mlp",
            f"--conditional concatenates one-hot labels to flat inputs: it needs --net mlp, got --net {self.net}",
        )


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
        epochs, batch_size, lr: Adam on minibatches of ``batch_size`` examples, ``epochs`` passes over the data.
        elbo: training objective, a name in ``ppl_vae.objectives.OBJECTIVES`` (``trace``, ``meanfield``, ``jit``, ...).
        num_particles: samples of z per example in the training objective (vectorized).
        seed: one seed gives the same numbers again on the CPU.
        device: torch device for the networks and the data (``cpu``, ``cuda``, ``cuda:1``).
        eval_every: test ELBO every this many epochs (and after the last).
        eval_particles: samples of z per test example for that per-epoch test ELBO.
        beta: weight of ``log p(z) - log q(z | x)`` (the KL term) in the objective: the beta-VAE at ``beta != 1``.
        anneal: KL warm-up schedule ``none | linear | cyclical``, multiplying ``beta`` (see ``ppl_vae.objectives``).
        anneal_epochs: ``N``, the length of the linear ramp or of one cycle, in epochs.
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    elbo: str = "trace"
    num_particles: int = 1
    seed: int = 0
    device: str = "cpu"
    eval_every: int = 1
    eval_particles: int = 10
    beta: float = 1.0
    anneal: str = "none"
    anneal_epochs: int = 10

    def __post_init__(self):
        from ppl_vae.objectives import ANNEALING, OBJECTIVES

        _positive_int(self.epochs, "--epochs")
        _positive_int(self.batch_size, "--batch-size")
        _positive_int(self.num_particles, "--num-particles")
        _positive_int(self.eval_every, "--eval-every")
        _positive_int(self.eval_particles, "--eval-particles")
        _require(
            isinstance(self.seed, int) and not isinstance(self.seed, bool),
            f"--seed must be an integer, got {self.seed!r}",
        )
        _require(
            isinstance(self.lr, (int, float)) and 0 < self.lr < float("inf"),
            f"--lr must be a positive number, got {self.lr!r}",
        )
        _registered(OBJECTIVES, self.elbo, "--elbo")
        _require(
            isinstance(self.beta, (int, float)) and not isinstance(self.beta, bool) and 0 < self.beta < float("inf"),
            f"--beta must be a positive number, got {self.beta!r}",
        )
        _registered(ANNEALING, self.anneal, "--anneal")
        _positive_int(self.anneal_epochs, "--anneal-epochs")
        _require(
            self.elbo != "iwae" or (self.beta == 1 and self.anneal == "none"),
            f"--elbo iwae cannot take --beta {self.beta} --anneal {self.anneal}: RenyiELBO would scale the latent site "
            "inside its logsumexp, which is not the beta-VAE objective; use --elbo trace, meanfield or jit",
        )
        _check_device(self.device)


@dataclass(frozen=True)
class EvalConfig:
    """Final evaluation: ``k`` importance samples per example for log p(x), ``num_particles`` for the test ELBO."""

    k: int = 1000
    num_particles: int = 100

    def __post_init__(self):
        _positive_int(self.k, "--k")
        _positive_int(self.num_particles, "--eval-particles")


@dataclass(frozen=True)
class RunConfig:
    """Everything needed to rebuild a run: data, model, training and evaluation settings."""

    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        """Parse and check a ``config.json``; unknown or missing keys are an :class:`InputError`."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"config is not valid JSON: {error}") from None
        _require(isinstance(raw, dict), f"config must be a JSON object, got {type(raw).__name__}")
        sections = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "evaluation": EvalConfig}
        _require(set(raw) == set(sections), f"config has sections {sorted(raw)}, expected {sorted(sections)}")
        return cls(**{name: _from_dict(kind, raw[name], name) for name, kind in sections.items()})


def _from_dict(kind, values: Any, section: str):
    _require(isinstance(values, dict), f"config section {section!r} must be an object, got {values!r}")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    _require(not unknown, f"config section {section!r} has unknown keys {unknown}: expected some of {sorted(known)}")
    try:
        return kind(**values)
    except TypeError as error:
        raise InputError(f"config section {section!r}: {error}") from None


def _check_device(device: str) -> None:
    import torch

    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"--device {device!r} is not a torch device: expected e.g. cpu, cuda, cuda:0") from None
