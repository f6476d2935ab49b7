"""Use a trained model: sample, reconstruct, encode, traverse and interpolate.

Pure functions over a loaded run (a :class:`~ppl_vae.vae.VAE`, or a user's
:class:`~ppl_vae.user_program.UserProgram`) that return tensors; ``ppl-vae sample | reconstruct | encode | traverse |
interpolate`` (:mod:`ppl_vae.cli_use`) only draw and write what they return. Labels ``y`` ``(B,)`` (or one class for
:func:`sample`) go to a conditional VAE or a program with ``labels=True``, and must be left out otherwise.

- :func:`sample`: pixel means of p(x | z [, y]) for ``z ~ p(z)`` ``(n, D)``, or draws ``x ~ p(x | z)`` (built-in VAE).
- :func:`reconstruct`: pixel means of p(x | z = E_q[z | x]) ``(B, D)``; :func:`scores` their per-example ELBO and
  IWAE log p(x) (nats, :mod:`ppl_vae.evaluate`).
- :func:`encode`: per latent site of the guide, ``loc`` and ``scale`` ``(N, U)`` of q(z_s | x, ...): the mean and the
  marginal standard deviation of its distribution, read from the guide run *at its means*
  (:func:`ppl_vae.programs.guide_at_means`): a site that depends on another (``q(z2 | z1)``) is read at
  ``z1 = E_q[z1 | x]``. ``U`` = the site's event size times the positions of plates nested in the data plate.
- :func:`traverse`: for each chosen dimension ``j`` of the code site (the guide's first latent site, the one the
  decoder reads), the decoded codes ``base + v * sd_j * e_j`` for ``v`` in ``linspace(-span, span, steps)``, ``sd_j``
  the prior's standard deviation of ``z_j`` (:func:`prior_moments`); :func:`dimension_order` ranks the dimensions,
  active ones first (``Var_x E_q[z_j | x] > 0.01``), then by their KL term (:mod:`ppl_vae.diagnostics`).
- :func:`interpolate`: decoded codes between two codes ``a`` and ``b`` for ``t`` in ``linspace(0, 1, steps)``:
  linear ``(1 - t) a + t b``, or spherical: the direction along the great circle from ``a / |a|`` to ``b / |b|``
  (slerp) and the norm ``(1 - t) |a| + t |b|``, so every norm lies between the endpoints'. The endpoints are ``a``
  and ``b`` themselves.

Traverse and interpolate decode with ``vae.decode(z, y).mean``, or a program's ``UserProgram.decode``.

Example::

    vae = ppl_vae.load("runs/digits")
    x = ppl_vae.observed_test_set(ppl_vae.load_dataset("digits").x_test, binary=True)
    codes = encode(vae, x)                                  # {"z": SiteCode(loc=(300, 8), scale=(300, 8))}
    order = dimension_order(vae, x)                         # DimensionOrder(order=(8,), kl=(8,), activity=(8,))
    mean, sd = prior_moments(vae, x)
    walk = traverse(vae, mean, order.order[:4].tolist(), sd)   # images (4, 9, 64)
    path = interpolate(vae, codes["z"].loc[0], codes["z"].loc[1], steps=10, spherical=True)  # images (10, 64)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ppl_vae.diagnostics import latent_usage
from ppl_vae.errors import InputError
from ppl_vae.evaluate import Estimate, check_extra_args, elbo, iwae_log_likelihood
from ppl_vae.inputs import check_tensor, first_parameter, require_binary, require_classes
from ppl_vae.latent_sites import ACTIVE_UNIT_THRESHOLD
from ppl_vae.programs import (
    ProgramSites,
    UserProgram,
    as_user_program,
    example_batches,
    guide_at_means,
    inspect_programs,
    prior_trace,
    site_units,
    split_args,
)
from ppl_vae.vae import VAE

MAX_IMAGES = 10_000
"""The most images :func:`sample` draws, or a figure shows, at once."""

MAX_STEPS = 100
"""The most steps of a traversal or an interpolation."""

PRIOR_DRAWS = 64
"""Draws per example (of at most ``PRIOR_DRAWS`` examples) for the Monte Carlo moments of a prior without a closed
form: ``64 x 64 = 4096`` draws, a standard error of about 1.6% of a standard deviation on the mean."""

ORDER_EXAMPLES = 500
"""The most examples :func:`dimension_order` reads (the first ones of ``x``)."""


@dataclass(frozen=True)
class SiteCode:
    """One latent site's codes, per example.

    Attributes:
        loc: ``(N, U)`` the mean of q(z_s | x, ...), the guide run at its means.
        scale: ``(N, U)`` its marginal standard deviation.
    """

    loc: torch.Tensor
    scale: torch.Tensor


@dataclass(frozen=True)
class DimensionOrder:
    """The code site's dimensions ranked for a traversal.

    Attributes:
        order: ``(U,)`` dimension indices, active first, then by decreasing KL term (by decreasing activity where the
            KL does not split per dimension).
        kl: ``(U,)`` the KL term per dimension, nats per example (``None`` where the distributions do not factorize).
        activity: ``(U,)`` ``Var_x(E_q[z_j | x])``.
        active: ``(U,)`` booleans, ``activity > ACTIVE_UNIT_THRESHOLD``.
    """

    order: torch.Tensor
    kl: torch.Tensor | None
    activity: torch.Tensor
    active: torch.Tensor


@dataclass(frozen=True)
class Traversal:
    """Attributes: ``images`` ``(R, S, D)`` pixel means, row ``r`` varying dimension ``dims[r]``; ``codes``
    ``(R, S, U)`` the decoded codes; ``dims`` the ``R`` dimensions; ``values`` ``(S,)`` the offsets in prior standard
    deviations."""

    images: torch.Tensor
    codes: torch.Tensor
    dims: tuple[int, ...]
    values: torch.Tensor


@dataclass(frozen=True)
class Interpolation:
    """Attributes: ``images`` ``(S, D)`` pixel means; ``codes`` ``(S, U)``; ``t`` ``(S,)`` from 0 to 1."""

    images: torch.Tensor
    codes: torch.Tensor
    t: torch.Tensor


# --- checks of the values a person gives --------------------------------------------------------------------------
def require_count(value, flag: str, least: int = 1, most: int = MAX_IMAGES) -> int:
    """``value`` must be an integer (not a bool) from ``least`` to ``most``; the message names ``flag``."""
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        raise InputError(f"{flag} must be an integer from {least} to {most}, got {value!r}")
    return value


MAX_SPAN = 1000.0
"""The widest traversal, in prior standard deviations: far past any code a trained decoder has seen (the prior's mass
is within a few), and small enough that ``span x sd`` stays finite in float32."""


def require_span(value, flag: str = "--range") -> float:
    """``value`` must be a number in ``(0, MAX_SPAN]`` (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_SPAN:
        raise InputError(
            f"{flag} must be a positive number of prior standard deviations, at most {MAX_SPAN:g}, got {value!r}"
        )
    return float(value)


def _checked(trained: VAE | UserProgram, value, name: str, what: str) -> torch.Tensor:
    """Images ``x`` (``name="x"``) or codes ``z`` checked for ``trained`` (:func:`ppl_vae.inputs.check_tensor`):
    ``(N, width)`` floats of the parameters' dtype; for the built-in VAE of its width and finite (a program may mark
    missing pixels with NaN)."""
    builtin = isinstance(trained, VAE)
    width = (trained.config.x_dim if name == "x" else trained.config.z_dim) if builtin else None
    like = first_parameter(as_user_program(trained).modules)
    return check_tensor(value, name, what, width, like, finite=builtin)


def _label_args(trained: VAE | UserProgram, y, what: str) -> tuple:
    """``(y,)`` for a program that takes labels, ``()`` for one that does not; one line where they do not fit (for
    the built-in VAE, labels outside its classes too)."""
    program = as_user_program(trained)
    if program.labels and y is None:
        raise InputError(f"{what}: this model is conditional on class labels: give them (--y CLASS)")
    if not program.labels and y is not None:
        raise InputError(f"{what}: this model takes no class labels: leave out --y")
    if y is not None and isinstance(trained, VAE):
        require_classes(torch.as_tensor(y), trained.config.num_classes, f"{what}: y")
    return () if y is None else (y,)


def _labels_for(trained: VAE | UserProgram, y, count: int, what: str, device) -> tuple:
    """:func:`_label_args` with one class (an int or a 0-d tensor) repeated ``count`` times."""
    args = _label_args(trained, y, what)
    if args:
        args = (torch.as_tensor(args[0], device=device).expand(count) if torch.as_tensor(y).dim() == 0 else y,)
    return args


def _need(program: UserProgram, function: str, purpose: str):
    if getattr(program, function) is None:
        raise InputError(f"the program offers no {function}() (UserProgram.{function}): {purpose}")
    return getattr(program, function)


# --- the functions -------------------------------------------------------------------------------------------------
@torch.no_grad()
def sample(trained: VAE | UserProgram, n: int, y: int | torch.Tensor | None = None, *, draw: bool = False):
    """``(n, D)``: pixel means of p(x | z [, y]) for ``n`` draws ``z ~ p(z)`` (``draw=True``: draws of p(x | z), the
    built-in VAE only); ``y`` one class, or ``(n,)`` classes."""
    require_count(n, "--n")
    program = as_user_program(trained)
    args = _labels_for(trained, y, n, "sample", program.device)
    if isinstance(trained, VAE):
        return trained.sample(n, *args, draw=draw)
    if draw:
        raise InputError("--draw: a program's sample() returns pixel means; draws of p(x | z) need the built-in VAE")
    return _need(program, "sample", "nothing to sample with")(n, *args)


@torch.no_grad()
def reconstruct(trained: VAE | UserProgram, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, D)``: the pixel means of p(x | z = E_q[z | x] [, y]) of ``x`` ``(B, D)``."""
    program = as_user_program(trained)
    args = _label_args(trained, y, "reconstruct")
    x = _checked(trained, x, "x", "reconstruct")
    return _need(program, "reconstruct", "nothing to reconstruct with")(x, *args)


def scores(
    trained: VAE | UserProgram, x: torch.Tensor, y: torch.Tensor | None = None, *, k: int, num_particles: int
) -> tuple[Estimate, Estimate]:
    """The ELBO (``num_particles`` draws) and the IWAE estimate of log p(x) (``k`` draws) of each example of ``x``,
    nats: :func:`ppl_vae.evaluate.elbo` then :func:`ppl_vae.evaluate.iwae_log_likelihood` (same seed, same numbers)."""
    program = as_user_program(trained)
    args = _label_args(trained, y, "scores")
    x = _checked(trained, x, "x", "scores")
    if program.binary:
        require_binary(x, "scores")
    return (
        elbo(program.model, program.guide, x, num_particles=num_particles, args=args),
        iwae_log_likelihood(program.model, program.guide, x, k=k, args=args),
    )


def program_sites(trained: VAE | UserProgram, x: torch.Tensor, y: torch.Tensor | None = None) -> ProgramSites:
    """The :class:`~ppl_vae.programs.ProgramSites` of ``trained`` on (the first examples of) ``x``; its
    ``latent[0]`` is the code site that traverse and interpolate walk."""
    program = as_user_program(trained)
    args = _label_args(trained, y, "encode")
    x = _checked(trained, x, "x", "encode")
    check_extra_args(x, args)
    size = min(x.shape[0], 256)
    return inspect_programs(program.model, program.guide, x[:size], *split_args(args, x.shape[0], 0, size))


def encode(
    trained: VAE | UserProgram,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    batch_size: int = 256,
    progress: bool = False,
) -> dict[str, SiteCode]:
    """Per latent site of the guide (in its order), ``loc`` and ``scale`` ``(N, U)`` of ``x`` ``(N, D)``, computed
    ``batch_size`` examples at a time (memory: one batch through the guide, plus the ``N x U`` results), with a tqdm
    bar over the batches when ``progress``. See the module's docstring for what they are."""
    program = as_user_program(trained)
    args = _label_args(trained, y, "encode")
    sites = program_sites(trained, x, y)
    parts = {name: ([], []) for name in sites.latent}
    batches = example_batches(x, args, batch_size)
    total = math.ceil(x.shape[0] / batch_size)
    for xb, argsb in tqdm(batches, total=total, desc="encode", unit="batch", disable=not progress, leave=False):
        trace = guide_at_means(program.guide, xb, *argsb)
        for name in sites.latent:
            fn = trace.nodes[name]["fn"]
            for values, part in zip((trace.nodes[name]["value"], fn.stddev), parts[name], strict=True):
                part.append(site_units(values, fn.event_dim, name, sites, (1, xb.shape[0]))[0])
    return {name: SiteCode(torch.cat(loc), torch.cat(scale)) for name, (loc, scale) in parts.items()}


def code_of(trained: VAE | UserProgram, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, U)``: the code site's ``loc`` (:func:`encode`) of each example of ``x``."""
    codes = encode(trained, x, y)
    return next(iter(codes.values())).loc


@torch.no_grad()
def decode(trained: VAE | UserProgram, z: torch.Tensor, y: int | torch.Tensor | None = None) -> torch.Tensor:
    """``(B, D)``: the pixel means of p(x | z [, y]) for codes ``z`` ``(B, U)`` of the code site; ``y`` one class
    or ``(B,)`` classes."""
    program = as_user_program(trained)
    z = _checked(trained, z, "z", "decode")
    args = _labels_for(trained, y, z.shape[0], "decode", z.device)
    return _need(program, "decode", "traverse and interpolate decode codes with it")(z, *args)


@torch.no_grad()
def prior_moments(
    trained: VAE | UserProgram, x: torch.Tensor, y: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and the standard deviation ``(U,)`` of each dimension of the code site under the model's prior.

    Exact for the built-in one-layer VAE (``p(z)``'s own ``mean`` and ``stddev``; a mixture's are analytic). Otherwise
    (``p(z1) = E_{p(z2)} p(z1 | z2)``, a program) estimated from ``PRIOR_DRAWS`` prior draws for each of the first
    ``PRIOR_DRAWS`` examples of ``x`` (:func:`ppl_vae.programs.prior_trace`; the model's prior must not read ``x``).
    """
    if isinstance(trained, VAE) and trained.prior_z1 is None:
        prior = trained.prior.dist()
        return prior.mean, prior.stddev
    program = as_user_program(trained)
    sites = program_sites(trained, x, y)
    args = split_args(_label_args(trained, y, "prior"), x.shape[0], 0, PRIOR_DRAWS)
    xb = x[:PRIOR_DRAWS]
    site = prior_trace(program.model, xb, PRIOR_DRAWS, *args, sites=sites).nodes[sites.latent[0]]
    draws = site_units(site["value"], site["fn"].event_dim, sites.latent[0], sites, (PRIOR_DRAWS, xb.shape[0]))
    draws = draws.reshape(-1, draws.shape[-1])
    return draws.mean(0), draws.std(0)


def dimension_order(
    trained: VAE | UserProgram, x: torch.Tensor, y: torch.Tensor | None = None, *, k: int = 100
) -> DimensionOrder:
    """The code site's dimensions ranked by what they carry, from the diagnostics' per-site KL and activity
    (:func:`ppl_vae.diagnostics.latent_usage`) with ``k`` draws on the first ``ORDER_EXAMPLES`` examples of ``x``:
    active first, then by decreasing KL term (closed form where one exists, else Monte Carlo), or by decreasing
    activity where the KL does not split per dimension."""
    program = as_user_program(trained)
    args = _label_args(trained, y, "traverse")
    x, args = x[:ORDER_EXAMPLES], split_args(args, x.shape[0], 0, ORDER_EXAMPLES)
    usage = next(iter(latent_usage(program.model, program.guide, x, k=k, args=args).values()))
    if usage.activity is None:
        raise InputError("the code site is discrete: it has no dimensions to traverse")
    activity = usage.activity
    kl = usage.kl_per_dim.double() if usage.kl_per_dim.shape == activity.shape else None
    active = activity > ACTIVE_UNIT_THRESHOLD
    carried = activity if kl is None else kl
    order = sorted(range(len(activity)), key=lambda j: (not bool(active[j]), -float(carried[j])))
    return DimensionOrder(order=torch.tensor(order), kl=kl, activity=activity, active=active)


def traverse(
    trained: VAE | UserProgram,
    base: torch.Tensor,
    dims,
    scale: torch.Tensor,
    *,
    span: float = 3.0,
    steps: int = 9,
    y: int | torch.Tensor | None = None,
) -> Traversal:
    """Decode ``base + v * scale[j] * e_j`` ``(U,)`` for each ``j`` in ``dims`` and ``v`` in
    ``linspace(-span, span, steps)``: one row per dimension (see :class:`Traversal`); ``y`` one class."""
    span = require_span(span)
    steps = require_count(steps, "--steps", least=2, most=MAX_STEPS)
    dims = check_dims(dims, base.shape[-1])
    values = torch.linspace(-span, span, steps, dtype=base.dtype, device=base.device)
    codes = base.expand(len(dims), steps, base.shape[-1]).clone()
    for row, dim in enumerate(dims):
        codes[row, :, dim] = base[dim] + values * scale[dim]
    images = decode(trained, codes.reshape(-1, base.shape[-1]), y)
    return Traversal(images.reshape(len(dims), steps, -1), codes, dims, values)


def check_dims(dims, size: int) -> tuple[int, ...]:
    """``dims``: distinct integers from 0 to ``size - 1`` (at least one)."""
    dims = tuple(dims)
    if not dims:
        raise InputError("--dims is empty: expected dimensions of the code, e.g. 0,1,2")
    for dim in dims:
        if isinstance(dim, bool) or not isinstance(dim, int) or not 0 <= dim < size:
            raise InputError(f"--dims {dim!r}: expected a dimension of the code, an integer from 0 to {size - 1}")
    if len(set(dims)) != len(dims):
        raise InputError(f"--dims {list(dims)}: each dimension at most once")
    return dims


def interpolate(
    trained: VAE | UserProgram,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    steps: int = 10,
    spherical: bool = False,
    y: int | torch.Tensor | None = None,
) -> Interpolation:
    """Decode the codes from ``a`` to ``b`` ``(U,)`` (see the module's docstring); ``y`` one class."""
    steps = require_count(steps, "--steps", least=2, most=MAX_STEPS)
    t = torch.linspace(0, 1, steps, dtype=a.dtype, device=a.device)
    codes = slerp(a, b, t) if spherical else (1 - t)[:, None] * a + t[:, None] * b
    codes[0], codes[-1] = a, b
    return Interpolation(decode(trained, codes, y), codes, t)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``(S, U)``: ``((1 - t) |a| + t |b|) * (sin((1 - t) w) a_hat + sin(t w) b_hat) / sin(w)``, ``w`` the angle
    between ``a`` and ``b``; linear where a norm is 0 or the angle is below 1e-4 radians. Codes pointing in opposite
    directions have no single great circle between them: an :class:`InputError`."""
    norm_a, norm_b = a.norm(), b.norm()
    t = t[:, None]
    if norm_a == 0 or norm_b == 0:
        return (1 - t) * a + t * b
    a_hat, b_hat = a / norm_a, b / norm_b
    angle = torch.arccos((a_hat * b_hat).sum().clamp(-1, 1))
    if angle < 1e-4:
        direction = (1 - t) * a_hat + t * b_hat
        direction = direction / direction.norm(dim=-1, keepdim=True)
    elif math.pi - angle < 1e-4:
        raise InputError("--spherical: the two codes point in opposite directions; interpolate linearly instead")
    else:
        direction = (torch.sin((1 - t) * angle) * a_hat + torch.sin(t * angle) * b_hat) / torch.sin(angle)
    return ((1 - t) * norm_a + t * norm_b) * direction
