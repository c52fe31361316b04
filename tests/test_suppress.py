"""FasterRCNN._suppress, both ways (suppression='per_class', the default,
and 'batched', one batched_nms call checked on the device) gives the
per-class loop's detections (same boxes, scores and labels, grouped by
class in class order, within a class in nms's order), tied scores, empty
classes and IoUs at the threshold included; and the check itself
(model.utils.suppression.doubtful_classes) on cases by hand.

The per-class loop that predict used before is kept here as the slow,
obvious reference.
"""
import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms, nms

from conftest import build_tiny_faster_rcnn, host_reads
from model.utils.suppression import (IOU_MARGIN, candidates,
                                     checked_batched_nms, doubtful_classes,
                                     nms_iou, per_class_nms)


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


@pytest.mark.parametrize('n_roi', [30, 300])
def test_the_check_trusts_batched_nms_on_untied_scores(device, n_roi):
    """Continuous scores, float boxes in clusters: batched_nms's own result
    passes the check in nearly every class (no second nms), and equals the
    loop's. (A class is doubted here when one of its pairs has an IoU
    within IOU_MARGIN of 0.3: 2 of the 200 classes with 300 RoIs, whose
    classes have up to 300 candidates.)"""
    n_fg_class = 20
    rng = np.random.RandomState(1)
    n_doubt = 0
    for trial in range(10):
        cls_bbox, prob = random_case(rng, n_roi, n_fg_class + 1,
                                     n_level=2 ** 24, empty=[],
                                     integer=False)
        bbox, score, label = candidates(
            torch.from_numpy(cls_bbox).to(device),
            torch.from_numpy(prob).to(device), 0.05)
        keep = batched_nms(bbox, score, label, 0.3)
        n_doubt += int(doubtful_classes(bbox, score, label, keep, n_fg_class,
                                        n_roi, 0.3).sum())
        loop = per_class_nms(bbox, score, label, range(n_fg_class), 0.3)
        assert torch.equal(checked_batched_nms(
            bbox, score, label, n_fg_class, n_roi, 0.3).sort()[0],
            loop.sort()[0])
    assert n_doubt <= 0.02 * 10 * n_fg_class


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


def near_threshold_pairs(rng, n, nms_thresh=0.3):
    """``n`` pairs of float boxes, the second the first moved down by the
    overlap that makes their IoU ``nms_thresh`` in exact arithmetic: in
    float32 it lands within rounding of the threshold, on either side."""
    y, x = rng.uniform(0, 300, size=(2, n))
    h, w = rng.uniform(20, 200, size=(2, n))
    overlap = 2 * nms_thresh * h / (1 + nms_thresh)
    first = np.stack((y, x, y + h, x + w), axis=1)
    second = first + np.stack((h - overlap, 0 * x, h - overlap, 0 * x),
                              axis=1)
    return (torch.from_numpy(first.astype(np.float32)),
            torch.from_numpy(second.astype(np.float32)))


def test_both_are_exact_where_batched_nms_offsets_round(device, suppression):
    """Pairs of float boxes of the last class (whose coordinates
    batched_nms offsets most) with an IoU within rounding of 0.3: batched_nms
    alone decides some of them the other way, and the check sends those
    classes back to nms; both suppressions decide every pair as the loop."""
    model = build_tiny_faster_rcnn(n_fg_class=20, suppression=suppression)
    model.use_preset('evaluate')
    first, second = near_threshold_pairs(np.random.RandomState(0), 100)
    n_offset_wrong = 0
    for a, b in zip(first, second):
        cls_bbox = torch.zeros((3, 21, 4))
        cls_bbox[0, 20], cls_bbox[1, 20] = a, b
        cls_bbox[2, 1] = torch.tensor([0., 0., 1000., 1000.])
        prob = torch.zeros((3, 21))
        prob[:2, 20] = torch.tensor([0.9, 0.8])
        prob[2, 1] = 0.5
        cls_bbox = cls_bbox.reshape(3, -1).to(device)
        prob = prob.to(device)
        label = assert_same(model, cls_bbox, prob)
        n_offset_wrong += len(label) != len(batched_nms(
            cls_bbox.reshape(3, 21, 4)[[0, 1, 2], [20, 20, 1]],
            prob[[0, 1, 2], [20, 20, 1]], torch.tensor([19, 19, 0]).to(device),
            model.nms_thresh))
    assert n_offset_wrong > 10


def test_the_check_reads_the_iou_as_nms_does(device):
    """Two-box nms keeps both boxes exactly when nms_iou's IoU is at most
    the threshold, wherever that IoU lies further than IOU_MARGIN from it;
    on the CPU also at the threshold (there nms compares in float64), for
    thresholds 0.3 and each pair's own IoU."""
    first, second = near_threshold_pairs(np.random.RandomState(1), 1000)
    first, second = first.to(device), second.to(device)
    iou = nms_iou(first, second[:, None])[:, 0].tolist()
    score = torch.tensor([0.9, 0.8], device=device)
    n_near = 0
    for a, b, iou_k in zip(first, second, iou):
        for nms_thresh in (0.3, iou_k):
            excess = iou_k - nms_thresh
            n_near += abs(excess) <= IOU_MARGIN
            both = len(nms(torch.stack((a, b)), score, nms_thresh)) == 2
            if device.type == 'cpu' or abs(excess) > IOU_MARGIN:
                assert both == (excess <= 0), (a, b, nms_thresh)
    assert n_near > 1000


def hand_case(device):
    """Candidates of 3 classes, class-major in RoI order (as candidates()
    gives them), and the indices nms keeps class by class:
    class 0: boxes 0 and 1 overlap with IoU 0.5, box 2 apart -> 0, 2;
    class 1: box 3 alone -> 3;
    class 2: boxes 4 and 5 with IoU 0.2 -> 4, 5."""
    bbox = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 5.],
                         [50., 50., 60., 60.],
                         [0., 0., 10., 10.],
                         [0., 0., 10., 10.], [0., 0., 10., 2.]])
    score = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    label = torch.tensor([0, 0, 0, 1, 2, 2])
    keep = torch.tensor([0, 2, 3, 4, 5])
    return bbox.to(device), score.to(device), label.to(device), \
        keep.to(device)


def doubted(bbox, score, label, keep, nms_thresh=0.3):
    return torch.where(doubtful_classes(bbox, score, label, keep, 3, 3,
                                        nms_thresh))[0].tolist()


def test_the_check_trusts_nms_own_result(device):
    bbox, score, label, keep = hand_case(device)
    assert doubted(bbox, score, label, keep) == []
    assert doubted(bbox, score, label, keep.flip(0)) == []  # any order
    assert torch.equal(checked_batched_nms(bbox, score, label, 3, 3, 0.3)
                       .sort()[0], keep)


def test_the_check_doubts_a_class_kept_wrongly(device):
    bbox, score, label, keep = hand_case(device)
    assert doubted(bbox, score, label, keep[keep != 2]) == [0]  # lost
    assert doubted(bbox, score, label, keep[keep != 5]) == [2]  # lost
    too_many = torch.cat((keep, torch.tensor([1], device=device)))
    assert doubted(bbox, score, label, too_many) == [0]  # suppressed one


def test_the_check_doubts_an_iou_at_the_threshold(device):
    """Class 2's pair has IoU 0.2 exactly (in float32, 0.2 rounds); a
    threshold within IOU_MARGIN either side of it puts class 2 in doubt,
    one further away does not."""
    bbox, score, label, keep = hand_case(device)
    for nms_thresh in (0.2, 0.2 + IOU_MARGIN / 2, 0.2 - IOU_MARGIN / 2):
        assert 2 in doubted(bbox, score, label, keep, nms_thresh)
    assert doubted(bbox, score, label, keep, 0.2 + 2 * IOU_MARGIN) == []


def test_the_check_doubts_an_overlapping_tie_only(device):
    """Class 0's two overlapping boxes tied: which one nms keeps depends on
    how its sort orders ties, so the class is in doubt. Class 2's tied pair
    under a threshold above their IoU keeps both whatever the order."""
    bbox, score, label, keep = hand_case(device)
    score[1] = score[0]
    score[5] = score[4]
    assert doubted(bbox, score, label, keep) == [0]


def test_the_check_reads_nothing_on_the_host(device):
    """doubtful_classes stays on the device; checked_batched_nms reads its
    verdict once (on a GPU, nms also waits for its own mask)."""
    bbox, score, label, keep = hand_case(device)
    doubtful_classes(bbox, score, label, keep, 3, 3, 0.3)  # allocates
    with host_reads(device) as reads:
        doubtful_classes(bbox, score, label, keep, 3, 3, 0.3)
    assert reads == []
    if device.type == 'cpu':
        with host_reads(device) as reads:
            checked_batched_nms(bbox, score, label, 3, 3, 0.3)
        assert reads == ['checked_batched_nms']


def test_bad_suppression_is_named():
    with pytest.raises(ValueError, match="suppression must be one of "
                                         r"\('per_class', 'batched'\)"):
        build_tiny_faster_rcnn(suppression='fast')
