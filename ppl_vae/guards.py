"""Guards around the first update of a run: every trained parameter reaches the optimizer and gets a gradient.

Pyro's optimizers update only what the programs register in its parameter store (``pyro.module``, ``pyro.param``, a
``PyroModule``'s parameters read inside its methods). Two mistakes leave parameters silently frozen:

- a module's parameters are never registered (the program forgets ``pyro.module`` for it, or reads a ``PyroParam``
  outside a ``PyroModule`` method): autograd fills their ``.grad``, but no optimizer ever steps them;
- a ``pyro.module`` name already holds other parameters in the store (a second program reusing the name): Pyro then
  returns and optimizes the stored tensors, while the program computes with its own module's, which stay as they are.

:func:`check_registration` (before the first update, from one trace of the programs, RNG left as it was) refuses both,
and an ``lr_factors`` prefix that matches no parameter; :func:`check_gradients` (after it) refuses a parameter that
received no gradient, i.e. one the loss does not depend on.
"""

from __future__ import annotations

import torch
from pyro.params.param_store import module_from_param_with_module_name
from torch import nn

from ppl_vae.errors import InputError
from ppl_vae.optim import matches_prefix, parameter_name
from ppl_vae.programs import UserProgram, trace_programs


def check_registration(program: UserProgram, config, x: torch.Tensor, args: tuple) -> None:
    """An :class:`InputError` naming the first parameter of ``program.modules`` (with ``requires_grad``) that the
    programs do not register in Pyro's parameter store, or the ``pyro.module`` name that holds another module's
    parameters, or the ``config.lr_factors`` prefix that matches no registered parameter."""
    owned = {id(p): name for name, p in program.modules.named_parameters() if p.requires_grad}
    registered, names = set(), []
    for trace in trace_programs(program.model, program.guide, x, *args):
        for store_name, site in trace.nodes.items():
            if site["type"] != "param":
                continue
            stored = site["value"].unconstrained()
            registered.add(id(stored))
            names.append(parameter_name(store_name, program.pyro_name))
            given = site["args"][1] if len(site["args"]) > 1 else None
            if isinstance(given, torch.Tensor) and id(given) in owned and given is not stored:
                module = module_from_param_with_module_name(store_name)
                raise InputError(
                    f"pyro.module name {module!r} already holds other parameters in Pyro's param store "
                    f"({store_name!r} is not the given modules' {owned[id(given)]!r}), so they would train instead: "
                    "give each program's modules their own names, or call pyro.clear_param_store() first"
                )
    frozen = [name for key, name in owned.items() if key not in registered]
    if frozen:
        more = f" (and {len(frozen) - 1} more)" if len(frozen) > 1 else ""
        raise InputError(
            f"parameter {frozen[0]!r}{more} of the given modules is never registered in Pyro's param store by the "
            "programs, so no optimizer would update it: call pyro.module(name, module) in the model or guide for "
            "the module that holds it"
        )
    for prefix, _ in config.lr_factors:
        if not any(matches_prefix(name, prefix) for name in names):
            raise InputError(
                f"lr_factors prefix {prefix!r} matches no trained parameter (names look like {names[0]!r})"
                if names
                else f"lr_factors prefix {prefix!r}: the programs register no parameters"
            )


def forget_gradients(modules: nn.Module) -> None:
    """Set every parameter's ``.grad`` to ``None``, so that :func:`check_gradients` sees only the first update's."""
    for parameter in modules.parameters():
        parameter.grad = None


def check_gradients(modules: nn.Module) -> None:
    """An :class:`InputError` naming the first parameter of ``modules`` (with ``requires_grad``) whose ``.grad`` is
    still ``None`` after an update that followed :func:`forget_gradients`."""
    missing = [name for name, p in modules.named_parameters() if p.requires_grad and p.grad is None]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(
            f"parameter {missing[0]!r}{more} of the given modules received no gradient in the first step: the loss "
            "does not depend on it; leave it out of modules= or set requires_grad=False"
        )
