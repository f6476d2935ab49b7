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
"""

from __future__ import annotations

import dataclasses
import time

import torch
from torch import nn

from ppl_vae.data import Dataset
from ppl_vae.errors import InputError
from ppl_vae.evaluate import program_test_set
from ppl_vae.heads import HEADS, HeadLayer, convert
from ppl_vae.lab.measure import LabConfig, meanfield_check, train_from
from ppl_vae.programs import UserProgram, as_user_program
from ppl_vae.vae import VAE

HEAD_ESTIMATORS = ("trace", "meanfield")
"""The heads study trains every head under the Monte Carlo and the analytic KL (Pyro's ELBOs)."""


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


def compare_heads(trained: VAE | UserProgram, data: Dataset, settings: LabConfig, progress: bool = True) -> list[dict]:
    """Train every scale head under the Monte Carlo and the analytic KL from the same initial q(z | x).

    Each run rebuilds the model with ``head`` (:attr:`HeadLayer.rebuild`), loads ``trained``'s weights, aligns the
    head rows with :func:`start_heads_alike` (from ``trained``'s own head), and trains ``settings.epochs`` epochs (at
    least 1) with the same optimizer, seed and minibatches. Where meanfield is not the unbiased closed-form
    estimator (:func:`~ppl_vae.lab.measure.meanfield_check` on the first test images), only ``trace`` trains.

    Returns:
        One dict per (head, estimator): ``head``, ``estimator``, ``test_elbo_curve`` and ``train_elbo_curve`` (nats per
        example, one number per epoch), ``train_ms_per_step``.
    """
    source = head_layer(trained)
    program = as_user_program(trained)
    initial_state = {name: value.detach().clone() for name, value in program.modules.state_dict().items()}
    x, y = program_test_set(program, data)
    args = () if y is None else (y[: settings.batch_size],)
    meanfield = meanfield_check(program.model, program.guide, x[: settings.batch_size], *args)
    estimators = [name for name in HEAD_ESTIMATORS if name != "meanfield" or meanfield.problem is None]
    rows = []
    for head in HEADS:
        for estimator in estimators:
            started = time.perf_counter()
            student = source.rebuild(head)
            rebuilt_head = head_layer(student).head
            if rebuilt_head != head:
                raise InputError(f"HeadLayer: rebuild({head!r}) returned a program whose head is {rebuilt_head!r}")
            trained_run = train_from(
                student,
                initial_state,
                data,
                settings.train_config(estimator),
                before_training=lambda model: start_heads_alike(model, source.head),
            )
            rows.append({"head": head, "estimator": estimator, **trained_run})
            if progress:
                print(f"  head {head}, {estimator}: trained in {time.perf_counter() - started:.1f} s", flush=True)
    return rows
