"""What a training step waits for on the host (issue 11, item 3): the
confusion matrices count on the device, the anchors are labelled and
sampled with nothing read on the host under sampler='torch', the gt is
checked where it arrives, and a step with sampler='torch' has no numpy in
it and reads its losses once.

On the CPU the explicit reads stand in for the synchronisations (see
conftest.host_reads); the CUDA variants count the real ones.
"""
import sys

import numpy as np
import torch
from torchnet.meter import ConfusionMeter

from conftest import host_reads
from model.utils.creator_tool import AnchorTargetCreator
from test_sampler_torch import anchor_case
from test_trainer_losses import regression_batch, tiny_model_for_regression
from trainer import FasterRCNNTrainer
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


def test_torch_sampled_anchor_targets_read_nothing_on_the_host(device):
    """The gt on the host, as the data loader gives it: checked there and
    moved without waiting; labelling and sampling stay on the device."""
    bbox, anchor, img_size = anchor_case(0, device)
    creator = AnchorTargetCreator(sampler='torch')
    creator(bbox.cpu(), anchor, img_size)  # warm-up
    with host_reads(device) as reads:
        loc, label = creator(bbox.cpu(), anchor, img_size)
    assert reads == []
    assert loc.device == label.device == device
    assert int((label >= 0).sum()) == 256


class NoNumpy:
    """Stands for a module's ``numpy``: any use fails the test."""

    def __getattr__(self, name):
        raise AssertionError('numpy.{} used in a step'.format(name))


def test_a_torch_sampled_step_has_no_numpy_and_reads_its_losses_once(
        make_tiny_faster_rcnn, device, monkeypatch):
    model = tiny_model_for_regression(make_tiny_faster_rcnn).to(device)
    trainer = FasterRCNNTrainer(model, sampler='torch')
    img, bbox, label = regression_batch()
    # the gt on the host, as train.py hands it over
    args = (img.to(device), [torch.from_numpy(bbox)],
            [torch.from_numpy(label)], 0.8)
    trainer.train_step(*args)  # warm-up: the meters allocate
    for name, module in list(sys.modules.items()):
        if (name == 'trainer' or name.split('.')[0] in ('model', 'utils')) \
                and getattr(module, 'np', None) is np:
            monkeypatch.setattr(module, 'np', NoNumpy())
    with host_reads(device) as reads:
        losses = trainer.train_step(*args)
    monkeypatch.undo()
    assert all(torch.isfinite(v) for v in losses)
    if device.type == 'cpu':
        # the losses' one transfer and the RoI samples' one read of their
        # candidate counts; the rest read host data: the gt's checks and
        # the image sizes
        assert reads.count('loss_values') == 1
        assert reads.count('_sample_rois') == 1
        assert set(reads) <= {'loss_values', '_sample_rois', '_check_batch',
                              'per_image'}
    else:
        # what must wait: the proposals (their size filter and nms, with
        # its copy back), the RoI samples' candidate counts, the losses
        assert len(reads) <= 5, reads
        assert not any('meters.py' in r for r in reads), reads
        assert sum('trainer.py' in r for r in reads) == 1, reads  # losses


def test_an_image_smaller_than_every_anchor_trains_with_finite_losses(
        make_tiny_faster_rcnn, device):
    """No anchor lies inside a 16x32 image (the tiny model's smallest is
    23 px high): no labelled anchor, so the RPN's losses are 0, not nan,
    and the step goes on."""
    model = make_tiny_faster_rcnn().to(device)
    trainer = FasterRCNNTrainer(model)
    img = torch.randn(1, 3, 16, 32, device=device)
    bbox = torch.tensor([[[2., 3., 12., 20.]]])
    label = torch.tensor([[1]])
    losses = trainer.forward(img, bbox, label, 1.)
    assert losses.rpn_cls_loss.item() == losses.rpn_loc_loss.item() == 0.
    assert torch.isfinite(losses.total_loss)
    losses.total_loss.backward()
    for p in model.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()
    trainer.train_step(img, bbox, label, 1.)
