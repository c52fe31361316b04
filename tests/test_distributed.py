"""utils/distributed.py: several processes. Two gloo processes started here
step together as one process steps on both their images, a non-finite loss
stops both, their evaluation equals one process's; what torchrun's
environment asks for that this machine or data cannot give; and short
torchrun runs of train.py."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import distributed as dist
from torch import multiprocessing as mp
from torch.utils.data import DataLoader

import train
from conftest import (ROOT_DIR, build_tiny_faster_rcnn, quick_train_options,
                      sigterm_once_under_way, toy_model, toy_options)
from data.dataset import TestDataset as VOCTestDataset  # not a test class
from data.sampler import collate_test, eval_batches
from data.synthetic import TOY_LABEL_NAMES, generate_voc
from model.utils.creator_tool import AnchorTargetCreator, ProposalTargetCreator
from trainer import FasterRCNNTrainer
from utils import distributed
from utils.config import UsageError

WORLD_SIZE = 2


def _spawn(worker, tmp_path, *args):
    """Runs ``worker(rank, init_file, out_dir, *args)`` in two gloo
    processes; returns what each saved."""
    init_file = str(tmp_path / 'init')
    mp.spawn(worker, args=(init_file, str(tmp_path)) + args,
             nprocs=WORLD_SIZE, join=True)
    return [torch.load(str(tmp_path / 'rank{}.pt'.format(rank)),
                       weights_only=False) for rank in range(WORLD_SIZE)]


def _init(rank, init_file):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method='file://' + init_file,
                            rank=rank, world_size=WORLD_SIZE)


# -------------------------------------------- stepping together over DDP

def make_trainer():
    """A tiny detector's trainer whose creators take every candidate, so
    that the processes' different numpy draws change nothing but order."""
    model = build_tiny_faster_rcnn(seed=0)
    return FasterRCNNTrainer(
        model, anchor_target_creator=AnchorTargetCreator(n_sample=10 ** 6),
        proposal_target_creator=ProposalTargetCreator(n_sample=10 ** 6))


def rank_batch(rank, step):
    """The image, boxes and labels rank ``rank`` trains on at ``step``."""
    rng = np.random.RandomState(10 * step + rank)
    img = torch.from_numpy(rng.normal(size=(1, 3, 128, 160)).astype(
        np.float32))
    y, x = rng.uniform(0, 50, 2)
    bbox = torch.tensor([[y, x, y + 60, x + 90], [60., 20., 120., 70.]],
                        dtype=torch.float32)
    label = torch.tensor([rank, 2], dtype=torch.int32)
    return img, [bbox], [label]


def params_of(trainer):
    return {k: v.detach().clone()
            for k, v in trainer.faster_rcnn.state_dict().items()
            if isinstance(v, torch.Tensor)}


def _ddp_worker(rank, init_file, out_dir):
    _init(rank, init_file)
    np.random.seed(rank)  # seed + rank, as train.py does
    trainer = make_trainer()
    trainer.wrap_ddp()
    losses, params = [], []
    for step in range(2):
        step_losses = trainer.train_step(*rank_batch(rank, step), 1.)
        total = step_losses.total_loss.detach().clone()
        dist.all_reduce(total)
        losses.append(total.item() / WORLD_SIZE)
        params.append(params_of(trainer))
    meters = trainer.get_meter_data()
    mean_meters = distributed.mean_over_ranks(meters)

    # a non-finite loss in rank 1 stops both, neither steps
    _nan_loss_in_rank_1(trainer, rank)
    try:
        trainer.train_step(*rank_batch(rank, 2), 1.)
        error = None
    except FloatingPointError as err:
        error = str(err)
    torch.save(dict(losses=losses, params=params, error=error,
                    after_nan=params_of(trainer), meters=meters,
                    mean_meters=mean_meters),
               os.path.join(out_dir, 'rank{}.pt'.format(rank)))
    del trainer  # its DDP wrapper is freed before the group goes
    distributed.shutdown()


def _nan_loss_in_rank_1(trainer, rank):
    """Makes the trainer's total loss nan in rank 1 (its forward patched)."""
    forward = trainer.forward

    def nan_in_rank_1(*args):
        out = forward(*args)
        return out._replace(total_loss=out.total_loss * float('nan')) \
            if rank == 1 else out

    trainer.forward = nan_in_rank_1


@pytest.mark.slow  # trains: two processes, two steps each
def test_two_processes_step_as_one_on_both_their_images(tmp_path):
    ranks = _spawn(_ddp_worker, tmp_path)
    # bitwise the same weights in both processes after each step
    for step in range(2):
        for key, value in ranks[0]['params'][step].items():
            assert torch.equal(value, ranks[1]['params'][step][key]), key

    # one process, a batch of both ranks' images each step
    trainer = make_trainer()
    before = params_of(trainer)
    for step in range(2):
        parts = [rank_batch(rank, step) for rank in range(WORLD_SIZE)]
        imgs = torch.cat([p[0] for p in parts])
        bboxes = [p[1][0] for p in parts]
        labels = [p[2][0] for p in parts]
        losses = trainer.train_step(imgs, bboxes, labels, 1.)
        assert losses.total_loss.item() == pytest.approx(
            ranks[0]['losses'][step], rel=1e-5)
        for key, value in params_of(trainer).items():
            torch.testing.assert_close(ranks[0]['params'][step][key], value,
                                       rtol=1e-4, atol=1e-6, msg=key)
    # the test bites: the steps moved the weights
    assert not torch.allclose(before['head.fc.weight'],
                              params_of(trainer)['head.fc.weight'])

    # the logged losses: each process's meters, averaged over both
    own = [rank['meters'] for rank in ranks]
    assert own[0] != own[1]
    for rank in ranks:
        assert rank['mean_meters'] == {
            k: (own[0][k] + own[1][k]) / 2 for k in own[0]}
    assert distributed.mean_over_ranks(own[0]) == own[0]  # alone

    # the non-finite loss of rank 1 stopped both at step 3, weights kept
    assert 'non-finite loss at step 3 in another process' in ranks[0]['error']
    assert ranks[1]['error'].startswith('non-finite loss at step 3: ')
    for rank in ranks:
        for key, value in rank['after_nan'].items():
            assert torch.equal(value, rank['params'][1][key]), key


# ------------------------------------------------- evaluation, shared

def _eval_worker(rank, init_file, out_dir, data_dir, n_test):
    _init(rank, init_file)
    testset = VOCTestDataset(toy_options(data_dir), label_names=TOY_LABEL_NAMES)
    sizes = [testset.db.get_size(i) for i in range(n_test)]
    loader = DataLoader(testset, collate_fn=collate_test,
                        batch_sampler=eval_batches(n_test, 2, rank,
                                                   WORLD_SIZE, sizes))
    result = train.eval(loader, toy_model())
    torch.save(result, os.path.join(out_dir, 'rank{}.pt'.format(rank)))
    distributed.shutdown()


def test_shared_evaluation_equals_one_process(tmp_path):
    data_dir = generate_voc(str(tmp_path / 'toy'), n_images=7, img_size=128,
                            max_obj_size=60, test_fraction=1, seed=3)
    testset = VOCTestDataset(toy_options(data_dir), label_names=TOY_LABEL_NAMES)
    n_test = len(testset)  # 7: one process gets an empty last batch
    ranks = _spawn(_eval_worker, tmp_path, data_dir, n_test)
    want = train.eval(DataLoader(testset, batch_size=1), toy_model())
    assert 0 < want['map'] < 1
    for got in ranks:
        assert got['map'] == want['map']
        np.testing.assert_array_equal(got['ap'], want['ap'])


# ------------------------------------------------ mistakes, named

def test_more_cuda_processes_than_gpus_is_a_usage_error(monkeypatch):
    for key, value in dict(WORLD_SIZE='4', LOCAL_WORLD_SIZE='4',
                           LOCAL_RANK='0', RANK='0').items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    with pytest.raises(UsageError) as info:
        distributed.init('cuda')
    assert str(info.value) == (
        '4 processes on this node need a GPU each, but it has 2: start '
        'torchrun with --nproc_per_node=2 (or train on the CPU with '
        '--device=cpu)')
    assert not dist.is_initialized()


def test_a_training_set_smaller_than_the_processes_is_a_usage_error(
        four_image_data, tmp_path, monkeypatch):
    # as four processes see it, up to the check (nothing else collective)
    monkeypatch.setattr(distributed, 'world_size', lambda: 4)
    monkeypatch.setattr(distributed, 'barrier', lambda: None)
    with pytest.raises(UsageError, match='the training set has 3 images, '
                                         'fewer than the 4 processes'):
        train.train(**quick_train_options(four_image_data, tmp_path / 'ck',
                                          epoch=1))


# ---------------------------------------------------- torchrun, slow

def _torchrun(data_dir, out_dir, *extra):
    return [sys.executable, '-m', 'torch.distributed.run', '--standalone',
            '--nproc_per_node=2', 'train.py', 'train'] + [
        '--{}={}'.format(k, v) for k, v in quick_train_options(
            data_dir, out_dir, epoch=1, batch_size=2,
            test_batch_size=2).items()] + list(extra)


@pytest.mark.slow
def test_torchrun_trains_resumes_and_writes_once(tmp_path):
    data_dir = generate_voc(str(tmp_path / 'toy'), n_images=12, seed=4)
    out = tmp_path / 'ck'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    run = subprocess.run(_torchrun(data_dir, out), cwd=ROOT_DIR, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count('Best voc07 mAP') == 1  # rank 0 alone prints
    assert sum(line.startswith('options: ')
               for line in run.stdout.splitlines()) == 1
    for name in ('best.pth', 'last.pth', 'predictions.png'):
        assert os.path.getsize(str(out / name)) > 0
    last = torch.load(str(out / 'last.pth'), weights_only=False)
    # 9 training images: 5 each (one repeated), 3 batches of <= 2 a process
    assert last['n_step'] == 3 and last['other_info']['epoch'] == 1

    run = subprocess.run(_torchrun(data_dir, out, '--epoch=2',
                                   '--resume=' + str(out / 'last.pth')),
                         cwd=ROOT_DIR, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert 'resumed from {} at epoch 1'.format(out / 'last.pth') in run.stdout
    last = torch.load(str(out / 'last.pth'), weights_only=False)
    assert last['n_step'] == 6 and last['other_info']['epoch'] == 2


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_every_process_and_saves(tmp_path):
    data_dir = generate_voc(str(tmp_path / 'toy'), n_images=12, seed=5)
    out = tmp_path / 'ck'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    returncode, rest = sigterm_once_under_way(
        _torchrun(data_dir, out, '--epoch=100'),
        'epoch 1: lr',  # a checkpoint is written
        cwd=ROOT_DIR, env=env)
    assert returncode != 0
    assert rest.count('--resume=') == 1, rest
    saved = torch.load(str(out / 'interrupted.pth'), weights_only=False)
    assert saved['other_info']['epoch'] >= 2
