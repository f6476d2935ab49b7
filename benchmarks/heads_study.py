"""Why log-variance and not log-sigma: the controlled heads study (issue 14), one design answering five questions.

    python examples/digits_to_npz.py --size 28 --out digits28.npz
    PYTHONPATH=. python benchmarks/heads_study.py --data digits28.npz --out docs/images     # 784-400-50, seeds 0,1,2
    PYTHONPATH=. python benchmarks/heads_study.py --quick --out /tmp/heads                   # the digits, seconds

Every run is a :class:`ppl_vae.lab.HeadRun` trained by :func:`ppl_vae.lab.compare_heads` from a fresh VAE drawn
after ``seed_everything(seed)`` (784-``--hidden``-z_dim; only z_dim varies), every run of one (z_dim, seed) from the
same q(z | x) and the same minibatches. Not the cross product: each question gets the runs that answer it (runs shared
between questions are trained once), ``--seeds`` each:

1. mechanism: Adam at ``--lr``, z_dim ``--z-dim``, trace and meanfield: log_var, log_scale, log_scale with the scale
   rows' step halved (``scale_lr_factor`` 0.5, Adam's step under log_var);
2. optimizer: plain SGD at ``--sgd-lr``, meanfield: log_var, log_scale at factors 1, 0.5 and 0.25 (SGD's
   equivalent);
3. learning rate: Adam at each of ``--lrs`` besides ``--lr``, meanfield: log_var and log_scale (the lr grid per head;
   log_scale at lr/2 for every parameter against log_var at lr where both are in the grid);
4. latent width: Adam at ``--lr``, meanfield, z_dim each of ``--z-dims``: log_var, log_scale, log_scale at 0.5;
5. per dimension: every run records KL and the mean posterior std per dimension per epoch; the figure follows the
   fifth of the dimensions with the smallest final KL (at 784-400-50 none is below 0.01 nats after 30 epochs at
   lr 1e-3).

Left out (to fit about an hour on a shared 2-core machine, ``--jobs 2 --threads 1``): softplus (the README's digits
table has it level with the others), the trace estimator outside question 1, an SGD lr grid (one stable rate: 1e-3
diverges at 784-400-50), z_dim x optimizer, z_dim x lr, epochs past 30.

Writes to ``--out``: ``heads_study.json`` (the settings and every run: the ``compare_kl.json`` ``heads`` entries),
``heads_study.md`` (the table over seeds, the paired differences per question) and one figure per question
(``--from-json`` redraws these from a ``heads_study.json``),
``heads_mechanism.png``, ``heads_optimizer.png``, ``heads_lr.png``, ``heads_zdim.png``, ``heads_inactive.png``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import multiprocessing
import sys
import time
from pathlib import Path

import torch

from ppl_vae import plots
from ppl_vae.lab import HeadRun, LabConfig, compare_heads, fresh_vae, prepare
from ppl_vae.lab.heads_study import parse_list
from ppl_vae.lab.report import heads_comparisons, heads_table

HEAD_RUN_FIELDS = tuple(field.name for field in dataclasses.fields(HeadRun))

QUICK = [
    "--data", "digits", "--hidden", "8", "--z-dim", "3", "--z-dims", "2", "--lrs", "2e-3", "--epochs", "1",
    "--seeds", "0", "--batch-size", "512", "--eval-particles", "2",
]  # fmt: skip


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits28.npz", help="digits | path/to/file.npz")
    parser.add_argument("--hidden", default="400", help="hidden widths, comma-separated")
    parser.add_argument("--z-dim", type=int, default=50, help="the latent width of questions 1 to 3")
    parser.add_argument("--z-dims", default="8,20", help="question 4's other latent widths")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate of questions 1, 2 (Adam), 4")
    parser.add_argument("--lrs", default="2.5e-4,5e-4,2e-3", help="question 3's other Adam learning rates")
    parser.add_argument("--sgd-lr", type=float, default=1e-4, help="question 2's SGD learning rate")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eval-particles", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--jobs", type=int, default=1, help="processes (each run trains in one; the numbers do not depend on it)"
    )
    parser.add_argument(
        "--from-json", type=Path, default=None, help="redraw the report and figures of a heads_study.json, no training"
    )
    parser.add_argument("--quick", action="store_true", help="the digits, tiny: " + " ".join(QUICK))
    parser.add_argument("--out", type=Path, default=Path("heads-study"))
    args = parser.parse_args(argv)
    if args.quick:
        args = parser.parse_args([*QUICK, *(argv or [])])
    return args


def design(args: argparse.Namespace) -> dict[str, list[HeadRun]]:
    """The runs of each question (a run may serve several)."""
    seeds = parse_list(args.seeds, "--seeds", int)
    z, lr = args.z_dim, args.lr
    trio = (("log_var", 1.0), ("log_scale", 1.0), ("log_scale", 0.5))

    def runs(estimator, optimizer, rate, z_dim, heads):
        return [HeadRun(h, estimator, optimizer, rate, f, z_dim, s) for s in seeds for h, f in heads]

    adam = runs("meanfield", "adam", lr, z, trio)
    return {
        "mechanism": runs("trace", "adam", lr, z, trio) + adam,
        "optimizer": adam + runs("meanfield", "sgd", args.sgd_lr, z, (*trio, ("log_scale", 0.25))),
        "lr": [
            run
            for rate in sorted([lr, *parse_list(args.lrs, "--lrs")])
            for run in runs("meanfield", "adam", rate, z, trio[:2])
        ],
        "zdim": [
            run
            for width in parse_list(args.z_dims, "--z-dims", int)
            for run in runs("meanfield", "adam", lr, width, trio)
        ]
        + adam,
        "inactive": adam + runs("meanfield", "sgd", args.sgd_lr, z, (*trio, ("log_scale", 0.25))),
    }


def _train_part(work) -> list[dict]:
    """One process's share of the runs (``--jobs``)."""
    vae, data, settings, runs, threads = work
    if threads is not None:
        torch.set_num_threads(threads)
    return compare_heads(vae, data, settings, runs=runs, fresh=fresh_vae(vae))


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.from_json is not None:
        stored = json.loads(args.from_json.read_text())
        questions = {name: [HeadRun(**run) for run in runs] for name, runs in stored["questions"].items()}
        by_run = {HeadRun(**{key: row[key] for key in HEAD_RUN_FIELDS}): row for row in stored["heads"]}
        return write(stored, questions, by_run, args.out)
    questions = design(args)
    every = list(dict.fromkeys(run for runs in questions.values() for run in runs))
    hidden = tuple(int(width) for width in args.hidden.split(","))
    vae, data = prepare(data_name=args.data, z_dim=args.z_dim, hidden=hidden, seed=0)
    settings = LabConfig(
        estimators=("trace",), repetitions=2, epochs=args.epochs, batch_size=args.batch_size,
        eval_particles=args.eval_particles,
    )  # fmt: skip
    started = time.perf_counter()
    if args.jobs == 1:
        rows = compare_heads(vae, data, settings, runs=every, fresh=fresh_vae(vae))
    else:
        parts = [every[index :: args.jobs] for index in range(args.jobs)]
        context = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            done = list(pool.map(_train_part, [(vae, data, settings, part, args.threads) for part in parts]))
        pairs = (zip(part, part_rows, strict=True) for part, part_rows in zip(parts, done, strict=True))
        trained = {run: row for pair in pairs for run, row in pair}
        rows = [trained[run] for run in every]
    seconds = time.perf_counter() - started
    by_run = {run: row for run, row in zip(every, rows, strict=True)}
    result = {
        "data": data.name,
        "hidden": hidden,
        "settings": {**vars(args), "out": str(args.out), "from_json": None},
        "wall_seconds": seconds,
        "threads": torch.get_num_threads(),
        "questions": {name: [dataclasses.asdict(run) for run in runs] for name, runs in questions.items()},
        "heads": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "heads_study.json").write_text(json.dumps(result))
    return write(result, questions, by_run, args.out)


def write(result: dict, questions: dict[str, list[HeadRun]], by_run: dict, out: Path) -> dict:
    """``heads_study.md`` and the figures into ``out``; the Markdown is printed too."""
    out.mkdir(parents=True, exist_ok=True)
    settings = result["settings"]
    lines = [
        f"{result['data']}, hidden {tuple(result['hidden'])}, {settings['epochs']} epochs, batch "
        f"{settings['batch_size']}, seeds {settings['seeds']}; {len(result['heads'])} runs in "
        f"{result['wall_seconds']:.0f} s.",
        "",
    ]
    for name, runs in questions.items():
        picked = [by_run[run] for run in dict.fromkeys(runs)]
        lines += [f"## {name}", "", heads_table(picked), *heads_comparisons(picked), ""]
        title = f"{Path(result['data']).stem}, {settings['hidden']}: {name}"
        if name == "lr":
            plots.plot_head_lr(picked, out / "heads_lr.png", title=title)
        elif name == "inactive":
            plots.plot_head_curves(picked, out / "heads_inactive.png", title=title, value="least_used_scale")
        else:
            plots.plot_head_curves(picked, out / f"heads_{name}.png", title=title)
    (out / "heads_study.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
