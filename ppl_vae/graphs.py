"""The compiled tier of the fast training path (``--path graph``, and ``auto`` where it holds): a Pyro objective's loss
traced once per input shape into a graph of torch operations, which every later update runs without Pyro.

Why: on the fast path, most of a small network's step is Pyro running the two programs again (the messenger stack
handling each site, ``pyro.module`` registering the parameters, the distributions built and checked); the arithmetic
is the same at every step. Here it is recorded once and replayed.

What is traced, for ``Trace_ELBO`` (``trace``; ``stl``'s :class:`~ppl_vae.objectives.TraceSTL_ELBO` too, which
changes only how the traces are made) and ``RenyiELBO`` (``iwae``)::

    loss_terms(*parameters, *tensor_arguments) -> (surrogate loss, detached value the loss is read from)

It runs the ELBO's own trace generation (``elbo._get_traces``: the guide traced, the model replayed on it, the
particle plate, masks and scales applied by ``compute_log_prob`` / ``compute_score_parts``) and forms the surrogate
loss with the operations, in the order, of the ELBO's ``loss_and_grads``, without its ``.item()``:

    Trace_ELBO   surrogate = -(sum_model log_prob_sum - sum_guide entropy_term.sum()) / num_particles; the value
                 is the stack of every site's ``log_prob_sum`` (model sites, then guide sites), from which the loss
                 is summed in Python, site by site, as ``Trace_ELBO`` sums it
    RenyiELBO    log w_k = (1 - alpha) * (per-particle log p - log q); surrogate = -sum_k softmax(log w)_k *
                 surrogate_k / K; the value is ``logsumexp_k log w_k - log K``, the loss ``-value / (1 - alpha)``

A guide site without a reparameterized sampler (a score-function term) is not compiled. The recording is
``torch.fx.experimental.proxy_tensor.make_fx`` with ``pre_dispatch=True``: above autograd, so ``detach`` and
``no_grad`` regions stay what they are (below autograd a ``detach`` would become an ``alias`` and let gradients
through). Its inputs are the live trained tensors (the optimizer's parameters, read by identity, so each run reads
their current values and autograd reaches them), ``x`` and the other tensor arguments (β_t among them); other
arguments are constants of the graph and part of its key. Random draws (``normal_``) are operations of the graph, so
each run consumes torch's generator in the order the programs would. Then exact simplifications (:func:`simplify`):
dead operations (never a random one), views and broadcasts to the shape a tensor already has, ``+ 0``, ``* 1`` and
``/ 1``, grad-mode switches that the next node switches back.

What a graph cannot see, and :class:`~ppl_vae.objectives.GraphStep` checks: the programs' Python is not re-run, so a
structure or a draw that depends on data or on Python values (``.item()`` - which ``make_fx`` refuses -, ``random``,
a branch on a tensor's value, a parameter that appears later) would be frozen at the traced batch. The step compares
the graph against the fast path on the first two batches of each shape (loss, every gradient, the RNG state after)
and keeps the fast path for the run, saying why, when they differ or tracing fails.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence

import pyro
import torch
from pyro.infer import RenyiELBO, Trace_ELBO
from pyro.infer.elbo import ELBO
from pyro.infer.util import get_dependent_plate_dims, is_identically_zero, torch_sum
from torch.fx import GraphModule, Node
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.graph import CodeGen

aten = torch.ops.aten


class NotCompiled(Exception):
    """Why an objective or a pair of programs has no graph (the message says it in one line)."""


class NotCovered(NotCompiled):
    """The programs need what the tier does not compile (a score-function site), as opposed to a failure."""


def compilable(elbo: ELBO) -> str | None:
    """``None`` when the graph tier can trace ``elbo``'s loss, else why not (one line)."""
    kind = type(elbo)
    trace_like = isinstance(elbo, Trace_ELBO) and all(
        getattr(kind, name) is getattr(Trace_ELBO, name) for name in ("loss_and_grads", "_differentiable_loss_particle")
    )
    if not (trace_like or kind is RenyiELBO):
        return f"{kind.__name__} is not compiled (Trace_ELBO and its trace-level variants, and RenyiELBO, are)"
    if not elbo.vectorize_particles and elbo.num_particles > 1:
        return "particles drawn one by one (vectorize_particles=False) are not compiled"
    return None


class CompiledLoss:
    """One traced graph of ``elbo``'s loss for one set of argument shapes.

    Calling it with the parameters and the tensor arguments (as traced) runs the graph, calls ``backward`` on the
    surrogate loss (the gradients accumulate into the parameters' ``.grad``) and returns the loss as the ELBO's
    ``loss_and_grads`` returns it: a Python float, the negative objective summed over the minibatch, nats.
    """

    def __init__(self, graph: GraphModule, read_loss: Callable[[torch.Tensor], float]):
        self.graph = graph
        self.forward = graph.forward
        self.read_loss = read_loss
        self.checked = 0  # batches on which the graph was compared with the fast path and agreed

    def __call__(self, tensors: Sequence[torch.Tensor]) -> float:
        surrogate, value = self.forward(*tensors)
        surrogate.backward()
        return self.read_loss(value)


def compile_loss(
    elbo: ELBO, model: Callable, guide: Callable, parameters: Sequence[torch.Tensor], arguments: tuple
) -> CompiledLoss:
    """Trace ``elbo``'s loss of ``model`` / ``guide`` on ``arguments`` (``x`` first) with ``parameters`` as graph
    inputs (see the module docstring). Draws made while tracing are real draws: the caller restores the RNG.

    Raises :class:`NotCompiled` when the objective is not covered, a guide site has a score-function term, or tracing
    fails (with the reason)."""
    reason = compilable(elbo)
    if reason is not None:
        raise NotCompiled(reason)
    terms = _renyi_terms if type(elbo) is RenyiELBO else _trace_terms
    positions = [number for number, argument in enumerate(arguments) if isinstance(argument, torch.Tensor)]
    count = len(parameters)
    layout = {}

    def loss_terms(*tensors):
        rebuilt = list(arguments)
        for position, tensor in zip(positions, tensors[count:], strict=True):
            rebuilt[position] = tensor
        surrogate, value, read_loss = terms(elbo, model, guide, tuple(rebuilt))
        layout["read_loss"] = read_loss
        return surrogate, value

    tensors = [*parameters, *(arguments[position] for position in positions)]
    store = pyro.get_param_store()
    before = len(store)
    try:
        with pyro.validation_enabled(False), torch.enable_grad():
            graph = make_fx(loss_terms, pre_dispatch=True)(*tensors)
    except NotCompiled:
        raise
    except Exception as error:  # what the programs did that a graph cannot record (.item(), data-dependent shapes)
        raise NotCompiled(f"tracing the programs failed: {type(error).__name__}: {_first_line(error)}") from error
    if len(store) != before:
        raise NotCompiled("a parameter first appeared while tracing: the programs' parameters change between updates")
    simplify(graph)
    return CompiledLoss(graph, layout["read_loss"])


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "(no message)"


def _single_trace(elbo: ELBO, model: Callable, guide: Callable, arguments: tuple):
    (traces,) = list(elbo._get_traces(model, guide, arguments, {}))  # vectorized particles: one trace pair
    return traces


def _score_function_check(name: str, score_function_term) -> None:
    if not is_identically_zero(score_function_term):
        raise NotCovered(
            f"latent site {name!r} has no reparameterized sampler: its score-function gradient is not compiled"
        )


def _trace_terms(elbo: Trace_ELBO, model: Callable, guide: Callable, arguments: tuple):
    """``Trace_ELBO._differentiable_loss_particle`` and ``loss_and_grads``, as tensors."""
    model_trace, guide_trace = _single_trace(elbo, model, guide, arguments)
    sums, surrogate = [], 0
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            sums.append(site["log_prob_sum"])
            surrogate = surrogate + site["log_prob_sum"]
    model_sites = len(sums)
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample":
            _, score_function_term, entropy_term = site["score_parts"]
            sums.append(site["log_prob_sum"])
            if not is_identically_zero(entropy_term):
                surrogate = surrogate - entropy_term.sum()
            _score_function_check(name, score_function_term)
    num_particles = elbo.num_particles

    def read_loss(value: torch.Tensor) -> float:
        values = value.tolist()
        elbo_particle = 0
        for term in values[:model_sites]:
            elbo_particle = elbo_particle + term
        for term in values[model_sites:]:
            elbo_particle = elbo_particle - term
        return 0.0 + -elbo_particle / num_particles

    return -surrogate / num_particles, torch.stack(sums).detach(), read_loss


def _renyi_terms(elbo: RenyiELBO, model: Callable, guide: Callable, arguments: tuple):
    """``RenyiELBO.loss_and_grads``, as tensors."""
    model_trace, guide_trace = _single_trace(elbo, model, guide, arguments)
    sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
    elbo_particle, surrogate = 0, 0
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            log_prob_sum = torch_sum(site["log_prob"], sum_dims)
            elbo_particle = elbo_particle + log_prob_sum.detach()
            surrogate = surrogate + log_prob_sum
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample":
            _, score_function_term, entropy_term = site["score_parts"]
            log_prob_sum = torch_sum(site["log_prob"], sum_dims)
            elbo_particle = elbo_particle - log_prob_sum.detach()
            if not is_identically_zero(entropy_term):
                surrogate = surrogate - log_prob_sum
            _score_function_check(name, score_function_term)
    if is_identically_zero(elbo_particle):
        raise NotCompiled("the programs have no sample site with a log-density")
    num_particles, alpha = elbo.num_particles, elbo.alpha
    if not (elbo.vectorize_particles and num_particles > 1):
        elbo_particle, surrogate = torch.stack([elbo_particle]), torch.stack([surrogate])
    log_weights = (1.0 - alpha) * elbo_particle
    log_mean_weight = torch.logsumexp(log_weights, dim=0, keepdim=True) - math.log(num_particles)
    normalized_weights = (log_weights - log_mean_weight).exp()
    surrogate_loss = -((normalized_weights * surrogate).sum() / num_particles)

    def read_loss(value: torch.Tensor) -> float:
        return -(value.item() / (1.0 - alpha))

    return surrogate_loss, log_mean_weight.sum().detach(), read_loss


# --- exact simplifications of a traced graph -----------------------------------------------------------------------
_VIEWS = (aten.expand.default, aten.view.default, aten.reshape.default, aten.alias.default, aten._unsafe_view.default)
_NEUTRAL = {aten.add.Tensor: 0, aten.sub.Tensor: 0, aten.mul.Tensor: 1, aten.div.Tensor: 1}


def simplify(graph: GraphModule) -> None:
    """Rewrite ``graph`` in place into one with fewer operations and the same values and gradients, and give it a
    flat signature (``graph.forward(*tensors) -> [surrogate, value]``, no pytree handling):

    - a view, expand, reshape or alias to the shape its input already has, and a ``broadcast_tensors`` output of an
      input that already has the broadcast shape, become that input;
    - ``a + 0``, ``a - 0``, ``a * 1``, ``a / 1`` (a Python scalar, ``a`` of the result's shape and dtype) become ``a``;
    - a grad-mode switch immediately followed by another is dropped (its region held no operation);
    - operations whose results nobody reads are dropped, except random ones (they advance the generator), in-place
      ones (except ``detach_`` of a fresh copy of a constant) and grad-mode switches.
    """
    fx = graph.graph
    for node in list(fx.nodes):
        replacement = _identity_of(node)
        if replacement is not None:
            node.replace_all_uses_with(replacement)
    nodes = list(fx.nodes)
    for node, following in zip(nodes, nodes[1:], strict=False):
        if node.target is torch._C._set_grad_enabled and following.target is torch._C._set_grad_enabled:
            fx.erase_node(node)
    changed = True
    while changed:
        changed = False
        for node in reversed(list(fx.nodes)):
            if _is_dead(node):
                fx.erase_node(node)
                changed = True
    fx.set_codegen(CodeGen())
    fx.lint()
    graph.recompile()


def _shape(value) -> tuple | None:
    meta = value.meta.get("val") if isinstance(value, Node) else None
    return (tuple(meta.shape), meta.dtype) if isinstance(meta, torch.Tensor) else None


def _identity_of(node: Node) -> Node | None:
    """The node that ``node`` computes unchanged, or ``None``."""
    if node.op != "call_function":
        return None
    target, args = node.target, node.args
    if target in _VIEWS:
        source = args[0]
    elif target in _NEUTRAL and len(args) == 2 and not node.kwargs:
        neutral = _NEUTRAL[target]
        if isinstance(args[1], bool) or not isinstance(args[1], int | float) or args[1] != neutral:
            return None
        source = args[0]
    elif target is operator.getitem and isinstance(args[0], Node) and args[0].target is aten.broadcast_tensors.default:
        source = args[0].args[0][args[1]]
    else:
        return None
    shape = _shape(node)
    return source if shape is not None and _shape(source) == shape else None


def _is_dead(node: Node) -> bool:
    if node.users:
        return False
    if node.op == "get_attr":
        return True
    if node.op != "call_function":
        return False
    target = node.target
    if target is operator.getitem:
        return True
    if not isinstance(target, torch._ops.OpOverload) or torch.Tag.nondeterministic_seeded in target.tags:
        return False
    if target._schema.is_mutable:
        source = node.args[0] if node.args else None
        return (
            target is aten.detach_.default
            and isinstance(source, Node)
            and source.target is aten.lift_fresh_copy.default
            and len(source.users) == 1
        )
    return True
