"""The memory a built-in VAE needs, estimated from its configuration before anything is allocated, and refused in one
line when it exceeds what the machine has.

Sizes (``--z-dim``, ``--hidden`` widths, ``--prior-components``, ``--rank``, ``--flow-layers``, the number of classes
of ``--conditional``, ``--num-particles``, ``--batch-size``) have no fixed upper bound: the bound is this machine's
memory. Without this check a huge size fails inside the allocator (a traceback), or swaps until killed.

The estimate, in bytes of float32 (4 bytes a value), is the largest of three phases, each an upper-side count:

- **parameters**: ``P`` weights of every part (:func:`parameter_count`: the networks' dense layers, the prior's
  mixture or the VampPrior's ``K x D`` pseudo-inputs, the flows' MADEs), times 4 when training: the weights, their
  gradients and Adam's two moments (``16 P`` bytes);
- **training activations**: per example and sample of a minibatch (``min(batch_size, N) x num_particles`` of them),
  every network layer's output, kept for the backward pass and matched by its gradient (x 2); the VampPrior adds its
  encoder run on the ``K`` pseudo-inputs and ``K x z_dim`` values per example and sample for the mixture's density;
- **evaluation**: :mod:`ppl_vae.evaluate` holds at most :data:`~ppl_vae.evaluate.MAX_ELEMENTS` decoder outputs at
  once (``samples x examples x D``), so at most ``MAX_ELEMENTS / D`` example-samples, each with the networks' layer
  outputs and, for a mixture prior, ``K x z_dim`` values for its density (the chunking does not shrink with ``K``:
  this term is what bounds ``--prior-components``; on the digits with ``--k 1000``, ``--prior vamp
  --prior-components 5000`` needs about 80 GiB).

The available memory is the kernel's ``MemAvailable`` (``/proc/meminfo``; where that is missing, the free physical
pages from ``os.sysconf``), or the free memory of a CUDA device (``torch.cuda.mem_get_info``). The estimate ignores
PyTorch's own overhead (a few hundred MiB), so a run just under the limit may still not fit; a run refused here would
certainly not.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ppl_vae.config import EvalConfig, ModelConfig, TrainConfig, require

BYTES = 4
"""float32."""

TRAINING_COPIES = 4
"""Weights, gradients and Adam's two moments."""

GiB = 2**30

EVAL_BATCH = 256
"""Examples per batch of :func:`ppl_vae.evaluate.elbo` and :func:`~ppl_vae.evaluate.iwae_log_likelihood`."""


def _dense(widths: list[int]) -> int:
    """Weights and biases of dense layers through ``widths``."""
    return sum(a * b + b for a, b in zip(widths, widths[1:], strict=False))


def _conv_flat(config: ModelConfig) -> int:
    """Values of a convolutional encoder's feature map, ``64 x ceil(H/4) x ceil(W/4)``."""
    from ppl_vae.nets import CONV_CHANNELS

    _, height, width = config.image_shape
    return CONV_CHANNELS[1] * math.ceil(height / 4) * math.ceil(width / 4)


def _guide_outputs(config: ModelConfig) -> int:
    """Width of the encoder's last layer: ``2 z`` (diagonal, iaf), ``z (2 + rank)`` (lowrank)."""
    return config.z_dim * (2 + config.rank) if config.guide == "lowrank" else 2 * config.z_dim


def _networks(config: ModelConfig) -> list[list[int]]:
    """The widths of every dense network of the VAE: encoder, decoder, and with two latent layers p(z1 | z2) and
    q(z2 | z1)."""
    from ppl_vae.likelihoods import LIKELIHOODS

    classes, z = config.num_classes, config.z_dim
    hidden = config.hidden
    first = _conv_flat(config) if config.net == "conv" else config.x_dim + classes
    outputs = LIKELIHOODS.get(config.likelihood).outputs_per_pixel * config.x_dim
    last = _conv_flat(config) if config.net == "conv" else outputs
    networks = [[first, *hidden, _guide_outputs(config)], [z + classes, *reversed(hidden), last]]
    if config.latent_layers == 2:
        top = config.top_z_dim if config.top_z_dim is not None else max(1, z // 2)
        networks += [[top, *reversed(hidden), 2 * z], [z, *hidden, 2 * top]]
    return networks


def parameter_count(config: ModelConfig) -> int:
    """Trained values ``P`` of the VAE ``config`` describes (an upper-side count): dense layers of every network, the
    likelihood's own (at most one per pixel, ``gaussian-learned``'s scales), the prior's (MoG: ``K (1 + 2 z)``;
    VampPrior: ``K x D`` pseudo-inputs), the IAF's MADEs (``z -> 3z + 1 -> 2z`` each) and the convolutions."""
    count = sum(_dense(widths) for widths in _networks(config)) + config.x_dim  # a likelihood's own: one per pixel
    z, k = config.z_dim, config.prior_components
    if config.prior == "mog":
        count += k * (1 + 2 * z)
    elif config.prior == "vamp":
        count += k * config.x_dim
    if config.guide == "iaf":
        count += config.flow_layers * _dense([z, 3 * z + 1, 2 * z])
    if config.net == "conv":
        channels = config.image_shape[0]
        count += 2 * (channels * 32 * 9 + 32 * 64 * 9 + 96)
    return count


def _values_per_sample(config: ModelConfig) -> int:
    """Layer outputs per example and sample of z: every network's widths, the flows', the VampPrior's ``K z``."""
    count = sum(sum(widths) for widths in _networks(config))
    if config.guide == "iaf":
        count += config.flow_layers * (6 * config.z_dim + 1)
    if config.prior in ("mog", "vamp"):
        count += config.prior_components * config.z_dim * 2
    return count


def memory_estimate(
    config: ModelConfig,
    train: TrainConfig | None = None,
    evaluation: EvalConfig | None = None,
    num_train: int | None = None,
    num_test: int | None = None,
) -> dict[str, int]:
    """Bytes per phase: ``parameters`` (weights only without ``train``, else x 4), and with ``train``
    ``training`` (parameters plus a minibatch's activations, ``min(batch_size, num_train) x num_particles``
    example-samples) and ``evaluation`` (the weights plus one chunk of :mod:`ppl_vae.evaluate`: ``s x B``
    example-samples, ``B = min(EVAL_BATCH, num_test)`` examples and ``s = min(samples, MAX_ELEMENTS / (B x D))``,
    ``samples`` the largest of ``evaluation.k``, ``evaluation.num_particles`` and ``train.eval_particles``)."""
    from ppl_vae.evaluate import MAX_ELEMENTS

    weights = parameter_count(config) * BYTES
    if train is None:
        return {"parameters": weights}
    parameters = weights * TRAINING_COPIES
    batch = train.batch_size if num_train is None else min(train.batch_size, num_train)
    per_sample = _values_per_sample(config) * BYTES
    activations = batch * train.num_particles * per_sample * 2
    if config.prior == "vamp":  # the encoder on the K pseudo-inputs, forward and backward
        activations += config.prior_components * sum(_networks(config)[0]) * BYTES * 2
    samples = max([train.eval_particles, *([evaluation.k, evaluation.num_particles] if evaluation else [])])
    examples = EVAL_BATCH if num_test is None else min(EVAL_BATCH, num_test)
    chunk = max(1, min(samples, MAX_ELEMENTS // (examples * config.x_dim)))
    return {
        "parameters": parameters,
        "training": parameters + activations,
        "evaluation": weights + chunk * examples * per_sample,
    }


def available_memory(device: str = "cpu") -> int:
    """Bytes free for a run on ``device``: a CUDA device's free memory, else the kernel's ``MemAvailable``."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _size_flags(config: ModelConfig) -> str:
    """The flags that set the sizes of ``config``, with their values, for the message."""
    sizes = [f"--z-dim {config.z_dim}", f"--hidden {','.join(map(str, config.hidden))}"]
    if config.prior in ("mog", "vamp"):
        sizes.append(f"--prior-components {config.prior_components}")
    if config.guide == "lowrank":
        sizes.append(f"--rank {config.rank}")
    if config.guide == "iaf":
        sizes.append(f"--flow-layers {config.flow_layers}")
    if config.num_classes:
        sizes.append(f"{config.num_classes} classes")
    return ", ".join(sizes)


def check_memory(
    config: ModelConfig,
    train: TrainConfig | None = None,
    evaluation: EvalConfig | None = None,
    num_train: int | None = None,
    num_test: int | None = None,
    *,
    available: int | None = None,
) -> dict[str, int]:
    """The :func:`memory_estimate` of ``config`` (with ``train``, ``evaluation`` and the data's sizes), or an
    :class:`~ppl_vae.errors.InputError` naming the phase that needs more than ``available`` bytes (default
    :func:`available_memory` of ``train.device``), its estimate, and the sizes that set it."""
    estimate = memory_estimate(config, train, evaluation, num_train, num_test)
    if available is None:
        available = available_memory(train.device if train is not None else "cpu")
    phase, needed = max(estimate.items(), key=lambda item: item[1])
    sizes = _size_flags(config)
    if phase == "training":
        sizes += f", --batch-size {train.batch_size}, --num-particles {train.num_particles}"
    elif phase == "evaluation" and evaluation is not None:
        sizes += f", --k {evaluation.k}, --eval-particles {evaluation.num_particles}"
    require(
        needed <= available,
        f"this VAE needs about {needed / GiB:,.1f} GiB for its {phase} ({parameter_count(config):,} parameters; "
        f"{sizes}), more than the {available / GiB:,.1f} GiB available: choose smaller sizes",
    )
    return estimate
