"""``ppl-vae sample | reconstruct | encode | traverse | interpolate RUN_DIR``: use a trained run from the command line.

Each command loads the run (a program run only with ``--trust-program``), calls :mod:`ppl_vae.use` and writes what it
returns: a PNG (drawn by :mod:`ppl_vae.plots`) or an .npz of arrays, as the ``--out`` suffix says. Images come from
the run's data set, or ``--data NAME|FILE.npz`` of the same image shape, split ``--split test|train``, observed as in
evaluation (binarized once with a fixed seed for a binary likelihood). Their flags are in the table of
:mod:`ppl_vae.flags`. Bad input is one line and exit status 2 (the
``InputError`` that :func:`ppl_vae.cli.main` prints).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ppl_vae.errors import InputError

SPLITS = ("test", "train")
MAX_TRAVERSE_ROWS = 10
"""Without ``--dims``, ``traverse`` shows this many dimensions at most, the most informative first."""


# --- shared steps --------------------------------------------------------------------------------------------------
class Loaded:
    """A run loaded for a command: ``config``, ``trained``, ``program`` (as a UserProgram), ``image_shape``,
    ``num_classes`` and the code site's name for titles."""

    def __init__(self, args):
        from ppl_vae.config import require_seed
        from ppl_vae.programs import as_user_program
        from ppl_vae.run import load, load_config
        from ppl_vae.train import seed_everything

        require_seed(args.seed)  # before the run loads: a bad seed is the error a person sees first
        self.config = load_config(args.run_dir)
        self.trained = load(args.run_dir, device=args.device, trust_program=args.trust_program)
        self.program = as_user_program(self.trained)
        sized = self.config.model or self.config.program
        self.image_shape = sized.image_shape
        self.num_classes = sized.num_classes
        self.args = args
        seed_everything(args.seed)

    def out(self, default: str, suffixes=(".png", ".npz")) -> Path:
        path = self.args.out or self.args.run_dir / default
        if path.suffix not in suffixes:
            raise InputError(f"--out {str(path)!r}: expected a file ending in {' or '.join(suffixes)}")
        if not path.parent.is_dir():
            raise InputError(f"--out {str(path)!r}: the folder {str(path.parent)!r} does not exist")
        return path

    def images(self) -> tuple[torch.Tensor, torch.Tensor | None, str, torch.Tensor | None]:
        """The split's observed images ``(N, D)``, their labels for a model that takes them (``None`` otherwise), the
        data's name, and the split's labels whatever the model (``None`` for a data set without labels)."""
        from ppl_vae.evaluate import observed_test_set
        from ppl_vae.inputs import require_classes
        from ppl_vae.run import load_data

        if self.args.split not in SPLITS:
            raise InputError(f"--split {self.args.split!r}: expected one of {', '.join(SPLITS)}")
        data = load_data(self.config, self.args.data)
        x = observed_test_set(getattr(data, f"x_{self.args.split}"), self.program.binary).to(self.program.device)
        y = getattr(data, f"y_{self.args.split}")
        if not self.program.labels:
            return x, None, data.name, y
        if y is None:
            raise InputError(f"data set {data.name!r} has no labels: this model is conditional on them")
        return x, require_classes(y, self.num_classes, f"labels of {data.name!r}").to(x.device), data.name, y

    def one_class(self) -> int | None:
        """``--y`` checked against the model: a class of a conditional model, absent for any other."""
        from ppl_vae.inputs import require_classes

        y = self.args.y
        if y is None:
            return None
        if not self.program.labels:
            raise InputError(f"--y {y!r}: this model takes no class labels")
        if isinstance(y, str):
            raise InputError(f"--y {y!r}: expected a class label from 0 to {self.num_classes - 1}")
        return int(require_classes(torch.tensor([y]), self.num_classes, "--y")[0])

    def index(self, value, flag: str, count: int) -> int:
        from ppl_vae.use import require_count

        return require_count(value, flag, least=0, most=count - 1)

    def code_name(self) -> str:
        return self.trained.code_site if hasattr(self.trained, "code_site") else "z"


def write_npz(path: Path, **arrays) -> None:
    arrays = {key: np.asarray(value.cpu() if torch.is_tensor(value) else value) for key, value in arrays.items()}
    np.savez(path, **arrays)
    print(f"written: {path} ({', '.join(f'{key} {value.shape}' for key, value in arrays.items())})")


def written(path: Path) -> None:
    print(f"written: {path}")


# --- the commands --------------------------------------------------------------------------------------------------
def command_sample(args) -> None:
    from ppl_vae import plots, use

    run = Loaded(args)
    path = run.out("sample.png")
    n = use.require_count(args.n, "--n")
    y = run.one_class()
    if y is None and run.program.labels:  # every class in turn
        y = torch.arange(n, device=run.program.device) % run.num_classes
    images = use.sample(run.trained, n, y, draw=args.draw)
    what = "Draws x ~ p(x | z" if args.draw else "Pixel means of p(x | z"
    if path.suffix == ".npz":
        labels = {} if y is None else {"labels": torch.as_tensor(y).expand(n)}
        return write_npz(path, images=images, **labels)
    if y is None or isinstance(y, int):
        given = "" if y is None else f", y = {y}"
        plots.plot_image_grid(images, run.image_shape, path, f"{what}{given}), z ~ p(z)")
    else:
        plots.plot_class_samples(images, y, run.image_shape, path, f"{what}, y), z ~ p(z)")
    written(path)


def command_reconstruct(args) -> None:
    from ppl_vae import plots, use
    from ppl_vae.config import EvalConfig

    run = Loaded(args)
    path = run.out("reconstruct.png")
    x, y, name, _ = run.images()
    most = min(x.shape[0], use.MAX_IMAGES)
    n = min(16, most) if args.n is None else use.require_count(args.n, "--n", most=most)
    x, y = x[:n], None if y is None else y[:n]
    reconstructions = use.reconstruct(run.trained, x, y)
    if path.suffix == ".png":
        title = f"{args.split.capitalize()} images of {Path(name).name} (odd rows) above their reconstructions"
        plots.plot_reconstructions(x, reconstructions, run.image_shape, path, title=title)
        return written(path)
    evaluation = EvalConfig(k=args.k, num_particles=args.eval_particles)
    elbo, log_px = use.scores(run.trained, x, y, k=evaluation.k, num_particles=evaluation.num_particles)
    labels = {} if y is None else {"labels": y}
    write_npz(
        path, originals=x, reconstructions=reconstructions, elbo=elbo.per_example, log_likelihood=log_px.per_example,
        index=torch.arange(n), k=evaluation.k, elbo_particles=evaluation.num_particles, **labels,
    )  # fmt: skip


def command_encode(args) -> None:
    from ppl_vae import use

    if args.out is None:
        raise InputError("encode needs --out FILE.npz: where to write the codes")
    run = Loaded(args)
    path = run.out("codes.npz", suffixes=(".npz",))
    batch_size = use.require_count(args.batch_size, "--batch-size", most=2**20)
    x, y, _, data_labels = run.images()
    codes = use.encode(run.trained, x, y, batch_size=batch_size, progress=not args.no_progress)
    arrays = {f"{site}_{part}": getattr(code, part) for site, code in codes.items() for part in ("loc", "scale")}
    labels = {} if data_labels is None else {"labels": data_labels}  # for another tool, conditional model or not
    write_npz(path, **arrays, sites=np.array(list(codes)), **labels)


def command_traverse(args) -> None:
    from ppl_vae import plots, use
    from ppl_vae.flags import integer_or_text

    run = Loaded(args)
    path = run.out("traverse.png")
    span = use.require_span(args.range)
    steps = use.require_count(args.steps, "--steps", least=2, most=use.MAX_STEPS)
    x, labels, _, _ = run.images()
    y = run.one_class()
    if args.base is not None:
        base_index = run.index(args.base, "--base", x.shape[0])
        if y is None and labels is not None:
            y = int(labels[base_index])
        base = use.code_of(run.trained, x[base_index : base_index + 1], _one(labels, base_index))[0]
    elif labels is not None and y is None:
        raise InputError("traverse: this model is conditional on class labels: give --y CLASS (or --base EXAMPLE)")
    mean, sd = use.prior_moments(run.trained, x, labels)
    base = mean if args.base is None else base
    order = None
    if args.dims is None:
        order = use.dimension_order(run.trained, x, labels)
        dims = order.order[:MAX_TRAVERSE_ROWS].tolist()
    else:
        dims = use.check_dims([integer_or_text(part.strip()) for part in args.dims.split(",")], base.shape[-1])
    walk = use.traverse(run.trained, base, dims, sd, span=span, steps=steps, y=y)
    if path.suffix == ".npz":
        extra = {} if order is None or order.kl is None else {"kl": order.kl[list(dims)]}
        return write_npz(path, images=walk.images, codes=walk.codes, dims=dims, values=walk.values, base=base,
                         prior_sd=sd, **extra)  # fmt: skip
    code = run.code_name()
    rows = []
    for dim in dims:
        label = f"{code}[{dim}]"
        if order is not None and order.kl is not None:
            label += f"  KL {float(order.kl[dim]):.2f}" + ("" if order.active[dim] else " (inactive)")
        rows.append(label)
    where = "the prior mean" if args.base is None else f"the code of {args.split} image {args.base}"
    given = "" if y is None else f", y = {y}"
    title = f"Traversal of {code}: one dimension per row, +-{span:g} prior sd around {where}{given}"
    column_labels = [f"{round(value, 2):+g}" for value in walk.values.tolist()]
    plots.plot_image_rows(walk.images, run.image_shape, path, title, rows, column_labels, "offset (prior sd)")
    written(path)


def command_interpolate(args) -> None:
    from ppl_vae import plots, use

    run = Loaded(args)
    path = run.out("interpolate.png")
    steps = use.require_count(args.steps, "--steps", least=2, most=use.MAX_STEPS)
    x, labels, _, _ = run.images()
    a, b = (run.index(value, flag, x.shape[0]) for value, flag in ((args.a, "--a"), (args.b, "--b")))
    y = run.one_class()
    if y is None and labels is not None:
        y = int(labels[a])
    codes = use.code_of(run.trained, x[[a, b]], None if labels is None else labels[[a, b]])
    path_codes = use.interpolate(run.trained, codes[0], codes[1], steps=steps, spherical=args.spherical, y=y)
    if path.suffix == ".npz":
        return write_npz(path, images=path_codes.images, codes=path_codes.codes, t=path_codes.t, a=a, b=b)
    kind = "Spherical" if args.spherical else "Linear"
    given = "" if y is None else f", y = {y}"
    title = f"{kind} interpolation of {run.code_name()} from {args.split} image {a} (left) to image {b} (right){given}"
    images = torch.cat([x[[a]], path_codes.images, x[[b]]])[None]
    column_labels = ["image a", *(f"{t:.2f}" for t in path_codes.t.tolist()), "image b"]
    plots.plot_image_rows(images, run.image_shape, path, title, [""], column_labels, "t (0: code of a, 1: code of b)")
    written(path)


def _one(labels: torch.Tensor | None, index: int) -> torch.Tensor | None:
    return None if labels is None else labels[index : index + 1]
