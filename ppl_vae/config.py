"""Run configuration: frozen dataclasses, checked when built, saved as JSON beside the weights.

A run is ``RunConfig(model, data, train, evaluation, program)`` with exactly one of ``model`` (the built-in VAE's
:class:`ModelConfig`) and ``program`` (a :class:`ProgramSpec`: the import path of a user's ``build`` function, its
arguments and the data's size; see :mod:`ppl_vae.user_program`). ``config.json`` holds every section; the one not in use
is ``null``. A ``config.json`` written before programs existed has no ``program`` key and loads as a built-in run.

This module is a plain schema: ``__post_init__`` checks the type and range of every field (integers >= 1, finite
positive numbers, no booleans where numbers are expected, strings where names are expected) and imports no part. The
names of parts (``--guide iaf``, ``--elbo iwae``, ...) and what each part requires of the rest of the configuration
(``iaf`` needs ``z_dim >= 2``) are checked where the parts live, by :func:`ppl_vae.parts.check_run`, at the boundary
where a configuration is turned into things: the VAE, the training step, a stored ``config.json``, the command line.
Either way a bad flag or a hand-edited ``config.json`` fails at once with an :class:`~ppl_vae.errors.InputError`
naming the value.

Example::

    config = RunConfig(model=ModelConfig(x_dim=64, image_shape=(1, 8, 8), z_dim=2))
    text = config.to_json()
    assert RunConfig.from_json(text) == config
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from ppl_vae.errors import InputError

MAX_SEED = 2**32 - 1
"""Seeds run from 0 to ``2**32 - 1``: what ``pyro.set_rng_seed`` (NumPy's ``np.random.seed``) accepts."""

MAX_EPOCHS = 100_000
"""Upper bound of ``--epochs`` (and of ``compare-kl``'s): at the fastest, a digits epoch takes about 0.1 s, so this is
hours of training; a larger count is a typo that would otherwise run until killed."""

MAX_SAMPLES = 100_000
"""Upper bound of every count of samples per example (``--k``, ``--eval-particles``, ``--num-particles``,
``--epoch-eval-particles``, ``--draws``, ``--repetitions``): twenty times the largest ``k`` of the IWAE literature
(5,000), and on MNIST's 10,000 test images already 10^9 decoder passes, hours on a CPU. Memory is bounded by chunking
(:data:`ppl_vae.evaluate.MAX_ELEMENTS`); time is bounded here."""

MAX_LAYERS = 64
"""Upper bound of the number of hidden layers (``--hidden``) and of ``--flow-layers``: each is a module built in
Python; deeper MLPs or flows than this are beyond what the built-in VAE is meant for (write a program)."""

MAX_STEPS = 1_000_000
"""Upper bound of ``--gap-steps`` (SVI steps per example of the inference gap)."""


def require(condition: bool, message: str) -> None:
    """Raise an :class:`InputError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise InputError(message)


MAX_INT = 2**63 - 1
"""No integer of a configuration exceeds torch's largest (int64); sizes are bounded far lower by memory, see
:mod:`ppl_vae.bounds`."""


def require_int(value: Any, flag: str, least: int = 1) -> None:
    """``value`` must be an integer (not a bool) from ``least`` to :data:`MAX_INT`; the message names ``flag``."""
    require(
        isinstance(value, int) and not isinstance(value, bool) and value >= least,
        f"{flag} must be an integer >= {least}, got {value!r}",
    )
    require_at_most(value, flag, MAX_INT, "2^63 - 1, torch's largest integer")


def require_at_most(value: int, flag: str, most: int, why: str) -> None:
    """An integer already checked by :func:`require_int` must not exceed ``most``; ``why`` says where the bound
    comes from."""
    require(value <= most, f"{flag} must be at most {most:,} ({why}), got {value:,}")


def require_samples(value: Any, flag: str) -> None:
    """A count of samples per example: an integer from 1 to :data:`MAX_SAMPLES`."""
    require_int(value, flag)
    require_at_most(value, flag, MAX_SAMPLES, "samples per example; more would take hours")


def require_seed(value: Any, flag: str = "--seed") -> None:
    """An integer from 0 to :data:`MAX_SEED` (not a bool)."""
    require(
        isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEED,
        f"{flag} must be an integer from 0 to {MAX_SEED} (2^32 - 1), got {value!r}",
    )


def require_positive(value: Any, flag: str) -> None:
    """``value`` must be a finite number > 0 (not a bool); the message names ``flag``."""
    require(_is_number(value) and 0 < value < math.inf, f"{flag} must be a positive number, got {value!r}")


def require_name(value: Any, flag: str) -> None:
    """``value`` must be a string: a part's name (whether a part has that name is for its registry to say, see
    :mod:`ppl_vae.parts`)."""
    require(isinstance(value, str), f"{flag} must be a name (a string), got {value!r}")


def require_image_shape(x_dim: int, image_shape: tuple) -> None:
    """``image_shape`` must be ``(C, H, W)``, integers >= 1, with ``C * H * W == x_dim``."""
    require(
        len(image_shape) == 3
        and all(isinstance(side, int) and not isinstance(side, bool) and side >= 1 for side in image_shape)
        and math.prod(image_shape) == x_dim,
        f"image_shape {image_shape} must be (C, H, W), integers >= 1 with C*H*W == x_dim == {x_dim}",
    )


def _sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple))


@dataclass(frozen=True)
class DataConfig:
    """Which data set: a registered name (``digits``, ``mnist``, ...) or a path to an ``.npz`` file.

    ``root`` is the folder for torchvision data sets; ``download`` lets torchvision fetch them.
    """

    name: str = "digits"
    root: str | None = None
    download: bool = False

    def __post_init__(self):
        require_name(self.name, "--data")
        require(
            self.root is None or isinstance(self.root, str), f"--data-root must be a folder path, got {self.root!r}"
        )
        require(isinstance(self.download, bool), f"data download must be true or false, got {self.download!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The VAE's shape and parts.

    Attributes:
        x_dim: pixels per image ``D`` (the data's flattened size).
        image_shape: ``(C, H, W)`` with ``C * H * W == x_dim``; used by plots and convolutional networks.
        z_dim: latent dimensions.
        hidden: hidden-layer widths from the data side inwards (the decoder uses them reversed).
        likelihood, prior, guide, scale_param, net: registry names (see ``ppl_vae.likelihoods`` and friends).
        pixel_scale: the fixed per-pixel scale of the ``gaussian`` and ``laplace`` likelihoods (grey levels), and the
            starting scale of ``gaussian-learned``.
        prior_components: ``K``, the mixture components of the ``mog`` prior and the pseudo-inputs of ``vamp``.
        rank: columns of the ``lowrank`` guide's covariance factor.
        flow_layers: inverse autoregressive flows of the ``iaf`` guide.
        num_classes: 0 for a plain VAE; ``C > 0`` for a conditional VAE on labels ``0..C-1`` (``--conditional``):
            one-hot ``y`` is concatenated to ``x`` for the encoder and to ``z`` for the decoder (``--net mlp``).
        latent_layers: 1 for one latent site ``"z"``; 2 for the hierarchical VAE over ``"z1"`` (``z_dim``
            dimensions, read by the decoder) and ``"z2"`` (``top_z_dim``), see :class:`~ppl_vae.vae.VAE`. The prior
            (``normal`` or ``mog``) is then p(z2); the guide (any) is q(z1 | x).
        top_z_dim: dimensions of ``"z2"`` (``--latent-layers 2`` only), ``1 <= top_z_dim <= z_dim``; ``None`` means
            ``max(1, z_dim // 2)`` (see :attr:`top_dim`).
        family: ``vae`` (the built-in VAE above), or a model with a discrete latent class ``"y"`` over
            ``num_classes >= 2`` values beside ``"z"`` (:mod:`ppl_vae.semisupervised`): ``m2``, the semi-supervised
            M2 of Kingma et al. 2014 (``--family m2 --labelled N``), or ``joint``, the same program with no labels
            (``--family joint --classes C``). Both take the ``mlp`` net, the ``diagonal`` guide, the ``normal``
            prior and one latent layer.
    """

    x_dim: int
    image_shape: tuple[int, int, int]
    z_dim: int = 8
    hidden: tuple[int, ...] = (128,)
    likelihood: str = "bernoulli"
    prior: str = "normal"
    guide: str = "diagonal"
    scale_param: str = "log_scale"
    net: str = "mlp"
    pixel_scale: float = 0.1
    prior_components: int = 10
    rank: int = 2
    flow_layers: int = 2
    num_classes: int = 0
    latent_layers: int = 1
    top_z_dim: int | None = None
    family: str = "vae"

    @property
    def top_dim(self) -> int | None:
        """Dimensions of the top latent site ``"z2"``: ``top_z_dim``, or ``max(1, z_dim // 2)`` when unset;
        ``None`` for a one-layer VAE."""
        if self.latent_layers == 1:
            return None
        return self.top_z_dim if self.top_z_dim is not None else max(1, self.z_dim // 2)

    def __post_init__(self):
        require(_sequence(self.image_shape), f"image_shape must be (C, H, W), got {self.image_shape!r}")
        require(
            _sequence(self.hidden) and len(self.hidden) >= 1,
            "--hidden must list at least one layer width, e.g. --hidden 128 or 256,128",
        )
        object.__setattr__(self, "image_shape", tuple(self.image_shape))
        object.__setattr__(self, "hidden", tuple(self.hidden))
        require_int(self.x_dim, "x_dim")
        require_int(self.z_dim, "--z-dim")
        for width in self.hidden:
            require_int(width, "--hidden widths")
        require_at_most(len(self.hidden), "--hidden layers", MAX_LAYERS, "modules built one by one")
        require_image_shape(self.x_dim, self.image_shape)
        for name, flag in PART_NAME_FLAGS.items():
            require_name(getattr(self, name), flag)
        require_positive(self.pixel_scale, "--pixel-scale")
        require_int(self.prior_components, "--prior-components")
        require_int(self.rank, "--rank")
        require_int(self.flow_layers, "--flow-layers")
        require_at_most(self.flow_layers, "--flow-layers", MAX_LAYERS, "modules built one by one")
        require_int(self.num_classes, "num_classes (0: not conditional)", least=0)
        _check_latent_layers(self)
        _check_family(self)


PART_NAME_FLAGS = {
    "likelihood": "--likelihood",
    "prior": "--prior",
    "guide": "--guide",
    "scale_param": "--scale-param",
    "net": "--net",
}
"""The :class:`ModelConfig` fields that name a part, with their flags."""

MAX_LATENT_LAYERS = 2
"""The built-in VAE has one latent layer ``"z"`` or two, ``"z2" -> "z1"`` (deeper models: write your own program)."""


FAMILIES = ("vae", "m2", "joint")
"""``--family``: the built-in VAE, the semi-supervised M2, the unlabelled joint discrete-continuous VAE."""

DISCRETE_FAMILY_PARTS = {"net": "mlp", "guide": "diagonal", "prior": "normal", "latent_layers": 1}
"""What ``--family m2`` and ``--family joint`` take (:mod:`ppl_vae.semisupervised` builds these networks)."""


def _check_family(config: ModelConfig) -> None:
    """``family`` one of :data:`FAMILIES`; ``m2`` and ``joint`` need ``num_classes >= 2`` and the parts of
    :data:`DISCRETE_FAMILY_PARTS`."""
    require(config.family in FAMILIES, f"--family must be one of {', '.join(FAMILIES)}, got {config.family!r}")
    if config.family == "vae":
        return
    require(
        config.num_classes >= 2,
        f"--family {config.family} needs at least 2 classes of y (--classes, or the data's labels), "
        f"got {config.num_classes}",
    )
    for name, value in DISCRETE_FAMILY_PARTS.items():
        flag = "--" + name.replace("_", "-")
        require(
            getattr(config, name) == value,
            f"--family {config.family} takes {flag} {value}, got {flag} {getattr(config, name)}",
        )


def _check_latent_layers(config: ModelConfig) -> None:
    """``latent_layers`` in ``1..MAX_LATENT_LAYERS``; ``top_z_dim`` only with two layers, within ``1..z_dim``."""
    layers = config.latent_layers
    require(
        isinstance(layers, int) and not isinstance(layers, bool) and 1 <= layers <= MAX_LATENT_LAYERS,
        f"--latent-layers must be an integer from 1 to {MAX_LATENT_LAYERS}, got {layers!r}",
    )
    if config.top_z_dim is not None:
        require(layers == 2, f"--top-z-dim {config.top_z_dim!r} needs --latent-layers 2, got --latent-layers {layers}")
        require(
            isinstance(config.top_z_dim, int)
            and not isinstance(config.top_z_dim, bool)
            and 1 <= config.top_z_dim <= config.z_dim,
            f"--top-z-dim must be an integer from 1 to --z-dim {config.z_dim}, got {config.top_z_dim!r}",
        )


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
        epochs, batch_size: ``epochs`` passes over the data in minibatches of ``batch_size`` examples.
        lr: the learning rate (the start of a schedule).
        elbo: training objective, a name in ``ppl_vae.objectives.OBJECTIVES`` (``trace``, ``meanfield``, ``jit``,
            ``iwae``, ``enum``, ``tracegraph``, ...). From Python, ``fit(..., elbo=<Pyro ELBO instance>)`` replaces it.
        num_particles: samples of the latents per example in the training objective (vectorized).
        seed: one seed gives the same numbers again on the CPU.
        device: torch device for the networks and the data (``cpu``, ``cuda``, ``cuda:1``).
        eval_every: test ELBO every this many epochs (and after the last).
        eval_particles: samples of the latents per test example for that per-epoch test ELBO.
        beta: weight of ``log p(z) - log q(z | x)`` (the KL term) in the objective: the beta-VAE at ``beta != 1``.
        anneal: KL warm-up schedule ``none | linear | cyclical``, multiplying ``beta`` (see ``ppl_vae.objectives``).
        anneal_epochs: ``N``, the length of the linear ramp or of one cycle, in epochs.
        latent_sites: the latent sites that ``beta`` and the warm-up weigh; empty (the default): every latent site
            of the guide. Names that the guide does not sample are refused at the first step.
        optim: ``adam | clipped-adam | adamw | sgd`` (see ``ppl_vae.optim``).
        lr_schedule: ``none | exponential | cosine``: the learning rate at optimizer step ``t`` is ``lr`` times the
            schedule's factor at ``min(t, lr_horizon) / lr_horizon``, falling to ``lr * lr_decay`` at the horizon.
        lr_decay: the final factor of a schedule, in (0, 1].
        lr_horizon: the schedule's length in optimizer steps; ``None``: fixed when the run starts as ``epochs x``
            minibatches per epoch, and kept from then on (stored in ``config.json`` and the checkpoint), so a resumed
            run, even one given more epochs, follows the schedule it started with.
        on_nan: what a training step whose loss or gradients are not finite does (its update is never applied):
            ``stop`` the run with a message naming the epoch, the step and the site, or ``skip`` the step and go on
            (counted in the history as ``nan_skips``) until more than ``max_nan_skips`` steps of the run were skipped.
        max_nan_skips: with ``on_nan="skip"``, the most steps a run may skip; one more stops it.
        lr_factors: per-group learning rates: ``(prefix, factor)`` pairs (a dict is accepted), ``lr`` times
            ``factor`` for the parameters whose names start with ``prefix`` (longest prefix wins; see
            ``ppl_vae.optim``). A prefix that matches no trained parameter is refused at the first step.
        path: how the Pyro objectives take their update: ``fast`` (the ELBO's own ``loss_and_grads`` and one torch
            optimizer over every parameter, without ``SVI``), ``graph`` (the fast path with the loss traced once per
            batch shape into a graph of torch operations and run without Pyro; ``trace``, ``stl`` and ``iwae``;
            checked against the fast path, which takes over with a warning where the programs cannot be traced),
            ``plain`` (``pyro.infer.SVI`` with Pyro's optimizer wrappers), ``auto`` (the default: ``graph`` where it
            applies, ``fast`` for the other Pyro objectives; the hand-written ``reference-*`` steps are one path
            already). All take the same updates from the same draws (see ``ppl_vae.objectives``), so the path does
            not change the numbers, and a run resumes on any.
        labelled: ``--family m2`` only: how many training examples keep their label (balanced over the classes,
            chosen from ``seed``); ``None``: every one.
        alpha: ``--family m2`` only: the weight of the classification term ``alpha * log q(y | x)`` of each labelled
            example; ``None``: ``0.1 x`` the number of training examples (Kingma et al. 2014).
        val_fraction: the share of the training set held out as a validation set (chosen from ``seed``, see
            :func:`ppl_vae.data.validation_split`), in [0, 1): the per-epoch held-out ELBO is then the validation
            ELBO (``val_elbo``) and the test set is touched once, after training. 0 (the default): no validation set,
            the per-epoch curve is the test ELBO (``test_elbo``).
        keyed_noise: draw the guide's noise and the dynamic binarization from generators keyed to the step and the
            global example (see ``ppl_vae.sharding``), so that any number of processes takes the same steps as one;
            ``False`` (the default): one process draws as it always did, several draw independent streams per rank.
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    elbo: str = "trace"
    num_particles: int = 1
    seed: int = 0
    device: str = "cpu"
    eval_every: int = 1
    eval_particles: int = 10
    beta: float = 1.0
    anneal: str = "none"
    anneal_epochs: int = 10
    latent_sites: tuple[str, ...] = ()
    optim: str = "adam"
    lr_schedule: str = "none"
    lr_decay: float = 0.1
    lr_horizon: int | None = None
    lr_factors: tuple[tuple[str, float], ...] = ()
    path: str = "auto"
    labelled: int | None = None
    alpha: float | None = None
    val_fraction: float = 0.0
    on_nan: str = "stop"
    max_nan_skips: int = 10
    keyed_noise: bool = False

    def __post_init__(self):
        require_int(self.epochs, "--epochs")
        require_at_most(self.epochs, "--epochs", MAX_EPOCHS, "hours of training even on the digits")
        require_int(self.batch_size, "--batch-size")
        require_samples(self.num_particles, "--num-particles")
        require_int(self.eval_every, "--eval-every")
        require_samples(self.eval_particles, "--epoch-eval-particles")
        require_seed(self.seed)
        require_positive(self.lr, "--lr")
        for name, flag in TRAIN_PART_NAME_FLAGS.items():
            require_name(getattr(self, name), flag)
        require_positive(self.beta, "--beta")
        require_int(self.anneal_epochs, "--anneal-epochs")
        _check_device(self.device)
        object.__setattr__(self, "latent_sites", _site_names(self.latent_sites))
        require(
            _is_number(self.lr_decay) and 0 < self.lr_decay <= 1,
            f"--lr-decay must be a number in (0, 1], got {self.lr_decay!r}",
        )
        if self.lr_horizon is not None:
            require_int(self.lr_horizon, "lr_horizon (optimizer steps of the schedule)")
        object.__setattr__(self, "lr_factors", _lr_factors(self.lr_factors))
        require(self.path in TRAIN_PATHS, f"--path must be one of {', '.join(TRAIN_PATHS)}, got {self.path!r}")
        if self.labelled is not None:
            require_int(self.labelled, "--labelled")
        if self.alpha is not None:
            require(
                _is_number(self.alpha) and 0 <= self.alpha < math.inf,
                f"--alpha must be a number >= 0, got {self.alpha!r}",
            )
        require(
            _is_number(self.val_fraction) and 0 <= self.val_fraction < 1,
            f"--val-fraction must be a number in [0, 1), got {self.val_fraction!r}",
        )
        require(self.on_nan in ON_NAN, f"--on-nan must be one of {' | '.join(ON_NAN)}, got {self.on_nan!r}")
        require_int(self.max_nan_skips, "--max-nan-skips", least=0)
        require(isinstance(self.keyed_noise, bool), f"--keyed-noise is on or off (a bool), got {self.keyed_noise!r}")


ON_NAN = ("stop", "skip")
"""What a non-finite training step does (``TrainConfig.on_nan``)."""


TRAIN_PATHS = ("auto", "graph", "fast", "plain")
"""``TrainConfig.path``: the training path of the Pyro objectives (``--path``)."""
TRAIN_PART_NAME_FLAGS = {"elbo": "--elbo", "anneal": "--anneal", "optim": "--optim", "lr_schedule": "--lr-schedule"}
"""The :class:`TrainConfig` fields that name a part (an objective, a schedule, an optimizer), with their flags."""


def _is_number(value: Any) -> bool:
    """A real number that is not a bool (NaN passes here: compare it with bounds, which NaN never meets)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _site_names(names: Any) -> tuple[str, ...]:
    """``latent_sites`` as a tuple of distinct, non-empty site names."""
    require(
        not isinstance(names, str) and isinstance(names, (list, tuple)),
        f"latent_sites must be a list of site names, e.g. ('z',), got {names!r}",
    )
    require(
        all(isinstance(name, str) and name for name in names) and len(set(names)) == len(names),
        f"latent_sites must hold distinct, non-empty site names, got {names!r}",
    )
    return tuple(names)


def _lr_factors(value: Any) -> tuple[tuple[str, float], ...]:
    """``lr_factors`` (a dict or ``(prefix, factor)`` pairs, as JSON gives them back) as a tuple of pairs."""
    pairs = list(value.items()) if isinstance(value, dict) else value
    require(
        isinstance(pairs, (list, tuple)) and all(isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in pairs),
        f"lr_factors must map parameter-name prefixes to factors, e.g. {{'decoder': 0.1}}, got {value!r}",
    )
    for prefix, factor in pairs:
        require(isinstance(prefix, str) and prefix, f"lr_factors: a prefix must be a non-empty string, got {prefix!r}")
        require_positive(factor, f"lr_factors[{prefix!r}]")
    prefixes = [prefix for prefix, _ in pairs]
    require(len(set(prefixes)) == len(prefixes), f"lr_factors names a prefix twice: {prefixes}")
    return tuple((prefix, float(factor)) for prefix, factor in pairs)


@dataclass(frozen=True)
class EvalConfig:
    """Final evaluation: ``k`` importance samples per example for log p(x), ``num_particles`` for the test ELBO;
    ``memory_mb``: the memory budget of one vectorized pass of samples, MB (10^6 bytes; ``None``: at most 2^24
    values of ``samples x examples x pixels``), see :mod:`ppl_vae.eval_memory`."""

    k: int = 1000
    num_particles: int = 100
    memory_mb: float | None = None

    def __post_init__(self):
        require_samples(self.k, "--k")
        require_samples(self.num_particles, "--eval-particles")
        if self.memory_mb is not None:
            check_memory_mb(self.memory_mb)


def check_memory_mb(memory_mb: Any) -> None:
    """A memory budget is a positive, finite number of MB."""
    require(
        _is_number(memory_mb) and math.isfinite(memory_mb) and memory_mb > 0,
        f"--eval-memory-mb {memory_mb!r}: expected a positive number of megabytes, e.g. 256",
    )


@dataclass(frozen=True)
class ProgramSpec:
    """A user's program in a run: which ``build`` function to import, with which arguments, for which data.

    ``build(spec)`` receives this object (see :mod:`ppl_vae.user_program`), so it can size its networks from the data.

    Attributes:
        path: ``"package.module:function"``, imported as Python imports any module (``--program``).
        x_dim: pixels per example ``D`` of the data set.
        image_shape: ``(C, H, W)`` with ``C * H * W == x_dim``.
        num_classes: the data set's classes (0: no labels).
        args: the program's options (``--program-arg key=value``): identifier keys, JSON values (numbers, strings,
            booleans, null, lists, objects). Read them, do not change them.
    """

    path: str
    x_dim: int
    image_shape: tuple[int, int, int]
    num_classes: int = 0
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        module, colon, function = self.path.partition(":") if isinstance(self.path, str) else ("", "", "")
        require(
            colon == ":" and all(part.isidentifier() for part in module.split(".")) and function.isidentifier(),
            f"--program {self.path!r}: expected package.module:function, e.g. mypackage.models:build",
        )
        object.__setattr__(self, "image_shape", tuple(self.image_shape))
        require_int(self.x_dim, "x_dim")
        require_image_shape(self.x_dim, self.image_shape)
        require_int(self.num_classes, "num_classes (0: no labels)", least=0)
        require(isinstance(self.args, dict), f"program args must be a JSON object, got {self.args!r}")
        for key in self.args:
            require(
                isinstance(key, str) and key.isidentifier(),
                f"--program-arg key {key!r} is not a Python identifier (letters, digits, _; not first a digit)",
            )
        try:  # a copy in plain JSON types, so that config.json reads back equal
            args = json.loads(json.dumps(self.args, allow_nan=False))
        except (TypeError, ValueError) as error:
            message = f"program args must be JSON values (finite numbers, strings, lists, ...): {error}"
            raise InputError(message) from None
        object.__setattr__(self, "args", args)


SCHEMA_VERSION = 2
"""The version of ``config.json``'s schema that this code writes (see :meth:`RunConfig.from_json`)."""


@dataclass(frozen=True)
class RunConfig:
    """Everything needed to rebuild a run: the model (built-in) or the program (a user's), data, training and
    evaluation settings. Exactly one of ``model`` and ``program`` is given."""

    model: ModelConfig | None = None
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    program: ProgramSpec | None = None

    def __post_init__(self):
        require(
            (self.model is None) != (self.program is None),
            "a run has either a model (the built-in VAE) or a program (a user's), "
            f"got {'both' if self.model is not None else 'neither'}",
        )
        family = self.model.family if self.model is not None else "program"
        for name in ("labelled", "alpha"):
            require(
                getattr(self.train, name) is None or family == "m2",
                f"--{name} {getattr(self.train, name)} is an option of --family m2, not of {family}",
            )

    def to_json(self) -> str:
        """The config as JSON, with the ``schema_version`` that wrote it."""
        return json.dumps({**dataclasses.asdict(self), "schema_version": SCHEMA_VERSION}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        """Parse and check a ``config.json``. Unknown keys are an :class:`InputError`; a missing key takes its default
        (runs written before the key existed), a missing required one (``model.x_dim``) is an error.

        ``schema_version`` (absent: 1) says which version of this schema wrote the file; a version newer than
        :data:`SCHEMA_VERSION` is refused. Version 2 added ``train.on_nan`` and ``train.max_nan_skips``, whose defaults
        are what version 1 did (stop at a non-finite loss); no default has changed since version 1, so a missing key of
        any version takes today's default. A default that changes must bump the version and keep the old default for
        files of the older versions here.

        ``data``, ``train`` and ``evaluation`` are required; ``model`` and ``program`` may be absent or ``null``, and
        exactly one of them must be given.
        """
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"config is not valid JSON: {error}") from None
        require(isinstance(raw, dict), f"config must be a JSON object, got {type(raw).__name__}")
        version = raw.pop("schema_version", 1)
        require(
            isinstance(version, int) and not isinstance(version, bool) and 1 <= version <= SCHEMA_VERSION,
            f"config schema_version {version!r}: this ppl_vae reads versions 1 to {SCHEMA_VERSION} (a newer one wrote "
            "it?)",
        )
        required = {"data": DataConfig, "train": TrainConfig, "evaluation": EvalConfig}
        optional = {"model": ModelConfig, "program": ProgramSpec}
        require(
            set(required) <= set(raw) <= set(required) | set(optional),
            f"config has sections {sorted(raw)}, expected {sorted(required)} and one of {sorted(optional)}",
        )
        sections = {name: _from_dict(kind, raw[name], name) for name, kind in required.items()}
        for name, kind in optional.items():
            if raw.get(name) is not None:
                sections[name] = _from_dict(kind, raw[name], name)
        return cls(**sections)


def _from_dict(kind, values: Any, section: str):
    require(isinstance(values, dict), f"config section {section!r} must be an object, got {values!r}")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    require(not unknown, f"config section {section!r} has unknown keys {unknown}: expected some of {sorted(known)}")
    try:
        return kind(**values)
    except (TypeError, ValueError) as error:  # a wrong type that a check did not expect (a list for a number, ...)
        if isinstance(error, InputError):
            raise
        raise InputError(f"config section {section!r}: {error}") from None


def _check_device(device: str) -> None:
    import torch

    require(isinstance(device, str), f"--device must be a torch device name, e.g. cpu or cuda:0, got {device!r}")
    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"--device {device!r} is not a torch device: expected e.g. cpu, cuda, cuda:0") from None
