"""Sharded evaluation (ppl_vae.eval_shards): two CPU processes (gloo) give the numbers of one process.

:func:`evaluations` computes every keyed evaluation once; the test runs it in two processes of a ``torch.distributed``
group (``torch.multiprocessing.spawn``, a file store, a short collective timeout so that a broken rank fails fast) and
in this process without a group, and compares. 13 examples in batches of 4 (or 5) split unevenly (8 and 5 rows, or
10 and 3); a batch of 64 is one batch for two ranks (rank 1 computes nothing). Everything runs in float64, one torch
thread per process: the ranks' values agree with one process's to 1e-10 nats (the same arithmetic on the CPU).
"""

import datetime

import pyro
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from user_programs import build_two_level

from ppl_vae.config import EvalConfig, ModelConfig, ProgramSpec
from ppl_vae.data import Dataset
from ppl_vae.diagnostics import diagnose
from ppl_vae.errors import InputError
from ppl_vae.eval_shards import evaluation_seed, owned_batches, rows_per_rank
from ppl_vae.evaluate import elbo, iwae_log_likelihood, observed_test_set
from ppl_vae.run import evaluate_vae
from ppl_vae.semisupervised import class_log_joint, discrete_program
from ppl_vae.sharding import derived_seed
from ppl_vae.vae import VAE

SEED, N, D = 7, 13, 6
TIMEOUT = datetime.timedelta(seconds=30)
"""The group's collective timeout: a rank that breaks makes the others fail within it instead of hanging."""


def data() -> torch.Tensor:
    """``(N, D)`` 0/1 pixels, the same in every process."""
    return torch.bernoulli(torch.full((N, D), 0.4), generator=torch.Generator().manual_seed(3))


def programs() -> dict:
    """The built-in VAE, a user's program with two latent sites (q(z1 | x) q(z2 | z1)) and an M2 program, each with
    random weights seeded the same in every process."""
    torch.manual_seed(0)
    vae = VAE(ModelConfig(x_dim=D, image_shape=(1, 1, D), z_dim=2, hidden=(8,)))
    two_level = build_two_level(ProgramSpec(path="user_programs:build_two_level", x_dim=D, image_shape=(1, 1, D)))
    m2 = discrete_program(ModelConfig(x_dim=D, image_shape=(1, 1, D), z_dim=2, hidden=(8,), num_classes=2, family="m2"))
    return {"vae": vae, "two_level": two_level, "m2": m2}


def evaluations() -> dict[str, torch.Tensor]:
    """Every keyed evaluation, per-example values (float64): ELBO and IWAE (chunked over samples) of the built-in VAE
    and of the two-level program, one batch for every rank, a memory budget, the diagnostics (log p(x), ELBO, k-hat,
    ESS per example; KL per unit and activity) and the M2 per-class log p(x, y); and the message of an evaluation
    that fails on one rank only (a grey level in the last batch, which rank 1 evaluates)."""
    x, nets = data(), programs()
    vae, two = nets["vae"], nets["two_level"]
    keyed = {"keyed_seed": SEED, "batch_size": 4}
    out = {
        "vae_elbo": elbo(vae.model, vae.guide, x, num_particles=7, **keyed).per_example,
        "vae_iwae": iwae_log_likelihood(vae.model, vae.guide, x, k=50, max_elements=4 * D * 8, **keyed).per_example,
        "vae_iwae_budget": iwae_log_likelihood(vae.model, vae.guide, x, k=50, memory_mb=0.05, **keyed).per_example,
        "vae_one_batch": elbo(vae.model, vae.guide, x, num_particles=7, keyed_seed=SEED, batch_size=64).per_example,
        "two_elbo": elbo(two.model, two.guide, x, num_particles=7, keyed_seed=SEED, batch_size=5).per_example,
        "two_iwae": iwae_log_likelihood(two.model, two.guide, x, k=30, keyed_seed=SEED, batch_size=5).per_example,
        "m2_log_joint": class_log_joint(nets["m2"], x, k=20, keyed_seed=SEED),
    }
    found = diagnose(two.model, two.guide, x, k=100, max_elements=4 * D * 40, **keyed)
    out["diagnose"] = torch.stack([found.log_likelihood.per_example, found.elbo.per_example, found.khat, found.ess])
    kl_se = torch.tensor([site.kl_total_se for site in found.latent_sites.values()])
    out["diagnose_sites"] = torch.cat([found.kl_per_dim, found.activity, kl_se])
    grey = x.clone()
    grey[-1, 0] = 0.5
    try:
        elbo(vae.model, vae.guide, grey, num_particles=2, **keyed)
    except InputError as error:
        out["error"] = str(error)
    return out


def _rank(rank: int, world_size: int, folder) -> None:
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    pyro.clear_param_store()
    dist.init_process_group(
        "gloo", init_method=f"file://{folder / 'store'}", rank=rank, world_size=world_size, timeout=TIMEOUT
    )
    try:
        results, vae = evaluations(), programs()["vae"]
        torch.manual_seed(100 + rank)  # the ranks' generators differ; a group without keyed_seed takes rank 0's draw
        results["drawn_key"] = elbo(vae.model, vae.guide, data(), num_particles=3, batch_size=4).per_example
        torch.save(results, folder / f"rank{rank}.pt")
        dist.barrier()  # with gloo, before destroy_process_group, lest a rank leave while another still reads
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, one_process):
    """:func:`evaluations` in each of two ranks of a gloo group: ``[rank 0's, rank 1's]``. The ranks are forked
    (CPU only, one thread each) after this process's own evaluation, so that they start with its imports instead of
    importing torch, Pyro and ArviZ again (seconds each)."""
    folder = tmp_path_factory.mktemp("sharded")
    mp.start_processes(_rank, args=(2, folder), nprocs=2, start_method="fork")
    return [torch.load(folder / f"rank{rank}.pt", weights_only=True) for rank in range(2)]


@pytest.fixture(scope="module")
def one_process():
    """:func:`evaluations` in this process, without a group."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    pyro.clear_param_store()
    try:
        return evaluations()
    finally:
        torch.set_default_dtype(previous)
        pyro.clear_param_store()


@pytest.mark.parametrize(
    "key",
    [
        "vae_elbo",
        "vae_iwae",
        "vae_iwae_budget",
        "vae_one_batch",
        "two_elbo",
        "two_iwae",
        "m2_log_joint",
        "diagnose",
        "diagnose_sites",
    ],
)
def test_sharded_evaluation_equals_single_process_evaluation(two_ranks, one_process, key):
    """Every rank holds every example's value, in order, equal to one process's keyed evaluation."""
    expected = one_process[key]
    assert expected.dtype == torch.float64 and torch.isfinite(expected).all()
    for found in two_ranks:
        assert found[key].shape == expected.shape
        torch.testing.assert_close(found[key], expected, rtol=0, atol=1e-10)
    assert torch.equal(two_ranks[0][key], two_ranks[1][key])


def test_a_group_without_a_key_draws_one_for_every_rank(two_ranks):
    assert torch.equal(two_ranks[0]["drawn_key"], two_ranks[1]["drawn_key"])


def test_a_failure_on_one_rank_is_raised_on_every_rank(two_ranks, one_process):
    """The grey level is in the last batch, which only rank 1 evaluates; rank 0 raises its message instead of
    waiting in the gather."""
    assert "the model cannot score x" in one_process["error"]
    assert [found["error"] for found in two_ranks] == [one_process["error"]] * 2


def test_keyed_diagnostics_draw_the_weights_of_the_keyed_iwae(one_process, float64):
    """Keyed, :func:`diagnose` and :func:`iwae_log_likelihood` draw the same weights per batch (stream 0), as they do
    unkeyed from the same seed: the same log p(x) per example."""
    two = programs()["two_level"]
    found = iwae_log_likelihood(
        two.model, two.guide, data(), k=100, max_elements=4 * D * 40, keyed_seed=SEED, batch_size=4
    )
    torch.testing.assert_close(found.per_example, one_process["diagnose"][0], rtol=0, atol=1e-12)


def test_keyed_evaluation_ignores_the_global_rng_and_leaves_it_as_it_was(float64):
    """Keyed noise depends on (seed, batch) alone: other global seeds give the same values, the global stream goes on
    as if nothing was drawn, and another keyed seed gives other values."""
    x, vae = data(), programs()["vae"]
    values = []
    for seed in (0, 1):
        pyro.set_rng_seed(seed)
        values.append(iwae_log_likelihood(vae.model, vae.guide, x, k=20, keyed_seed=SEED, batch_size=4).per_example)
        after = torch.rand(3)
        pyro.set_rng_seed(seed)
        assert torch.equal(after, torch.rand(3))
    assert torch.equal(values[0], values[1])
    other = iwae_log_likelihood(vae.model, vae.guide, x, k=20, keyed_seed=SEED + 1, batch_size=4).per_example
    assert not torch.allclose(other, values[0])


def test_keyed_batches_do_not_depend_on_the_batches_before_them(float64):
    """A rank that evaluates only batches 2 and 3 draws what one process draws for them: the last 5 of 13 examples,
    evaluated alone with their batches' keys, equal the one-process values (here by evaluating the examples of
    batches 2 and 3 after a different batch 0 and 1)."""
    x, vae = data(), programs()["vae"]
    whole = elbo(vae.model, vae.guide, x, num_particles=5, keyed_seed=SEED, batch_size=4).per_example
    changed = torch.cat([1 - x[:8], x[8:]])
    after_others = elbo(vae.model, vae.guide, changed, num_particles=5, keyed_seed=SEED, batch_size=4).per_example
    torch.testing.assert_close(after_others[8:], whole[8:], rtol=0, atol=1e-12)
    assert not torch.allclose(after_others[:8], whole[:8])


@pytest.mark.parametrize("world_size", [1, 2, 3, 5, 8])
def test_ranks_own_contiguous_blocks_that_cover_every_batch_once(world_size):
    for num_batches in range(1, 12):
        blocks = [owned_batches(num_batches, rank, world_size) for rank in range(world_size)]
        assert [b for block in blocks for b in block] == list(range(num_batches))
        assert len(blocks[0]) >= 1 and max(map(len, blocks)) - min(map(len, blocks)) <= 1
        rows = [4] * (num_batches - 1) + [1]
        assert sum(rows_per_rank(rows, world_size)) == sum(rows)


def test_keyed_seeds():
    """A single process without a seed stays unkeyed; a seed must be an integer >= 0; derived seeds differ per key
    and fit torch's generators."""
    assert evaluation_seed(None) is None and evaluation_seed(3) == 3
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(InputError, match="keyed_seed"):
            evaluation_seed(bad)
    seeds = {derived_seed(SEED, stream, batch) for stream in range(2) for batch in range(100)}
    assert len(seeds) == 200 and all(0 <= seed < 2**63 for seed in seeds)
    torch.Generator().manual_seed(max(seeds))


def test_evaluate_vae_passes_the_key_to_both_estimates(float64):
    """A run's final evaluation with ``keyed_seed`` reports the keyed ELBO and IWAE of its test set."""
    x, vae = data(), programs()["vae"]
    dataset = Dataset("synthetic", x, x, None, None, (1, 1, D))
    metrics = evaluate_vae(vae, dataset, EvalConfig(k=20, num_particles=5), keyed_seed=SEED)
    x_test = observed_test_set(x, binary=True)
    expected_elbo = elbo(vae.model, vae.guide, x_test, num_particles=5, keyed_seed=SEED)
    expected_iwae = iwae_log_likelihood(vae.model, vae.guide, x_test, k=20, keyed_seed=SEED)
    assert (metrics["test_elbo"], metrics["test_log_likelihood"]) == (expected_elbo.mean, expected_iwae.mean)
