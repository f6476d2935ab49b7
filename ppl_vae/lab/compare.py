"""``compare_kl``: the KL lab's study of one model (the built-in VAE or a user's program) and one data set, and
``prepare``: the model and data to study, fresh or from a run folder."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from ppl_vae.data import Dataset
from ppl_vae.errors import InputError
from ppl_vae.evaluate import program_test_set
from ppl_vae.lab.heads_study import compare_heads, head_layer
from ppl_vae.lab.measure import (
    LabConfig,
    agreement,
    describe_meanfield,
    estimator_step,
    meanfield_check,
    measure_estimator,
    parameter_groups,
    train_from,
)
from ppl_vae.programs import UserProgram, as_user_program
from ppl_vae.train import seed_everything
from ppl_vae.vae import VAE


def compare_kl(
    vae: VAE | UserProgram,
    data: Dataset,
    settings: LabConfig,
    heads: bool = False,
    progress: bool = True,
    head_runs: list | None = None,
    fresh=None,
) -> dict:
    """Compare the estimators of ``settings.estimators`` on ``vae`` (the built-in VAE, fresh or trained, or a user's
    program: any latent sites, labels ``y`` passed where the program takes them) and ``data``.

    At the current parameters, on the first ``B`` test images (and their labels), each estimator is evaluated ``R``
    times (:func:`~ppl_vae.lab.measure.measure_estimator`); then, if ``E >= 1``, a copy of the VAE (a user's program:
    the program itself, its weights restored afterwards) trains ``E`` epochs from these same weights under each
    estimator. ``meanfield`` is left out, with the reason in ``meanfield_note``, where it is not the unbiased
    closed-form estimator its name says (:func:`~ppl_vae.lab.measure.meanfield_check`: a guide that is not mean-field,
    or a site without a registered closed form); every other estimator that cannot serve the model (the hand-written
    classic losses on anything but the one-latent Bernoulli VAE) stops the study before any work, with one line. With
    ``heads=True`` :func:`~ppl_vae.lab.heads_study.compare_heads` runs too (key ``heads``), with ``head_runs`` and
    ``fresh`` (its ``runs`` and ``fresh``: ``None`` for every head under each estimator at ``settings``).

    Returns:
        A JSON-ready dict: ``estimators`` (one dict per estimator measured: ``name``, ``elbo_mean``, ``elbo_se``,
        ``grad_var_<group>`` for each of ``parameter_groups``, ``ms_per_step``, ``test_elbo_curve`` (one number per
        epoch, nats per example), ``train_ms_per_step``), ``skipped`` (estimator -> why it was left out),
        ``agreement`` (each estimator's ELBO against the analytic one, in standard errors), ``meanfield_kl`` (site ->
        closed form registered), ``meanfield_dependent`` (guide site -> the latent sites drawn before it, for sites
        that depend on them), ``meanfield_note``, ``settings``, ``model`` (the VAE's
        :class:`~ppl_vae.config.ModelConfig`; ``None`` for a program), ``parameter_groups``.
    """
    program = as_user_program(vae)
    if program.labels and data.y_test is None:
        raise InputError(f"data set {data.name!r} has no labels: this model takes labels y")
    device = torch.device(settings.device)
    program.modules.to(device)
    x_test, y_test = program_test_set(program, data)
    x = x_test[: settings.batch_size]
    args = () if y_test is None else (y_test[: settings.batch_size],)
    meanfield = meanfield_check(program.model, program.guide, x, *args)
    skipped = {"meanfield": meanfield.problem} if "meanfield" in settings.estimators and meanfield.problem else {}
    estimators = [name for name in settings.estimators if name not in skipped]
    if not estimators:
        raise InputError(f"--estimators meanfield: {meanfield.problem}")
    for estimator in estimators:  # an estimator or a heads study that cannot serve the model refuses before any work
        estimator_step(vae, estimator, settings)
    if heads:
        head_layer(vae)
    initial_state = {name: value.detach().clone() for name, value in program.modules.state_dict().items()}
    rows = []
    for estimator in estimators:
        started = time.perf_counter()
        row = {"name": estimator, **measure_estimator(vae, estimator, x, settings, *args)}
        if settings.epochs >= 1:
            student = VAE(vae.config) if isinstance(vae, VAE) else vae  # a program trains in place
            row.update(train_from(student, initial_state, data, settings.train_config(estimator)))
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
        "fixed_minibatch": f"the first {x.shape[0]} test images" + (" and their labels" if args else ""),
        "meanfield_kl": meanfield.closed_form,
        "meanfield_dependent": meanfield.dependent,
        "meanfield_note": describe_meanfield(meanfield.closed_form, meanfield.dependent),
        "skipped": skipped,
        "estimators": rows,
        "agreement": agreement(rows),
    }
    if heads:
        result["heads"] = compare_heads(vae, data, settings, progress=progress, runs=head_runs, fresh=fresh)
    return result


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
    ``scale_param``, ``latent_layers``, ...). A program run is rebuilt only with ``trust_program=True`` (see
    :func:`ppl_vae.run.load`)."""
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
