"""Optimizers (``--optim``), learning-rate schedules (``--lr-schedule``) and per-group learning rates.

=================  =========================================================================================
``--optim``        torch optimizer (wrapped by :class:`pyro.optim.PyroOptim` for the SVI steps)
=================  =========================================================================================
``adam``           ``torch.optim.Adam`` (the default)
``clipped-adam``   ``pyro.optim.clipped_adam.ClippedAdam``: Adam with each gradient coordinate clamped to +-10
``adamw``          ``torch.optim.AdamW``: Adam with decoupled weight decay (torch's default 0.01)
``sgd``            ``torch.optim.SGD``: plain stochastic gradient descent (no momentum)
=================  =========================================================================================

The learning rate of optimizer step ``t = 0, 1, ...`` is ``lr * factor(min(t, T) / T)`` for a horizon of ``T``
optimizer steps (``TrainConfig.lr_horizon``, fixed when a run starts: epochs x minibatches per epoch) and the final
factor ``d = lr_decay``::

    none          1
    exponential   d ** f                                  lr falls geometrically to lr * d at the horizon
    cosine        d + (1 - d) * (1 + cos(pi * f)) / 2     half a cosine from lr down to lr * d

Past the horizon (a resumed run given more epochs) the rate stays at ``lr * d``. The schedule is a closed-form
function of the step count, so a resumed run, whose optimizer and scheduler states come back from the checkpoint,
continues with exactly the rates of an uninterrupted one. It runs through Pyro's wrapper
(``pyro.optim.LambdaLR``, a :class:`pyro.optim.PyroLRScheduler`) for the SVI steps and through
``torch.optim.lr_scheduler.LambdaLR`` for the hand-written ones.

**Per-group learning rates** (``TrainConfig.lr_factors``, Python only): parameter-name prefixes mapped to factors of
``lr``, e.g. ``{"decoder": 0.1}``. A parameter's name is the one its module gives it (``encoder.net.0.weight`` in the
built-in VAE; ``<pyro.module name>.<parameter>`` in a user's program, e.g. ``decoder.0.bias``); a prefix matches the
name itself or a name that continues with ``"."``, and the longest matching prefix wins (factor 1 where none does).
The factor multiplies the scheduled rate. Pyro's optimizers take it through their per-parameter ``optim_args``
callable.

**One optimizer or one per parameter.** Pyro's wrapper keeps one torch optimizer per parameter tensor (made when SVI
first meets it); the fast training path (``TrainConfig.path``) keeps one torch optimizer over all of them
(:func:`torch_optimizer`, ``foreach`` where the optimizer has it). Every optimizer here is elementwise (each
coordinate's update reads only that coordinate's gradient and state), so the two take the same steps; the fast
path's state is saved in Pyro's format (:func:`per_parameter_state`, :func:`load_per_parameter_state`), so a
checkpoint written on one path resumes on the other.

**Per-row learning rates** (:func:`rows_lr_factor`, a context manager): a prefix selects whole tensors, not rows of
one. For rows of a weight (the scale rows of the encoder's last layer, ``ppl_vae.lab.heads_study``), every optimizer
step inside the context is followed by ``rows = old + factor * (new - old)``. For an optimizer whose update is
``lr`` times a function of the gradients and its own state, and whose state does not depend on ``lr`` (``adam``,
``adamw``, ``clipped-adam``, ``sgd``, with or without momentum), this is exactly the step at ``lr * factor`` for those
rows; it acts on every torch optimizer stepped inside the context (the fast path's one, Pyro's one per parameter).
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import pyro.optim
import torch
from pyro.optim.clipped_adam import ClippedAdam
from pyro.params.param_store import normalize_param_name
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from ppl_vae.registry import Registry

OPTIMIZERS = Registry("optimizer")
OPTIMIZERS.register("adam")(torch.optim.Adam)
OPTIMIZERS.register("clipped-adam")(ClippedAdam)
OPTIMIZERS.register("adamw")(torch.optim.AdamW)
OPTIMIZERS.register("sgd")(torch.optim.SGD)

LR_SCHEDULES = Registry("learning-rate schedule")
"""name -> ``factor(f, d)`` for the fraction ``f`` in [0, 1] of the horizon done and the final factor ``d``."""
LR_SCHEDULES.register("none")(lambda fraction, final: 1.0)
LR_SCHEDULES.register("exponential")(lambda fraction, final: final**fraction)
LR_SCHEDULES.register("cosine")(lambda fraction, final: final + (1 - final) * (1 + math.cos(math.pi * fraction)) / 2)


def lr_factor(schedule: str, final: float, horizon: int) -> Callable[[int], float]:
    """``step -> factor`` of the learning rate at optimizer step ``step`` (0 for the first update)."""
    shape = LR_SCHEDULES.get(schedule)
    return lambda step: shape(min(step, horizon) / horizon, final)


def group_factor(lr_factors: Iterable[tuple[str, float]], name: str) -> float:
    """The factor of the longest prefix in ``lr_factors`` that matches the parameter ``name`` (1 when none does)."""
    matches = [(len(prefix), factor) for prefix, factor in lr_factors if matches_prefix(name, prefix)]
    return max(matches)[1] if matches else 1.0


def matches_prefix(name: str, prefix: str) -> bool:
    """``name`` is ``prefix`` or continues it after a dot: ``decoder`` matches ``decoder.0.bias``, not ``decoder2``."""
    return name == prefix or name.startswith(prefix + ".")


def parameter_name(store_name: str, pyro_name: str | None) -> str:
    """The name a parameter of Pyro's param store goes by in ``lr_factors``: the dotted store name
    (``decoder.0.bias`` for ``decoder$$$0.bias``), without the process-specific ``pyro_name`` of a built-in VAE
    (``encoder.net.0.weight`` for ``vae0$$$encoder.net.0.weight``)."""
    name = normalize_param_name(store_name)
    if pyro_name is not None and name.startswith(pyro_name + "."):
        return name[len(pyro_name) + 1 :]
    return name


def _scheduled(config) -> bool:
    return config.lr_schedule != "none"


def _schedule(config) -> Callable[[int], float]:
    if config.lr_horizon is None:
        raise ValueError("a learning-rate schedule needs TrainConfig.lr_horizon (fit sets it when a run starts)")
    return lr_factor(config.lr_schedule, config.lr_decay, config.lr_horizon)


def pyro_optimizer(config, pyro_name: str | None) -> pyro.optim.PyroOptim:
    """The configured optimizer (and schedule) for ``pyro.infer.SVI``: one torch optimizer per parameter, made by Pyro
    when SVI first meets the parameter, with ``lr`` times the parameter's group factor. With a schedule, a
    :class:`pyro.optim.PyroLRScheduler`: call its ``step()`` after every update."""
    if config.lr_factors:

        def optim_args(store_name: str) -> dict:  # Pyro passes the dotted store name
            return {"lr": config.lr * group_factor(config.lr_factors, parameter_name(store_name, pyro_name))}

    else:
        optim_args = {"lr": config.lr}
    constructor = OPTIMIZERS.get(config.optim)
    if not _scheduled(config):
        return pyro.optim.PyroOptim(constructor, optim_args)
    return pyro.optim.LambdaLR({"optimizer": constructor, "optim_args": optim_args, "lr_lambda": _schedule(config)})


def torch_optimizer(config, named_parameters: Iterable[tuple[str, torch.nn.Parameter]], *, foreach: bool | None = None):
    """The configured torch optimizer over ``named_parameters`` (one group per distinct factor) and its
    ``LambdaLR`` scheduler (``None`` without a schedule): for the hand-written steps and the fast path.

    ``foreach``: torch's multi-tensor implementation (one call per update for all parameters), passed to the
    optimizers that take it (``adam``, ``adamw``, ``sgd``; ``clipped-adam`` has one implementation)."""
    groups: dict[float, list] = {}
    for name, parameter in named_parameters:
        groups.setdefault(group_factor(config.lr_factors, name), []).append(parameter)
    param_groups = [{"params": params, "lr": config.lr * factor} for factor, params in groups.items()]
    constructor = OPTIMIZERS.get(config.optim)
    options = {"foreach": foreach} if "foreach" in inspect.signature(constructor).parameters else {}
    optimizer = constructor(param_groups, lr=config.lr, **options)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config)) if _scheduled(config) else None
    return optimizer, scheduler


def per_parameter_state(optimizer: torch.optim.Optimizer, scheduler, names: list[str]) -> dict:
    """The state of one torch ``optimizer`` (and its ``scheduler`` or ``None``) over parameters named ``names`` (in
    the optimizer's order, group after group) in the format of Pyro's wrapper: name -> the ``state_dict`` of a
    one-parameter optimizer (``{"optimizer": ..., "scheduler": ...}`` with a schedule). ``foreach`` is stored as
    the constructor's default (``None``): it selects an implementation, not a number."""
    state = optimizer.state_dict()
    schedule = scheduler.state_dict() if scheduler is not None else None
    saved, index = {}, 0
    for number, group in enumerate(state["param_groups"]):
        options = {key: value for key, value in group.items() if key != "params"}
        if "foreach" in options:
            options["foreach"] = None
        for position in group["params"]:
            single = {
                "state": {0: state["state"][position]} if position in state["state"] else {},
                "param_groups": [{**options, "params": [0]}],
            }
            if schedule is not None:
                single = {"optimizer": single, "scheduler": _group_entry(schedule, number, len(state["param_groups"]))}
            saved[names[index]] = single
            index += 1
    return saved


def load_per_parameter_state(optimizer: torch.optim.Optimizer, scheduler, names: list[str], saved: dict) -> None:
    """Load ``saved`` (Pyro's format, see :func:`per_parameter_state`) into one torch ``optimizer`` over the
    parameters ``names`` and its ``scheduler``: a parameter's moments from its own entry, a group's options and
    schedule from the entry of its first parameter that has one (a parameter without an entry starts afresh, as in
    Pyro's wrapper). The optimizer keeps its own ``foreach``."""
    state = optimizer.state_dict()
    groups, moments, schedules, index = [], {}, [], 0
    for group in state["param_groups"]:
        members = names[index : index + len(group["params"])]
        entries = [saved[name] for name in members if name in saved]
        first = entries[0] if entries else None
        single = first["optimizer"] if first is not None and scheduler is not None else first
        options = {**(single["param_groups"][0] if single is not None else group), "params": group["params"]}
        if "foreach" in group:
            options["foreach"] = group["foreach"]
        groups.append(options)
        for position in group["params"]:
            entry = saved.get(names[index])
            entry = entry["optimizer"] if entry is not None and scheduler is not None else entry
            if entry is not None and 0 in entry["state"]:
                moments[position] = entry["state"][0]
            index += 1
        schedules.append(first["scheduler"] if first is not None and scheduler is not None else None)
    optimizer.load_state_dict({"state": moments, "param_groups": groups})
    if scheduler is not None and all(schedule is not None for schedule in schedules):
        merged = dict(schedules[0])
        for key, value in schedules[0].items():
            if isinstance(value, list) and len(value) == 1:
                merged[key] = [schedule[key][0] for schedule in schedules]
        scheduler.load_state_dict(merged)


def _group_entry(schedule: dict, number: int, groups: int) -> dict:
    """A scheduler's ``state_dict`` cut to its group ``number``: the per-group lists become one-entry lists."""
    return {
        key: [value[number]] if isinstance(value, list) and len(value) == groups else value
        for key, value in schedule.items()
    }


@contextlib.contextmanager
def rows_lr_factor(rows: Sequence[tuple[torch.Tensor, slice]], factor: float) -> Iterator[None]:
    """Inside the context, every torch optimizer step moves the rows ``tensor[where]`` of each ``(tensor, where)`` in
    ``rows`` by ``factor`` times the step it took: ``tensor[where] = old + factor * (new - old)``.

    The optimizer's state (Adam's moments, SGD's momentum) is untouched, so for the elementwise optimizers of
    :data:`OPTIMIZERS`, whose state does not depend on ``lr``, this is the optimizer run at ``lr * factor`` on those
    rows (and ``lr`` elsewhere). A step that leaves a tensor out (another parameter's optimizer on Pyro's plain path)
    leaves it alone. ``factor == 1`` installs nothing.

    Example::

        layer = vae.encoder.net[-1]             # emits [loc | h], h in rows z_dim:2 z_dim
        with rows_lr_factor([(layer.weight, slice(z_dim, None)), (layer.bias, slice(z_dim, None))], 0.5):
            fit(vae, data, config)
    """
    if factor == 1:
        yield
        return
    before: dict[tuple[int, int], torch.Tensor] = {}

    def members(optimizer) -> set[int]:
        return {id(parameter) for group in optimizer.param_groups for parameter in group["params"]}

    def remember(optimizer, args, kwargs) -> None:
        inside = members(optimizer)
        for index, (tensor, where) in enumerate(rows):
            if id(tensor) in inside:
                before[id(optimizer), index] = tensor.detach()[where].clone()

    @torch.no_grad()
    def rescale(optimizer, args, kwargs) -> None:
        for index, (tensor, where) in enumerate(rows):
            old = before.pop((id(optimizer), index), None)
            if old is not None:
                tensor[where] = old + factor * (tensor[where] - old)

    handles = [
        register_optimizer_step_pre_hook(remember),
        register_optimizer_step_post_hook(rescale),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
