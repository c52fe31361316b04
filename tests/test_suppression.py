"""model/utils/suppression.py, suppress: 'per_class' (the default) gives the
per-class loop's detections exactly (same boxes, scores and labels, grouped
by class in class order, within a class in nms's order), with tied scores,
empty classes and IoUs at the threshold; 'batched' (torchvision's
batched_nms) gives the same where no IoU lies within 1e-4 of the threshold
and no scores tie; small-box removal and the cap on detections.

The per-class loop that predict used at first is kept here as the slow,
obvious reference.
"""
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou, nms

from conftest import build_tiny_faster_rcnn
from model.utils.suppression import candidates, suppress


def reference(cls_bbox, prob, score_thresh, nms_thresh):
    """Threshold and nms class by class, background skipped."""
    n_class = prob.shape[1]
    cls_bbox = cls_bbox.reshape((-1, n_class, 4))
    bbox, label, score = [], [], []
    for l in range(1, n_class):
        mask = prob[:, l] > score_thresh
        cls_bbox_l = cls_bbox[mask, l]
        prob_l = prob[mask, l]
        keep = nms(cls_bbox_l, prob_l, nms_thresh)
        bbox.append(cls_bbox_l[keep])
        label.append(torch.full((len(keep),), l - 1, dtype=torch.int64))
        score.append(prob_l[keep])
    return (torch.cat(bbox).reshape(-1, 4), torch.cat(label),
            torch.cat(score))


def random_case(rng, n_roi, n_class, n_level, empty=(), integer=False,
                n_center=8):
    """Boxes in ``n_center`` clusters (so that nms suppresses), scores
    quantised to ``n_level`` values in [0, 1] (so that many tie, within and
    across classes), and the classes in ``empty`` scored 0."""
    center = rng.uniform(0, 400 * (n_center / 8) ** 0.5, size=(n_center, 2))
    c = center[rng.randint(0, n_center, size=(n_roi, n_class))] \
        + rng.normal(0, 6, size=(n_roi, n_class, 2))
    hw = rng.uniform(10, 80, size=(n_roi, n_class, 2))
    bbox = np.concatenate((c - hw / 2, c + hw / 2), axis=2).clip(0, 480)
    if integer:
        bbox = np.round(bbox)
    score = rng.randint(0, n_level, size=(n_roi, n_class)) / (n_level - 1)
    score[:, list(empty)] = 0.
    return (torch.from_numpy(bbox.reshape(n_roi, n_class * 4).astype(
        np.float32)), torch.from_numpy(score.astype(np.float32)))


def assert_same(got, want):
    for a, b in zip(got, want):
        assert torch.equal(a.cpu(), b.cpu())


@pytest.mark.parametrize('n_roi', [30, 300])
@pytest.mark.parametrize('score_thresh', [0.05, 0.7])
def test_per_class_equals_the_loop_with_ties_and_empty_classes(
        device, n_roi, score_thresh):
    n_fg_class = 20
    rng = np.random.RandomState(0)
    n_kept = 0
    for trial in range(20):
        empty = rng.choice(np.arange(1, n_fg_class + 1),
                           size=rng.randint(0, 6), replace=False)
        cls_bbox, prob = random_case(rng, n_roi, n_fg_class + 1,
                                     rng.choice([3, 5, 9]), empty,
                                     integer=trial % 2 == 0)
        got = suppress(cls_bbox.to(device), prob.to(device), score_thresh,
                       0.3)
        assert_same(got, reference(cls_bbox, prob, score_thresh, 0.3))
        label = got[1].cpu()
        assert not set(label.tolist()) & set((empty - 1).tolist())
        assert (label.diff() >= 0).all()  # grouped by class in order
        n_kept += len(label)
    assert n_kept > 20 * n_fg_class


def min_gap_to_thresh(cls_bbox, prob, score_thresh, nms_thresh):
    """The smallest |IoU - nms_thresh| over pairs of candidates of one
    class."""
    bbox, _, label = candidates(cls_bbox, prob, score_thresh)
    gap = float('inf')
    for l in label.unique():
        box = bbox[label == l]
        iou = box_iou(box, box)
        off_diagonal = ~torch.eye(len(box), dtype=torch.bool)
        if off_diagonal.any():
            gap = min(gap, float((iou[off_diagonal] - nms_thresh).abs()
                                 .min()))
    return gap


@pytest.mark.parametrize('n_roi, n_center', [
    (30, 8),      # batched_nms offsets the classes' coordinates
    (300, 150),   # over 4000 coordinates: it loops over classes (CPU)
])
def test_batched_equals_per_class_away_from_ties_and_the_threshold(
        device, n_roi, n_center):
    """Untied scores; cases with a pair of one class whose IoU is within
    1e-4 of the threshold are left out (the offset rounds there)."""
    n_fg_class = 20
    rng = np.random.RandomState(1)
    n_case = n_suppressed = 0
    while n_case < 10:
        cls_bbox, prob = random_case(rng, n_roi, n_fg_class + 1,
                                     n_level=2 ** 24, n_center=n_center)
        if min_gap_to_thresh(cls_bbox, prob, 0.05, 0.3) < 1e-4:
            continue
        n_case += 1
        cls_bbox, prob = cls_bbox.to(device), prob.to(device)
        want = suppress(cls_bbox, prob, 0.05, 0.3, 'per_class')
        assert_same(suppress(cls_bbox, prob, 0.05, 0.3, 'batched'), want)
        n_suppressed += int((prob[:, 1:] > 0.05).sum()) - len(want[0])
    assert n_suppressed > 10 * n_fg_class


def test_ties_keep_roi_order_within_a_class(device):
    """Equal scores, boxes apart: every box survives, in RoI order within
    each class, whatever order the tie has across classes."""
    n_roi = 6
    y = torch.arange(n_roi, dtype=torch.float32)[:, None] * 50
    box = torch.cat((y, y * 0, y + 20, y * 0 + 20), dim=1)  # disjoint
    cls_bbox = box.repeat(1, 4).to(device)
    prob = torch.full((n_roi, 4), 0.25, device=device)
    for how in ('per_class', 'batched'):
        bbox, label, _ = suppress(cls_bbox, prob, 0.05, 0.3, how)
        assert label.tolist() == np.repeat(np.arange(3), n_roi).tolist()
        assert torch.equal(bbox.cpu(), box.repeat(3, 1))


def test_score_and_iou_at_the_thresholds(device):
    """A score exactly ``score_thresh`` is no candidate; a pair whose IoU is
    exactly ``nms_thresh`` (0.25, exact in float32 and float64) keeps both:
    nms drops IoUs above it."""
    cls_bbox = torch.zeros((3, 21, 4))
    cls_bbox[0, 20] = torch.tensor([0., 0., 10., 10.])
    cls_bbox[1, 20] = torch.tensor([0., 0., 10., 2.5])  # IoU 25 / 100
    cls_bbox[2, 20] = torch.tensor([100., 100., 110., 110.])
    cls_bbox[:, 1] = torch.tensor([[300., 300., 350., 350.]])
    prob = torch.zeros((3, 21))
    prob[:, 20] = torch.tensor([0.6, 0.5, 0.05])
    prob[:, 1] = torch.tensor([0.2, 0.1, 0.2])
    bbox, label, score = suppress(cls_bbox.reshape(3, -1).to(device),
                                  prob.to(device), 0.05, 0.25)
    # class 0: the higher of its three identical boxes; class 19: two
    assert label.tolist() == [0, 19, 19]
    assert score.tolist() == pytest.approx([0.2, 0.6, 0.5])


def test_small_boxes_and_the_cap(device):
    """min_size drops a box less high or wide than it (one exactly that
    size stays); n_max keeps the best scores, then groups them by class."""
    cls_bbox = torch.zeros((4, 3, 4))
    cls_bbox[:, 1] = torch.tensor([[0., 0., 10., 10.], [50., 50., 50.5, 60.],
                                   [100., 100., 101., 101.],
                                   [200., 200., 220., 230.]])
    cls_bbox[:, 2] = torch.tensor([[0., 300., 40., 340.]])
    prob = torch.tensor([[0., .9, .1], [0., .8, .2], [0., .4, .6],
                         [0., .3, .7]])
    args = cls_bbox.reshape(4, -1).to(device), prob.to(device), 0.05, 0.3
    _, label, score = suppress(*args, min_size=1.)
    assert label.tolist() == [0, 0, 0, 1]  # the 0.5 px wide box went
    assert score.tolist() == pytest.approx([.9, .4, .3, .7])
    _, label, score = suppress(*args, n_max=3)
    # the best three: 0.9, 0.8 (class 0) and 0.7 (class 1's first kept)
    assert label.tolist() == [0, 0, 1]
    assert score.tolist() == pytest.approx([.9, .8, .7])


def test_no_candidate_gives_empty_tensors(device):
    cls_bbox = torch.rand((5, 16), device=device)
    prob = torch.zeros((5, 4), device=device)
    prob[:, 0] = 1.
    for how in ('per_class', 'batched'):
        bbox, label, score = suppress(cls_bbox, prob, 0.05, 0.3, how)
        assert bbox.shape == (0, 4) and label.shape == score.shape == (0,)


def test_bad_suppression_is_named():
    with pytest.raises(ValueError, match="suppression must be one of "
                                         r"\('per_class', 'batched'\)"):
        build_tiny_faster_rcnn(suppression='fast')
