"""The parts a configuration names, checked where the configuration is turned into things.

:mod:`ppl_vae.config` is a plain schema (types and ranges of its own fields); which names exist, and what each
named part requires of the rest of the configuration, is said by the parts themselves, in their registries (see
:class:`~ppl_vae.registry.Registry`: a part's ``requires(config)``). This module runs both for a configuration:

=================  =====================================================================================
field (flag)       registry, and the parts that require something
=================  =====================================================================================
``likelihood``     ``LIKELIHOODS``: ``gaussian``, ``laplace``, ``gaussian-learned`` need ``pixel_scale`` above
                   ``MIN_PIXEL_SCALE``
``prior``          ``PRIORS``: ``vamp`` takes no labels and one latent layer
``guide``          ``GUIDES``: ``iaf`` needs ``z_dim >= 2``
``scale_param``    ``HEADS``
``net``            ``NETS``: ``conv`` takes no labels (it reads ``(C, H, W)`` images)
``elbo``           ``OBJECTIVES``: ``iwae`` takes no ``beta`` or ``anneal``
``anneal``         ``ANNEALING``
``optim``          ``OPTIMIZERS``
``lr_schedule``    ``LR_SCHEDULES``
=================  =====================================================================================

Every name is looked up before any part's requirement runs, so an unknown name is the error a person sees first. The
checks run at the boundary: :class:`~ppl_vae.vae.VAE` (``check_model``), :func:`~ppl_vae.objectives.make_step` and so
``fit`` (``check_train``), :func:`~ppl_vae.run.load_config` for a stored ``config.json`` and the command line before
any work (``check_run``). A bad flag or a hand-edited ``config.json`` fails there with one
:class:`~ppl_vae.errors.InputError` naming the value and what was expected.

Example::

    check_model(ModelConfig(x_dim=64, image_shape=(1, 8, 8), z_dim=1, guide="iaf"))
    # InputError: --guide iaf needs --z-dim >= 2 (an autoregressive flow over one dimension is affine), got 1
"""

from __future__ import annotations

from ppl_vae.config import PART_NAME_FLAGS, TRAIN_PART_NAME_FLAGS, ModelConfig, RunConfig, TrainConfig
from ppl_vae.guides import GUIDES
from ppl_vae.heads import HEADS
from ppl_vae.likelihoods import LIKELIHOODS
from ppl_vae.nets import NETS
from ppl_vae.objectives import ANNEALING, OBJECTIVES
from ppl_vae.optim import LR_SCHEDULES, OPTIMIZERS
from ppl_vae.priors import PRIORS
from ppl_vae.registry import Registry

MODEL_PARTS: dict[str, Registry] = {
    "likelihood": LIKELIHOODS,
    "prior": PRIORS,
    "guide": GUIDES,
    "scale_param": HEADS,
    "net": NETS,
}
"""The :class:`~ppl_vae.config.ModelConfig` field naming a part -> the registry of that kind of part."""

TRAIN_PARTS: dict[str, Registry] = {
    "elbo": OBJECTIVES,
    "anneal": ANNEALING,
    "optim": OPTIMIZERS,
    "lr_schedule": LR_SCHEDULES,
}
"""The :class:`~ppl_vae.config.TrainConfig` field naming a part -> the registry of that kind of part."""


def _check(config, parts: dict[str, Registry], flags: dict[str, str]) -> None:
    for field, registry in parts.items():
        registry.get(getattr(config, field), flags[field])
    for field, registry in parts.items():
        registry.check(getattr(config, field), config, flags[field])


def check_model(config: ModelConfig) -> ModelConfig:
    """``config`` itself, once every part it names is registered and accepts it; an InputError otherwise."""
    _check(config, MODEL_PARTS, PART_NAME_FLAGS)
    return config


def check_train(config: TrainConfig) -> TrainConfig:
    """``config`` itself, once the objective, warm-up schedule, optimizer and learning-rate schedule it names are
    registered and accept it; an InputError otherwise."""
    _check(config, TRAIN_PARTS, TRAIN_PART_NAME_FLAGS)
    return config


def check_run(config: RunConfig) -> RunConfig:
    """``config`` itself, once its model (a built-in run's) and its training settings pass :func:`check_model` and
    :func:`check_train`."""
    if config.model is not None:
        check_model(config.model)
    check_train(config.train)
    return config
