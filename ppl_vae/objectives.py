"""Training objectives (``--elbo``): each name builds one training step for a VAE.

A step takes a minibatch ``x`` of shape ``(B, D)`` (and, for a conditional model, the labels ``y``), makes one
optimizer update and returns the loss, Pyro's convention: the negative objective summed over the minibatch, in nats.
Steps are swappable (the trainer only calls them), so a faster or a hand-written path is benchmarked against the
plain one by changing one name. ``step.loss(x)`` is the step's estimator as a differentiable scalar, without the
update (the KL lab measures gradient variance with it).

=======================  =====================================================================================
name                     step
=======================  =====================================================================================
``trace``                ``SVI`` + ``Trace_ELBO``: reparameterized z, KL by Monte Carlo (the default)
``meanfield``            ``SVI`` + ``TraceMeanField_ELBO``: the closed-form KL (refused where Pyro has none)
``jit``                  ``SVI`` + ``JitTrace_ELBO``: ``trace`` compiled with the torch JIT (fixed batch shape)
``iwae``                 ``SVI`` + ``RenyiELBO(alpha=0)``: the importance-weighted bound with K = ``num_particles``
``reference-mc``         hand-written torch loss, Monte Carlo KL (:func:`ppl_vae.reference.elbo_monte_carlo_kl`)
``reference-analytic``   hand-written torch loss, closed-form KL (:func:`ppl_vae.reference.elbo_analytic_kl`)
``stl``                  hand-written, "sticking the landing": Monte Carlo KL, score term dropped
                         (:func:`ppl_vae.reference.elbo_stl`; Pyro has no such ELBO)
=======================  =====================================================================================

All use Adam with the same learning rate; ``num_particles`` samples per example are drawn in one vectorized pass.

The IWAE bound (Burda et al. 2015) for ``K`` samples ``z_k ~ q(z | x)`` and ``log w_k = log p(x, z_k) - log q(z_k | x)``
is ``log (1/K) sum_k w_k``, per example; it is the ELBO at ``K = 1`` and grows with ``K`` towards ``log p(x)``.

**β and KL warm-up** (``beta``, ``anneal``, ``anneal_epochs``). The SVI steps ``trace``, ``meanfield`` and ``jit``
multiply the log-densities of the latent site ``"z"`` in the model *and* the guide by ``β_t`` (``poutine.scale``
restricted to that one site), which turns each particle's objective into::

    log p(x | z) + β_t (log p(z) - log q(z | x))        whose expectation is  E_q[log p(x | z)] - β_t KL(q || p)

with ``β_t = beta * anneal(t / anneal_epochs)`` at ``t`` epochs of training done (fractional: updated every step)::

    none       1
    linear     min(1, t / N)                      0 -> 1 over the first N epochs, then 1
    cyclical   min(1, 2 * ((t / N) mod 1))        every N epochs: 0 -> 1 over the first half, 1 for the second half

``β_t`` reaches the model as a trailing tensor argument, so ``jit`` compiles once and sees every new value. ``iwae``
refuses ``β``/annealing (in :class:`~ppl_vae.config.TrainConfig`): ``RenyiELBO`` applies site scales *inside* its
``logsumexp``, so the result would be neither the β-VAE objective nor an importance-weighted bound. Training reports
the weighted objective; evaluation (:mod:`ppl_vae.evaluate`) ignores scales.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import pyro
import pyro.optim
import torch
from pyro.distributions.kl import kl_divergence
from pyro.infer import SVI, JitTrace_ELBO, RenyiELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.params import param_with_module_name, user_param_name
from pyro.poutine.messenger import Messenger

from ppl_vae import reference
from ppl_vae.errors import InputError
from ppl_vae.registry import Registry

if TYPE_CHECKING:
    from ppl_vae.config import TrainConfig
    from ppl_vae.vae import VAE

OBJECTIVES = Registry("objective")
ANNEALING = Registry("annealing schedule")

ANNEALING.register("none")(lambda fraction: 1.0)
ANNEALING.register("linear")(lambda fraction: min(1.0, fraction))
ANNEALING.register("cyclical")(lambda fraction: min(1.0, 2.0 * (fraction % 1.0)))


def is_latent_scaled(config: TrainConfig) -> bool:
    """True when the objective weights the latent site: ``beta != 1`` or an annealing schedule."""
    return config.beta != 1 or config.anneal != "none"


def latent_scale(config: TrainConfig, epochs_done: float) -> float:
    """``β_t = beta * anneal(epochs_done / anneal_epochs)``: the weight of ``log p(z) - log q(z | x)`` at a point of
    training (``epochs_done`` counts whole and partial epochs, e.g. 2.5 halfway through the third)."""
    return config.beta * ANNEALING.get(config.anneal)(epochs_done / config.anneal_epochs)


class ScaleSite(Messenger):
    """``poutine.scale`` restricted to the sample site called ``name``: its log-density is multiplied by ``scale``.

    Unlike ``poutine.scale`` it accepts ``scale == 0`` (the start of a warm-up): the site then contributes nothing.
    """

    def __init__(self, name: str, scale: float | torch.Tensor):
        super().__init__()
        self.name = name
        self.scale = scale

    def _process_message(self, msg) -> None:
        if msg["name"] == self.name:
            msg["scale"] = self.scale * msg["scale"]


def scaled_latent(program: Callable, site: str = "z") -> Callable:
    """``program(*args, scale)`` runs ``program(*args)`` with ``site``'s log-density times the tensor ``scale``.

    The scale is a positional tensor argument (not a closure value or a keyword), so a JIT-compiled objective takes
    it as an input of the compiled graph instead of baking in its first value or recompiling for each new one.
    """

    def scaled(*args):
        *args, scale = args
        with ScaleSite(site, scale):
            return program(*args)

    return scaled


@dataclass(frozen=True)
class Programs:
    """A user's Pyro ``model`` and ``guide`` (sites ``"z"``, ``"x"``, plate ``"data"``), trained like a VAE's.

    ``pyro_name``: the prefix their parameters share in Pyro's parameter store (``pyro.module(pyro_name, ...)``), taken
    off the optimizer state's names; ``None`` keeps the store's names as they are.
    """

    model: Callable
    guide: Callable
    pyro_name: str | None = None


class TrainingStep(Protocol):
    """One optimizer update per call; its state (the optimizer's moments) saves and restores for resuming."""

    fixed_batch_shape: bool  # True when every minibatch must have the same size (compiled steps)
    latent_scaled: bool  # True when the step takes β_t as a trailing 0-d tensor argument (see scaled_latent)

    def __call__(self, x: torch.Tensor, *args: torch.Tensor) -> float: ...

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The step's estimate of the loss on ``x``, differentiable w.r.t. the VAE's parameters; no update."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def make_step(vae: VAE | Programs, config: TrainConfig) -> TrainingStep:
    """The training step named by ``config.elbo``, for a :class:`~ppl_vae.vae.VAE` or a user's :class:`Programs`."""
    step = OBJECTIVES.get(config.elbo)(vae, config)
    if is_latent_scaled(config) and not step.latent_scaled:
        raise InputError(
            f"--elbo {config.elbo} takes no --beta/--anneal (got --beta {config.beta} --anneal {config.anneal}): "
            "use --elbo trace, meanfield or jit"
        )
    return step


class SVIStep:
    """``pyro.infer.SVI`` on ``vae.model`` / ``vae.guide`` with ``pyro.optim.Adam``.

    The optimizer's state is saved under the module's own parameter names (``encoder.net.0.weight``), not the
    process-specific names of Pyro's parameter store, so a run resumes in a new process.

    With ``latent_scaled`` the model and guide run under :func:`scaled_latent`: every call then ends with ``β_t``.
    """

    def __init__(
        self,
        vae: VAE | Programs,
        elbo,
        lr: float,
        fixed_batch_shape: bool = False,
        latent_scaled: bool = False,
        quiet: tuple[str, ...] = (),
    ):
        self.pyro_name = vae.pyro_name
        self.optim = pyro.optim.Adam({"lr": lr})
        self.elbo = elbo
        wrap = scaled_latent if latent_scaled else (lambda program: program)
        self.svi = SVI(wrap(vae.model), wrap(vae.guide), self.optim, elbo)
        self.fixed_batch_shape = fixed_batch_shape
        self.latent_scaled = latent_scaled
        self.quiet = quiet  # messages of known, harmless warnings that this step silences

    def __call__(self, x: torch.Tensor, *args: torch.Tensor) -> float:
        with warnings.catch_warnings():
            for message in self.quiet:
                warnings.filterwarnings("ignore", message=message)
            return self.svi.step(x, *args)  # the ELBO's loss_and_grads: the estimator of loss(), plus the update

    def loss(self, x: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
        return self.elbo.differentiable_loss(self.svi.model, self.svi.guide, x, *args)

    def state_dict(self) -> dict:
        if self.pyro_name is None:
            return self.optim.get_state()
        return {user_param_name(name): state for name, state in self.optim.get_state().items()}

    def load_state_dict(self, state: dict) -> None:
        if self.pyro_name is None:
            self.optim.set_state(state)
            return
        self.optim.set_state({param_with_module_name(self.pyro_name, name): value for name, value in state.items()})


def _elbo_options(config: TrainConfig) -> dict:
    return {"num_particles": config.num_particles, "vectorize_particles": True, "max_plate_nesting": 1}


@OBJECTIVES.register("trace")
def trace_step(vae: VAE, config: TrainConfig) -> TrainingStep:
    return SVIStep(vae, Trace_ELBO(**_elbo_options(config)), config.lr, latent_scaled=is_latent_scaled(config))


def require_closed_form_kl(vae: VAE) -> None:
    """An :class:`InputError` unless Pyro has a closed-form ``KL(q(z | x) || p(z))`` for the VAE's guide and prior.

    ``TraceMeanField_ELBO`` silently falls back to the Monte Carlo KL for a pair without one (flows, mixtures), which
    would make ``meanfield`` another name for ``trace``. The pair is probed once, on one all-zero encoder input.
    A user's own programs are not probed (``ppl_vae.lab.analytic_kl_sites`` checks any model and guide).
    """
    if isinstance(vae, Programs):
        return
    width = vae.config.x_dim + vae.config.num_classes  # the encoder sees [x | one-hot y] in a conditional VAE
    probe = next(vae.parameters()).new_zeros(1, width)  # the VAE's device and dtype
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
    elbo = TraceMeanField_ELBO(**_elbo_options(config))
    return SVIStep(vae, elbo, config.lr, latent_scaled=is_latent_scaled(config))


@OBJECTIVES.register("jit")
def jit_step(vae: VAE, config: TrainConfig) -> TrainingStep:
    elbo = JitTrace_ELBO(**_elbo_options(config), ignore_jit_warnings=True)
    # JitTrace_ELBO is built on torch.jit.trace, which recent torch releases mark as deprecated (FutureWarning)
    return SVIStep(
        vae,
        elbo,
        config.lr,
        fixed_batch_shape=True,
        latent_scaled=is_latent_scaled(config),
        quiet=("`torch.jit.trace` is deprecated",),
    )


@OBJECTIVES.register("iwae")
def iwae_step(vae: VAE, config: TrainConfig) -> TrainingStep:
    return SVIStep(vae, RenyiELBO(alpha=0.0, **_elbo_options(config)), config.lr)


class ReferenceStep:
    """A hand-written torch step: ``loss = -mean_particles(elbo_fn(...)).sum()``, ``torch.optim.Adam``.

    Uses the VAE's own encoder and decoder networks, so it starts from the same weights as the Pyro steps.
    Requires the classic setting: diagonal guide, N(0, I) prior, Bernoulli likelihood.
    """

    fixed_batch_shape = False
    latent_scaled = False

    def __init__(self, vae: VAE, config: TrainConfig, elbo_fn: Callable[..., torch.Tensor]):
        if isinstance(vae, Programs):
            raise InputError(f"--elbo {config.elbo} is the hand-written loss of the built-in VAE, not of custom ones")
        model = vae.config
        if model.num_classes:
            raise InputError(f"--elbo {config.elbo} is the unconditional classic loss: it takes no --conditional")
        classic = (model.guide, model.prior, model.likelihood) == ("diagonal", "normal", "bernoulli")
        if not classic or model.latent_layers != 1:
            raise InputError(
                f"--elbo {config.elbo} is the hand-written classic loss: it needs --guide diagonal --prior normal "
                f"--likelihood bernoulli --latent-layers 1, got --guide {model.guide} --prior {model.prior} "
                f"--likelihood {model.likelihood} --latent-layers {model.latent_layers}"
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
