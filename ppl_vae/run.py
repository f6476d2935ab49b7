"""Run folders: train a configured VAE (or a user's program) into a folder, evaluate it, draw its figures, load it.

A run folder holds::

    config.json        the RunConfig (plain JSON): the built-in VAE's "model", or a user's "program" (the import path
                       of its build function, its arguments and the data's size; see ppl_vae.user_program)
    checkpoint.pt      weights, optimizer state, RNG states, history (loaded with weights_only=True)
    metrics.json       test ELBO and log p(x) with standard errors, nats per example; the history
                       (for a program: "figures_skipped", the figures it offers no function for, with the reason)
    test_values.npz    per-example test ELBO and log p(x), for paired comparisons (see ppl_vae.test_values)
    environment.json   package versions, Python, git commit, device, threads (see ppl_vae.environment)
    elbo.png  reconstructions.png  samples.png  latent.png
    report.json  report.md  posterior.nc  khat.png  kl_per_dim.png  gap_histogram.png  [manifold.png]
                       written by ``evaluate_run(..., report=ReportConfig())`` (see ppl_vae.report; built-in VAE only)

A program run is rebuilt by importing and calling its build function: :func:`load`, :func:`evaluate_run` and
``train_run(..., resume=True)`` do that only with ``trust_program=True``.

Example::

    config = RunConfig(model=model_config_for(load_dataset("digits"), z_dim=8), train=TrainConfig(epochs=30))
    metrics = train_run(config, "runs/digits")
    vae = load("runs/digits")

    spec = program_spec_for(load_dataset("digits"), "mypackage.models:build", {"z_dim": 4})
    train_run(RunConfig(program=spec, train=TrainConfig(epochs=30)), "runs/mine")
    program = load("runs/mine", trust_program=True)          # a UserProgram with its weights loaded
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import pyro
import torch

from ppl_vae import distributed
from ppl_vae import resume as resume_module
from ppl_vae.bounds import check_memory
from ppl_vae.checkpoint import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    load_checkpoint,
    read_run_folder,
    save_json,
)
from ppl_vae.config import EvalConfig, ModelConfig, ProgramSpec, RunConfig
from ppl_vae.data import Dataset, load_dataset, validation_split
from ppl_vae.environment import ENVIRONMENT_FILE, environment
from ppl_vae.errors import InputError
from ppl_vae.evaluate import elbo, iwae_log_likelihood, program_test_set
from ppl_vae.inputs import require_device
from ppl_vae.parts import check_run
from ppl_vae.programs import UserProgram, as_user_program
from ppl_vae.report import ReportConfig, write_report
from ppl_vae.semisupervised import discrete_program, draw_discrete_figures, evaluate_discrete, training_view
from ppl_vae.sharding import Sharding
from ppl_vae.test_values import observed_digest, save_test_values
from ppl_vae.train import fit, seed_everything, with_lr_horizon
from ppl_vae.user_program import build_program
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
    """The :class:`RunConfig` stored in a run folder, its parts checked (:func:`ppl_vae.parts.check_run`): a
    hand-edited ``config.json`` naming a part that does not exist, or one that refuses the rest of the config, fails
    here with one line."""
    if not isinstance(run_dir, (str, os.PathLike)):
        raise InputError(f"a run folder is a path (str or pathlib.Path), got {run_dir!r}")
    path = read_run_folder(run_dir) / CONFIG_FILE
    try:
        return check_run(RunConfig.from_json(path.read_text(encoding="utf-8")))
    except UnicodeDecodeError as error:
        raise InputError(
            f"{str(path)!r} is not UTF-8 text (byte {error.start}): expected the JSON 'ppl-vae train' wrote"
        ) from None
    except OSError as error:
        raise InputError(f"cannot read {str(path)!r}: {error.strerror or error}") from None
    except InputError as error:
        raise InputError(f"{str(path)!r}: {error}") from None


def program_spec_for(data: Dataset, path: str, args: dict | None = None) -> ProgramSpec:
    """A :class:`ProgramSpec` for the build function at ``path`` sized for ``data`` (``x_dim``, ``image_shape``,
    ``num_classes``), with the program's options ``args``."""
    return ProgramSpec(
        path=path, x_dim=data.x_dim, image_shape=data.image_shape, num_classes=data.num_classes, args=args or {}
    )


def load_data(config: RunConfig, name: str | None = None) -> Dataset:
    """The data set named by a run's config (or the data set ``name``: a registered name or an .npz path, read from
    the config's ``root``), checked against the model's (or the program's) size."""
    name = config.data.name if name is None else name
    data = load_dataset(name, root=config.data.root, download=config.data.download)
    sized = config.model or config.program
    if (data.x_dim, data.image_shape) != (sized.x_dim, sized.image_shape):
        raise InputError(
            f"data set {name!r} has images of shape {data.image_shape}, the run's model expects {sized.image_shape}"
        )
    return data


def require_trusted(run_dir: str | Path, config: RunConfig, trust_program: bool) -> None:
    """Refuse to rebuild the program of a run folder unless the caller trusts it: rebuilding imports and runs the
    code that the folder's ``config.json`` names."""
    if config.program is not None and not trust_program:
        raise InputError(
            f"{str(run_dir)!r} was trained with the program {config.program.path!r}; loading it imports and runs that "
            "module: pass --trust-program (Python: trust_program=True) if you trust it"
        )


def load(run_dir: str | Path, device: str | torch.device = "cpu", *, trust_program: bool = False) -> VAE | UserProgram:
    """The trained model of a run folder, rebuilt from ``config.json`` and loaded with ``weights_only=True``: the
    :class:`~ppl_vae.vae.VAE` of a built-in run, the :class:`~ppl_vae.programs.UserProgram` of a program run
    (whose build function is imported and called only with ``trust_program=True``)."""
    config = load_config(run_dir)
    require_device(device)  # before the checkpoint is read: torch would blame the checkpoint for a bad device
    require_trusted(run_dir, config, trust_program)
    trained = build_trained(config)
    _load_weights(trained, run_dir, device, config)
    as_user_program(trained).modules.to(device).eval()
    return trained


def _load_weights(
    trained: VAE | UserProgram, run_dir: str | Path, device: str | torch.device, config: RunConfig
) -> dict:
    """Load the checkpoint's weights into ``trained``; returns the checkpoint. A mismatch (a changed config.json, or
    a program whose build function now makes other modules) is one line naming the first difference; so is a
    config.json whose model, program or data set differ from those the checkpoint stored when it was trained."""
    state = load_checkpoint(Path(run_dir) / CHECKPOINT_FILE, map_location=device)
    trained_with = state.get("config")
    if isinstance(trained_with, dict):
        sections, current = ("model", "program", "data"), json.loads(config.to_json())
        fixed, _ = resume_module.split(
            {name: trained_with.get(name) for name in sections}, {name: current.get(name) for name in sections}
        )
        if fixed:
            raise InputError(
                f"checkpoint in {str(run_dir)!r} does not match its {CONFIG_FILE}, edited after training: "
                f"{resume_module.describe(fixed)} (the checkpoint was trained with the first values)"
            )
    try:
        as_user_program(trained).modules.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as error:
        lines = [line.strip() for line in str(error).strip().splitlines()] or [repr(error)]
        reason = lines[1] if len(lines) > 1 else lines[0]  # torch's first line is only "Error(s) in loading ..."
        raise InputError(f"checkpoint in {str(run_dir)!r} does not match its {CONFIG_FILE}: {reason}") from None
    return state


def train_run(
    config: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    trust_program: bool = False,
    tensorboard: bool = False,
    refused: tuple[str, ...] = (),
) -> dict:
    """Train ``config`` into ``run_dir``, evaluate it and draw its figures; returns the metrics.

    ``resume=True`` continues the checkpoint in ``run_dir``; ``config`` may differ from its ``config.json`` only
    where the numbers stay those of an uninterrupted run (more epochs, the device, the final evaluation's samples: see
    :mod:`ppl_vae.resume`), and every other difference is refused in one line (with the descriptions in ``refused``,
    changes the caller found that no config can express). Each resume is recorded under ``"resumes"`` in the
    checkpoint and ``metrics.json``. A program run resumes only with ``trust_program=True`` (the program comes from the
    folder). Without ``resume``, a folder that already holds a run is refused, so nothing is overwritten, and so is an
    ``--out`` that cannot become a writable folder, before anything is trained. ``tensorboard=True`` also logs every
    epoch to ``run_dir/tensorboard`` (:mod:`ppl_vae.tensorboard_log`).

    A program run trains in a cleared Pyro parameter store: its ``pyro.module`` names are fixed by the user's code, so
    parameters left in the store under the same names (by an earlier build of the same program in this process)
    would otherwise be refused by the guards (:mod:`ppl_vae.guards`), as they would train instead of the program's.
    """
    run_dir = Path(run_dir)
    require_device(config.train.device)
    if resume:
        stored = load_config(run_dir)
        if config.train.lr_horizon is None:  # fixed when the run started; None asks for that one
            config = dataclasses.replace(
                config, train=dataclasses.replace(config.train, lr_horizon=stored.train.lr_horizon)
            )
        applied = resume_module.check_resume(
            repr(str(run_dir)), json.loads(stored.to_json()), json.loads(config.to_json()), refused=refused
        )
        require_trusted(run_dir, stored, trust_program)
    else:
        if refused:
            raise InputError(f"{', '.join(refused)}: only a resumed run can refuse these")
        require_new_run_folder(run_dir)
    data = load_data(config)
    if config.model is not None:  # one line before anything is written, where the run cannot fit in memory
        check_memory(config.model, config.train, config.evaluation, data.x_train.shape[0], data.x_test.shape[0])
    started = stored.train.lr_horizon if resume else None
    train = config.train
    trained_on = validation_split(data, train.val_fraction, train.seed) if train.val_fraction else data
    config = dataclasses.replace(config, train=with_lr_horizon(train, trained_on.x_train.shape[0], started))

    seed_everything(config.train.seed)
    # a program is built before anything is written: a bad path leaves no run folder
    trained = build_trained(config)
    discrete = config.model is not None and config.model.family != "vae"
    trainee, train_data = training_view(trained, data, config) if discrete else (trained, data)
    resumes = []
    if resume:  # one clear line, before training, where the weights do not fit (fit() restores them itself)
        state = _load_weights(trained, run_dir, config.train.device, stored)
        trained_epochs = len(state.get("history", []))
        resume_module.check_epochs(repr(str(run_dir)), config.train.epochs, trained_epochs)
        partial = state.get("partial") or {}
        now = {"epoch": trained_epochs, "step": partial.get("done", 0), "changes": applied}
        now["world_size"] = distributed.world_size()
        resumes = [*state.get("resumes", []), now]
    writes = distributed.is_main()  # in a group of processes rank 0 writes the run folder, the others nothing
    if writes:
        _make_run_folder(run_dir)
        save_json(run_dir / CONFIG_FILE, json.loads(config.to_json()))
        save_json(run_dir / ENVIRONMENT_FILE, environment(distributed.rank_device(config.train.device)))
    if config.program is not None:
        pyro.clear_param_store()
    extra = {"config": json.loads(config.to_json()), "resumes": resumes}
    log = _tensorboard_log(trained, data, config, run_dir, resume) if tensorboard and writes else None
    try:
        history = fit(
            trainee,
            train_data,
            config.train,
            run_dir=run_dir,
            resume=resume,
            progress=progress,
            extra=extra,
            on_epoch=log,
        )
    finally:
        if log is not None:
            log.close()
    # a sharded run (several processes, or --keyed-noise) keys its evaluation, which shares the test set out over
    # the ranks and gives every rank the numbers of any process count; rank 0 writes what they found
    sharding = Sharding.of_run(config.train.seed, config.train.keyed_noise)
    keyed_seed = None if sharding is None else sharding.evaluation_seed()
    metrics = evaluate_vae(trained, data, config.evaluation, run_dir=run_dir if writes else None, keyed_seed=keyed_seed)
    if discrete:
        metrics.update(evaluate_discrete(trained, data, config, keyed_seed=keyed_seed))
    metrics.update(
        train_elbo=history[-1]["train_elbo"],
        epochs=len(history),
        seconds=sum(record["seconds"] for record in history),
        history=history,
        world_size=distributed.world_size(),
    )
    validated = [record for record in history if "val_elbo" in record]
    if validated:  # the last validation ELBO: what a selection among runs may use (the test set plays no part)
        metrics.update(val_elbo=validated[-1]["val_elbo"], val_elbo_se=validated[-1]["val_elbo_se"])
    if resumes:
        metrics["resumes"] = resumes
    if config.program is not None:
        metrics["figures_skipped"] = figures_skipped(trained)
    if writes:
        save_json(run_dir / METRICS_FILE, metrics)
        draw_figures(trained, data, history, run_dir)
        if discrete:
            draw_discrete_figures(trained, data, run_dir)
    return metrics


def build_trained(config: RunConfig) -> VAE | UserProgram:
    """What a run's config describes, with fresh weights: the built-in VAE, the M2 / joint family's program
    (:func:`ppl_vae.semisupervised.discrete_program`), or a user's program (its build function imported)."""
    if config.program is not None:
        return build_program(config.program)
    return VAE(config.model) if config.model.family == "vae" else discrete_program(config.model)


def _tensorboard_log(trained, data: Dataset, config: RunConfig, run_dir: Path, resume: bool, shown: int = 16):
    """The TensorBoard log of a run (imported only here): its images are the first ``shown`` held-out examples."""
    from ppl_vae.tensorboard_log import TENSORBOARD_DIR, TensorBoardLog

    train = config.train
    held_out = validation_split(data, train.val_fraction, train.seed) if train.val_fraction else data
    program = as_user_program(trained)
    program.modules.to(train.device)
    x_held, y_held = program_test_set(program, held_out)
    first = len(load_checkpoint(run_dir / CHECKPOINT_FILE)["history"]) + 1 if resume else 1
    labels = None if y_held is None else y_held[:shown]
    return TensorBoardLog(
        run_dir / TENSORBOARD_DIR, program, config, x_held[:shown], data.image_shape, y_shown=labels, first_epoch=first
    )


def require_new_run_folder(run_dir: Path) -> None:
    """An :class:`InputError` unless ``run_dir`` can become a new run folder: not a file, not a folder that holds a run
    already, and in (or, while it does not exist, under) a folder where a file can be written. Nothing is left behind:
    the folder itself is made later, when the run starts writing."""
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"--out {str(run_dir)!r} is a file: expected a folder (new, or empty) for the run")
    if (run_dir / CHECKPOINT_FILE).exists():
        raise InputError(f"run folder {str(run_dir)!r} already holds a run: pass --resume or choose another --out")
    existing = next(folder for folder in (run_dir, *run_dir.absolute().parents) if folder.exists())
    if not existing.is_dir():
        raise InputError(f"--out {str(run_dir)!r}: {str(existing)!r} is a file, so the folder cannot be made")
    require_writable(existing, f"--out {str(run_dir)!r}")


def require_writable(folder: Path, what: str) -> None:
    """An :class:`InputError` naming ``what`` unless a small file can be written, flushed and removed in ``folder``
    (a read-only file system, a full disk, or, for a user without root, missing permissions)."""
    try:
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        raise InputError(f"{what}: cannot write in {str(folder)!r} ({error.strerror or error})") from None


def _make_run_folder(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"--out {str(run_dir)!r}: cannot make the folder ({error.strerror or error})") from None


def evaluate_vae(
    trained: VAE | UserProgram,
    data: Dataset,
    evaluation: EvalConfig,
    log_likelihood: bool = True,
    *,
    run_dir: str | Path | None = None,
    keyed_seed: int | None = None,
) -> dict:
    """Test ELBO and IWAE log p(x) with their standard errors, nats per example (keys as in ``metrics.json``), of
    the built-in VAE or a user's program. ``keyed_seed``: both estimates keyed (and sharded across an initialized
    ``torch.distributed`` group, where they are keyed either way): see :func:`ppl_vae.evaluate.elbo`.

    ``log_likelihood=False`` leaves the IWAE estimate out, for a caller that gets it from the diagnostics' draws.
    With it, ``eval_examples_per_second`` is the test examples per second of the IWAE estimate (``k`` samples each,
    wall time on ``trained``'s device), and ``eval_memory_mb`` the budget of a pass (``None``: the element bound).
    With ``run_dir`` the per-example values are also written to its ``test_values.npz`` (:mod:`ppl_vae.test_values`).
    """
    program = as_user_program(trained)
    x_test, y_test = program_test_set(program, data)
    budget = {"memory_mb": evaluation.memory_mb, "keyed_seed": keyed_seed}
    test_elbo = elbo(program.model, program.guide, x_test, num_particles=evaluation.num_particles, y=y_test, **budget)
    metrics = {
        "conditional": y_test is not None,
        "test_elbo": test_elbo.mean,
        "test_elbo_se": test_elbo.se,
        "k": evaluation.k,
        "elbo_particles": evaluation.num_particles,
        "eval_memory_mb": evaluation.memory_mb,
    }
    per_example = {"elbo": test_elbo.per_example}
    if log_likelihood:
        started = time.perf_counter()
        estimate = iwae_log_likelihood(program.model, program.guide, x_test, k=evaluation.k, y=y_test, **budget)
        metrics.update(
            test_log_likelihood=estimate.mean,
            test_log_likelihood_se=estimate.se,
            eval_examples_per_second=x_test.shape[0] / (time.perf_counter() - started),
        )
        per_example["log_likelihood"] = estimate.per_example
    if run_dir is not None:
        save_test_values(run_dir, observed_digest(x_test, y_test), **per_example)
    return metrics


def evaluate_run(
    run_dir: str | Path,
    evaluation: EvalConfig,
    device: str = "cpu",
    report: ReportConfig | None = None,
    *,
    trust_program: bool = False,
) -> dict:
    """Reload a run, evaluate it with ``evaluation`` and update its ``metrics.json``; returns the metrics.

    With ``report`` (a :class:`~ppl_vae.report.ReportConfig`) also write the diagnostics report (``report.json``,
    ``report.md``, ``posterior.nc``, figures; see :mod:`ppl_vae.report`) with ``evaluation.k`` importance samples per
    example; the returned dict then holds the contents of ``report.json`` under ``"report"``, and the IWAE estimate
    in ``metrics.json`` is the report's (the same estimator with the same ``k``, computed once; its
    ``eval_examples_per_second`` then counts the report's draws, which also give the diagnostics). Labels reach every
    computation of a conditional VAE or of a program that takes them.

    A program run is rebuilt only with ``trust_program=True`` (see :func:`load`).
    """
    run_dir = read_run_folder(run_dir)
    config = load_config(run_dir)
    trained = load(run_dir, device=device, trust_program=trust_program)
    data = load_data(config)
    if config.model is not None:  # one line, where the new k or particles cannot fit
        check_memory(config.model, config.train, evaluation, data.x_train.shape[0], data.x_test.shape[0])
    if report is not None:
        report.check(evaluation.k, data.x_test.shape[0])
    read_metrics(run_dir / METRICS_FILE)  # before the evaluation: a damaged file or a read-only folder fails at once
    require_writable(run_dir, f"evaluate {str(run_dir)!r}")
    seed_everything(config.train.seed)
    metrics_path = run_dir / METRICS_FILE
    metrics = read_metrics(metrics_path)
    metrics.update(evaluate_vae(trained, data, evaluation, log_likelihood=report is None, run_dir=run_dir))
    if report is None:
        save_json(metrics_path, metrics)
        return metrics
    written = write_report(trained, data, run_dir, evaluation.k, report, memory_mb=evaluation.memory_mb)
    metrics.update(
        test_log_likelihood=written["log_likelihood"],
        test_log_likelihood_se=written["log_likelihood_se"],
        eval_examples_per_second=written["examples_per_second"],
    )
    save_json(metrics_path, metrics)
    return {**metrics, "report": written}


def read_metrics(path: Path) -> dict:
    """The metrics of ``metrics.json`` (``{}`` when there is none); a file that is not a JSON object is an
    :class:`InputError` naming it."""
    if not path.is_file():
        return {}
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = f"not UTF-8 (byte {error.start})" if isinstance(error, UnicodeDecodeError) else f"not JSON ({error})"
        raise InputError(f"{str(path)!r} is {reason}: remove it and evaluate again to write a fresh one") from None
    if not isinstance(metrics, dict):
        raise InputError(f"{str(path)!r} holds a {type(metrics).__name__}, expected a JSON object: remove it")
    return metrics


FIGURE_FUNCTIONS = {"reconstructions.png": "reconstruct", "samples.png": "sample", "latent.png": "encode"}
"""The figures that need a function of the program besides its model and guide, and that function's name."""


def figures_skipped(trained: VAE | UserProgram) -> dict[str, str]:
    """The figures that ``trained`` offers no function for, each with the reason (empty for the built-in VAE)."""
    program = as_user_program(trained)
    return {
        figure: f"the program has no {function}() (UserProgram.{function})"
        for figure, function in FIGURE_FUNCTIONS.items()
        if getattr(program, function) is None
    }


def draw_figures(
    trained: VAE | UserProgram, data: Dataset, history: list[dict], run_dir: Path, num_images: int = 32
) -> list[Path]:
    """The run's PNGs: ELBO curves, test images above their reconstructions, prior samples, latent means by label
    (for a user's program, those it offers ``reconstruct``, ``sample`` and ``encode`` for: :func:`figures_skipped`).
    The latent named in the titles is the one the decoder reads: ``z``, or ``z1`` of a two-layer VAE."""
    from ppl_vae import plots

    program = as_user_program(trained)
    shape = data.image_shape
    code = trained.code_site if isinstance(trained, VAE) else "z"
    x_test, y_test = program_test_set(program, data)
    labelled = () if y_test is None else (y_test,)
    shown = () if y_test is None else (y_test[:num_images],)
    figures = [plots.plot_training_curves(history, run_dir / "elbo.png", title=f"ELBO per epoch on {data.name}")]
    if program.reconstruct is not None:
        with torch.no_grad():
            reconstructions = program.reconstruct(x_test[:num_images], *shown)
        figures.append(
            plots.plot_reconstructions(x_test[:num_images], reconstructions, shape, run_dir / "reconstructions.png")
        )
    if program.sample is not None:
        path = run_dir / "samples.png"
        if y_test is None:
            with torch.no_grad():
                images = program.sample(64)
            figures.append(
                plots.plot_image_grid(images, shape, path, f"Pixel means of p(x | {code}), {code} ~ p({code})")
            )
        else:
            classes = torch.arange(data.num_classes, device=program.device).repeat_interleave(8)
            with torch.no_grad():
                images = program.sample(len(classes), classes)
            title = f"Samples of p(x | {code}, y), {code} ~ p({code})"
            figures.append(plots.plot_class_samples(images, classes, shape, path, title))
    if program.encode is not None:
        with torch.no_grad():
            z_loc = program.encode(x_test, *labelled)
        figures.append(
            plots.plot_latent_scatter(
                z_loc,
                data.y_test,
                run_dir / "latent.png",
                f"E_q[{code} | x]" if y_test is None else f"E_q[{code} | x, y]",
            )
        )
    return figures


def default_run_dir(data_name: str) -> Path:
    """``runs/<data set>-<timestamp>``: a fresh folder per run, so a repeated command never overwrites a run."""
    return Path("runs") / f"{Path(data_name).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
