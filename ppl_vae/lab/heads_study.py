"""The heads study: "why log-variance and not log-sigma?" Every scale head trains from the same initial q(z | x).

Each head of :mod:`ppl_vae.heads` (``log_scale``, ``log_var``, ``softplus``) turns the encoder's raw output ``h``
into the Normal guide's standard deviation. :func:`compare_heads` rebuilds the model once per head, loads the original
weights, rewrites the ``h`` rows of the layer that emits them so that every head starts from the same q(z | x)
(:func:`start_heads_alike`), and trains it under the Monte Carlo and the analytic KL with the same optimizer, seed and
minibatches.

Which layer and rows, and how to rebuild with another head, is a :class:`~ppl_vae.heads.HeadLayer`:

- the built-in one-latent VAE has one from its config (the last ``nn.Linear`` of the encoder, rows ``z_dim:2 z_dim``,
  rebuilt with ``ModelConfig(scale_param=head)``); the ``diagonal`` guide only (``lowrank`` and ``iaf`` emit more than
  ``[loc | h]``), and not with ``--latent-layers 2`` (there the head also sets p(z1 | z2) and q(z2 | z1));
- a user's program offers one as ``UserProgram(..., scale_head=HeadLayer(head, layer, rows, rebuild))``; the pattern
  for a run folder is a ``build(spec)`` that reads ``spec.args["scale_param"]``::

      def build(spec):
          head = spec.args.get("scale_param", "log_scale")
          encoder = nn.Sequential(nn.Linear(spec.x_dim, 128), nn.ReLU(), nn.Linear(128, 2 * z_dim))
          ...     # the guide: loc, h = encoder(x).split(z_dim, -1); Normal(loc, HEADS.get(head).scale(h))
          rebuild = lambda other: build(dataclasses.replace(spec, args={**spec.args, "scale_param": other}))
          return UserProgram(model, guide, {"encoder": encoder, "decoder": decoder},
                             scale_head=HeadLayer(head, "encoder.2", (z_dim, 2 * z_dim), rebuild))

  then ``ppl-vae compare-kl --run RUN --trust-program --heads``.

**The controlled study** (issue 14: is ``log_var`` better because Adam's step on its scales is half as long?). A run
is a :class:`HeadRun`: head, estimator, optimizer, learning rate, the scale rows' learning-rate factor, z_dim and seed.
``log_var``'s ``h = 2 log sigma`` halves the gradient at its rows and leaves every other gradient as it is, so from
matched weights Adam (whose step does not depend on the gradient's scale, up to its ``eps``) moves ``log sigma`` half
as far as under ``log_scale``: ``log_scale`` with ``scale_lr_factor=0.5`` takes the same steps as ``log_var``, up to
``eps`` (in the denominator ``sqrt(v) + eps`` under ``log_scale`` at 0.5 against ``sqrt(v) + 2 eps`` under
``log_var``). Plain SGD's step is proportional to the gradient, so there the factor is ``0.25`` and the agreement is
exact up to rounding (``tests/test_heads_study.py`` checks both). The factor acts on the rows of the layer that emits
``h`` through :func:`ppl_vae.optim.rows_lr_factor`.

:func:`heads_grid` makes the cross product of lists (what ``compare-kl --heads --lrs ... --scale-lr-factor ...
--optimizers ... --z-dims ... --seeds ...`` runs); a study that needs less than the cross product passes its own list
of runs (``benchmarks/heads_study.py``). Every run of one ``(z_dim, seed)`` starts from the same weights and the same
q(z | x) and sees the same minibatches; with ``fresh`` (a fresh VAE, not a trained run) the weights are those of a VAE
built after ``seed_everything(seed)`` with that z_dim and the network otherwise fixed.

Each run records, besides its test ELBO curve, the test set's mean posterior standard deviation and mean
``KL(q(z_d | x) || N(0, 1))`` per latent dimension after every epoch (the built-in VAE; the KL with its standard
Normal prior), the dimensions that end inactive (KL below :data:`INACTIVE_KL` nats) and their mean posterior
standard deviation per epoch: how fast the unused dimensions' scales reach the prior's 1 under each head.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ppl_vae.compare import mean_and_se
from ppl_vae.config import MAX_INT, require, require_int, require_positive, require_seed
from ppl_vae.data import Dataset
from ppl_vae.errors import InputError
from ppl_vae.evaluate import program_test_set
from ppl_vae.heads import HEADS, HeadLayer, convert
from ppl_vae.lab.measure import LabConfig, meanfield_check, train_from
from ppl_vae.optim import OPTIMIZERS, rows_lr_factor
from ppl_vae.programs import UserProgram, as_user_program
from ppl_vae.train import seed_everything
from ppl_vae.vae import VAE

HEAD_ESTIMATORS = ("trace", "meanfield")
"""The heads study trains every head under the Monte Carlo and the analytic KL (Pyro's ELBOs)."""

INACTIVE_KL = 0.01
"""A latent dimension whose mean ``KL(q(z_d | x) || N(0, 1))`` over the test set ends below this (nats per example)
is inactive: its posterior is the prior for every x."""


@dataclass(frozen=True)
class HeadRun:
    """One training run of the heads study.

    Attributes:
        head: a scale head (:data:`ppl_vae.heads.HEADS`).
        estimator: ``trace`` (Monte Carlo KL) or ``meanfield`` (analytic KL).
        optimizer: a name in :data:`ppl_vae.optim.OPTIMIZERS` (``adam``, ``sgd``, ...).
        lr: the learning rate of every parameter.
        scale_lr_factor: the rows of the layer that emits ``h`` train at ``lr * scale_lr_factor``
            (:func:`ppl_vae.optim.rows_lr_factor`); 1 for none.
        z_dim: latent dimensions (a fresh VAE's; a trained model's own otherwise).
        seed: the initial weights of a fresh VAE, the minibatch order and the noise.
    """

    head: str
    estimator: str
    optimizer: str
    lr: float
    scale_lr_factor: float
    z_dim: int
    seed: int

    def __post_init__(self):
        require(self.head in HEADS, f"head {self.head!r} is not a scale head: expected one of {sorted(HEADS)}")
        require(
            self.estimator in HEAD_ESTIMATORS,
            f"--head-estimators: {self.estimator!r} is not one of {', '.join(HEAD_ESTIMATORS)}",
        )
        OPTIMIZERS.get(self.optimizer, "--optimizers")
        require_positive(self.lr, "a learning rate (--lrs, --sgd-lrs)")
        require_positive(self.scale_lr_factor, "--scale-lr-factor")
        require_int(self.z_dim, "--z-dims")
        require_seed(self.seed, "--seeds")

    @property
    def label(self) -> str:
        """``log_scale, scale step x0.5`` (or the head alone at factor 1)."""
        return self.head if self.scale_lr_factor == 1 else f"{self.head}, scale step x{self.scale_lr_factor:g}"


def heads_grid(
    *,
    lrs: dict[str, Sequence[float]],
    z_dims: Sequence[int],
    seeds: Sequence[int],
    scale_lr_factors: Sequence[float] = (1.0,),
    estimators: Sequence[str] = HEAD_ESTIMATORS,
    heads: Sequence[str] = tuple(HEADS),
) -> list[HeadRun]:
    """Every combination: ``lrs`` maps each optimizer to its learning rates (SGD's rates are not Adam's: its step is
    ``lr`` times the gradient); the ``scale_lr_factors`` apply to the ``log_scale`` head (the question is whether
    ``log_scale`` with a smaller scale step is ``log_var``), every other head trains at factor 1."""
    for name, values in (("--scale-lr-factor", scale_lr_factors), ("--z-dims", z_dims), ("--seeds", seeds)):
        require(len(values) >= 1, f"{name} needs at least one value")
        require(len(set(values)) == len(values), f"{name} repeats a value: {list(values)}")
    runs = []
    for optimizer, rates in lrs.items():
        require(len(set(rates)) == len(rates) and rates, f"the learning rates of {optimizer} must differ: {rates}")
        for z_dim, seed, estimator, lr, head in itertools.product(z_dims, seeds, estimators, rates, heads):
            for factor in scale_lr_factors if head == "log_scale" else (1.0,):
                runs.append(HeadRun(head, estimator, optimizer, float(lr), float(factor), z_dim, seed))
    return runs


def parse_list(text: str, flag: str, kind: Callable = float) -> list:
    """``"1e-3,2e-3"`` -> ``[0.001, 0.002]`` (``kind`` reads each item); an :class:`InputError` naming ``flag``
    otherwise."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    require(items, f"{flag} {text!r} is empty: expected comma-separated values")
    try:
        values = [kind(item) for item in items]
    except ValueError:
        raise InputError(f"{flag} {text!r}: expected comma-separated {kind.__name__} values") from None
    if kind is int:
        require(all(0 <= value <= MAX_INT for value in values), f"{flag} {text!r}: out of range")
    elif kind is float:
        require(all(math.isfinite(value) for value in values), f"{flag} {text!r}: expected finite numbers")
    return values


def head_layer(trained: VAE | UserProgram) -> HeadLayer:
    """Where ``trained``'s guide emits ``h`` and how to rebuild it with another head, checked against its modules; an
    :class:`InputError` naming what is missing where there is none."""
    if isinstance(trained, UserProgram):
        if trained.scale_head is None:
            raise InputError(
                "--heads rebuilds the program with each scale head: its UserProgram needs scale_head=HeadLayer(head, "
                "layer, rows, rebuild) (see ppl_vae.lab.heads_study)"
            )
        _rows_of(trained, trained.scale_head)
        return trained.scale_head
    config = trained.config
    if config.latent_layers != 1:
        raise InputError(
            f"--heads compares the scale head of q(z | x) of a one-latent VAE; with --latent-layers "
            f"{config.latent_layers} the head also parameterizes p(z1 | z2) and q(z2 | z1): use --latent-layers 1"
        )
    linears = [(name, module) for name, module in trained.encoder.named_modules() if isinstance(module, nn.Linear)]
    if not linears or linears[-1][1].out_features != 2 * config.z_dim:
        raise InputError(
            f"the heads study needs an encoder whose last layer is nn.Linear with 2 * z_dim = {2 * config.z_dim} "
            f"outputs, got --net {config.net} --guide {config.guide}"
        )
    return HeadLayer(
        head=config.scale_param,
        layer=f"encoder.{linears[-1][0]}",
        rows=(config.z_dim, 2 * config.z_dim),
        rebuild=lambda head: VAE(dataclasses.replace(config, scale_param=head)),
    )


def _rows_of(trained: VAE | UserProgram, where: HeadLayer) -> nn.Linear:
    """The ``nn.Linear`` that ``where`` names, checked against its rows."""
    try:
        layer = as_user_program(trained).modules.get_submodule(where.layer)
    except AttributeError:
        raise InputError(f"HeadLayer: the modules have no submodule {where.layer!r}") from None
    if not isinstance(layer, nn.Linear) or where.rows[1] > layer.out_features:
        raise InputError(
            f"HeadLayer: {where.layer!r} must be an nn.Linear with at least {where.rows[1]} outputs (rows "
            f"{where.rows}), got {layer}"
        )
    return layer


@torch.no_grad()
def start_heads_alike(trained: VAE | UserProgram, source_head: str) -> None:
    """Rewrite the h rows of the layer that emits them (:func:`head_layer`), in place, so that every head starts from
    the same q(z | x).

    Those rows' weights become 0 and their bias ``b -> convert(b, source_head, head)``, so
    ``scale(x) = HEADS[source_head].scale(b)`` under any head and ``loc(x)`` is untouched. (``log_scale`` and
    ``log_var`` are affine in each other, ``h_log_var = 2 h_log_scale``, and could keep x-dependent rows; ``softplus``
    is not, so an identical start for all three needs h constant in x.)
    """
    where = head_layer(trained)
    layer = as_user_program(trained).modules.get_submodule(where.layer)
    rows = slice(*where.rows)
    layer.weight[rows] = 0.0
    layer.bias[rows] = convert(layer.bias[rows], source_head, where.head)


def compare_heads(
    trained: VAE | UserProgram,
    data: Dataset,
    settings: LabConfig,
    progress: bool = True,
    runs: Sequence[HeadRun] | None = None,
    fresh: Callable[[int, int], VAE] | None = None,
) -> list[dict]:
    """Train each :class:`HeadRun` from the same initial q(z | x) per ``(z_dim, seed)``.

    Each run rebuilds the model with its head (:attr:`HeadLayer.rebuild`), loads the initial weights (``trained``'s,
    or with ``fresh`` those of ``fresh(z_dim, seed)``), aligns the head rows with :func:`start_heads_alike` (from
    the initial model's own head), and trains ``settings.epochs`` epochs (at least 1) at batch ``settings.batch_size``
    with the run's optimizer, learning rate, scale-rows factor and seed, on the fast path (the same numbers as the
    other paths; the graph path's tracing would cost more than a short run). Where meanfield is not the unbiased
    closed-form estimator (:func:`~ppl_vae.lab.measure.meanfield_check` on the first test images), its runs are left
    out. ``runs=None``: every head under each estimator at ``settings.lr``, Adam, factor 1, ``settings.seed``, the
    trained model's z_dim. Without ``fresh`` every run must have the trained model's z_dim.

    Returns:
        One dict per run: the :class:`HeadRun`'s fields, ``test_elbo_curve`` and ``train_elbo_curve`` (nats per
        example, one number per epoch), ``train_ms_per_step``, and for the built-in VAE (else ``None``):
        ``scale_curve`` and ``kl_curve`` (per epoch, per latent dimension: the test set's mean posterior standard
        deviation, and mean ``KL(q(z_d | x) || N(0, 1))`` in nats, ``None`` for a prior that is not N(0, I)),
        ``kl_per_dim`` (the last epoch's), ``inactive_dims`` (those whose last KL is below :data:`INACTIVE_KL`) and
        ``inactive_scale_curve`` (their mean posterior standard deviation per epoch; ``None`` where none is).
    """
    source = head_layer(trained)
    program = as_user_program(trained)
    own_z_dim = source.rows[1] - source.rows[0]
    if runs is None:
        runs = [
            HeadRun(head, estimator, "adam", settings.lr, 1.0, own_z_dim, settings.seed)
            for head in HEADS
            for estimator in HEAD_ESTIMATORS
        ]
    if fresh is None and any(run.z_dim != own_z_dim for run in runs):
        raise InputError(f"--z-dims: the trained model has z_dim {own_z_dim}; other widths need a fresh VAE (no --run)")
    x, y = program_test_set(program, data)
    args = () if y is None else (y[: settings.batch_size],)
    meanfield = meanfield_check(program.model, program.guide, x[: settings.batch_size], *args)
    runs = [run for run in runs if run.estimator != "meanfield" or meanfield.problem is None]
    starts: dict[tuple[int, int], tuple[VAE | UserProgram, dict]] = {}
    rows = []
    for run in runs:
        started = time.perf_counter()
        if (run.z_dim, run.seed) not in starts:
            initial = trained if fresh is None else fresh(run.z_dim, run.seed)
            state = {
                name: value.detach().clone() for name, value in as_user_program(initial).modules.state_dict().items()
            }
            starts[run.z_dim, run.seed] = initial, state
        initial, state = starts[run.z_dim, run.seed]
        where = head_layer(initial)
        student = where.rebuild(run.head)
        rebuilt_head = head_layer(student).head
        if rebuilt_head != run.head:
            raise InputError(f"HeadLayer: rebuild({run.head!r}) returned a program whose head is {rebuilt_head!r}")
        layer = _rows_of(student, where)
        rows_h = slice(*where.rows)
        curves = _LatentCurves(student, x, y)
        config = dataclasses.replace(
            settings.train_config(run.estimator), lr=run.lr, optim=run.optimizer, seed=run.seed, path="fast"
        )
        with rows_lr_factor([(layer.weight, rows_h), (layer.bias, rows_h)], run.scale_lr_factor):
            trained_run = train_from(
                student,
                state,
                data,
                config,
                before_training=lambda model, head=where.head: start_heads_alike(model, head),
                on_epoch=curves.record,
            )
        rows.append({**dataclasses.asdict(run), **trained_run, **curves.summary()})
        if progress:
            print(
                f"  {run.label}, {run.estimator}, {run.optimizer} lr {run.lr:g}, z_dim {run.z_dim}, seed {run.seed}: "
                f"test ELBO {trained_run['test_elbo_curve'][-1]:.3f} in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
    return rows


class _LatentCurves:
    """The test set's posterior per latent dimension after every epoch (``record``, fit's ``on_epoch``)."""

    def __init__(self, vae: VAE | UserProgram, x: torch.Tensor, y: torch.Tensor | None):
        self.vae, self.x, self.y = vae, x, y
        self.scales: list[list[float]] = []
        self.kls: list[list[float]] = []
        self.normal_prior = isinstance(vae, VAE) and vae.config.prior == "normal"

    @torch.no_grad()
    def record(self, _record: dict) -> None:
        if not isinstance(self.vae, VAE):
            return
        loc, scale = self.vae.encode(self.x, self.y if self.vae.config.num_classes else None)
        self.scales.append(scale.mean(0).tolist())
        if self.normal_prior:  # KL(N(m, s^2) || N(0, 1)) = (m^2 + s^2 - 1) / 2 - log s, per dimension
            self.kls.append((0.5 * (loc.square() + scale.square() - 1.0) - scale.log()).mean(0).tolist())

    def summary(self) -> dict:
        if not self.scales:
            return dict.fromkeys(("scale_curve", "kl_curve", "kl_per_dim", "inactive_dims", "inactive_scale_curve"))
        if not self.kls:
            empty = dict.fromkeys(("kl_curve", "kl_per_dim", "inactive_dims", "inactive_scale_curve"))
            return {"scale_curve": self.scales, **empty}
        inactive = [dim for dim, kl in enumerate(self.kls[-1]) if kl < INACTIVE_KL]
        return {
            "scale_curve": self.scales,
            "kl_curve": self.kls,
            "kl_per_dim": self.kls[-1],
            "inactive_dims": inactive,
            "inactive_scale_curve": [sum(epoch[dim] for dim in inactive) / len(inactive) for epoch in self.scales]
            if inactive
            else None,
        }


def fresh_vae(trained: VAE) -> Callable[[int, int], VAE]:
    """``(z_dim, seed) -> VAE``: ``trained``'s config with that z_dim, its weights drawn after
    ``seed_everything(seed)`` (as :func:`ppl_vae.lab.prepare` draws a fresh VAE's)."""

    def build(z_dim: int, seed: int) -> VAE:
        seed_everything(seed)
        return VAE(dataclasses.replace(trained.config, z_dim=z_dim))

    return build


HEAD_DESIGN_FLAGS = ("lrs", "sgd_lrs", "optimizers", "scale_lr_factor", "z_dims", "seeds", "head_estimators")
"""The ``compare-kl`` flags of the heads study's design (``args.<name>``; ``None`` when not given)."""


def heads_design_from_args(args, vae: VAE | UserProgram, settings: LabConfig):
    """``(runs, fresh)`` for :func:`compare_heads` from ``compare-kl``'s flags, every value checked before any work:
    ``(None, None)`` without the design flags (every head under each estimator, as before); otherwise the cross product
    of :func:`heads_grid` (``--lrs`` default ``--lr``, ``--z-dims`` the model's, ``--seeds`` ``--seed``) and, for a
    fresh VAE (no ``--run``), :func:`fresh_vae` to build each ``(z_dim, seed)``'s start."""
    given = [name for name in HEAD_DESIGN_FLAGS if getattr(args, name) is not None]
    shown = ", ".join("--" + name.replace("_", "-") for name in given)
    if not args.heads:
        require(not given, f"{shown}: the heads study's flags need --heads")
        return None, None
    if not given:
        return None, None
    optimizers = parse_list(args.optimizers or "adam", "--optimizers", str)
    require(len(set(optimizers)) == len(optimizers), f"--optimizers repeats a name: {args.optimizers!r}")
    for name in optimizers:
        OPTIMIZERS.get(name, "--optimizers")
    require(
        "sgd" not in optimizers or args.sgd_lrs is not None,
        "--optimizers sgd needs --sgd-lrs (SGD's step is lr x gradient: Adam's learning rates do not carry over)",
    )
    require(args.sgd_lrs is None or "sgd" in optimizers, "--sgd-lrs needs sgd among --optimizers")
    adam_lrs = parse_list(args.lrs, "--lrs") if args.lrs is not None else [settings.lr]
    lrs = {name: parse_list(args.sgd_lrs, "--sgd-lrs") if name == "sgd" else adam_lrs for name in optimizers}
    own_z_dim = head_layer(vae).rows[1] - head_layer(vae).rows[0]
    z_dims = parse_list(args.z_dims, "--z-dims", int) if args.z_dims is not None else [own_z_dim]
    fresh = fresh_vae(vae) if args.run is None and isinstance(vae, VAE) else None
    require(
        fresh is not None or z_dims == [own_z_dim],
        f"--z-dims {args.z_dims}: the model of --run has z_dim {own_z_dim}; other widths need a fresh VAE (no --run)",
    )
    runs = heads_grid(
        lrs=lrs,
        z_dims=z_dims,
        seeds=parse_list(args.seeds, "--seeds", int) if args.seeds is not None else [settings.seed],
        scale_lr_factors=parse_list(args.scale_lr_factor, "--scale-lr-factor") if args.scale_lr_factor else [1.0],
        estimators=parse_list(args.head_estimators, "--head-estimators", str)
        if args.head_estimators is not None
        else HEAD_ESTIMATORS,
    )
    return runs, fresh


# --- summaries over seeds ------------------------------------------------------------------------------------------
CELL_KEYS = ("estimator", "optimizer", "lr", "z_dim")
"""What the runs compared within one panel share (the heads and factors vary)."""


def run_label(row: dict) -> str:
    """``log_scale, scale step x0.5`` (:attr:`HeadRun.label`) for a result row."""
    factor = row["scale_lr_factor"]
    return row["head"] if factor == 1 else f"{row['head']}, scale step x{factor:g}"


def cell_name(row: dict) -> str:
    return f"{row['estimator']}, {row['optimizer']} lr {row['lr']:g}, z_dim {row['z_dim']}"


def paired_differences(heads: list[dict], early_epoch: int = 5) -> list[dict]:
    """Every run group against ``log_var`` (factor 1) of the same estimator, optimizer and z_dim, paired by seed: at
    the same learning rate (every other head and factor), and ``log_scale`` at factor 1 at half ``log_var``'s rate (a
    smaller step for every parameter, not only the scales).

    Returns:
        One dict per comparison: ``cell`` (log_var's estimator, optimizer, lr, z_dim), ``label`` (``"<run> -
        log_var"``), ``seeds``, and for the epoch ``min(early_epoch, E)`` and the last epoch ``E``: ``early_epoch``,
        ``early`` and ``early_se``, ``last`` and ``last_se`` (mean and standard error over seeds of the paired
        difference of test ELBOs, nats per example; positive: the other run is ahead; ``se`` ``None`` for one seed).
    """
    baselines = [row for row in heads if row["head"] == "log_var" and row["scale_lr_factor"] == 1]
    cells = dict.fromkeys(tuple(row[key] for key in CELL_KEYS) for row in baselines)
    result = []
    for cell in cells:
        estimator, optimizer, lr, z_dim = cell
        base = {row["seed"]: row for row in baselines if tuple(row[key] for key in CELL_KEYS) == cell}
        others: dict[str, list[dict]] = {}
        for row in heads:
            if (row["estimator"], row["optimizer"], row["z_dim"]) != (estimator, optimizer, z_dim):
                continue
            if row["seed"] not in base or (row["head"], row["scale_lr_factor"]) == ("log_var", 1.0):
                continue
            if math.isclose(row["lr"], lr):
                others.setdefault(f"{run_label(row)} - log_var", []).append(row)
            elif row["head"] == "log_scale" and row["scale_lr_factor"] == 1 and math.isclose(row["lr"], lr / 2):
                others.setdefault(f"log_scale at lr {row['lr']:g} - log_var at lr {lr:g}", []).append(row)
        for label, rows in others.items():
            epochs = min(len(row["test_elbo_curve"]) for row in rows)
            early = min(early_epoch, epochs)
            differences = {
                at: [row["test_elbo_curve"][at - 1] - base[row["seed"]]["test_elbo_curve"][at - 1] for row in rows]
                for at in (early, epochs)
            }
            early_mean, early_se = mean_and_se(differences[early])
            last_mean, last_se = mean_and_se(differences[epochs])
            result.append(
                {
                    "cell": cell_name(base[next(iter(base))]),
                    "label": label,
                    "seeds": len(rows),
                    "early_epoch": early,
                    "early": early_mean,
                    "early_se": early_se,
                    "last_epoch": epochs,
                    "last": last_mean,
                    "last_se": last_se,
                }
            )
    return result


def run_groups(heads: list[dict]) -> dict[tuple, list[dict]]:
    """The runs by (cell, head, factor): the seeds of one setting."""
    groups: dict[tuple, list[dict]] = {}
    for row in heads:
        key = (*(row[key] for key in CELL_KEYS), row["head"], row["scale_lr_factor"])
        groups.setdefault(key, []).append(row)
    return groups
