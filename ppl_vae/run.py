"""Run folders: train a configured VAE into a folder, evaluate it, draw its figures, load it back.

A run folder holds::

    config.json        the RunConfig (plain JSON)
    checkpoint.pt      weights, optimizer state, RNG states, history (loaded with weights_only=True)
    metrics.json       test ELBO and log p(x) with standard errors, nats per example; the history
    elbo.png  reconstructions.png  samples.png  latent.png
    report.json  report.md  posterior.nc  khat.png  kl_per_dim.png  gap_histogram.png  [manifold.png]
                       written by ``evaluate_run(..., report=ReportConfig())`` (see ppl_vae.report)

Example::

    config = RunConfig(model=model_config_for(load_dataset("digits"), z_dim=8), train=TrainConfig(epochs=30))
    metrics = train_run(config, "runs/digits")
    vae = load("runs/digits")
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from ppl_vae.checkpoint import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    load_checkpoint,
    read_run_folder,
    save_json,
)
from ppl_vae.config import EvalConfig, ModelConfig, RunConfig
from ppl_vae.data import Dataset, load_dataset
from ppl_vae.errors import InputError
from ppl_vae.evaluate import elbo, iwae_log_likelihood, observed_test_set
from ppl_vae.report import ReportConfig, write_report
from ppl_vae.train import fit, seed_everything, with_lr_horizon
from ppl_vae.vae import VAE

PLOT_FILES = ("elbo.png", "reconstructions.png", "samples.png", "latent.png")


def model_config_for(data: Dataset, conditional: bool = False, **options) -> ModelConfig:
    """A :class:`ModelConfig` sized for ``data`` (``x_dim``, ``image_shape``, and with ``conditional`` its
    ``num_classes``); ``options`` set the other fields."""
    if conditional:
        if data.num_classes == 0:
            raise InputError(f"--conditional needs labels, but data set {data.name!r} has none")
        options["num_classes"] = data.num_classes
    return ModelConfig(x_dim=data.x_dim, image_shape=data.image_shape, **options)


def load_config(run_dir: str | Path) -> RunConfig:
    """The :class:`RunConfig` stored in a run folder."""
    run_dir = read_run_folder(run_dir)
    return RunConfig.from_json((run_dir / CONFIG_FILE).read_text())


def load_data(config: RunConfig) -> Dataset:
    """The data set named by a run's config, checked against the model's size."""
    data = load_dataset(config.data.name, root=config.data.root, download=config.data.download)
    if (data.x_dim, data.image_shape) != (config.model.x_dim, config.model.image_shape):
        raise InputError(
            f"data set {config.data.name!r} has images of shape {data.image_shape}, the run's model expects "
            f"{config.model.image_shape}"
        )
    return data


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> VAE:
    """The trained VAE of a run folder, rebuilt from ``config.json`` and loaded with ``weights_only=True``."""
    config = load_config(run_dir)
    vae = VAE(config.model)
    state = load_checkpoint(Path(run_dir) / CHECKPOINT_FILE, map_location=device)
    try:
        vae.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as error:
        lines = [line.strip() for line in str(error).strip().splitlines()] or [repr(error)]
        reason = lines[1] if len(lines) > 1 else lines[0]  # torch's first line is only "Error(s) in loading ..."
        raise InputError(f"checkpoint in {str(run_dir)!r} does not match its {CONFIG_FILE}: {reason}") from None
    return vae.to(device).eval()


def train_run(config: RunConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True) -> dict:
    """Train ``config`` into ``run_dir``, evaluate it and draw its figures; returns the metrics.

    ``resume=True`` continues the checkpoint in ``run_dir`` (its ``config.json`` must equal ``config`` except for
    ``train.epochs``). Without it, a folder that already holds a run is refused, so nothing is overwritten.
    """
    run_dir = Path(run_dir)
    if resume:
        stored = load_config(run_dir)
        if stored.model != config.model or stored.data != config.data:
            raise InputError(
                f"cannot resume {str(run_dir)!r} with a different model or data set than its {CONFIG_FILE}"
            )
    elif (run_dir / CHECKPOINT_FILE).exists():
        raise InputError(f"run folder {str(run_dir)!r} already holds a run: pass --resume or choose another --out")
    data = load_data(config)
    started = stored.train.lr_horizon if resume else None
    config = dataclasses.replace(config, train=with_lr_horizon(config.train, data.x_train.shape[0], started))
    run_dir.mkdir(parents=True, exist_ok=True)
    save_json(run_dir / CONFIG_FILE, json.loads(config.to_json()))

    seed_everything(config.train.seed)
    vae = VAE(config.model)
    history = fit(vae, data, config.train, run_dir=run_dir, resume=resume, progress=progress)
    metrics = evaluate_vae(vae, data, config.evaluation)
    metrics.update(
        train_elbo=history[-1]["train_elbo"],
        epochs=len(history),
        seconds=sum(record["seconds"] for record in history),
        history=history,
    )
    save_json(run_dir / METRICS_FILE, metrics)
    draw_figures(vae, data, history, run_dir)
    return metrics


def evaluate_vae(vae: VAE, data: Dataset, evaluation: EvalConfig, log_likelihood: bool = True) -> dict:
    """Test ELBO and IWAE log p(x) with their standard errors, nats per example (keys as in ``metrics.json``).

    ``log_likelihood=False`` leaves the IWAE estimate out, for a caller that gets it from the diagnostics' draws.
    """
    device = next(vae.parameters()).device
    x_test = observed_test_set(data.x_test, vae.likelihood.binary).to(device)
    y_test = _labels(vae, data.y_test, device)
    test_elbo = elbo(vae.model, vae.guide, x_test, num_particles=evaluation.num_particles, y=y_test)
    metrics = {
        "conditional": y_test is not None,
        "test_elbo": test_elbo.mean,
        "test_elbo_se": test_elbo.se,
        "k": evaluation.k,
        "elbo_particles": evaluation.num_particles,
    }
    if log_likelihood:
        estimate = iwae_log_likelihood(vae.model, vae.guide, x_test, k=evaluation.k, y=y_test)
        metrics.update(test_log_likelihood=estimate.mean, test_log_likelihood_se=estimate.se)
    return metrics


def evaluate_run(
    run_dir: str | Path, evaluation: EvalConfig, device: str = "cpu", report: ReportConfig | None = None
) -> dict:
    """Reload a run, evaluate it with ``evaluation`` and update its ``metrics.json``; returns the metrics.

    With ``report`` (a :class:`~ppl_vae.report.ReportConfig`) also write the diagnostics report (``report.json``,
    ``report.md``, ``posterior.nc``, figures; see :mod:`ppl_vae.report`) with ``evaluation.k`` importance samples per
    example; the returned dict then holds the contents of ``report.json`` under ``"report"``, and the IWAE estimate
    in ``metrics.json`` is the report's (the same estimator with the same ``k``, computed once).
    """
    run_dir = read_run_folder(run_dir)
    config = load_config(run_dir)
    vae = load(run_dir, device=device)
    data = load_data(config)
    if report is not None:
        report.check(evaluation.k, data.x_test.shape[0])
    reporting = report is not None and not config.model.num_classes  # diagnose() passes no labels (yet)
    seed_everything(config.train.seed)
    metrics_path = run_dir / METRICS_FILE
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics.update(evaluate_vae(vae, data, evaluation, log_likelihood=not reporting))
    if reporting:
        written = write_report(vae, data, run_dir, evaluation.k, report)
        metrics.update(
            test_log_likelihood=written["log_likelihood"], test_log_likelihood_se=written["log_likelihood_se"]
        )
    save_json(metrics_path, metrics)
    if reporting:
        return {**metrics, "report": written}
    if report is not None:
        return {**metrics, "report_skipped": "the diagnostics report does not pass labels to a conditional VAE yet"}
    return metrics


def draw_figures(vae: VAE, data: Dataset, history: list[dict], run_dir: Path, num_images: int = 32) -> list[Path]:
    """The run's PNGs: ELBO curves, test images above their reconstructions, prior samples, latent means by label."""
    from ppl_vae import plots

    device = next(vae.parameters()).device
    shape = data.image_shape
    x_test = observed_test_set(data.x_test, vae.likelihood.binary).to(device)
    y_test = _labels(vae, data.y_test, device)
    y_shown = None if y_test is None else y_test[:num_images]
    with torch.no_grad():
        z_loc, _ = vae.encode(x_test, y_test)
    if y_test is None:
        samples = plots.plot_image_grid(
            vae.sample(64), shape, run_dir / "samples.png", "Pixel means of p(x | z), z ~ p(z)"
        )
    else:
        classes = torch.arange(vae.config.num_classes, device=device).repeat_interleave(8)
        samples = plots.plot_class_samples(vae.sample(len(classes), y=classes), classes, shape, run_dir / "samples.png")
    return [
        plots.plot_training_curves(history, run_dir / "elbo.png", title=f"ELBO per epoch on {data.name}"),
        plots.plot_reconstructions(
            x_test[:num_images], vae.reconstruct(x_test[:num_images], y_shown), shape, run_dir / "reconstructions.png"
        ),
        samples,
        plots.plot_latent_scatter(
            z_loc, data.y_test, run_dir / "latent.png", "E_q[z | x]" if y_test is None else "E_q[z | x, y]"
        ),
    ]


def _labels(vae: VAE, y: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """The labels ``y`` on ``device`` for a conditional VAE; ``None`` for a plain one."""
    return y.to(device) if vae.config.num_classes else None


def default_run_dir(data_name: str) -> Path:
    """``runs/<data set>-<timestamp>``: a fresh folder per run, so a repeated command never overwrites a run."""
    return Path("runs") / f"{Path(data_name).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
