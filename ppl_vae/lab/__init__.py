"""The KL lab (``ppl-vae compare-kl``): Monte Carlo KL, analytic KL and "sticking the landing", measured side by side.

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
mean zero, so they differ in variance, not in value. :func:`compare_kl` measures that, for the built-in VAE or any
user's program (:class:`~ppl_vae.user_program.UserProgram`; labels and other extra arguments reach every estimator):

- at fixed parameters, on one fixed minibatch of ``B`` test images, ``R`` repetitions of each estimator give the mean
  ELBO (nats per example) with its standard error, the gradient variance per parameter group and the time of one
  loss-and-gradient evaluation;
- then each estimator trains ``E`` epochs from the same initial weights (same seed, same minibatches) and its test
  ELBO is recorded after every epoch.

``meanfield`` is what its name says only where every latent site has a registered closed-form KL and the guide is
mean-field; :func:`meanfield_check` reads both from traces of the programs, the report says which, and ``compare_kl``
leaves meanfield out where it is not (a two-layer VAE's q(z2 | z1), a flow guide).

:func:`compare_heads` answers "why log-variance and not log-sigma?": each scale head (``log_scale``, ``log_var``,
``softplus``) trains from the same initial q(z | x) (:func:`start_heads_alike`) under the Monte Carlo and the analytic
KL, for the built-in VAE or a program that offers a :class:`~ppl_vae.heads.HeadLayer`.

The package: :mod:`~ppl_vae.lab.measure` (estimators at fixed parameters, training curves, what meanfield does),
:mod:`~ppl_vae.lab.heads_study`, :mod:`~ppl_vae.lab.report` (Markdown, JSON, figures) and
:mod:`~ppl_vae.lab.compare` (``compare_kl`` and ``prepare``, which put them together).

Example::

    vae, data = prepare(data_name="digits", z_dim=8)
    result = compare_kl(vae, data, LabConfig(repetitions=200, epochs=10))
    print(write_report(result, "runs/compare-kl"))    # compare_kl.json, compare_kl.md, compare_kl.png
"""

from ppl_vae.lab.compare import compare_kl, prepare
from ppl_vae.lab.heads_study import (
    HEAD_ESTIMATORS,
    HeadRun,
    compare_heads,
    fresh_vae,
    head_layer,
    heads_design_from_args,
    heads_grid,
    start_heads_alike,
)
from ppl_vae.lab.measure import (
    ESTIMATORS,
    FixedNoise,
    LabConfig,
    MeanfieldCheck,
    agreement,
    analytic_kl_sites,
    describe_meanfield,
    has_analytic_kl,
    meanfield_check,
    measure_estimator,
    parameter_groups,
    train_from,
)
from ppl_vae.lab.report import format_report, write_report

__all__ = [
    "ESTIMATORS",
    "HEAD_ESTIMATORS",
    "FixedNoise",
    "HeadRun",
    "LabConfig",
    "MeanfieldCheck",
    "agreement",
    "analytic_kl_sites",
    "compare_heads",
    "compare_kl",
    "describe_meanfield",
    "format_report",
    "fresh_vae",
    "has_analytic_kl",
    "head_layer",
    "heads_design_from_args",
    "heads_grid",
    "meanfield_check",
    "measure_estimator",
    "parameter_groups",
    "prepare",
    "start_heads_alike",
    "train_from",
    "write_report",
]
