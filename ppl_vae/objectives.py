"""Training objectives (``--elbo``): each name builds one training step for a VAE.

A step takes a minibatch ``x`` of shape ``(B, D)``, makes one optimizer update and returns the loss, Pyro's
convention: the negative ELBO summed over the minibatch, in nats. Steps are swappable (the trainer only calls them),
so a faster or a hand-written path is benchmarked against the plain one by changing one name. ``step.loss(x)`` is
the step's estimator as a differentiable scalar, without the update (the KL lab measures gradient variance with it).

=======================  =====================================================================================
name                     step
=======================  =====================================================================================
``trace``                ``SVI`` + ``Trace_ELBO``: reparameterized z, KL by Monte Carlo (the default)
``meanfield``            ``SVI`` + ``TraceMeanField_ELBO``: the closed-form KL (refused where Pyro has none)
``jit``                  ``SVI`` + ``JitTrace_ELBO``: ``trace`` compiled with the torch JIT (fixed batch shape)
``reference-mc``         hand-written torch loss, Monte Carlo KL (:func:`ppl_vae.reference.elbo_monte_carlo_kl`)
``reference-analytic``   hand-written torch loss, closed-form KL (:func:`ppl_vae.reference.elbo_analytic_kl`)
``stl``                  hand-written, "sticking the landing": Monte Carlo KL, score term dropped
                         (:func:`ppl_vae.reference.elbo_stl`; Pyro has no such ELBO)
=======================  =====================================================================================

All use Adam with the same learning rate; ``num_particles`` samples per example are drawn in one vectorized pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import pyro
import pyro.optim
import torch
from pyro.distributions.kl import kl_divergence
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.params import param_with_module_name, user_param_name

from ppl_vae import reference
from ppl_vae.errors import InputError
from ppl_vae.registry import Registry

if TYPE_CHECKING:
    from ppl_vae.config import TrainConfig
    from ppl_vae.vae import VAE

OBJECTIVES = Registry("objective")


class TrainingStep(Protocol):
    """One optimizer update per call; its state (the optimizer's moments) saves and restores for resuming."""

    fixed_batch_shape: bool  # True when every minibatch must have the same size (compiled steps)

    def __call__(self, x: torch.Tensor) -> float: ...

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The step's estimate of the loss on ``x``, differentiable w.r.t. the VAE's parameters; no update."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def make_step(vae: VAE, config: TrainConfig) -> TrainingStep:
    """The training step named by ``config.elbo``."""
    return OBJECTIVES.get(config.elbo)(vae, config)


class SVIStep:
    """``pyro.infer.SVI`` on ``vae.model`` / ``vae.guide`` with ``pyro.optim.Adam``.

    The optimizer's state is saved under the module's own parameter names (``encoder.net.0.weight``), not the
    process-specific names of Pyro's parameter store, so a run resumes in a new process.
    """

    def __init__(self, vae: VAE, elbo, lr: float, fixed_batch_shape: bool = False, quiet: tuple[str, ...] = ()):
        self.pyro_name = vae.pyro_name
        self.optim = pyro.optim.Adam({"lr": lr})
        self.elbo = elbo
        self.svi = SVI(vae.model, vae.guide, self.optim, elbo)
        self.fixed_batch_shape = fixed_batch_shape
        self.quiet = quiet  # messages of known, harmless warnings that this step silences

    def __call__(self, x: torch.Tensor) -> float:
        with warnings.catch_warnings():
            for message in self.quiet:
                warnings.filterwarnings("ignore", message=message)
            return self.svi.step(x)  # the ELBO's loss_and_grads: the same estimator as loss(x), plus the update

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return self.elbo.differentiable_loss(self.svi.model, self.svi.guide, x)

    def state_dict(self) -> dict:
        return {user_param_name(name): state for name, state in self.optim.get_state().items()}

    def load_state_dict(self, state: dict) -> None:
        self.optim.set_state({param_with_module_name(self.pyro_name, name): value for name, value in state.items()})


def _elbo_options(config: TrainConfig) -> dict:
    return {"num_particles": config.num_particles, "vectorize_particles": True, "max_plate_nesting": 1}


@OBJECTIVES.register("trace")
def trace_step(vae: VAE, config: TrainConfig) -> TrainingStep:
    return SVIStep(vae, Trace_ELBO(**_elbo_options(config)), config.lr)


def require_closed_form_kl(vae: VAE) -> None:
    """An :class:`InputError` unless Pyro has a closed-form ``KL(q(z | x) || p(z))`` for the VAE's guide and prior.

    ``TraceMeanField_ELBO`` silently falls back to the Monte Carlo KL for a pair without one (flows, mixtures), which
    would make ``meanfield`` another name for ``trace``. The pair is probed once, on one all-zero image.
    """
    probe = next(vae.parameters()).new_zeros(1, vae.config.x_dim)  # the VAE's device and dtype
    try:
        with torch.no_grad():
            kl_divergence(vae.encoder.dist(probe), vae.prior.dist())
    except NotImplementedError:
        model = vae.config
        raise InputError(
            f"--elbo meanfield needs a closed-form KL(q || p), which Pyro lacks for --guide {model.guide} with "
            f"--prior {model.prior}: use --elbo trace (Monte Carlo KL), or --guide diagonal --prior normal"
        ) from None


@OBJECTIVES.register("meanfield")
def meanfield_step(vae: VAE, config: TrainConfig) -> TrainingStep:
    require_closed_form_kl(vae)
    return SVIStep(vae, TraceMeanField_ELBO(**_elbo_options(config)), config.lr)


@OBJECTIVES.register("jit")
def jit_step(vae: VAE, config: TrainConfig) -> TrainingStep:
    elbo = JitTrace_ELBO(**_elbo_options(config), ignore_jit_warnings=True)
    # JitTrace_ELBO is built on torch.jit.trace, which recent torch releases mark as deprecated (FutureWarning)
    return SVIStep(vae, elbo, config.lr, fixed_batch_shape=True, quiet=("`torch.jit.trace` is deprecated",))


class ReferenceStep:
    """A hand-written torch step: ``loss = -mean_particles(elbo_fn(...)).sum()``, ``torch.optim.Adam``.

    Uses the VAE's own encoder and decoder networks, so it starts from the same weights as the Pyro steps.
    Requires the classic setting: diagonal guide, N(0, I) prior, Bernoulli likelihood.
    """

    fixed_batch_shape = False

    def __init__(self, vae: VAE, config: TrainConfig, elbo_fn: Callable[..., torch.Tensor]):
        model = vae.config
        classic = (model.guide, model.prior, model.likelihood) == ("diagonal", "normal", "bernoulli")
        if not classic:
            raise InputError(
                f"--elbo {config.elbo} is the hand-written classic loss: it needs --guide diagonal --prior normal "
                f"--likelihood bernoulli, got --guide {model.guide} --prior {model.prior} "
                f"--likelihood {model.likelihood}"
            )
        self.vae = vae
        self.elbo_fn = elbo_fn
        self.num_particles = config.num_particles
        self.optimizer = torch.optim.Adam(vae.parameters(), lr=config.lr)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        eps = torch.randn((self.num_particles, x.shape[0], vae.config.z_dim), device=x.device, dtype=x.dtype)
        elbo = self.elbo_fn(vae.encoder.net, vae.decoder, x, eps, head=vae.config.scale_param)
        return -elbo.mean(0).sum()

    def __call__(self, x: torch.Tensor) -> float:
        loss = self.loss(x)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


@OBJECTIVES.register("reference-mc")
def reference_mc_step(vae: VAE, config: TrainConfig) -> TrainingStep:
    return ReferenceStep(vae, config, reference.elbo_monte_carlo_kl)


@OBJECTIVES.register("reference-analytic")
def reference_analytic_step(vae: VAE, config: TrainConfig) -> TrainingStep:
    return ReferenceStep(vae, config, reference.elbo_analytic_kl)


@OBJECTIVES.register("stl")
def stl_step(vae: VAE, config: TrainConfig) -> TrainingStep:
    return ReferenceStep(vae, config, reference.elbo_stl)
