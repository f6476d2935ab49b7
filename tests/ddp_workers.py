"""What each process of ``tests/test_distributed.py``'s two-process runs does (started by
``torch.multiprocessing.start_processes`` with ``fork``: the children start at once with torch, Pyro and ppl_vae
imported, where ``spawn`` would import them afresh in each, for seconds).

Every rank joins a gloo group through :func:`ppl_vae.distributed.process_group` (torchrun's environment variables,
set here by hand), trains with one thread, in float64, and checks after every update that its parameters equal rank
0's; rank 0 saves what it trained for the test to compare with one process.
"""

import os

import torch
import torch.distributed as dist
from small_digits import float64_digits

TIMEOUT_S = 20.0
"""The collective timeout of the test groups: a broken rank fails the test in seconds instead of hanging it."""


def small_data(digits):
    """64 training and 20 test digits in float64: global minibatches of 15 split 8 + 7 over two ranks, and a last one
    of 4 (2 + 2)."""
    return float64_digits(digits, 64, 20)


def train_small(data, run_dir=None, resume=False, **train):
    """The built-in VAE (z_dim 2, hidden 8) built with seed 0 and trained 2 epochs in minibatches of 15 by ``fit``;
    its history and final weights."""
    from ppl_vae.config import TrainConfig
    from ppl_vae.run import model_config_for
    from ppl_vae.train import fit, seed_everything
    from ppl_vae.vae import VAE

    seed_everything(0)
    vae = VAE(model_config_for(data, z_dim=2, hidden=(8,)))
    config = TrainConfig(**{"epochs": 2, "batch_size": 15, "eval_particles": 3, **train})
    history = fit(vae, data, config, run_dir=run_dir, resume=resume, progress=False)
    return history, {key: value.clone() for key, value in vae.state_dict().items()}


def train_small_m2(data, **train):
    """M2 (z_dim 2, hidden 8, 20 of the 64 training labels kept, y enumerated) built with seed 0 and trained like
    :func:`train_small`, through the view ``ppl-vae train --family m2`` trains; its history and final weights."""
    from ppl_vae.config import RunConfig, TrainConfig
    from ppl_vae.run import model_config_for
    from ppl_vae.semisupervised import discrete_program, training_view
    from ppl_vae.train import fit, seed_everything

    seed_everything(0)
    model = model_config_for(data, z_dim=2, hidden=(8,), family="m2", num_classes=data.num_classes)
    config = TrainConfig(
        **{"epochs": 2, "batch_size": 15, "eval_particles": 3, "elbo": "enum", "labelled": 20, **train}
    )
    program = discrete_program(model)
    trainee, view = training_view(program, data, RunConfig(model=model, train=config))
    history = fit(trainee, view, config, progress=False)
    return history, {key: value.clone() for key, value in program.modules.state_dict().items()}


def _check_every_update(checked: list):
    """Wrap ShardedStep's update so that, after each one, this rank's parameters are compared with rank 0's (exactly:
    DDP gives every rank the same averaged gradient and the same optimizer step)."""
    from ppl_vae.data_parallel import ShardedStep

    update = ShardedStep.__call__

    def checked_update(self, *args, **kwargs):
        loss = update(self, *args, **kwargs)
        mine = torch.cat([parameter.detach().flatten() for parameter in self.program.modules.parameters()])
        first = mine.clone()
        dist.broadcast(first, src=0)
        assert torch.equal(mine, first), f"rank {dist.get_rank()}: parameters differ from rank 0's"
        checked.append(loss)
        return loss

    ShardedStep.__call__ = checked_update


def _forbid_writes():
    """On a rank other than 0, writing a checkpoint fails the test."""
    from ppl_vae import train

    def refuse(*args, **kwargs):
        raise AssertionError(f"rank {dist.get_rank()} wrote a checkpoint: only rank 0 writes")

    train.save_checkpoint = refuse


def train_two(rank: int, world: int, port: int, folder: str, data) -> None:
    """Rank ``rank``: train :func:`train_small` on ``data`` data-parallel with keyed noise into ``folder/keyed`` and
    with the default noise, then :func:`train_small_m2` with keyed noise; rank 0 saves the three results (and the
    global train ELBO every rank saw) to ``folder/rank0.pt``."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    import pyro

    from ppl_vae.distributed import process_group

    pyro.clear_param_store()
    checked = []
    with process_group("cpu", timeout=TIMEOUT_S):
        _check_every_update(checked)
        if rank:
            _forbid_writes()
        keyed = train_small(data, run_dir=os.path.join(folder, "keyed"), keyed_noise=True)
        steps = len(checked)
        pyro.clear_param_store()
        default = train_small(data)
        elbos = [torch.tensor([record["train_elbo"] for record in default[0]]) for _ in range(world)]
        dist.all_gather(elbos, elbos[0].clone())
        pyro.clear_param_store()
        m2 = train_small_m2(data, keyed_noise=True)
    if rank == 0:
        saved = {"keyed": keyed, "default": default, "m2": m2, "steps": steps, "checked": len(checked)}
        torch.save({**saved, "train_elbos": elbos}, os.path.join(folder, "rank0.pt"))


def train_until_killed(rank: int, world: int, port: int, folder: str, data) -> None:
    """Rank ``rank`` of a long keyed run into ``folder`` (200 epochs), with a collective timeout of 5 seconds: the
    test kills rank 1 once the first checkpoint is written, and rank 0 then fails at its next collective."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    import pyro

    from ppl_vae.distributed import process_group

    pyro.clear_param_store()
    with process_group("cpu", timeout=5.0):
        train_small(data, run_dir=folder, keyed_noise=True, epochs=200)
