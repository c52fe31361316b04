"""utils/eval_tool.py: the VOC metric (eval_detection_voc, 11-point and
area AP) by hand (difficult objects, duplicates, IoU on inclusive pixels,
classes without ground truth), bad input named, and bit for bit the
original design's code on random cases."""
import numpy as np
import pytest
import torch

from reference import original
from utils.eval_tool import (calc_detection_voc_ap,
                             calc_detection_voc_prec_rec, eval_detection_voc)


def _boxes(*boxes):
    return np.array(boxes, dtype=np.float32).reshape((-1, 4))


def _evaluate(preds, gts, difficults=None, **kwargs):
    """preds: per image (bbox, label, score); gts: per image (bbox, label)."""
    return eval_detection_voc(
        [p[0] for p in preds], [np.array(p[1], dtype=np.int32) for p in preds],
        [np.array(p[2], dtype=np.float32) for p in preds],
        [g[0] for g in gts], [np.array(g[1], dtype=np.int32) for g in gts],
        difficults, **kwargs)


A = (0, 0, 10, 10)
B = (20, 20, 40, 40)
C = (50, 10, 70, 30)
D = (5, 60, 25, 90)
FAR = (100, 100, 120, 120)


@pytest.mark.parametrize('use_07_metric', [False, True])
def test_perfect_detections_give_one(use_07_metric):
    gts = [(_boxes(A, B), [0, 1]), (_boxes(C), [1])]
    preds = [(_boxes(A, B), [0, 1], [0.9, 0.8]), (_boxes(C), [1], [0.7])]
    result = _evaluate(preds, gts, use_07_metric=use_07_metric)
    np.testing.assert_allclose(result['ap'], [1, 1])
    assert result['map'] == pytest.approx(1)


@pytest.mark.parametrize('use_07_metric', [False, True])
def test_false_positive_ranked_first(use_07_metric):
    # Ranked: FP, TP, TP with 2 positives:
    # precision 0, 1/2, 2/3 at recall 0, 1/2, 1.
    # Area: the monotone precision is 2/3 over recall [0, 1] -> 2/3.
    # 11-point: the best precision at every recall >= t is 2/3 -> 2/3.
    gts = [(_boxes(A), [0]), (_boxes(B), [0])]
    preds = [(_boxes(A, FAR), [0, 0], [0.8, 0.9]), (_boxes(B), [0], [0.7])]
    result = _evaluate(preds, gts, use_07_metric=use_07_metric)
    np.testing.assert_allclose(result['ap'], [2 / 3])


def test_11_point_and_area_metrics_differ():
    # 3 positives; ranked TP, FP, TP: precision 1, 1/2, 2/3 at recall
    # 1/3, 1/3, 2/3.
    # Area: monotone precision 1 over recall [0, 1/3], 2/3 over
    # [1/3, 2/3], 0 after: 1/3 + 2/9 = 5/9.
    # 11-point: t = 0 .. 0.3 -> 1 (4 points), t = 0.4 .. 0.6 -> 2/3
    # (3 points), t = 0.7 .. 1 -> 0: (4 + 2) / 11 = 6/11.
    gts = [(_boxes(A, B, C), [0, 0, 0])]
    preds = [(_boxes(A, FAR, B), [0, 0, 0], [0.9, 0.8, 0.7])]
    area = _evaluate(preds, gts)
    eleven = _evaluate(preds, gts, use_07_metric=True)
    np.testing.assert_allclose(area['ap'], [5 / 9])
    np.testing.assert_allclose(eleven['ap'], [6 / 11])


def test_detection_on_difficult_box_is_ignored():
    gts = [(_boxes(A, B), [0, 0])]
    difficults = [np.array([False, True])]
    # The top detection hits the difficult box: neither TP nor FP.
    preds = [(_boxes(B, A), [0, 0], [0.9, 0.8])]
    result = _evaluate(preds, gts, difficults)
    np.testing.assert_allclose(result['ap'], [1])
    # The difficult box does not count as a positive to find either.
    preds = [(_boxes(A), [0], [0.8])]
    np.testing.assert_allclose(_evaluate(preds, gts, difficults)['ap'], [1])
    # Without the flags it is an ordinary box: recall 1/2 -> AP 1/2.
    np.testing.assert_allclose(_evaluate(preds, gts)['ap'], [0.5])


def test_duplicate_detection_is_a_false_positive():
    # Ranked TP, FP (same box again): precision 1, 1/2 at recall 1, 1.
    gts = [(_boxes(A), [0])]
    preds = [(_boxes(A, A), [0, 0], [0.9, 0.8])]
    prec, rec = calc_detection_voc_prec_rec(
        [p[0] for p in preds], [np.array(p[1]) for p in preds],
        [np.array(p[2]) for p in preds], [g[0] for g in gts],
        [np.array(g[1]) for g in gts])
    np.testing.assert_allclose(prec[0], [1, 0.5])
    np.testing.assert_allclose(rec[0], [1, 1])
    np.testing.assert_allclose(_evaluate(preds, gts)['ap'], [1])


def test_iou_counts_pixels_inclusively():
    # With 1 added to y_max and x_max, (0, 0, 9, 4) covers 50 of the 100
    # pixels of (0, 0, 9, 9): IoU 0.5, a match. Without it, 36/81 < 0.5.
    gts = [(_boxes((0, 0, 9, 9)), [0])]
    preds = [(_boxes((0, 0, 9, 4)), [0], [0.9])]
    np.testing.assert_allclose(_evaluate(preds, gts)['ap'], [1])
    np.testing.assert_allclose(
        _evaluate(preds, gts, iou_thresh=0.51)['ap'], [0])


def test_classes_without_ground_truth_are_nan_and_left_out_of_the_mean():
    # Label 0: found (AP 1). Label 1: never seen. Label 2: only a false
    # positive, no ground truth. Label 3: ground truth, never detected.
    gts = [(_boxes(A, D), [0, 3])]
    preds = [(_boxes(A, C), [0, 2], [0.9, 0.8])]
    result = _evaluate(preds, gts)
    np.testing.assert_allclose(result['ap'], [1, np.nan, np.nan, 0])
    assert result['map'] == pytest.approx(0.5)


def test_image_without_objects_counts_its_false_positives():
    gts = [(_boxes(A), [0]), (_boxes(), [])]
    preds = [(_boxes(A), [0], [0.5]), (_boxes(B), [0], [0.9])]
    # Ranked FP, TP: precision 0, 1/2 at recall 0, 1 -> AP 1/2.
    np.testing.assert_allclose(_evaluate(preds, gts)['ap'], [0.5])


def test_calc_detection_voc_ap_by_hand():
    prec = [np.array([1, 0.5, 2 / 3]), None, np.array([0.5])]
    rec = [np.array([1 / 3, 1 / 3, 2 / 3]), None, None]
    np.testing.assert_allclose(calc_detection_voc_ap(prec, rec),
                               [5 / 9, np.nan, np.nan])
    np.testing.assert_allclose(
        calc_detection_voc_ap(prec, rec, use_07_metric=True),
        [6 / 11, np.nan, np.nan])


@pytest.mark.parametrize('n_pred, n_gt', [(2, 1), (1, 2), (3, 2)])
def test_inputs_of_different_lengths(n_pred, n_gt):
    with pytest.raises(ValueError, match='lengths differ'):
        eval_detection_voc(
            [_boxes(A)] * n_pred, [np.array([0])] * n_pred,
            [np.array([0.9])] * n_pred, [_boxes(A)] * n_gt,
            [np.array([0])] * n_gt)


def test_difficult_flags_of_different_length():
    with pytest.raises(ValueError, match='lengths differ'):
        eval_detection_voc([_boxes(A)], [np.array([0])], [np.array([0.9])],
                           [_boxes(A)], [np.array([0])], [])


def test_no_box_at_all():
    with pytest.raises(ValueError, match='no predicted and no ground truth'):
        eval_detection_voc([_boxes()], [np.zeros(0, np.int32)],
                           [np.zeros(0, np.float32)], [_boxes()],
                           [np.zeros(0, np.int32)])


def test_negative_label():
    with pytest.raises(ValueError, match='labels must be in'):
        eval_detection_voc([_boxes(A)], [np.array([-1])], [np.array([0.9])],
                           [_boxes(A)], [np.array([0])])


# ------------------------------------------------ against the original code

def _torch_bbox_iou(bbox_a, bbox_b):
    """The same formula in torch, as the previous ``eval_tool`` computed it
    (through ``model.utils.bbox_tools.bbox_iou``); torch's types differ from
    numpy's for integer boxes, alone (float32) or with float ones."""
    bbox_a, bbox_b = torch.from_numpy(bbox_a), torch.from_numpy(bbox_b)
    tl = torch.maximum(bbox_a[:, None, :2], bbox_b[:, :2])
    br = torch.minimum(bbox_a[:, None, 2:], bbox_b[:, 2:])
    area_i = torch.prod(br - tl, dim=2) * (tl < br).all(dim=2)
    area_a = torch.prod(bbox_a[:, 2:] - bbox_a[:, :2], dim=1)
    area_b = torch.prod(bbox_b[:, 2:] - bbox_b[:, :2], dim=1)
    return (area_i / (area_a[:, None] + area_b - area_i)).numpy()


def _original_prec_rec(*args, **kwargs):
    """The original's ``calc_detection_voc_prec_rec``
    (:func:`reference.original.calc_detection_voc_prec_rec`), quiet about
    the ``0 / 0`` of its IoU on the empty and inverted boxes of
    :func:`_random_case` (``nan``, no match, as in the library)."""
    with np.errstate(divide='ignore', invalid='ignore'):
        return original.calc_detection_voc_prec_rec(*args, **kwargs)


_original_ap = original.calc_detection_voc_ap


def _random_case(seed, box_dtypes=(np.float32, np.float32)):
    """Seeded random detections and ground truth (at least one box) made to
    hit the corners: boxes on a small integer grid (exact IoU thresholds,
    duplicates, empty and inverted boxes), scores on a coarse grid (ties,
    within an image and across images), groups of more than 16 tied
    predictions (numpy's unstable sort), empty images, images without
    predictions, classes with no ground truth or only difficult ground
    truth, and a ``nan`` score now and then.

    Returns:
        tuple: ``(inputs, gt_difficults, iou_thresh)``, ``inputs`` being
        ``pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels``.
    """
    rng = np.random.RandomState(seed)
    n_fg_class = rng.randint(1, 6)
    score_step = rng.choice([0.1, 0.25, 1e-6])
    inputs = [[], [], [], [], []]
    gt_difficults = []
    for i in range(rng.randint(1, 9)):
        n_gt = rng.randint(0 if i else 1, 6)
        n_pred = rng.choice([0, rng.randint(1, 10), rng.randint(17, 60)])
        tl = rng.randint(0, 20, (n_gt, 2))
        gt_bbox = np.concatenate([tl, tl + rng.randint(-1, 12, (n_gt, 2))],
                                 axis=1)
        gt_label = rng.randint(0, n_fg_class, n_gt)
        pred_bbox = rng.randint(0, 30, (n_pred, 4))
        pred_label = rng.randint(0, n_fg_class, n_pred)
        if n_gt:
            near = rng.uniform(size=n_pred) < 0.7
            copied = rng.randint(0, n_gt, near.sum())
            pred_bbox[near] = (gt_bbox[copied]
                               + rng.randint(-2, 3, (near.sum(), 4)))
            pred_label[near] = gt_label[copied]
        if rng.uniform() < 0.3:
            pred_bbox = pred_bbox + rng.uniform(-0.5, 0.5, pred_bbox.shape)
        pred_score = np.round(rng.uniform(size=n_pred) / score_step) \
            * score_step
        if n_pred and rng.uniform() < 0.1:
            pred_score[rng.randint(n_pred)] = np.nan
        for inp, array in zip(inputs, (
                pred_bbox.astype(box_dtypes[0]).reshape((-1, 4)),
                pred_label.astype(np.int32),
                pred_score.astype(np.float32),
                gt_bbox.astype(box_dtypes[1]).reshape((-1, 4)),
                gt_label.astype(np.int32))):
            inp.append(array)
        gt_difficults.append(rng.uniform(size=n_gt) < 0.3)
    if rng.uniform() < 0.2:
        gt_difficults = None
    return inputs, gt_difficults, rng.choice([0.3, 0.5, 0.7])


def _assert_curves_equal(actual, desired):
    """Lists of arrays or ``None`` are equal, element by element, bit for
    bit (``nan`` equal to ``nan``), dtypes included."""
    assert len(actual) == len(desired)
    for a, d in zip(actual, desired):
        assert (a is None) == (d is None)
        if d is not None:
            assert a.dtype == d.dtype
            np.testing.assert_array_equal(a, d)


@pytest.mark.filterwarnings('ignore:Mean of empty slice')  # all nan
@pytest.mark.parametrize('seed', range(50))
def test_equals_the_original_bit_for_bit(seed):
    inputs, gt_difficults, iou_thresh = _random_case(seed)
    prec, rec = calc_detection_voc_prec_rec(*inputs, gt_difficults,
                                            iou_thresh=iou_thresh)
    orig_prec, orig_rec = _original_prec_rec(*inputs, gt_difficults,
                                             iou_thresh=iou_thresh)
    _assert_curves_equal(prec, orig_prec)
    _assert_curves_equal(rec, orig_rec)
    for use_07_metric in (False, True):
        ap = calc_detection_voc_ap(prec, rec, use_07_metric=use_07_metric)
        np.testing.assert_array_equal(
            ap, _original_ap(orig_prec, orig_rec, use_07_metric))
        result = eval_detection_voc(*inputs, gt_difficults,
                                    iou_thresh=iou_thresh,
                                    use_07_metric=use_07_metric)
        np.testing.assert_array_equal(result['ap'], ap)


@pytest.mark.parametrize('box_dtypes', [
    (np.int64, np.int64), (np.int32, np.float32), (np.float32, np.int64),
    (np.float32, np.float64), (np.float64, np.float64), (np.uint8, np.uint8),
])
def test_box_types_compute_as_torch_did(box_dtypes):
    # The previous implementation computed the IoU in torch; integer boxes
    # divide in float32 there and mix with float boxes in the float type.
    for seed in range(10):
        inputs, gt_difficults, iou_thresh = _random_case(seed, box_dtypes)
        prec, rec = calc_detection_voc_prec_rec(*inputs, gt_difficults,
                                                iou_thresh=iou_thresh)
        orig_prec, orig_rec = _original_prec_rec(
            *inputs, gt_difficults, iou_thresh=iou_thresh,
            bbox_iou=_torch_bbox_iou)
        _assert_curves_equal(prec, orig_prec)
        _assert_curves_equal(rec, orig_rec)


def test_tied_scores_decide_the_match_as_in_the_original():
    # Per image, 20 detections with three distinct scores; one of the five
    # at 0.75 is on the ground truth box, the rest are far off. Which of
    # the tied five comes first in each image's ranking (the original's
    # argsort()[::-1], numpy's unstable sort, not the input order) puts the
    # true positive at a different place among them, and the final ranking
    # of the tied scores over both images orders them again: precision and
    # AP depend on both orders.
    score = np.array([0.25, 0.5, 0.25, 0.5, 0.5, 0.75, 0.25, 0.75, 0.25,
                      0.25, 0.25, 0.75, 0.5, 0.75, 0.75, 0.25, 0.5, 0.5,
                      0.5, 0.5], dtype=np.float32)
    pred_bbox = []
    for on_gt in (7, 13):
        bbox = np.tile(np.array(FAR, np.float32), (20, 1))
        bbox[on_gt] = A
        pred_bbox.append(bbox)
    inputs = (pred_bbox, [np.zeros(20, np.int32)] * 2, [score] * 2,
              [_boxes(A)] * 2, [np.zeros(1, np.int32)] * 2)
    prec, rec = calc_detection_voc_prec_rec(*inputs)
    orig_prec, orig_rec = _original_prec_rec(*inputs)
    _assert_curves_equal(prec, orig_prec)
    _assert_curves_equal(rec, orig_rec)
    assert np.count_nonzero(np.diff(rec[0])) == 2
    np.testing.assert_array_equal(calc_detection_voc_ap(prec, rec),
                                  _original_ap(orig_prec, orig_rec))


def test_no_prediction_at_all():
    gts = [(_boxes(A), [0]), (_boxes(B), [1])]
    preds = [(_boxes(), [], []), (_boxes(), [], [])]
    prec, rec = calc_detection_voc_prec_rec(
        [p[0] for p in preds], [np.array(p[1], np.int32) for p in preds],
        [np.array(p[2], np.float32) for p in preds], [g[0] for g in gts],
        [np.array(g[1], np.int32) for g in gts])
    assert [len(p) for p in prec] == [0, 0]
    assert [len(r) for r in rec] == [0, 0]
    np.testing.assert_array_equal(_evaluate(preds, gts)['ap'], [0, 0])
