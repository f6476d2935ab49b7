"""M2 against its supervised-only baseline, over the number of labels and seeds.

    PYTHONPATH=. python benchmarks/m2_labels.py --out benchmarks/results/m2-digits.json
    PYTHONPATH=. python benchmarks/m2_labels.py --data path/to/labelled.npz --labelled 100,1000,all --seeds 0,1

For every ``N`` of ``--labelled`` and every seed of ``--seeds``, one ``ppl-vae train --family m2 --labelled N`` run
(:func:`ppl_vae.run.train_run`, into a temporary folder): M2 trained ``--epochs`` epochs with the enumerated objective,
then its test accuracy (argmax q(y | x)), the accuracy of argmax p(y | x) by importance sampling, the exact-sum log p(x)
(``--k`` draws of q(z | x, y) per class) and the same classifier network trained on the ``N`` labelled examples alone
(the baseline's fixed budget: :data:`ppl_vae.semisupervised.BASELINE_STEPS`). The labelled subset depends on the seed
and is the same for M2 and its baseline. Each cell of the table is the mean over seeds with its standard error
``std / sqrt(seeds)`` (of the seeds' numbers: seed-to-seed variation, which includes the choice of the labelled
examples).

Writes ``--out`` (JSON: every run's metrics and the summary), and beside it the same name with ``.md`` (the table)
and ``.png`` (accuracy against N, M2 and baseline, error bars one standard error).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ppl_vae.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from ppl_vae.data import load_dataset
from ppl_vae.errors import InputError
from ppl_vae.run import model_config_for, train_run
from ppl_vae.tables import table

KEYS = ("test_accuracy", "baseline_accuracy", "bayes_accuracy", "test_log_likelihood_exact_y", "test_elbo")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits", help="digits | mnist | ... | path/to/file.npz (with labels)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--labelled", default="50,100,300,all", help="comma-separated label counts, or all")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--z-dim", type=int, default=8)
    parser.add_argument("--hidden", default="128", help="hidden widths, comma-separated")
    parser.add_argument("--k", type=int, default=200, help="draws of q(z | x, y) per class for log p(x)")
    parser.add_argument("--eval-particles", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--out", type=Path, default=Path("m2_labels.json"))
    return parser.parse_args(argv)


def counts(text: str, num_train: int) -> list[int | None]:
    """``"50,100,all"`` -> ``[50, 100, None]`` (``None``: every training example)."""
    values = []
    for part in (part.strip() for part in text.split(",") if part.strip()):
        if part == "all":
            values.append(None)
        elif part.isdigit() and 0 < int(part) <= num_train:
            values.append(int(part))
        else:
            raise InputError(f"--labelled {part!r}: expected a count from 1 to {num_train}, or all")
    return values


def summarize(runs: list[dict], num_train: int) -> list[dict]:
    """One row per ``N``: mean and standard error over seeds of each of :data:`KEYS`."""
    rows = []
    for labelled in dict.fromkeys(run["labelled"] for run in runs):
        group = [run for run in runs if run["labelled"] == labelled]
        row = {"labelled": labelled, "all": labelled == num_train, "seeds": len(group)}
        for key in KEYS:
            values = [run[key] for run in group]
            row[key] = statistics.fmean(values)
            row[f"{key}_se"] = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
        rows.append(row)
    return rows


def markdown(result: dict) -> str:
    header = [
        "N labelled",
        "M2 accuracy, argmax q(y \\| x)",
        "M2 accuracy, argmax p(y \\| x)",
        "baseline accuracy",
        "log p(x), nats per example",
    ]

    def cell(row, key, scale=100.0, digits=1):
        return f"{scale * row[key]:.{digits}f} ± {scale * row[key + '_se']:.{digits}f}"

    cells = [
        [
            f"{row['labelled']} (all)" if row["all"] else str(row["labelled"]),
            cell(row, "test_accuracy") + " %",
            cell(row, "bayes_accuracy") + " %",
            cell(row, "baseline_accuracy") + " %",
            cell(row, "test_log_likelihood_exact_y", 1.0, 2),
        ]
        for row in result["summary"]
    ]
    settings = result["settings"]
    note = (
        f"\n\n{settings['data']}, {len(settings['seeds'])} seeds ({', '.join(map(str, settings['seeds']))}), "
        f"{settings['epochs']} epochs, z_dim {settings['z_dim']}, hidden {settings['hidden']}; mean ± standard error "
        f"over seeds; log p(x) by exact summation over y, k = {settings['k']} per class; "
        f"{result['seconds']:.0f} s in all."
    )
    return table(header, cells, style="markdown") + note + "\n"


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["summary"]
    x = range(len(rows))
    figure, axes = plt.subplots(figsize=(5.5, 3.6))
    for key, label in (
        ("test_accuracy", "M2, argmax q(y | x)"),
        ("baseline_accuracy", "classifier on the labels only"),
    ):
        means = [100 * row[key] for row in rows]
        errors = [100 * row[key + "_se"] for row in rows]
        axes.errorbar(x, means, yerr=errors, marker="o", capsize=3, label=label)
    axes.set_xticks(list(x), [f"{row['labelled']}" + (" (all)" if row["all"] else "") for row in rows])
    axes.set(
        xlabel="labelled training examples N", ylabel="test accuracy, %", title=f"M2 on {result['settings']['data']}"
    )
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    data = load_dataset(args.data, root=args.data_root)
    if data.num_classes == 0:
        raise InputError(f"--data {args.data!r} has no labels: M2 needs them")
    num_train = data.x_train.shape[0]
    hidden = tuple(int(width) for width in args.hidden.split(","))
    seeds = [int(seed) for seed in args.seeds.split(",")]
    model = model_config_for(data, z_dim=args.z_dim, hidden=hidden, family="m2", num_classes=data.num_classes)
    started = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for labelled in counts(args.labelled, num_train):
            for seed in seeds:
                train = TrainConfig(
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    lr=args.lr,
                    elbo="enum",
                    seed=seed,
                    labelled=labelled,
                    eval_every=args.epochs,
                    eval_particles=args.eval_particles,
                )
                config = RunConfig(
                    model=model,
                    data=DataConfig(name=args.data, root=args.data_root),
                    train=train,
                    evaluation=EvalConfig(k=args.k, num_particles=args.eval_particles),
                )
                metrics = train_run(config, Path(folder) / f"n{labelled}-s{seed}", progress=False)
                run = {key: metrics[key] for key in (*KEYS, "labelled", "seconds")}
                runs.append({**run, "seed": seed})
                print(
                    f"N={run['labelled']:>5} seed {seed}: M2 {100 * run['test_accuracy']:.1f} %, baseline "
                    f"{100 * run['baseline_accuracy']:.1f} %, log p(x) {run['test_log_likelihood_exact_y']:.2f}",
                    flush=True,
                )
    result = {
        "settings": {**{key: value for key, value in vars(args).items() if key != "out"}, "seeds": seeds},
        "num_train": num_train,
        "runs": runs,
        "summary": summarize(runs, num_train),
        "seconds": time.perf_counter() - started,
    }
    result["settings"]["data"] = data.name
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    text = markdown(result)
    args.out.with_suffix(".md").write_text(text)
    plot(result, args.out.with_suffix(".png"))
    print(text)
    return result


if __name__ == "__main__":
    try:
        main()
    except InputError as error:
        print(f"m2_labels: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
