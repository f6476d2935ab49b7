"""The KL lab: Monte Carlo KL, analytic KL and "sticking the landing", measured side by side.

For ``q(z | x) = N(loc, scale)`` and ``p(z) = N(0, I)`` the ELBO of an example has one value and several estimators,
all with the same expectation (names in :data:`ppl_vae.objectives.OBJECTIVES`)::

    trace               Pyro Trace_ELBO             log p(x | z) + log p(z) - log q(z | x)    at z = loc + scale * eps
    meanfield           Pyro TraceMeanField_ELBO    log p(x | z) - KL(q || p)                 KL in closed form
    reference-mc        hand-written torch          as trace
    reference-analytic  hand-written torch          as meanfield (the classic -0.5 * sum(1 + log_var - ...))
    stl                 Pyro, TraceSTL_ELBO         as trace, but the score term d log q / d(params) at fixed z
                                                    leaves the encoder's gradient (reference-stl: hand-written)

With the same ``eps`` the Pyro and the hand-written estimators agree to rounding (``tests/test_reference.py`` feeds
one ``eps`` through both with :class:`FixedNoise`); the Monte Carlo and the analytic KL differ only by a term of
mean zero, so they differ in variance, not in value. :func:`compare_kl` measures that:

- at fixed parameters, on one fixed minibatch of ``B`` test images, ``R`` repetitions of each estimator give the mean
  ELBO (nats per example) with its standard error, the gradient variance (the per-coordinate variance over the ``R``
  repetitions of the gradient of the per-example loss ``-ELBO``, summed over the encoder's and over the decoder's
  parameters; for a user's program (:class:`~ppl_vae.programs.UserProgram`) over each of its modules) and the
  time of one loss-and-gradient evaluation;
- then each estimator trains ``E`` epochs from the same initial weights (:func:`ppl_vae.train.fit`, same seed, same
  minibatches) and its test ELBO is recorded after every epoch.

``TraceMeanField_ELBO`` uses the closed form only where ``KL(q || p)`` is registered with ``torch.distributions.kl``;
elsewhere (a flow guide, a ``TransformedDistribution``) it silently falls back to Monte Carlo.
:func:`analytic_kl_sites` detects that and the report says so.

:func:`compare_heads` answers "why log-variance and not log-sigma?": each scale head (``log_scale``, ``log_var``,
``softplus``) trains from the same initial q(z | x) (:func:`start_heads_alike`) under the Monte Carlo and the analytic
KL, and its test ELBO per epoch is recorded.

Example::

    vae = VAE(model_config_for(data, z_dim=8))
    result = compare_kl(vae, data, LabConfig(repetitions=200, epochs=10))
    print(write_report(result, "runs/compare-kl"))    # compare_kl.json, compare_kl.md, compare_kl.png
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributions as td
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import nn

from ppl_vae.checkpoint import save_json
from ppl_vae.config import TrainConfig, require, require_int, require_registered
from ppl_vae.data import Dataset
from ppl_vae.errors import InputError
from ppl_vae.evaluate import observed_test_set
from ppl_vae.heads import HEADS, convert
from ppl_vae.objectives import OBJECTIVES, make_step
from ppl_vae.programs import UserProgram, as_user_program
from ppl_vae.train import fit, seed_everything
from ppl_vae.vae import VAE

ESTIMATORS = ("trace", "meanfield", "reference-analytic", "reference-mc", "stl")
"""The estimators compared by default: Pyro's two ELBOs, the two hand-written classic losses, and STL."""

HEAD_ESTIMATORS = ("trace", "meanfield")
"""The heads study trains every head under the Monte Carlo and the analytic KL (Pyro's ELBOs)."""


@dataclass(frozen=True)
class LabConfig:
    """Settings of :func:`compare_kl` and :func:`compare_heads`.

    Attributes:
        estimators: objective names (``ppl_vae.objectives.OBJECTIVES``) to compare.
        repetitions: ``R``, evaluations of each estimator at fixed parameters (at least 2, for a variance).
        epochs: ``E``, training epochs per estimator (0: measure at fixed parameters only; the heads study then
            trains 1).
        batch_size: ``B``, the fixed minibatch (the first ``B`` test images) and the training minibatch size.
        lr, num_particles, seed, device, eval_particles: as in :class:`~ppl_vae.config.TrainConfig`.
    """

    estimators: tuple[str, ...] = ESTIMATORS
    repetitions: int = 200
    epochs: int = 8
    batch_size: int = 64
    lr: float = 1e-3
    num_particles: int = 1
    seed: int = 0
    device: str = "cpu"
    eval_particles: int = 10

    def __post_init__(self):
        object.__setattr__(self, "estimators", tuple(self.estimators))
        require(len(self.estimators) >= 1, "--estimators must name at least one objective")
        require(len(set(self.estimators)) == len(self.estimators), f"--estimators repeats a name: {self.estimators}")
        for name in self.estimators:
            require_registered(OBJECTIVES, name, "--estimators")
        require(
            isinstance(self.repetitions, int) and self.repetitions >= 2,
            f"--repetitions must be an integer >= 2 (a variance needs two draws), got {self.repetitions!r}",
        )
        require(
            isinstance(self.epochs, int) and not isinstance(self.epochs, bool) and self.epochs >= 0,
            f"--epochs must be an integer >= 0, got {self.epochs!r}",
        )
        require_int(self.eval_particles, "--eval-particles")
        self.train_config("trace")  # checks batch size, lr, particles, seed and device the way fit() will

    def train_config(self, estimator: str) -> TrainConfig:
        """The :class:`TrainConfig` that trains (or builds the step of) ``estimator``; at least one epoch."""
        return TrainConfig(
            epochs=max(1, self.epochs),
            batch_size=self.batch_size,
            lr=self.lr,
            elbo=estimator,
            num_particles=self.num_particles,
            seed=self.seed,
            device=self.device,
            eval_particles=self.eval_particles,
        )


# --- feeding one eps through Pyro, and the closed-form check ---------------------------------------------------------
class FixedNoise(Messenger):
    """Draw a Normal guide's site ``site`` as ``loc + scale * eps`` with a given ``eps`` instead of fresh noise.

    The value stays a differentiable function of ``loc`` and ``scale`` (the reparameterization), so Pyro's ELBOs
    give the same loss *and* the same gradients as a hand-written loss fed the same ``eps``.

    Arguments:
        eps: standard normal noise broadcastable to the site's value, e.g. ``(B, z_dim)``, or
            ``(num_particles, B, z_dim)`` under ``vectorize_particles=True``.
        site: the latent site's name.

    Example::

        guide = FixedNoise(eps)(vae.guide)
        loss = Trace_ELBO().differentiable_loss(vae.model, guide, x)
    """

    def __init__(self, eps: torch.Tensor, site: str = "z"):
        super().__init__()
        self.eps = eps
        self.site = site

    def _pyro_sample(self, msg) -> None:
        if msg["name"] != self.site or msg["is_observed"]:
            return
        fn = msg["fn"]
        base = fn.base_dist if isinstance(fn, td.Independent) else fn
        if not isinstance(base, td.Normal):
            raise TypeError(f"FixedNoise needs a Normal guide at site {self.site!r}, got {type(base).__name__}")
        msg["value"] = base.loc + base.scale * self.eps


def has_analytic_kl(q: td.Distribution, p: td.Distribution) -> bool:
    """Whether ``KL(q || p)`` has a closed form registered with ``torch.distributions.kl`` (Pyro adds its own there).

    This is exactly the test ``TraceMeanField_ELBO`` makes at each latent site: where it is ``False`` it catches the
    ``NotImplementedError`` and uses the Monte Carlo term ``log p(z) - log q(z)`` instead, without a warning.
    """
    try:
        td.kl_divergence(q, p)
    except NotImplementedError:
        return False
    return True


def analytic_kl_sites(model, guide, x: torch.Tensor) -> dict[str, bool]:
    """For each latent site of ``model``: whether ``TraceMeanField_ELBO`` can use the closed-form KL there."""
    with torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    return {
        name: has_analytic_kl(guide_trace.nodes[name]["fn"], site["fn"])
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    }


def describe_meanfield(kl_sites: dict[str, bool]) -> str:
    """One sentence: where ``TraceMeanField_ELBO`` is analytic and where it silently falls back to Monte Carlo."""
    fallback = sorted(name for name, analytic in kl_sites.items() if not analytic)
    if not fallback:
        return f"meanfield uses the closed-form KL at {', '.join(sorted(kl_sites))}."
    return (
        f"meanfield has no closed-form KL at {', '.join(fallback)} (none registered for this guide and prior): "
        "Pyro silently falls back to the Monte Carlo KL there, so 'meanfield' measures the same estimator as 'trace'."
    )


# --- measurements at fixed parameters ---------------------------------------------------------------------------
class _GradientVariance:
    """Per-coordinate variance of a vector over repeated draws, shifted by the first draw for numerical safety."""

    def __init__(self):
        self.count, self.shift, self.total, self.total_sq = 0, None, None, None

    def add(self, vector: torch.Tensor) -> None:
        vector = vector.detach().double()
        if self.shift is None:
            self.shift, self.total, self.total_sq = vector, torch.zeros_like(vector), torch.zeros_like(vector)
        delta = vector - self.shift
        self.total += delta
        self.total_sq += delta * delta
        self.count += 1

    def summed(self) -> float:
        """``sum_i var_i`` with the unbiased ``1 / (R - 1)`` normalization."""
        return ((self.total_sq - self.total**2 / self.count) / (self.count - 1)).sum().item()


def _flat_gradient(parameters: list[nn.Parameter]) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in parameters])


def parameter_groups(vae: VAE | UserProgram) -> dict[str, list[nn.Parameter]]:
    """The parameters whose gradient variance :func:`measure_estimator` reports, by group: the built-in VAE's
    ``encoder`` and ``decoder``; a user's program's modules, one group per name of a dict of modules (a single module
    is one group, ``modules``)."""
    if isinstance(vae, VAE):
        return {"encoder": list(vae.encoder.parameters()), "decoder": list(vae.decoder.parameters())}
    if isinstance(vae.modules, nn.ModuleDict):
        return {name: list(module.parameters()) for name, module in vae.modules.items()}
    return {"modules": list(vae.modules.parameters())}


def measure_estimator(vae: VAE | UserProgram, estimator: str, x: torch.Tensor, settings: LabConfig) -> dict:
    """``R`` evaluations of ``estimator`` on the minibatch ``x`` at the current parameters (left unchanged) of the
    VAE or a user's program.

    Returns:
        ``elbo_mean``, ``elbo_se``: the minibatch ELBO estimate, nats per example, mean and standard error over R;
        ``grad_var_<group>`` for each group of :func:`parameter_groups` (``grad_var_encoder``, ``grad_var_decoder``
        for the VAE): ``sum_i Var[d loss / d theta_i]`` over R for the per-example loss ``-ELBO / B``, summed over
        that group's parameters, nats^2 per example^2 per parameter unit;
        ``ms_per_step``: median milliseconds of one loss-and-gradient evaluation (no optimizer update).

    The RNG is seeded with ``settings.seed`` first, so estimators that draw z the same way (all five defaults do) see
    the same noise: their differences are paired, not blurred by independent draws.
    """
    step = make_step(vae, settings.train_config(estimator))
    modules = as_user_program(vae).modules
    parts = parameter_groups(vae)
    variances = {part: _GradientVariance() for part in parts}
    elbos, milliseconds = [], []
    seed_everything(settings.seed)
    for _ in range(settings.repetitions):
        modules.zero_grad(set_to_none=True)
        started = time.perf_counter()
        loss = step.loss(x) / x.shape[0]
        loss.backward()
        milliseconds.append(1000 * (time.perf_counter() - started))
        elbos.append(-loss.item())
        for part, parameters in parts.items():
            variances[part].add(_flat_gradient(parameters))
    modules.zero_grad(set_to_none=True)
    return {
        "elbo_mean": statistics.fmean(elbos),
        "elbo_se": statistics.stdev(elbos) / math.sqrt(len(elbos)),
        **{f"grad_var_{part}": variance.summed() for part, variance in variances.items()},
        "ms_per_step": statistics.median(milliseconds),
    }


def _train_from(
    vae: VAE | UserProgram,
    initial_state: dict,
    data: Dataset,
    train_config: TrainConfig,
    source_head: str | None = None,
) -> dict:
    """Train ``vae`` (or a user's program) from ``initial_state`` (heads aligned to ``source_head`` if given); curves
    and time per step."""
    seed_everything(train_config.seed)
    as_user_program(vae).modules.load_state_dict(initial_state)
    if source_head is not None:
        start_heads_alike(vae, source_head)
    history = fit(vae, data, train_config, progress=False)
    steps = math.ceil(data.x_train.shape[0] / train_config.batch_size) * len(history)
    return {
        "test_elbo_curve": [record["test_elbo"] for record in history],
        "train_elbo_curve": [record["train_elbo"] for record in history],
        "train_ms_per_step": 1000 * sum(record["seconds"] for record in history) / steps,
    }


def compare_kl(
    vae: VAE | UserProgram, data: Dataset, settings: LabConfig, heads: bool = False, progress: bool = True
) -> dict:
    """Compare the estimators of ``settings.estimators`` on ``vae`` (fresh or trained; or a user's program without
    labels) and ``data``.

    At the current parameters, on the first ``B`` test images, each estimator is evaluated ``R`` times
    (:func:`measure_estimator`); then, if ``E >= 1``, a copy of the VAE (a user's program: the program itself, its
    weights restored afterwards) trains ``E`` epochs from these same weights under each estimator. With
    ``heads=True`` (built-in VAE only) :func:`compare_heads` runs too (key ``heads``).

    Returns:
        A JSON-ready dict: ``estimators`` (one dict per estimator: ``name``, ``elbo_mean``, ``elbo_se``,
        ``grad_var_<group>`` for each of ``parameter_groups``, ``ms_per_step``, ``test_elbo_curve`` (one number per
        epoch, nats per example), ``train_ms_per_step``), ``agreement`` (each estimator's ELBO against the analytic
        one, in standard errors), ``meanfield_kl`` (site -> closed form used), ``meanfield_note``, ``settings``,
        ``model`` (the VAE's :class:`~ppl_vae.config.ModelConfig`; ``None`` for a program), ``parameter_groups``.
    """
    program = as_user_program(vae)
    if program.labels:
        raise InputError("compare-kl measures programs without labels; this one takes labels y (a conditional model)")
    if heads and not isinstance(vae, VAE):
        raise InputError("--heads rebuilds the built-in VAE with each scale head: a user's program has none")
    device = torch.device(settings.device)
    program.modules.to(device)
    x = observed_test_set(data.x_test, program.binary)[: settings.batch_size].to(device)
    initial_state = {name: value.detach().clone() for name, value in program.modules.state_dict().items()}
    kl_sites = analytic_kl_sites(program.model, program.guide, x)
    rows = []
    for estimator in settings.estimators:
        started = time.perf_counter()
        row = {"name": estimator, **measure_estimator(vae, estimator, x, settings)}
        if settings.epochs >= 1:
            student = VAE(vae.config) if isinstance(vae, VAE) else vae  # a program trains in place
            row.update(_train_from(student, initial_state, data, settings.train_config(estimator)))
            program.modules.load_state_dict(initial_state)  # the next estimator is measured at the same weights
        else:
            row.update(test_elbo_curve=[], train_elbo_curve=[], train_ms_per_step=None)
        rows.append(row)
        if progress:
            print(f"  {estimator}: measured and trained in {time.perf_counter() - started:.1f} s", flush=True)
    result = {
        "data": data.name,
        "model": dataclasses.asdict(vae.config) if isinstance(vae, VAE) else None,
        "parameter_groups": list(parameter_groups(vae)),
        "settings": dataclasses.asdict(settings),
        "fixed_minibatch": f"the first {x.shape[0]} test images",
        "meanfield_kl": kl_sites,
        "meanfield_note": describe_meanfield(kl_sites),
        "estimators": rows,
        "agreement": agreement(rows),
    }
    if heads:
        result["heads"] = compare_heads(vae, data, settings, progress=progress)
    return result


def agreement(rows: list[dict]) -> list[dict]:
    """Each estimator's mean ELBO against the baseline (``meanfield``, else ``reference-analytic``, else the first):
    the difference, its standard error ``sqrt(se_a^2 + se_b^2)`` and ``z = difference / se`` (|z| < 3 agrees)."""
    names = [row["name"] for row in rows]
    baseline_name = next((name for name in ("meanfield", "reference-analytic") if name in names), names[0])
    baseline = rows[names.index(baseline_name)]
    result = []
    for row in rows:
        if row is baseline:
            continue
        difference = row["elbo_mean"] - baseline["elbo_mean"]
        se = math.hypot(row["elbo_se"], baseline["elbo_se"])
        result.append(
            {
                "estimator": row["name"],
                "baseline": baseline_name,
                "difference": difference,
                "se": se,
                "z": difference / se if se > 0 else (0.0 if difference == 0 else math.inf),
            }
        )
    return result


# --- heads ---------------------------------------------------------------------------------------------------------
def _last_linear(vae: VAE) -> nn.Linear:
    linears = [module for module in vae.encoder.modules() if isinstance(module, nn.Linear)]
    if not linears or linears[-1].out_features != 2 * vae.config.z_dim:
        raise InputError(
            f"the heads study needs an encoder whose last layer is nn.Linear with 2 * z_dim = {2 * vae.config.z_dim} "
            f"outputs, got --net {vae.config.net}"
        )
    return linears[-1]


@torch.no_grad()
def start_heads_alike(vae: VAE, source_head: str) -> None:
    """Rewrite the h rows of the encoder's last layer, in place, so that every head starts from the same q(z | x).

    Rows ``z_dim:`` of the last ``nn.Linear`` emit ``h``. Their weights become 0 and their bias
    ``b -> convert(b, source_head, vae's head)``, so ``scale(x) = HEADS[source_head].scale(b)`` under any head and
    ``loc(x)`` is untouched. (``log_scale`` and ``log_var`` are affine in each other, ``h_log_var = 2 h_log_scale``,
    and could keep x-dependent rows; ``softplus`` is not, so an identical start for all three needs h constant in x.)
    """
    layer = _last_linear(vae)
    z_dim = vae.config.z_dim
    layer.weight[z_dim:] = 0.0
    layer.bias[z_dim:] = convert(layer.bias[z_dim:], source_head, vae.config.scale_param)


def compare_heads(vae: VAE, data: Dataset, settings: LabConfig, progress: bool = True) -> list[dict]:
    """Train every scale head under the Monte Carlo and the analytic KL from the same initial q(z | x).

    Each run rebuilds the VAE with ``scale_param=head``, loads ``vae``'s weights, aligns the head rows with
    :func:`start_heads_alike` (from ``vae``'s own head), and trains ``settings.epochs`` epochs (at least 1) with the
    same optimizer, seed and minibatches.

    Returns:
        One dict per (head, estimator): ``head``, ``estimator``, ``test_elbo_curve`` and ``train_elbo_curve`` (nats per
        example, one number per epoch), ``train_ms_per_step``.
    """
    initial_state = {name: value.detach().clone() for name, value in vae.state_dict().items()}
    _last_linear(vae)
    rows = []
    for head in HEADS:
        config = dataclasses.replace(vae.config, scale_param=head)
        for estimator in HEAD_ESTIMATORS:
            started = time.perf_counter()
            train_config = settings.train_config(estimator)
            trained = _train_from(VAE(config), initial_state, data, train_config, source_head=vae.config.scale_param)
            rows.append({"head": head, "estimator": estimator, **trained})
            if progress:
                print(f"  head {head}, {estimator}: trained in {time.perf_counter() - started:.1f} s", flush=True)
    return rows


# --- report --------------------------------------------------------------------------------------------------------
def format_report(result: dict) -> str:
    """The result as Markdown: the estimator table, the agreement check, the meanfield note, the heads table."""
    settings, model, groups = result["settings"], result["model"], result["parameter_groups"]
    what = (
        f"a user's program (parameter groups {', '.join(groups)})"
        if model is None
        else f"z_dim {model['z_dim']}, hidden {tuple(model['hidden'])}, head {model['scale_param']}"
    )
    lines = [
        f"Data {result['data']}, {what}; {settings['repetitions']} repetitions on "
        f"{result['fixed_minibatch']}; {settings['num_particles']} particle(s); training {settings['epochs']} epochs, "
        f"batch {settings['batch_size']}, lr {settings['lr']}, seed {settings['seed']}.",
        "",
        "| estimator | ELBO (nats per example) | std. error | "
        + "".join(f"grad. var. {group} | " for group in groups)
        + "ms per gradient | ms per training step | test ELBO after last epoch (nats per example) |",
        "|---|---:|---:|" + "---:|" * len(groups) + "---:|---:|---:|",
    ]
    for row in result["estimators"]:
        final = f"{row['test_elbo_curve'][-1]:.3f}" if row["test_elbo_curve"] else "-"
        train_ms = f"{row['train_ms_per_step']:.2f}" if row["train_ms_per_step"] is not None else "-"
        variances = "".join(f"{row[f'grad_var_{group}']:.4g} | " for group in groups)
        lines.append(
            f"| {row['name']} | {row['elbo_mean']:.3f} | {row['elbo_se']:.3f} | {variances}"
            f"{row['ms_per_step']:.2f} | {train_ms} | {final} |"
        )
    if result["agreement"]:
        lines += ["", "ELBO agreement at fixed parameters (difference in standard errors; |z| < 3 agrees):", ""]
    for check in result["agreement"]:
        verdict = "agrees" if abs(check["z"]) < 3 else "DISAGREES"
        lines.append(
            f"- {check['estimator']} - {check['baseline']}: {check['difference']:+.3f} +- {check['se']:.3f} nats per "
            f"example, z = {check['z']:+.2f} ({verdict})"
        )
    lines += ["", result["meanfield_note"]]
    if "heads" in result:
        lines += [
            "",
            "| head | estimator | test ELBO after epoch 1 | after last epoch | best (nats per example) |",
            "|---|---|---:|---:|---:|",
        ]
        for row in result["heads"]:
            curve = row["test_elbo_curve"]
            lines.append(
                f"| {row['head']} | {row['estimator']} | {curve[0]:.3f} | {curve[-1]:.3f} | {max(curve):.3f} |"
            )
    return "\n".join(lines) + "\n"


def write_report(result: dict, out_dir: str | Path) -> str:
    """Write ``compare_kl.json``, ``compare_kl.md``, ``compare_kl.png`` (and ``compare_kl_heads.png``) to ``out_dir``;
    returns the Markdown text."""
    from ppl_vae import plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = format_report(result)
    save_json(out_dir / "compare_kl.json", result)
    (out_dir / "compare_kl.md").write_text(text)
    title = f"{result['data']}: Monte Carlo vs analytic KL"
    plots.plot_compare_kl(
        result["estimators"], out_dir / "compare_kl.png", title=title, groups=result["parameter_groups"]
    )
    if "heads" in result:
        plots.plot_heads(result["heads"], out_dir / "compare_kl_heads.png", title=f"{result['data']}: scale heads")
    return text


def prepare(
    *,
    run_dir: str | Path | None = None,
    trust_program: bool = False,
    data_name: str = "digits",
    data_root: str | None = None,
    download: bool = False,
    seed: int = 0,
    **model_options,
) -> tuple[VAE | UserProgram, Dataset]:
    """The VAE and data set to study: the trained VAE (or user's program) of ``run_dir`` with its data, or a fresh VAE
    built after ``seed_everything(seed)`` on ``data_name`` with ``model_options`` (``z_dim``, ``hidden``,
    ``scale_param``, ...). A program run is rebuilt only with ``trust_program=True`` (see :func:`ppl_vae.run.load`)."""
    from ppl_vae.data import load_dataset
    from ppl_vae.run import load, load_config, load_data, model_config_for

    if run_dir is not None:
        if model_options:
            raise InputError(
                f"{', '.join('--' + key.replace('_', '-') for key in sorted(model_options))}: the model comes from "
                f"--run {str(run_dir)!r}; leave these out"
            )
        return load(run_dir, trust_program=trust_program), load_data(load_config(run_dir))
    data = load_dataset(data_name, root=data_root, download=download)
    seed_everything(seed)
    return VAE(model_config_for(data, **model_options)), data
