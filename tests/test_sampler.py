"""data/sampler.py: batching. The padding collate, batches of one
orientation (alone and under a DistributedSampler), and each process's
share of a test set."""
import numpy as np
import pytest
import torch
from torch.utils.data import RandomSampler, default_collate
from torch.utils.data.distributed import DistributedSampler

from data.sampler import (AspectRatioBatchSampler, collate_detection,
                          collate_test, eval_batches, orientation_groups)


def example(rng, h, w, n_box):
    img = rng.normal(size=(3, h, w)).astype(np.float32)
    bbox = np.sort(rng.uniform(0, min(h, w), (n_box, 2, 2)), axis=1)
    bbox = bbox.reshape(n_box, 4)[:, [0, 2, 1, 3]].astype(np.float32)
    label = rng.randint(0, 5, n_box).astype(np.int32)
    return img, bbox, label, float(rng.uniform(0.5, 2))


# ------------------------------------------------------------ collate

def test_collate_pads_bottom_right_and_keeps_each_images_own():
    rng = np.random.RandomState(0)
    batch = [example(rng, 40, 60, 3), example(rng, 50, 30, 0),
             example(rng, 20, 20, 1)]
    imgs, bboxes, labels, scales, img_sizes = collate_detection(batch)
    assert imgs.shape == (3, 3, 50, 60) and imgs.dtype == torch.float32
    assert img_sizes.tolist() == [[40, 60], [50, 30], [20, 20]]
    for i, (img, bbox, label, scale) in enumerate(batch):
        h, w = img.shape[1:]
        assert torch.equal(imgs[i, :, :h, :w], torch.from_numpy(img))
        assert (imgs[i, :, h:] == 0).all() and (imgs[i, :, :, w:] == 0).all()
        assert torch.equal(bboxes[i], torch.from_numpy(bbox))
        assert torch.equal(labels[i], torch.from_numpy(label))
        assert scales[i].item() == scale
    assert bboxes[1].shape == (0, 4) and labels[1].shape == (0,)
    assert scales.dtype == torch.float64


def test_collate_pads_up_to_a_multiple():
    rng = np.random.RandomState(1)
    batch = [example(rng, 40, 60, 1), example(rng, 33, 65, 1)]
    imgs = collate_detection(batch, size_divisible=32)[0]
    assert imgs.shape == (2, 3, 64, 96)
    assert (imgs[0, :, 40:] == 0).all() and (imgs[1, :, :, 65:] == 0).all()


def test_a_batch_of_one_is_what_the_default_collate_gave():
    rng = np.random.RandomState(2)
    batch = [example(rng, 40, 60, 2)]
    imgs, bboxes, labels, scales, img_sizes = collate_detection(batch)
    want = default_collate(batch)
    assert torch.equal(imgs, want[0])
    assert torch.equal(bboxes[0], want[1][0])
    assert torch.equal(labels[0], want[2][0])
    assert scales.item() == want[3].item()
    assert img_sizes.tolist() == [[40, 60]]


def test_collate_test_gives_lists_and_takes_an_empty_batch():
    rng = np.random.RandomState(3)
    a = (rng.normal(size=(3, 20, 30)), (40, 60), np.zeros((1, 4)),
         np.zeros(1), np.zeros(1, bool))
    b = (rng.normal(size=(3, 30, 20)), (60, 40), np.zeros((2, 4)),
         np.zeros(2), np.zeros(2, bool))
    imgs, sizes, bboxes, labels, difficults = collate_test([a, b])
    assert imgs[1] is b[0] and sizes == [(40, 60), (60, 40)]
    assert bboxes[1] is b[2] and difficults[0] is a[4]
    assert collate_test([]) == ([], [], [], [], [])


# ------------------------------------------------- aspect-ratio batches

def random_sizes(n, seed):
    rng = np.random.RandomState(seed)
    return [tuple(rng.choice([300, 375, 500], 2)) for _ in range(n)]


def check_batches(batches, groups, batch_size, want_indices):
    for batch in batches:
        assert 1 <= len(batch) <= batch_size
        assert len({groups[i] for i in batch}) == 1, 'mixed orientations'
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == sorted(want_indices), 'not every index once'


def test_orientation_groups():
    assert orientation_groups([(300, 500), (500, 300), (400, 400)]) == [
        1, 0, 0]


@pytest.mark.parametrize('n, batch_size', [(23, 2), (24, 4), (5, 8),
                                           (40, 3), (2, 2)])
def test_batches_hold_one_orientation_and_every_index_once(n, batch_size):
    sizes = random_sizes(n, n)
    groups = orientation_groups(sizes)
    sampler = AspectRatioBatchSampler(
        RandomSampler(range(n), generator=torch.Generator().manual_seed(0)),
        groups, batch_size)
    batches = list(sampler)
    check_batches(batches, groups, batch_size, range(n))
    assert len(batches) == len(sampler)


def test_one_orientation_only_makes_no_extra_batch():
    sampler = AspectRatioBatchSampler(range(10), [0] * 10, 4)
    assert list(sampler) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(sampler) == 3


def test_too_few_batches_get_the_largest_cut():
    # both orientations in the dataset, but these indices are all portrait
    groups = [0] * 8 + [1]
    sampler = AspectRatioBatchSampler(range(8), groups, 4)
    assert len(sampler) == 3
    assert list(sampler) == [[0, 1], [2, 3], [4, 5, 6, 7]]


@pytest.mark.parametrize('world_size', [2, 3])
@pytest.mark.parametrize('batch_size', [2, 4])
def test_batches_under_a_distributed_sampler(world_size, batch_size):
    n = 37
    sizes = random_sizes(n, 7)
    groups = orientation_groups(sizes)
    for epoch in range(3):
        per_rank = []
        for rank in range(world_size):
            inner = DistributedSampler(range(n), num_replicas=world_size,
                                       rank=rank, shuffle=True, seed=3)
            sampler = AspectRatioBatchSampler(inner, groups, batch_size)
            sampler.set_epoch(epoch)
            batches = list(sampler)
            check_batches(batches, groups, batch_size, list(inner))
            assert len(batches) == len(sampler)
            per_rank.append(batches)
        # every process steps as often, and they cover the dataset
        assert len({len(batches) for batches in per_rank}) == 1
        covered = {i for batches in per_rank for b in batches for i in b}
        assert covered == set(range(n))
    # the epoch reshuffles
    inner = DistributedSampler(range(n), num_replicas=2, rank=0, seed=3)
    sampler = AspectRatioBatchSampler(inner, groups, 2)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_batch_size_is_checked():
    with pytest.raises(ValueError, match='batch_size must be an int >= 1'):
        AspectRatioBatchSampler(range(3), [0, 0, 0], 0)


# ------------------------------------------------------- test shares

@pytest.mark.parametrize('n, batch_size, world_size', [
    (10, 1, 1), (10, 3, 1), (10, 3, 3), (7, 2, 2), (2, 4, 3), (9, 1, 4)])
def test_eval_batches_share_every_image_once_in_equal_steps(
        n, batch_size, world_size):
    sizes = random_sizes(n, 1)
    shares = [eval_batches(n, batch_size, rank, world_size, sizes)
              for rank in range(world_size)]
    assert len({len(batches) for batches in shares}) == 1
    flat = [i for batches in shares for b in batches for i in b]
    assert sorted(flat) == list(range(n))
    for batches in shares:
        assert all(len(b) <= batch_size for b in batches)
        order = [i for b in batches for i in b]
        assert order == sorted(order, key=lambda i: (sizes[i], i))


def test_eval_batches_without_sizes_keep_index_order():
    assert eval_batches(5, 2) == [[0, 1], [2, 3], [4]]
    assert eval_batches(5, 1) == [[0], [1], [2], [3], [4]]
    assert eval_batches(5, 2, rank=1, world_size=2) == [[1, 3], []]
