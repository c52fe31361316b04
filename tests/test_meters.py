"""utils/meters.py: the confusion matrix counts as torchnet's
ConfusionMeter, on the device of its inputs, and adds without reading the
host (see conftest.host_reads).

utils/cuda_syncs.py has no test module of its own: conftest.host_reads
counts with it on CUDA, so the CUDA variants of the host-read tests (here,
in test_creator_tool.py and in test_trainer.py) are its tests."""
import numpy as np
import torch
from torchnet.meter import ConfusionMeter

from conftest import host_reads
from utils.meters import ConfusionMatrix


def test_the_confusion_matrix_counts_as_torchnets(device):
    rng = np.random.RandomState(0)
    for k, ignore in ((2, -1), (5, None), (21, None)):
        ours, torchnets = ConfusionMatrix(k), ConfusionMeter(k)
        for _ in range(4):
            n = rng.randint(0, 60)
            # few distinct values, so that rows have tied maxima (the
            # first one wins, as numpy's argmax)
            scores = rng.randint(0, 3, size=(n, k)).astype(np.float32)
            low = -1 if ignore is not None else 0
            target = rng.randint(low, k, size=n)
            ours.add(torch.from_numpy(scores).to(device),
                     torch.from_numpy(target).to(device), ignore_index=ignore)
            kept = target != -1
            if kept.any():
                torchnets.add(torch.from_numpy(scores[kept]),
                              torch.from_numpy(target[kept]))
        np.testing.assert_array_equal(ours.value(), torchnets.value())
    ours.reset()
    assert ours.value().shape == (21, 21) and ours.value().sum() == 0


def test_the_confusion_matrix_adds_without_reading_the_host(device):
    cm = ConfusionMatrix(3)
    scores = torch.randn(50, 3, device=device)
    target = torch.randint(-1, 3, (50,), device=device)
    cm.add(scores, target, ignore_index=-1)  # the first allocates
    with host_reads(device) as reads:
        cm.add(scores, target, ignore_index=-1)
    assert reads == []
    assert cm.value().sum() == 2 * int((target >= 0).sum())
