"""Several training processes through ``torch.distributed``.

``torchrun --nproc_per_node=K train.py train ...`` starts K copies of the
command with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
``LOCAL_WORLD_SIZE`` in their environment (and where to meet:
``MASTER_ADDR``, ``MASTER_PORT``). :func:`init` joins them into one process
group: nccl with one GPU per process on CUDA, gloo on the CPU. Without
torchrun (``WORLD_SIZE`` unset or 1) nothing is initialised and every
helper here is what one process needs: rank 0 of 1, collectives that
return their input.

Collectives (:func:`any_rank`, :func:`all_gather_object`,
:func:`mean_over_ranks`, :func:`barrier`)
must be called by every process at the same point of the program.
"""
import gc
import os

import torch
from torch import distributed as dist

from utils.config import UsageError

# The device of this process's collectives: nccl wants CUDA tensors.
_device = torch.device('cpu')


def env_rank():
    """This process's rank as torchrun set it (0 without torchrun); read
    before :func:`init`, e.g. to print only once."""
    return int(os.environ.get('RANK', 0))


def env_world_size():
    """The number of processes torchrun started (1 without torchrun)."""
    return int(os.environ.get('WORLD_SIZE', 1))


def init(device=None):
    """Joins the process group torchrun set up, if it set one up.

    Args:
        device (str or None): The device asked for: None (CUDA when
            available, else the CPU), 'cpu', 'cuda' or 'cuda:<i>'. Under
            torchrun on CUDA each process takes GPU ``LOCAL_RANK``
            whatever the index given.

    Returns:
        torch.device: This process's device.

    Raises:
        UsageError: if a node runs more CUDA processes than it has GPUs.
    """
    global _device
    device = torch.device(device or ('cuda' if torch.cuda.is_available()
                                     else 'cpu'))
    if env_world_size() == 1:
        return device
    if device.type == 'cuda':
        local_world_size = int(os.environ.get('LOCAL_WORLD_SIZE',
                                              env_world_size()))
        n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n_gpu < local_world_size:
            raise UsageError(
                '{} processes on this node need a GPU each, but it has {}: '
                'start torchrun with --nproc_per_node={} (or train on the '
                'CPU with --device=cpu)'.format(local_world_size, n_gpu,
                                                max(n_gpu, 1)))
        device = torch.device('cuda', int(os.environ['LOCAL_RANK']))
        torch.cuda.set_device(device)
        dist.init_process_group('nccl', device_id=device)
    else:
        dist.init_process_group('gloo')
    _device = device
    return device


def shutdown():
    """Leaves the process group, if this process joined one.

    A trainer and its DDP wrapper hold each other, so they outlive the
    last reference to them until the garbage collector runs. Freed after
    the group (at exit), the wrapper can abort the process ("terminate
    called without an active exception"): they are collected first.
    """
    global _device
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
    _device = torch.device('cpu')


def rank():
    """This process's rank, 0 when not distributed."""
    return dist.get_rank() if dist.is_initialized() else 0


def world_size():
    """The number of processes, 1 when not distributed."""
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main():
    """Whether this process writes checkpoints, pictures, plots and logs."""
    return rank() == 0


def any_rank(flag):
    """Whether ``flag`` is true in any process (a collective)."""
    if world_size() == 1:
        return bool(flag)
    value = torch.tensor([int(bool(flag))], device=_device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def all_gather_object(obj):
    """Every process's ``obj`` (picklable), in rank order (a collective)."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(values):
    """The mean over the processes of a dict of numbers, by key (a
    collective); the dict itself when alone."""
    parts = all_gather_object(values)
    return {key: sum(part[key] for part in parts) / len(parts)
            for key in values}


def barrier():
    """Waits for every process (a collective); nothing when alone."""
    if world_size() > 1:
        dist.barrier()
