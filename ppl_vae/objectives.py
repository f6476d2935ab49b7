"""Training objectives (``--elbo``): each name builds one training step for a pair of Pyro programs.

A step is called as ``step(x, *args, beta_t=None)``: a minibatch ``x`` ``(B, ...)`` and the programs' extra arguments
(the labels ``y`` of a conditional model), one optimizer update, and the loss returned, Pyro's convention: the negative
objective summed over the minibatch, in nats. ``step.loss(x, *args, beta_t=None)`` is the step's estimator as a
differentiable scalar, without the update (the KL lab measures gradient variance with it). A step whose loss or
gradients are not finite applies no update and raises :class:`~ppl_vae.nonfinite.NonFiniteStep`. Steps are swappable
(the trainer only calls them), so a faster or a hand-written path is benchmarked against the plain one by changing a
name.

=======================  =====================================================================================
name                     step
=======================  =====================================================================================
``trace``                ``SVI`` + ``Trace_ELBO``: reparameterized latents, KL by Monte Carlo (the default)
``meanfield``            ``SVI`` + ``TraceMeanField_ELBO``: the closed-form KL at every latent site; refused for a
                         site without a registered closed form or a guide that is not mean-field
``jit``                  ``SVI`` + ``JitTrace_ELBO``: ``trace`` compiled with the torch JIT (fixed batch shape)
``iwae``                 ``SVI`` + ``RenyiELBO(alpha=0)``: the importance-weighted bound with K = ``num_particles``
``enum``                 ``SVI`` + ``TraceEnum_ELBO``: sums out the guide's sites marked for enumeration
                         (``config_enumerate``, ``infer={"enumerate": "parallel"}``) exactly; refused for a guide
                         that marks none
``tracegraph``           ``SVI`` + ``TraceGraph_ELBO``: score-function gradients with Rao-Blackwellization, for
                         non-reparameterizable latents
``tracegraph-baseline``  ``tracegraph`` with Pyro's decaying-average baseline (``BASELINE_BETA``) at every latent site
                         without ``rsample`` (:class:`DecayingAverageBaseline`); fixed batch shape (the average is
                         kept per position in the minibatch)
``stl``                  ``SVI`` + :class:`TraceSTL_ELBO`, "sticking the landing": ``trace`` with the score term of
                         every reparameterized latent site dropped from the gradient; refused for a latent site
                         without ``rsample``
``reference-mc``         hand-written torch loss, Monte Carlo KL (:func:`ppl_vae.reference.elbo_monte_carlo_kl`)
``reference-analytic``   hand-written torch loss, closed-form KL (:func:`ppl_vae.reference.elbo_analytic_kl`)
``reference-stl``        hand-written torch loss, STL (:func:`ppl_vae.reference.elbo_stl`)
=======================  =====================================================================================

**Three tiers, one set of numbers** (``TrainConfig.path``, ``--path``). Every Pyro objective above ("``SVI`` + ...")
runs without ``SVI`` by default. The *fast path* (``--path fast``), :class:`FastStep`, calls the ELBO's own
``loss_and_grads`` (what ``SVI.step`` calls) and steps one torch optimizer over every parameter (``foreach``), with
Pyro's validation off after the first update. The *compiled tier* (``--path graph``; ``auto``, the default, takes it
for ``trace``, ``stl`` and ``iwae``), :class:`GraphStep`, is the fast path whose loss, after the first update, is
traced once per batch shape into a graph of torch operations over the live parameters (:mod:`ppl_vae.graphs`) and
run without Pyro; it is checked against the fast path on each shape's first two batches and gives way to it, with
one warning, where a graph would not reproduce the programs (``.item()``, Python's ``random``, a structure that
changes); ``auto`` takes the fast path for the other objectives, ``--path graph`` refuses them. ``--path plain`` is
:class:`SVIStep`: ``SVI.step`` with Pyro's wrapper, one torch optimizer per parameter tensor. The optimizers are
elementwise and the graph runs the programs' own operations on the same draws, so all three take the same updates
(the tests compare the curves in float64); the optimizer state is saved in Pyro's format on all three, so a run
resumes on any. The hand-written ``reference-*`` steps have one path (``--path fast`` and ``graph`` refuse them).

Python callers may train with any Pyro ELBO instance instead of a name: ``fit(..., elbo=TraceEnum_ELBO(...))`` (or
``make_step(programs, config, elbo=...)``); it is used as given (its own ``max_plate_nesting``, particles and so on).

The SVI steps read the programs once, at their first call, from that minibatch (:func:`ppl_vae.programs.
inspect_programs`, which leaves the RNG as it was): ``max_plate_nesting`` (the deepest user plate, so a per-pixel plate
nested in the data plate trains) and the latent sites. ``num_particles`` samples per example are drawn in one
vectorized pass, in a plate left of every user plate. The optimizer and learning-rate schedule are
``TrainConfig.optim`` / ``lr_schedule`` (:mod:`ppl_vae.optim`).

The IWAE bound (Burda et al. 2015) for ``K`` samples ``z_k ~ q(z | x)`` and ``log w_k = log p(x, z_k) - log q(z_k | x)``
is ``log (1/K) sum_k w_k``, per example; it is the ELBO at ``K = 1`` and grows with ``K`` towards ``log p(x)``.

**β and KL warm-up** (``beta``, ``anneal``, ``anneal_epochs``, ``latent_sites``). The SVI steps multiply the
log-densities of every latent site (every non-observed sample site of the guide, or only those named in
``TrainConfig.latent_sites``) in the model *and* the guide by ``β_t`` (:class:`ScaleSites`, ``poutine.scale``
restricted to those sites), which turns each particle's objective into::

    log p(x | z) + β_t (log p(z) - log q(z | x))        whose expectation is  E_q[log p(x | z)] - β_t KL(q || p)

(for several latent sites ``z`` stands for all of them and ``log p(z)`` for the sum of their model log-densities,
``log p(z_1 | z_2)`` included), with ``β_t = beta * anneal(t / anneal_epochs)`` at ``t`` epochs of training done
(fractional: updated every step)::

    none       1
    linear     min(1, t / N)                      0 -> 1 over the first N epochs, then 1
    cyclical   min(1, 2 * ((t / N) mod 1))        every N epochs: 0 -> 1 over the first half, 1 for the second half

``beta_t=None`` means ``TrainConfig.beta`` (no warm-up). Inside the step ``β_t`` reaches the programs as a positional
tensor argument, so ``jit`` compiles once and sees every new value as an input, not a constant. ``iwae`` refuses
``β``/annealing (its own requirement, see :mod:`ppl_vae.parts`): ``RenyiELBO`` applies site scales *inside* its
``logsumexp``, so the result would be neither the β-VAE objective nor an importance-weighted bound; so do the
hand-written steps. Training reports the weighted objective; evaluation (:mod:`ppl_vae.evaluate`) ignores scales.
"""

from __future__ import annotations

import dataclasses
import math
import random
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.distributions.score_parts import ScoreParts
from pyro.infer import (
    SVI,
    JitTrace_ELBO,
    RenyiELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
)
from pyro.infer.elbo import ELBO
from pyro.infer.util import torch_item, zero_grads
from pyro.optim import PyroLRScheduler
from pyro.params import param_with_module_name, user_param_name
from pyro.poutine.messenger import Messenger

from ppl_vae import reference
from ppl_vae.errors import InputError
from ppl_vae.graphs import CompiledLoss, NotCompiled, NotCovered, compilable, compile_loss
from ppl_vae.nonfinite import require_finite
from ppl_vae.optim import (
    group_factor,
    load_per_parameter_state,
    parameter_name,
    per_parameter_state,
    pyro_optimizer,
    torch_optimizer,
)
from ppl_vae.programs import (
    ProgramSites,
    UserProgram,
    as_user_program,
    importance_traces,
    inspect_programs,
    latent_parents,
    rng_preserved,
    trace_programs,
)
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
    """True when the objective weights the latent sites: ``beta != 1`` or an annealing schedule."""
    return config.beta != 1 or config.anneal != "none"


def latent_scale(config: TrainConfig, epochs_done: float) -> float:
    """``β_t = beta * anneal(epochs_done / anneal_epochs)``: the weight of ``log p(z) - log q(z | x)`` at a point of
    training (``epochs_done`` counts whole and partial epochs, e.g. 2.5 halfway through the third)."""
    return config.beta * ANNEALING.get(config.anneal)(epochs_done / config.anneal_epochs)


class ScaleSites(Messenger):
    """``poutine.scale`` restricted to the sample sites ``names``: their log-densities are multiplied by ``scale``.

    Unlike ``poutine.scale`` it accepts ``scale == 0`` (the start of a warm-up): the sites then contribute nothing.
    """

    def __init__(self, names: Sequence[str], scale: float | torch.Tensor):
        super().__init__()
        self.names = frozenset(names)
        self.scale = scale

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and msg["name"] in self.names:
            msg["scale"] = self.scale * msg["scale"]


def _scaled(program: Callable, names: Sequence[str]) -> Callable:
    """``program(*args, scale)`` runs ``program(*args)`` with the sites ``names`` weighted by the tensor ``scale``.

    The scale is a positional tensor argument (not a closure value or a keyword), so a JIT-compiled objective takes
    it as an input of the compiled graph instead of baking in its first value or recompiling for each new one.
    """

    def scaled(*args):
        *args, scale = args
        with ScaleSites(names, scale):
            return program(*args)

    return scaled


class TrainingStep(Protocol):
    """One optimizer update per call; its state (the optimizer's moments, the schedule) saves and restores."""

    fixed_batch_shape: bool  # True when every minibatch must have the same size (compiled steps)
    latent_scaled: bool  # True when the step weights the latent sites by beta_t

    def __call__(self, x: torch.Tensor, *args, beta_t: float | None = None) -> float: ...

    def loss(self, x: torch.Tensor, *args, beta_t: float | None = None) -> torch.Tensor:
        """The step's estimate of the loss on ``x``, differentiable w.r.t. the trained parameters; no update."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def make_step(program: VAE | UserProgram, config: TrainConfig, *, elbo: ELBO | None = None) -> TrainingStep:
    """The training step named by ``config.elbo`` (or SVI with the Pyro ELBO instance ``elbo``), for the built-in
    :class:`~ppl_vae.vae.VAE` or a :class:`~ppl_vae.programs.UserProgram`. The parts ``config`` names are checked
    first (:func:`ppl_vae.parts.check_train`)."""
    from ppl_vae.parts import check_train  # parts imports this module's registries

    check_train(config)
    program = as_user_program(program)
    if elbo is not None:
        if config.elbo != "trace":
            raise InputError(f"pass either elbo= (a Pyro ELBO instance) or TrainConfig(elbo={config.elbo!r}), not both")
        if not isinstance(elbo, ELBO):
            raise InputError(f"elbo= must be a Pyro ELBO instance (e.g. TraceEnum_ELBO()), got {type(elbo).__name__}")
        return elbo_step(program, config, lambda sites: elbo, latent_scaled=is_latent_scaled(config))
    step = OBJECTIVES.get(config.elbo)(program, config)
    sharding = _sharding(config)
    if sharding is not None and not _is_sharded(step):
        from ppl_vae.data_parallel import SHARDED_OBJECTIVES

        raise InputError(
            f"--elbo {config.elbo} trains one process with its own noise; {_sharded_why(sharding)} use --elbo "
            f"{SHARDED_OBJECTIVES}"
        )
    if config.path in ("fast", "graph") and not isinstance(step, FastStep):
        raise InputError(
            f"--path {config.path} applies to the Pyro objectives; --elbo {config.elbo} is hand-written (one torch "
            "optimizer already): use --path auto"
        )
    if is_latent_scaled(config) and not step.latent_scaled:
        raise InputError(
            f"--elbo {config.elbo} takes no --beta/--anneal (got --beta {config.beta} --anneal {config.anneal}): "
            "use --elbo trace, meanfield, jit, enum, tracegraph or stl"
        )
    return step


class ELBOStep:
    """What the two paths of a Pyro objective share: the programs read at the first call (or :meth:`loss`,
    :meth:`prepare`) from that minibatch, the ELBO built by ``make_elbo(sites)`` with the found
    :class:`~ppl_vae.programs.ProgramSites` (``check(programs, sites, x, args)`` may refuse the pair), β_t as the
    programs' last argument, the silenced warnings, and :meth:`loss`. Attributes ``sites``, ``elbo``, ``model`` and
    ``guide`` (the programs as the ELBO runs them, latent sites scaled) exist from then on.

    The optimizer's state is saved under the parameters' own names (``encoder.net.0.weight``) when ``pyro_name`` is
    set, not the process-specific names of Pyro's parameter store, so a run resumes in a new process.
    """

    def __init__(
        self,
        program: UserProgram,
        config: TrainConfig,
        make_elbo: Callable[[ProgramSites], ELBO],
        *,
        latent_scaled: bool = False,
        fixed_batch_shape: bool = False,
        quiet: tuple[str, ...] = (),
        check: Callable[[UserProgram, ProgramSites, torch.Tensor, tuple], None] | None = None,
    ):
        self.program = program
        self.config = config
        self.make_elbo = make_elbo
        self.latent_scaled = latent_scaled
        self.fixed_batch_shape = fixed_batch_shape
        self.quiet = quiet  # messages of known, harmless warnings that this step silences
        self.check = check
        self.sites: ProgramSites | None = None
        self.elbo: ELBO | None = None

    def prepare(self, x: torch.Tensor, *args) -> None:
        """Read the programs from the minibatch ``x`` and build the ELBO (once; the first call or :meth:`loss` does
        it)."""
        if self.elbo is not None:
            return
        model, guide = self.program.model, self.program.guide
        sites = inspect_programs(model, guide, x, *args)
        scaled_sites = _scaled_sites(self.config, sites)
        if self.check is not None:
            self.check(self.program, sites, x, args)
        if self.latent_scaled:
            model, guide = _scaled(model, scaled_sites), _scaled(guide, scaled_sites)
        self.model, self.guide = model, guide
        self.sites, self.elbo = sites, self.make_elbo(sites)

    def _arguments(self, x: torch.Tensor, args: tuple, beta_t: float | None) -> tuple:
        if self.latent_scaled:  # β_t as a tensor argument: a compiled step takes it as an input, not a constant
            beta_t = self.config.beta if beta_t is None else beta_t
            return (*args, torch.as_tensor(beta_t, dtype=x.dtype, device=x.device))
        if beta_t is not None and beta_t != 1:
            raise InputError(
                f"beta_t={beta_t}: this step was built without a latent scale (beta=1, anneal='none'); "
                "set TrainConfig(beta=...) or anneal= to weight the latent sites"
            )
        return args

    @contextmanager
    def _quieted(self):
        with warnings.catch_warnings():
            for message in (*self.quiet, "Encountered NaN"):  # NaN: require_finite stops the step, with a reason
                warnings.filterwarnings("ignore", message=message)
            yield

    def loss(self, x: torch.Tensor, *args, beta_t: float | None = None) -> torch.Tensor:
        self.prepare(x, *args)
        if not hasattr(self.elbo, "differentiable_loss"):
            name = type(self.elbo).__name__
            raise InputError(f"{name} has no differentiable loss: step.loss needs e.g. --elbo trace")
        with self._quieted():
            return self.elbo.differentiable_loss(self.model, self.guide, x, *self._arguments(x, args, beta_t))

    def _saved_name(self, store_name: str) -> str:
        """The name a parameter's optimizer state is saved under (see the class docstring)."""
        return store_name if self.program.pyro_name is None else user_param_name(store_name)

    def _store_name(self, saved_name: str) -> str:
        pyro_name = self.program.pyro_name
        return saved_name if pyro_name is None else param_with_module_name(pyro_name, saved_name)


class SVIStep(ELBOStep):
    """The plain path: ``pyro.infer.SVI`` on the programs with the ELBO and Pyro's wrapper of the configured
    optimizer (:func:`ppl_vae.optim.pyro_optimizer`: one torch optimizer per parameter). Attribute ``svi`` exists
    once the step is prepared."""

    def __init__(self, program: UserProgram, config: TrainConfig, make_elbo, **options):
        super().__init__(program, config, make_elbo, **options)
        self.optim = pyro_optimizer(config, program.pyro_name)
        self.svi: SVI | None = None

    def prepare(self, x: torch.Tensor, *args) -> None:
        super().prepare(x, *args)
        if self.svi is None:
            self.svi = SVI(self.model, self.guide, self.optim, self.elbo)

    def __call__(self, x: torch.Tensor, *args, beta_t: float | None = None) -> float:
        self.prepare(x, *args)
        with self._quieted(), poutine.trace(param_only=True) as captured:  # SVI.step, with a check before the update
            loss = self.svi.loss_and_grads(self.svi.model, self.svi.guide, x, *self._arguments(x, args, beta_t))
        params = set(site["value"].unconstrained() for site in captured.trace.nodes.values())
        loss = torch_item(loss)
        try:
            require_finite(loss, params)  # a NonFiniteStep leaves the parameters and the optimizer as they were
            self.optim(params)
        finally:
            zero_grads(params)
        if isinstance(self.optim, PyroLRScheduler):  # one step of the learning-rate schedule per update
            self.optim.step()
        return loss

    def state_dict(self) -> dict:
        return {self._saved_name(name): state for name, state in self.optim.get_state().items()}

    def load_state_dict(self, state: dict) -> None:
        self.optim.set_state({self._store_name(name): value for name, value in state.items()})


class FastStep(ELBOStep):
    """The fast path: the same ELBO's ``loss_and_grads`` (its loss and gradients, as ``SVI.step`` computes them),
    then one update of one torch optimizer over every parameter (:func:`ppl_vae.optim.torch_optimizer`, ``foreach``)
    instead of ``SVI``'s parameter capture and Pyro's optimizer per parameter tensor.

    The same draws and the same updates as :class:`SVIStep`: the ELBO is the same object run on the same programs,
    the gradients are the same (set to ``None`` before each backward pass instead of zeroed after the update), and
    the optimizers here are elementwise, so one over all parameters steps each coordinate as one per parameter does
    (``tests/test_fast_path.py`` checks the curves agree). The learning-rate schedule is one ``LambdaLR`` over the
    groups of ``lr_factors``. The state is saved in Pyro's format (:func:`ppl_vae.optim.per_parameter_state`), so a
    checkpoint of either path resumes on the other.

    The parameters are those the first update's trace registers (``pyro.module``, ``pyro.param``); a parameter that
    first appears later joins the optimizer then, as Pyro's wrapper makes an optimizer for it then. After the first
    update (validated as the plain path validates it) the updates run with Pyro's validation off
    (``pyro.validation_enabled(False)``: the argument and support checks of distributions, the site-shape checks),
    which changes no number; a non-finite loss still stops ``fit`` at the end of the epoch.
    """

    optimizer_foreach = True
    """torch's multi-tensor optimizer implementation (measured faster on the CPU for the built-in networks)."""

    def __init__(self, program: UserProgram, config: TrainConfig, make_elbo, **options):
        super().__init__(program, config, make_elbo, **options)
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler = None
        self.names: list[str] = []  # the store names of the optimizer's parameters, in its order
        self.known = 0  # the size of Pyro's parameter store when this step last looked at it
        self.waiting: dict | None = None  # a loaded state, applied when the optimizer is built

    def __call__(self, x: torch.Tensor, *args, beta_t: float | None = None) -> float:
        self.prepare(x, *args)
        arguments = (x, *self._arguments(x, args, beta_t))
        with self._quieted():
            if self.optimizer is None:
                loss = self._first_update(arguments)
            else:
                loss = self._loss_and_grads(arguments)
                self._require_finite(loss)
                self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return type(loss)(map(torch_item, loss)) if isinstance(loss, tuple) else torch_item(loss)

    def _loss_and_grads(self, arguments: tuple):
        """The loss of an update after the first, its gradients in the parameters' ``.grad`` (set afresh), and any
        parameter that first appeared joined to the optimizer."""
        store = pyro.get_param_store()
        self.known = len(store)  # what was registered since this step's last update is another program's
        self.optimizer.zero_grad(set_to_none=True)
        with pyro.validation_enabled(False):
            loss = self._backward(arguments)
        if len(store) != self.known:
            self._add_new_parameters()
        return loss

    def _backward(self, arguments: tuple):
        """The ELBO's loss on ``arguments``, its gradients accumulated in the parameters' ``.grad``."""
        return self.elbo.loss_and_grads(self.model, self.guide, *arguments)

    def _check_found(self, found: dict) -> None:
        """A hook on the parameters the first update found (name -> unconstrained tensor), before the optimizer is
        built over them: nothing to check in one process."""

    def _first_update(self, arguments: tuple):
        """The first update: the parameters found from its trace (as ``SVI.step`` finds them), the optimizer built
        over them (with a loaded state), then its step."""
        for parameter in self.program.modules.parameters():
            parameter.grad = None
        with poutine.trace(param_only=True) as capture:
            loss = self._backward(arguments)
        found = {}
        for name, site in capture.trace.nodes.items():
            found.setdefault(name, site["value"].unconstrained())
        self._check_found(found)
        self.optimizer, self.scheduler = torch_optimizer(
            self.config, self._named(found.items()), foreach=self.optimizer_foreach
        )
        self.names = self._optimizer_names(found)
        self.known = len(pyro.get_param_store())
        if self.waiting is not None:
            self.load_state_dict(self.waiting)
        self._require_finite(loss)
        self.optimizer.step()
        return loss

    def _require_finite(self, loss) -> None:
        """:class:`~ppl_vae.nonfinite.NonFiniteStep` before the update when the loss or a gradient is not finite: the
        parameters and the optimizer's state stay as they were (as on the plain path)."""
        parameters = (parameter for group in self.optimizer.param_groups for parameter in group["params"])
        require_finite(_total(loss), parameters)

    def _named(self, found):
        return [(parameter_name(name, self.program.pyro_name), parameter) for name, parameter in found]

    def _optimizer_names(self, found: dict) -> list[str]:
        by_id = {id(parameter): name for name, parameter in found.items()}
        return [by_id[id(parameter)] for group in self.optimizer.param_groups for parameter in group["params"]]

    def _add_new_parameters(self) -> None:
        """Parameters that entered Pyro's store during this update and received a gradient join the optimizer, in
        groups by their ``lr_factors`` factor (with the schedule's current factor). Those that entered between this
        step's updates are another program's (two models trained in turns in one process) and stay out: the store's
        size is read again before each update."""
        store = pyro.get_param_store()
        known = set(self.names)
        for name in list(store.keys()):
            parameter = store.get_param(name).unconstrained()
            if name in known or parameter.grad is None:
                continue
            lr = self.config.lr * group_factor(self.config.lr_factors, parameter_name(name, self.program.pyro_name))
            group = {"params": [parameter], "lr": lr}
            if self.scheduler is not None:
                group["initial_lr"] = lr
                self.scheduler.base_lrs.append(lr)
                self.scheduler.lr_lambdas.append(self.scheduler.lr_lambdas[0])
                group["lr"] = lr * self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
            self.optimizer.add_param_group(group)
            self.names.append(name)
        self.known = len(store)

    def state_dict(self) -> dict:
        if self.optimizer is None:  # no update yet: the loaded state, if any, as it came
            return dict(self.waiting or {})
        names = [self._saved_name(name) for name in self.names]
        return per_parameter_state(self.optimizer, self.scheduler, names)

    def load_state_dict(self, state: dict) -> None:
        if self.optimizer is None:
            self.waiting = dict(state)
            return
        names = [self._saved_name(name) for name in self.names]
        load_per_parameter_state(self.optimizer, self.scheduler, names, state)
        self.waiting = None


class GraphFallbackWarning(UserWarning):
    """The compiled tier gave way to the fast path for the rest of the run (the message says why)."""


class GraphStep(FastStep):
    """The compiled tier of the fast path: after the first update (the fast path's, guarded), each batch shape's loss
    is traced once into a graph of torch operations (:mod:`ppl_vae.graphs`) whose inputs are the live parameters;
    every later update runs that graph eagerly (autograd records it as usual), calls ``backward`` and takes the one
    optimizer step, without running the Pyro programs.

    Safety: the first :attr:`checks` batches of each shape take the fast path's update *and* run the graph from the
    same RNG state; the graph must give the same loss and gradients (to :func:`_tolerance`) and leave torch's
    generator where the programs left it, and the programs must not have drawn from Python's ``random`` or NumPy (a
    graph would replay the traced draws). When a check fails, tracing fails (``.item()``, data-dependent shapes, a
    score-function site) or a parameter first appears after the first update, the step keeps the fast path for the
    rest of the run and says why once (:class:`GraphFallbackWarning`; attribute :attr:`off`). The checked updates
    are the fast path's own (its gradients and RNG state are kept), so a check changes no number. Objectives that
    :func:`ppl_vae.graphs.compilable` does not cover take the fast path silently under ``auto``; ``--path graph``
    refuses them.

    What the checks cannot see: a program whose structure changes on a rare batch (a branch on a tensor's value
    taken after the checked batches) would run the traced structure. One graph is kept per set of argument shapes
    (the short last batch of an epoch gets its own); ``step.loss`` (the KL lab) runs the programs as before.
    """

    checks = 2
    """Batches of each shape on which the graph is compared with the fast path before it takes over."""

    def __init__(self, program: UserProgram, config: TrainConfig, make_elbo, **options):
        super().__init__(program, config, make_elbo, **options)
        self.graphs: dict[tuple, CompiledLoss] = {}
        self.parameters: list[torch.Tensor] = []  # the graph inputs: the optimizer's parameters, in its order
        self.off: str | None = None  # why the graph tier is off for this run (None: on)

    def prepare(self, x: torch.Tensor, *args) -> None:
        built = self.elbo is not None
        super().prepare(x, *args)
        if built:
            return
        reason = compilable(self.elbo)
        if reason is not None:
            if self.config.path == "graph":
                raise InputError(f"--path graph compiles --elbo trace, stl and iwae; {reason}: use --path auto or fast")
            self.off = reason

    def _loss_and_grads(self, arguments: tuple):
        if self.off is not None:
            return super()._loss_and_grads(arguments)
        try:
            key = _graph_key(arguments)
        except NotCompiled as error:
            self._turn_off(str(error))
            return super()._loss_and_grads(arguments)
        compiled = self.graphs.get(key)
        if compiled is not None and compiled.checked >= self.checks:
            self.optimizer.zero_grad(set_to_none=True)
            return compiled(self._inputs(arguments))
        return self._checked_update(key, compiled, arguments)

    def _inputs(self, arguments: tuple) -> list[torch.Tensor]:
        return [*self.parameters, *(argument for argument in arguments if isinstance(argument, torch.Tensor))]

    def _checked_update(self, key: tuple, compiled: CompiledLoss | None, arguments: tuple):
        """The fast path's update, and the graph of ``key`` (traced now when ``compiled`` is None) run from the same
        RNG state and compared with it; the fast path's gradients and RNG state are kept."""
        device = arguments[0].device
        if not self.parameters:
            self.parameters = [parameter for group in self.optimizer.param_groups for parameter in group["params"]]
        before, outside = _torch_rng(device), (random.getstate(), np.random.get_state())
        count = len(self.names)
        loss = super()._loss_and_grads(arguments)
        if not math.isfinite(_total(loss)):  # the step refuses this update; the check waits for a finite batch
            return loss
        if len(self.names) != count:
            self._turn_off("a parameter first appeared after the first update: the programs' parameters change")
            return loss
        after, gradients = _torch_rng(device), [parameter.grad for parameter in self.parameters]
        outside = (outside, (random.getstate(), np.random.get_state()))  # before and after the fast path's update
        problem, covered = None, True
        try:
            if compiled is None:
                compiled = compile_loss(self.elbo, self.model, self.guide, self.parameters, arguments)
                self.graphs[key] = compiled
            _set_torch_rng(before, device)
            self.optimizer.zero_grad(set_to_none=True)
            graph_loss = compiled(self._inputs(arguments))
            problem = _disagreement(
                (loss, gradients, after, outside),
                (graph_loss, [parameter.grad for parameter in self.parameters], _torch_rng(device)),
            )
        except NotCompiled as error:
            problem, covered = str(error), not isinstance(error, NotCovered)
        except Exception as error:  # running the graph failed: the fast path carries on
            problem = f"running the traced graph failed: {type(error).__name__}: {error}"
        finally:
            for parameter, gradient in zip(self.parameters, gradients, strict=True):
                parameter.grad = gradient
            _set_torch_rng(after, device)
            random.setstate(outside[1][0])  # tracing ran the programs: their Python and NumPy draws are undone
            np.random.set_state(outside[1][1])
        if problem is not None:
            self._turn_off(problem, warn=covered or self.config.path == "graph")
        else:
            compiled.checked += 1
        return loss

    def _turn_off(self, reason: str, warn: bool = True) -> None:
        """The fast path for the rest of the run; a warning unless the programs are merely outside what the tier
        covers (a score-function site) under ``auto``, which then takes the fast path as for ``meanfield``."""
        self.off = reason
        self.graphs.clear()
        if not warn:
            return
        warnings.warn(
            f"the compiled training tier is off for this run ({reason}); training continues on the fast path "
            "(--path fast), whose updates the checked ones already were",
            GraphFallbackWarning,
            stacklevel=2,
        )


def _total(loss) -> float:
    """An update's loss as one number (an ELBO's ``loss_and_grads`` may return a tuple of terms)."""
    return sum(map(torch_item, loss)) if isinstance(loss, tuple) else torch_item(loss)


def _graph_key(arguments: tuple) -> tuple:
    """What a graph is traced for: each tensor argument's shape, dtype, device and ``requires_grad``, and every other
    argument's value (a constant of the graph)."""
    key = tuple(
        (tuple(argument.shape), argument.dtype, argument.device, argument.requires_grad)
        if isinstance(argument, torch.Tensor)
        else ("value", argument)
        for argument in arguments
    )
    try:
        hash(key)
    except TypeError:
        raise NotCompiled("an argument of the programs is neither a tensor nor hashable") from None
    return key


def _torch_rng(device: torch.device) -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_torch_rng(state: tuple, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _tolerance(dtype: torch.dtype) -> float:
    """Relative agreement required between the graph and the fast path: 1000 units in the last place of ``dtype``
    (1.2e-4 in float32, 2.2e-13 in float64); the graph runs the same operations, so they usually agree exactly."""
    return 1000 * torch.finfo(dtype).eps


def _disagreement(fast: tuple, graph: tuple) -> str | None:
    """Why the graph's ``(loss, gradients, torch RNG state)`` differ from the fast path's ``(loss, gradients, torch
    RNG state, the (Python, NumPy) RNG states before and after)``, or ``None``."""
    loss, gradients, rng, (before, after) = fast
    graph_loss, graph_gradients, graph_rng = graph
    if before[0] != after[0] or not _same_numpy_state(before[1], after[1]):
        return "the programs draw from Python's random or NumPy, which a graph would replay unchanged"
    if not all(torch.equal(a, b) for a, b in zip(rng, graph_rng, strict=True) if a is not None):
        return "the traced graph draws differently from the programs (their randomness depends on the data)"
    tolerance = (
        _tolerance(next(g for g in gradients if g is not None).dtype)
        if any(g is not None for g in gradients)
        else 1e-12
    )
    if not math.isclose(loss, graph_loss, rel_tol=tolerance, abs_tol=tolerance):
        return f"the traced graph's loss {graph_loss} differs from the programs' {loss}"
    for number, (a, b) in enumerate(zip(gradients, graph_gradients, strict=True)):
        if (a is None) != (b is None):
            return f"the traced graph's gradients reach other parameters than the programs' (parameter {number})"
        if a is not None:
            scale = tolerance * max(a.abs().max().item(), b.abs().max().item(), 1e-30)
            if not torch.allclose(a, b, rtol=tolerance, atol=scale):
                return f"the traced graph's gradients differ from the programs' (parameter {number})"
    return None


def _same_numpy_state(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and tuple(a[2:]) == tuple(b[2:])


def elbo_step(program: UserProgram, config: TrainConfig, make_elbo, **options) -> ELBOStep:
    """The training step of a Pyro objective on the path ``config.path`` names: :class:`GraphStep` for ``graph``
    and ``auto`` (the fast path where the objective or the programs are not compiled), :class:`FastStep` for
    ``fast`` (every Pyro ELBO has the ``loss_and_grads`` it runs), :class:`SVIStep` for ``plain``."""
    sharding = _sharding(config)
    if sharding is not None:  # more than one process, or keyed noise: DDP's step (see ppl_vae.data_parallel)
        from ppl_vae.data_parallel import ShardedStep, require_shardable_path

        require_shardable_path(config.path, _sharded_why(sharding))
        return ShardedStep(program, config, make_elbo, sharding=sharding, **options)
    kind = {"plain": SVIStep, "fast": FastStep}.get(config.path, GraphStep)
    return kind(program, config, make_elbo, **options)


def _sharding(config: TrainConfig):
    """The run's :class:`~ppl_vae.sharding.Sharding` (``None``: one process, noise not keyed)."""
    from ppl_vae.sharding import Sharding

    return Sharding.of_run(config.seed, config.keyed_noise)


def _is_sharded(step: TrainingStep) -> bool:
    from ppl_vae.data_parallel import ShardedStep

    return isinstance(step, ShardedStep)


def _sharded_why(sharding) -> str:
    return f"with {sharding.world} processes" if sharding.world > 1 else "with --keyed-noise"


def _scaled_sites(config: TrainConfig, sites: ProgramSites) -> tuple[str, ...]:
    """The latent sites that β scales: ``config.latent_sites``, checked against the guide's, or all of them."""
    unknown = [name for name in config.latent_sites if name not in sites.latent]
    if unknown:
        raise InputError(
            f"latent_sites names {', '.join(map(repr, unknown))}, which the guide does not sample: its latent sites "
            f"are {', '.join(map(repr, sites.latent))}"
        )
    return config.latent_sites or sites.latent


def _elbo_options(config: TrainConfig, sites: ProgramSites) -> dict:
    return {
        "num_particles": config.num_particles,
        "vectorize_particles": True,
        "max_plate_nesting": sites.max_plate_nesting,
    }


def _svi_objective(name: str, elbo_class, elbo_options: dict | None = None, **options):
    """Register ``name``: SVI with ``elbo_class(**elbo_options)`` (built from the first minibatch's sites) and the
    :class:`SVIStep` ``options``."""

    def build(program: UserProgram, config: TrainConfig) -> TrainingStep:
        def make_elbo(sites: ProgramSites) -> ELBO:
            return elbo_class(**_elbo_options(config, sites), **(elbo_options or {}))

        return elbo_step(program, config, make_elbo, latent_scaled=is_latent_scaled(config), **options)

    OBJECTIVES.register(name)(build)


def require_meanfield(program: UserProgram, sites: ProgramSites, x: torch.Tensor, args: tuple) -> None:
    """An :class:`InputError` unless ``TraceMeanField_ELBO`` is exact in expectation for the programs on ``x``.

    Pyro's estimator needs, at every latent site, a closed-form ``KL(q || p)`` registered with
    ``torch.distributions.kl`` (elsewhere it silently falls back to the Monte Carlo KL, which would make ``meanfield``
    another name for ``trace``), and a mean-field guide: with q(z2 | z1) the closed form at z1 integrates z1 out while
    the model's p(z1 | z2) holds a z2 drawn from z1, which biases the objective. Both are read from two draws of the
    programs (:func:`ppl_vae.programs.latent_parents` for the guide's structure); the RNG is left as it was.
    """
    with rng_preserved(x.device), poutine.block():
        guide_trace, model_trace, _ = importance_traces(program.model, program.guide, x, 2, *args, sites=sites)
    for name in sites.latent:
        q, p = guide_trace.nodes[name]["fn"], model_trace.nodes[name]["fn"]
        try:
            kl_divergence(q, p)
        except NotImplementedError:
            vae = _builtin_vae(program)
            what = (
                f"--guide {vae.config.guide} with --prior {vae.config.prior}"
                if vae is not None
                else f"q = {_describe(q)} with p = {_describe(p)}"
            )
            raise InputError(
                f"--elbo meanfield needs a closed-form KL(q || p) at latent site {name!r}, which Pyro lacks for "
                f"{what}: use --elbo trace (Monte Carlo KL)"
            ) from None
    for name, parents in latent_parents(program.guide, guide_trace, x, *args, sites=sites).items():
        if parents:
            given = ", ".join(parents)
            raise InputError(
                f"--elbo meanfield needs a mean-field guide, but q({name} | {given}) depends on latent site(s) "
                f"{given}: the closed-form KL would be biased; use --elbo trace"
            )


def _builtin_vae(program: UserProgram) -> VAE | None:
    """The built-in VAE behind ``program`` (:func:`~ppl_vae.programs.as_user_program` makes it the modules), for the
    hand-written steps and for messages that name its flags; ``None`` for a user's program."""
    from ppl_vae.vae import VAE  # vae.py imports parts.py, which imports this module's registries

    return program.modules if isinstance(program.modules, VAE) else None


def require_enumerated(program: UserProgram, sites: ProgramSites, x: torch.Tensor, args: tuple) -> None:
    """An :class:`InputError` unless the guide marks a latent site for enumeration: ``TraceEnum_ELBO`` with nothing to
    sum out is ``trace`` under another name (Pyro only warns)."""
    if not sites.enumerated:
        raise InputError(
            f"--elbo enum sums out the guide's sites marked for enumeration, and this guide marks none of "
            f"{', '.join(map(repr, sites.latent))} (config_enumerate, infer={{'enumerate': 'parallel'}}): "
            "use --elbo trace"
        )


def _describe(fn) -> str:
    """``Normal``, or ``Independent(Normal)`` for a distribution with reinterpreted batch dimensions."""
    base = getattr(fn, "base_dist", None)
    return f"{type(fn).__name__}({type(base).__name__})" if base is not None else type(fn).__name__


class TraceSTL_ELBO(Trace_ELBO):
    """ "Sticking the landing" (STL; Roeder, Wu and Duvenaud 2017) for any program: Pyro's ``Trace_ELBO`` whose
    gradient drops, at every reparameterized latent site of the guide, the score term ``d log q(z; phi) / d phi`` at
    fixed ``z``.

    For ``z = g(eps; phi)`` the Monte Carlo ELBO ``log p(x, z) - log q(z; phi)`` has the gradient::

        d/dphi [log p(x, z) - log q(z; phi)]  =  (d/dz [log p(x, z) - log q(z; phi)]) dz/dphi   -   (d/dphi log q)(z)
                                                  path derivative (kept)                           score term (dropped)

    The score term has mean zero under q, so the gradient stays unbiased, and it is exactly the part of the noise
    that does not vanish when q is the posterior. The value, and the loss reported, are those of ``Trace_ELBO``.

    How: the guide is traced as ``Trace_ELBO`` traces it (values with their reparameterized gradient paths), then
    replayed once more on the same values *detached*. Every distribution of that replay depends on the parameters
    only (never on a latent value), so its masked and scaled ``log q`` at the detached values has the score term as
    its gradient; each site's surrogate term ``log q`` becomes ``log q - (score - stop_gradient(score))``: the same
    value, the gradient of ``log q`` at detached parameters. Detaching the values rather than the parameters needs no
    knowledge of where the parameters live (``pyro.module``, ``pyro.param``, ``PyroModule``, a closure), and keeps
    the path through a parent in a dependent guide q(z2 | z1; phi), whose ``z1`` is part of ``z``. Masks and scales
    (β, subsampling) apply as in ``Trace_ELBO``. The replay draws nothing at sample sites and leaves the RNG as it
    was, so STL sees the same draws as ``Trace_ELBO`` with the same seed; randomness of the guide's own outside its
    sample sites (dropout in training mode) is drawn afresh in the replay, so keep such modules in eval mode.

    Raises :class:`~ppl_vae.errors.InputError` for a latent site without a reparameterized sampler (discrete): it has
    no path derivative, and its score term is its whole gradient.
    """

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        latent = {
            name: site
            for name, site in guide_trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"]
        }
        _require_rsample(latent)
        if not latent or not torch.is_grad_enabled():  # the value is Trace_ELBO's; only gradients change
            return model_trace, guide_trace
        fixed = poutine.Trace()
        for name, site in latent.items():
            fixed.add_node(name, **{**site, "value": site["value"].detach()})
        device = next(iter(latent.values()))["value"].device
        with rng_preserved(device):
            scored = poutine.trace(poutine.replay(guide, trace=fixed)).get_trace(*args, **kwargs)
        scored.compute_log_prob(lambda name, site: name in latent)
        for name, site in latent.items():
            score = scored.nodes[name]["log_prob"]
            log_prob, score_function, entropy = site["score_parts"]
            site["score_parts"] = ScoreParts(log_prob, score_function, entropy - (score - score.detach()))
        return model_trace, guide_trace


def _require_rsample(latent: dict) -> None:
    """An :class:`InputError` naming the first of the guide's latent sites (name -> site) without ``rsample``."""
    for name, site in latent.items():
        if not site["fn"].has_rsample:
            raise InputError(
                f"--elbo stl needs reparameterized latent sites, but {name!r} is a {type(site['fn']).__name__} "
                "without rsample (discrete): use --elbo trace, tracegraph or enum"
            )


def require_reparameterized(program: UserProgram, sites: ProgramSites, x: torch.Tensor, args: tuple) -> None:
    """:class:`TraceSTL_ELBO`'s refusal of a latent site without ``rsample``, made before the first update (where
    Pyro would first warn about a site marked for enumeration)."""
    guide_trace, _ = trace_programs(program.model, program.guide, x, *args)
    _require_rsample({name: guide_trace.nodes[name] for name in sites.latent})


_svi_objective("trace", Trace_ELBO)
# the closed forms are verified, including the guide's structure, so Pyro's weaker check (site order) is silenced
_svi_objective(
    "meanfield",
    TraceMeanField_ELBO,
    check=require_meanfield,
    quiet=("Failed to verify mean field restriction on the guide",),
)
# JitTrace_ELBO is built on torch.jit.trace, which recent torch releases mark as deprecated (FutureWarning)
_svi_objective(
    "jit",
    JitTrace_ELBO,
    {"ignore_jit_warnings": True},
    fixed_batch_shape=True,
    quiet=("`torch.jit.trace` is deprecated",),
)
_svi_objective("enum", TraceEnum_ELBO, check=require_enumerated)
_svi_objective("tracegraph", TraceGraph_ELBO)
_svi_objective("stl", TraceSTL_ELBO, check=require_reparameterized)

BASELINE_BETA = 0.9
"""The decay of ``tracegraph-baseline``'s average: ``b <- (1 - beta) * cost + beta * b`` after every step (Pyro's
default ``baseline_beta``)."""


class DecayingAverageBaseline(Messenger):
    """Pyro's decaying-average baseline, ``infer={"baseline": {"use_decaying_avg_baseline": True, "baseline_beta":
    beta}}``, put on every latent sample site without ``rsample`` (a discrete latent): ``TraceGraph_ELBO`` then
    subtracts the running average of each such site's downstream cost from it in the score-function term, which
    leaves the gradient unbiased and lowers its variance. Sites that already name a baseline keep theirs."""

    def __init__(self, beta: float = BASELINE_BETA):
        super().__init__()
        self.beta = beta

    def _process_message(self, msg) -> None:
        if msg["type"] != "sample" or msg["is_observed"] or getattr(msg["fn"], "has_rsample", True):
            return
        if "baseline" not in msg["infer"]:
            baseline = {"use_decaying_avg_baseline": True, "baseline_beta": self.beta}
            msg["infer"] = {**msg["infer"], "baseline": baseline}


@OBJECTIVES.register("tracegraph-baseline")
def tracegraph_baseline_step(program: UserProgram, config: TrainConfig) -> TrainingStep:
    with_baseline = dataclasses.replace(program, guide=DecayingAverageBaseline()(program.guide))
    return SVIStep(
        with_baseline,
        config,
        lambda sites: TraceGraph_ELBO(**_elbo_options(config, sites)),
        latent_scaled=is_latent_scaled(config),
        fixed_batch_shape=True,
    )


def _no_latent_scale(config: TrainConfig) -> None:
    """``iwae`` takes no β or warm-up: ``RenyiELBO`` would scale the latent sites inside its ``logsumexp``."""
    if is_latent_scaled(config):
        raise InputError(
            f"--elbo iwae cannot take --beta {config.beta} --anneal {config.anneal}: RenyiELBO would scale the latent "
            "site inside its logsumexp, which is not the beta-VAE objective; use --elbo trace, meanfield or jit"
        )


@OBJECTIVES.register("iwae", requires=_no_latent_scale)
def iwae_step(program: UserProgram, config: TrainConfig) -> TrainingStep:
    return elbo_step(program, config, lambda sites: RenyiELBO(alpha=0.0, **_elbo_options(config, sites)))


class ReferenceStep:
    """A hand-written torch step: ``loss = -mean_particles(elbo_fn(...)).sum()``, the configured torch optimizer.

    Uses the VAE's own encoder and decoder networks, so it starts from the same weights as the Pyro steps.
    Requires the classic setting: diagonal guide, N(0, I) prior, Bernoulli likelihood.
    """

    fixed_batch_shape = False
    latent_scaled = False

    def __init__(self, program: UserProgram, config: TrainConfig, elbo_fn: Callable[..., torch.Tensor]):
        vae = _builtin_vae(program)
        if vae is None:
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
        self.optimizer, self.scheduler = torch_optimizer(config, vae.named_parameters())

    def loss(self, x: torch.Tensor, beta_t: float | None = None) -> torch.Tensor:
        if beta_t is not None and beta_t != 1:
            raise InputError(f"beta_t={beta_t}: the hand-written steps take no latent scale")
        vae = self.vae
        eps = torch.randn((self.num_particles, x.shape[0], vae.config.z_dim), device=x.device, dtype=x.dtype)
        elbo = self.elbo_fn(vae.encoder.net, vae.decoder, x, eps, head=vae.config.scale_param)
        return -elbo.mean(0).sum()

    def __call__(self, x: torch.Tensor, beta_t: float | None = None) -> float:
        loss = self.loss(x, beta_t=beta_t)
        self.optimizer.zero_grad()
        loss.backward()
        require_finite(loss.item(), self.vae.parameters())  # before the update: a NonFiniteStep changes nothing
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.item()

    def state_dict(self) -> dict:
        if self.scheduler is None:
            return self.optimizer.state_dict()
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.scheduler is None:
            self.optimizer.load_state_dict(state)
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


@OBJECTIVES.register("reference-mc")
def reference_mc_step(program: UserProgram, config: TrainConfig) -> TrainingStep:
    return ReferenceStep(program, config, reference.elbo_monte_carlo_kl)


@OBJECTIVES.register("reference-analytic")
def reference_analytic_step(program: UserProgram, config: TrainConfig) -> TrainingStep:
    return ReferenceStep(program, config, reference.elbo_analytic_kl)


@OBJECTIVES.register("reference-stl")
def reference_stl_step(program: UserProgram, config: TrainConfig) -> TrainingStep:
    return ReferenceStep(program, config, reference.elbo_stl)
