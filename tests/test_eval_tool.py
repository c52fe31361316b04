import numpy as np
import pytest

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
