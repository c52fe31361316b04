"""FasterRCNN._suppress, both ways (suppression='per_class', the default,
and 'batched', one batched_nms call) gives the per-class loop's detections
(same boxes, scores and labels, grouped by class in class order, within a
class in nms's order), tied scores and empty classes included; only
'per_class' is exact at the IoU threshold.

The per-class loop that predict used before is kept here as the slow,
obvious reference.
"""
import numpy as np
import pytest
import torch
from torchvision.ops import nms

from conftest import build_tiny_faster_rcnn


@pytest.fixture(params=['per_class', 'batched'])
def suppression(request):
    return request.param


def suppress_per_class(model, raw_cls_bbox, raw_prob):
    """The reference: threshold and nms class by class, background skipped,
    one host copy per class (predict's suppression before batched_nms)."""
    cls_bbox = raw_cls_bbox.reshape((-1, model.n_class, 4))
    bbox, label, score = [], [], []
    for l in range(1, model.n_class):
        mask = raw_prob[:, l] > model.score_thresh
        cls_bbox_l = cls_bbox[mask, l]
        prob_l = raw_prob[mask, l]
        keep = nms(cls_bbox_l, prob_l, model.nms_thresh)
        bbox.append(cls_bbox_l[keep].cpu().numpy())
        label.append(np.full((len(keep),), l - 1, dtype=np.int32))
        score.append(prob_l[keep].cpu().numpy())
    bbox = np.concatenate(bbox, axis=0).astype(np.float32).reshape(-1, 4)
    label = np.concatenate(label, axis=0).astype(np.int32)
    score = np.concatenate(score, axis=0).astype(np.float32)
    return bbox, label, score


def random_case(rng, n_roi, n_class, n_level, empty, integer):
    """Boxes in clusters (so that nms suppresses), scores quantised to
    ``n_level`` values in [0, 1] (so that many tie, within and across
    classes; _suppress needs no softmax), and the classes in ``empty``
    scored 0."""
    center = rng.uniform(0, 400, size=(8, 2))
    c = center[rng.randint(0, 8, size=(n_roi, n_class))] \
        + rng.normal(0, 6, size=(n_roi, n_class, 2))
    hw = rng.uniform(10, 80, size=(n_roi, n_class, 2))
    bbox = np.concatenate((c - hw / 2, c + hw / 2), axis=2).clip(0, 480)
    if integer:
        bbox = np.round(bbox)
    score = rng.randint(0, n_level, size=(n_roi, n_class)) / (n_level - 1)
    score[:, list(empty)] = 0.
    return (bbox.reshape(n_roi, n_class * 4).astype(np.float32),
            score.astype(np.float32))


def assert_same(model, cls_bbox, prob):
    bbox, label, score = model._suppress(cls_bbox, prob)
    bbox_ref, label_ref, score_ref = suppress_per_class(model, cls_bbox, prob)
    assert bbox.dtype == np.float32 and bbox.shape == bbox_ref.shape
    assert label.dtype == np.int32 and score.dtype == np.float32
    np.testing.assert_array_equal(label, label_ref)
    np.testing.assert_array_equal(score, score_ref)
    np.testing.assert_array_equal(bbox, bbox_ref)
    return label


@pytest.mark.parametrize('n_roi', [
    30,     # batched_nms's class-offset path
    300,    # predict's number of RoIs: over 4000 coordinates on the CPU,
            # batched_nms's per-class path there
])
@pytest.mark.parametrize('preset', ['evaluate', 'visualize'])
def test_suppression_equals_per_class_loop_with_ties_and_empty_classes(
        device, n_roi, preset, suppression):
    n_fg_class = 20
    model = build_tiny_faster_rcnn(n_fg_class=n_fg_class,
                                   suppression=suppression)
    model.use_preset(preset)
    rng = np.random.RandomState(0)
    n_kept = 0
    for trial in range(20):
        empty = rng.choice(np.arange(1, n_fg_class + 1),
                           size=rng.randint(0, 6), replace=False)
        cls_bbox, prob = random_case(rng, n_roi, n_fg_class + 1,
                                     n_level=rng.choice([3, 5, 9]),
                                     empty=empty, integer=trial % 2 == 0)
        cls_bbox = torch.from_numpy(cls_bbox).to(device)
        prob = torch.from_numpy(prob).to(device)
        label = assert_same(model, cls_bbox, prob)
        assert not set(label.tolist()) & set((empty - 1).tolist())
        assert np.all(np.diff(label) >= 0)  # grouped by class in order
        n_kept += len(label)
    assert n_kept > 20 * n_fg_class


def test_ties_keep_roi_order_within_a_class(device, suppression):
    """Equal scores, boxes apart: every box survives, in RoI order within
    each class, whatever order the tie has across classes."""
    model = build_tiny_faster_rcnn(n_fg_class=3, suppression=suppression)
    n_roi = 6
    y = torch.arange(n_roi, dtype=torch.float32)[:, None] * 50
    box = torch.cat((y, y * 0, y + 20, y * 0 + 20), dim=1)  # disjoint
    cls_bbox = box.repeat(1, 4).to(device)
    prob = torch.full((n_roi, 4), 0.25, device=device)
    bbox, label, score = model._suppress(cls_bbox, prob)
    np.testing.assert_array_equal(label, np.repeat(np.arange(3), n_roi))
    np.testing.assert_array_equal(bbox, np.tile(box.numpy(), (3, 1)))
    assert_same(model, cls_bbox, prob)


def test_score_and_iou_at_the_thresholds(device, suppression):
    """A score exactly ``score_thresh`` is no candidate; a pair whose IoU is
    exactly ``nms_thresh`` (integer boxes, in the last class, whose
    coordinates batched_nms offsets most) is decided as the per-class loop
    decides it on the same device."""
    model = build_tiny_faster_rcnn(n_fg_class=20, suppression=suppression)
    model.use_preset('evaluate')  # nms_thresh 0.3, score_thresh 0.05
    cls_bbox = torch.zeros((3, 21, 4))
    cls_bbox[0, 20] = torch.tensor([0., 0., 10., 10.])
    cls_bbox[1, 20] = torch.tensor([0., 0., 10., 3.])  # IoU 30 / 100
    cls_bbox[2, 20] = torch.tensor([100., 100., 110., 110.])
    cls_bbox[:, 1] = torch.tensor([[300., 300., 350., 350.]])
    prob = torch.zeros((3, 21))
    prob[:, 20] = torch.tensor([0.6, 0.5, model.score_thresh])
    prob[:, 1] = torch.tensor([0.2, 0.1, 0.2])
    label = assert_same(model, cls_bbox.reshape(3, -1).to(device),
                        prob.to(device))
    # class 0: the higher of its two identical boxes; class 19: the third
    # box is no candidate, the second goes as the reference lets it
    assert label[0] == 0 and np.sum(label == 0) == 1
    assert 1 <= np.sum(label == 19) <= 2


def test_no_candidate_gives_empty_arrays(device, suppression):
    model = build_tiny_faster_rcnn(n_fg_class=3, suppression=suppression)
    cls_bbox = torch.rand((5, 16), device=device)
    prob = torch.zeros((5, 4), device=device)
    prob[:, 0] = 1.
    bbox, label, score = model._suppress(cls_bbox, prob)
    assert bbox.shape == (0, 4) and bbox.dtype == np.float32
    assert label.shape == (0,) and label.dtype == np.int32
    assert score.shape == (0,) and score.dtype == np.float32


def test_per_class_is_exact_where_batched_offsets_round(device):
    """Two float boxes of the last class whose IoU is within rounding of
    0.3: batched_nms's class offset may decide them the other way; the
    default per-class suppression decides exactly as the original loop."""
    model = build_tiny_faster_rcnn(n_fg_class=20)
    assert model.suppression == 'per_class'
    model.use_preset('evaluate')
    cls_bbox = torch.zeros((2, 21, 4))
    cls_bbox[0, 20] = torch.tensor([2.8319671, 12.428328, 59.53821, 68.90022])
    cls_bbox[1, 20] = torch.tensor([2.8319671, 42.836357, 59.53821, 99.30826])
    prob = torch.zeros((2, 21))
    prob[:, 20] = torch.tensor([0.9, 0.8])
    label = assert_same(model, cls_bbox.reshape(2, -1).to(device),
                        prob.to(device))
    assert len(label) == len(suppress_per_class(
        model, cls_bbox.reshape(2, -1), prob)[1])


def test_bad_suppression_is_named():
    with pytest.raises(ValueError, match="suppression must be one of "
                                         r"\('per_class', 'batched'\)"):
        build_tiny_faster_rcnn(suppression='fast')
