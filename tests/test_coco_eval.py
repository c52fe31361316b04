import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from data.coco_dataset import COCOBboxDataset
from test_coco_dataset import _ann, _write_coco
from utils.coco_eval import eval_detection_coco, to_coco_results

# COCOeval's 101 recall points 0, 0.01, ..., 1: AP is the mean, over them,
# of the best precision at a recall at least that point.
N_RECALL_POINTS = 101


def _boxes(*boxes):
    """(y_min, x_min, y_max, x_max) rows as float32 (R, 4)."""
    return np.array(boxes, dtype=np.float32).reshape((-1, 4))


def _square(y, x, side):
    return (y, x, y + side, x + side)


# Far from every ground truth box: a false positive of any class.
FAR = _square(500, 500, 10)


def _eval(preds, gts, gt_difficults=None, gt_areas=None):
    """``preds``: per image, a list of (box, label, score); ``gts``: per
    image, a list of (box, label)."""
    pred_bboxes = [_boxes(*[p[0] for p in ps]) for ps in preds]
    pred_labels = [np.array([p[1] for p in ps], dtype=np.int32)
                   for ps in preds]
    pred_scores = [np.array([p[2] for p in ps], dtype=np.float32)
                   for ps in preds]
    gt_bboxes = [_boxes(*[g[0] for g in gs]) for gs in gts]
    gt_labels = [np.array([g[1] for g in gs], dtype=np.int32) for gs in gts]
    if gt_difficults is not None:
        gt_difficults = [np.array(d, dtype=bool) for d in gt_difficults]
    if gt_areas is not None:
        gt_areas = [np.array(a, dtype=np.float64) for a in gt_areas]
    return eval_detection_coco(pred_bboxes, pred_labels, pred_scores,
                               gt_bboxes, gt_labels, gt_difficults, gt_areas)


def test_perfect_detections_score_one(capsys):
    gts = [[(_square(0, 0, 10), 0), (_square(20, 30, 50), 1)],
           [(_square(5, 5, 120), 1)],
           []]
    preds = [[(box, label, 0.9) for box, label in gt] for gt in gts]
    result = _eval(preds, gts)
    for key in ('map', 'ap50', 'ap75', 'ap_small', 'ap_medium', 'ap_large'):
        assert result[key] == pytest.approx(1.0), key
    np.testing.assert_allclose(result['ap'], [1.0, 1.0])
    # COCOeval's prints go to the summary, not to stdout.
    assert capsys.readouterr().out == ''
    lines = result['summary'].splitlines()
    assert len(lines) == 12
    assert lines[0] == (' Average Precision  (AP) @[ IoU=0.50:0.95 | '
                        'area=   all | maxDets=100 ] = 1.000')
    assert result['stats'].shape == (12,)
    assert result['stats'][0] == result['map']


def test_false_positive_ranked_first_with_one_ground_truth():
    # Ranked FP, TP: precision 0 then 1/2 at recall 1, so 1/2 at every
    # recall point, at every IoU threshold.
    gts = [[(_square(0, 0, 10), 0)]]
    preds = [[(FAR, 0, 0.9), (_square(0, 0, 10), 0, 0.8)]]
    result = _eval(preds, gts)
    assert result['map'] == pytest.approx(0.5)
    assert result['ap50'] == pytest.approx(0.5)
    assert result['ap75'] == pytest.approx(0.5)


def test_false_positive_ranked_first_101_point_interpolation():
    # Three ground truths; ranked FP, TP, TP, FP, TP:
    #   recall    0, 1/3, 2/3, 2/3, 1
    #   precision 0, 1/2, 2/3, 1/2, 3/5
    # The best precision at recall >= r is 2/3 for r <= 2/3 (the 67 points
    # 0, ..., 0.66) and 3/5 above (the 34 points 0.67, ..., 1.00). The area
    # under the curve (VOC) would be 2/3 * 2/3 + 1/3 * 3/5 = 0.6444...
    gts = [[(_square(0, 0, 10), 0), (_square(0, 50, 10), 0)],
           [(_square(0, 0, 20), 0)]]
    preds = [[(FAR, 0, 0.9), (_square(0, 0, 10), 0, 0.8),
              (_square(0, 50, 10), 0, 0.5)],
             [(_square(0, 0, 20), 0, 0.7), (FAR, 0, 0.6)]]
    expected = (67 * 2 / 3 + 34 * 3 / 5) / N_RECALL_POINTS
    result = _eval(preds, gts)
    assert result['map'] == pytest.approx(expected, abs=1e-12)
    assert result['ap50'] == pytest.approx(expected, abs=1e-12)
    assert abs(expected - (2 / 3 * 2 / 3 + 1 / 3 * 3 / 5)) > 1e-4


def test_false_positive_between_true_positives():
    # Ranked TP, FP, TP over two ground truths: precision 1 up to recall
    # 1/2 (51 points, 0.50 included), then 2/3 (50 points).
    gts = [[(_square(0, 0, 10), 0), (_square(0, 50, 10), 0)]]
    preds = [[(_square(0, 0, 10), 0, 0.9), (FAR, 0, 0.8),
              (_square(0, 50, 10), 0, 0.7)]]
    expected = (51 * 1 + 50 * 2 / 3) / N_RECALL_POINTS
    assert _eval(preds, gts)['map'] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize('height, n_thresh_matched', [
    (6, 3),    # IoU 0.6: matched at 0.50, 0.55, 0.60
    (5, 1),    # IoU exactly 0.5: matched at 0.50 only
    (7.5, 6),  # IoU exactly 0.75: matched at 0.50, ..., 0.75
    (7.2, 5),  # IoU 0.72: matched at 0.50, ..., 0.70
])
def test_iou_thresholds_count_a_match_at_iou_at_least_the_threshold(
        height, n_thresh_matched):
    # The ground truth is 10 x 10; the prediction its top 10 x height part,
    # so IoU = height / 10.
    gts = [[(_square(0, 0, 10), 0)]]
    preds = [[((0, 0, height, 10), 0, 0.9)]]
    result = _eval(preds, gts)
    assert result['ap50'] == pytest.approx(1.0)
    assert result['ap75'] == pytest.approx(
        1.0 if n_thresh_matched >= 6 else 0.0)
    # Matched: AP 1 at that threshold; unmatched: 0. 'map' is the mean
    # over the ten thresholds.
    assert result['map'] == pytest.approx(n_thresh_matched / 10)


def test_area_ranges_split_small_medium_large():
    # Areas 16^2 (small), 50^2 (medium) and 100^2 (large); the medium one
    # is missed.
    small, medium, large = (_square(0, 0, 16), _square(0, 100, 50),
                            _square(200, 0, 100))
    gts = [[(small, 0), (medium, 0), (large, 0)]]
    preds = [[(small, 0, 0.9), (large, 0, 0.8)]]
    result = _eval(preds, gts)
    assert result['ap_small'] == pytest.approx(1.0)
    assert result['ap_medium'] == pytest.approx(0.0)
    assert result['ap_large'] == pytest.approx(1.0)
    # Over all areas: precision 1 up to recall 2/3 (67 points), then none.
    assert result['map'] == pytest.approx(67 / N_RECALL_POINTS)


def test_area_range_without_ground_truth_is_minus_one():
    small, large = _square(0, 0, 16), _square(200, 0, 100)
    gts = [[(small, 0), (large, 0)]]
    preds = [[(small, 0, 0.9), (large, 0, 0.8)]]
    result = _eval(preds, gts)
    assert result['ap_small'] == pytest.approx(1.0)
    assert result['ap_medium'] == -1
    assert result['ap_large'] == pytest.approx(1.0)


def test_area_exactly_32_squared_counts_as_small_and_medium():
    box = _square(0, 0, 32)
    result = _eval([[(box, 0, 0.9)]], [[(box, 0)]])
    assert result['ap_small'] == pytest.approx(1.0)
    assert result['ap_medium'] == pytest.approx(1.0)
    assert result['ap_large'] == -1
    # Just above 32^2 is medium only.
    box = (0, 0, 32, 32.5)
    result = _eval([[(box, 0, 0.9)]], [[(box, 0)]])
    assert result['ap_small'] == -1
    assert result['ap_medium'] == pytest.approx(1.0)


def test_gt_areas_decide_the_area_range():
    box = _square(0, 0, 100)
    result = _eval([[(box, 0, 0.9)]], [[(box, 0)]], gt_areas=[[100.]])
    assert result['ap_small'] == pytest.approx(1.0)
    assert result['ap_large'] == -1


def test_undetected_difficult_object_does_not_lower_ap():
    gts = [[(_square(0, 0, 10), 0), (_square(0, 50, 10), 0)]]
    preds = [[(_square(0, 0, 10), 0, 0.9)]]
    result = _eval(preds, gts, gt_difficults=[[False, True]])
    assert result['map'] == pytest.approx(1.0)
    # Counted, it halves the recall: precision 1 up to recall 1/2.
    result = _eval(preds, gts)
    assert result['map'] == pytest.approx(51 / N_RECALL_POINTS)


def test_detection_of_a_difficult_object_is_ignored_not_false():
    gts = [[(_square(0, 0, 10), 0), (_square(0, 50, 10), 0)]]
    preds = [[(_square(0, 50, 10), 0, 0.9), (_square(0, 0, 10), 0, 0.8)]]
    result = _eval(preds, gts, gt_difficults=[[False, True]])
    assert result['map'] == pytest.approx(1.0)
    # Left out of the ground truth instead, it is a false positive first.
    result = _eval(preds, [gts[0][:1]])
    assert result['map'] == pytest.approx(0.5)


def test_small_detection_inside_a_large_difficult_box_is_ignored():
    # The documented crowd rule: the overlap with a difficult box is the
    # intersection over the detection's area (here 1, though IoU is 0.01).
    gts = [[(_square(0, 0, 10), 0), (_square(100, 100, 100), 0)]]
    preds = [[(_square(120, 120, 10), 0, 0.9), (_square(0, 0, 10), 0, 0.8)]]
    result = _eval(preds, gts, gt_difficults=[[False, True]])
    assert result['map'] == pytest.approx(1.0)


def test_per_class_ap_and_classes_without_ground_truth():
    gts = [[(_square(0, 0, 10), 0), (_square(0, 50, 10), 1)]]
    preds = [[(_square(0, 0, 10), 0, 0.9),
              (FAR, 1, 0.9), (_square(0, 50, 10), 1, 0.8),
              (_square(0, 0, 10), 2, 0.5)]]
    result = _eval(preds, gts)
    assert result['ap'].shape == (3,)
    np.testing.assert_allclose(result['ap'][:2], [1.0, 0.5])
    assert np.isnan(result['ap'][2])
    # The mean leaves out the class without ground truth.
    assert result['map'] == pytest.approx(0.75)


def test_no_detections_score_zero():
    gts = [[(_square(0, 0, 10), 0)], []]
    result = _eval([[], []], gts)
    assert result['map'] == 0
    assert result['ap50'] == 0
    np.testing.assert_array_equal(result['ap'], [0.0])


def test_no_box_at_all_is_an_error():
    with pytest.raises(ValueError, match='no predicted and no ground truth'):
        _eval([[]], [[]])


def test_lengths_that_differ_are_an_error():
    box = _boxes(_square(0, 0, 10))
    label, score = np.zeros(1, np.int32), np.ones(1, np.float32)
    with pytest.raises(ValueError, match='lengths differ'):
        eval_detection_coco([box, box], [label, label], [score, score],
                            [box], [label])


# --------------------------------------------------------- results format

def test_to_coco_results_converts_boxes_and_ids():
    bboxes = [_boxes((20, 10, 25, 40), (1.5, 0.5, 4.5, 3.0)), _boxes()]
    labels = [np.array([1, 0], np.int32), np.zeros(0, np.int32)]
    scores = [np.array([0.9, 0.25], np.float32), np.zeros(0, np.float32)]
    results = to_coco_results(bboxes, labels, scores, image_ids=[7, 3],
                              category_ids=(1, 18))
    assert results == [
        {'image_id': 7, 'category_id': 18, 'bbox': [10.0, 20.0, 30.0, 5.0],
         'score': pytest.approx(0.9)},
        {'image_id': 7, 'category_id': 1, 'bbox': [0.5, 1.5, 2.5, 3.0],
         'score': 0.25}]
    # Plain Python numbers: the list can be written as JSON.
    json.dumps(to_coco_results(bboxes, labels, scores,
                               np.array([7, 3]), np.array([1, 18])))


def test_to_coco_results_label_without_category_id_is_an_error():
    with pytest.raises(ValueError) as excinfo:
        to_coco_results([_boxes(FAR)], [np.array([2])], [np.array([1.])],
                        image_ids=[7], category_ids=(1, 18))
    assert str(excinfo.value) == (
        'label 2 of image 7 has no category id; expected labels in [0, 1]')


def test_results_of_a_coco_dataset_score_one_with_pycocotools_on_its_file(
        tmp_path):
    # The dataset's ids and cat_ids map its examples back to the file, as
    # read by pycocotools itself; the crowd region is ignored there too.
    ann_file, img_dir = _write_coco(tmp_path, [
        _ann(1, 7, 18, [10, 20, 30, 5]), _ann(2, 7, 1, [0, 0, 8, 9]),
        _ann(3, 3, 3, [2, 2, 4, 4]), _ann(4, 3, 1, [0, 0, 20, 20], 1)])
    dataset = COCOBboxDataset(ann_file, img_dir)
    bboxes, labels = zip(*(dataset.get_annotation(i)[:2]
                           for i in range(len(dataset))))
    scores = [np.ones(len(label), np.float32) for label in labels]
    results = to_coco_results(bboxes, labels, scores, dataset.ids,
                              dataset.cat_ids)
    assert sorted((r['image_id'], r['category_id']) for r in results) == [
        (3, 3), (7, 1), (7, 18)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(ann_file)
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), 'bbox')
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    assert coco_eval.stats[0] == pytest.approx(1.0)
