"""utils/coco_eval.py: COCO's metric. AP at 101 recall points, IoU
thresholds, area ranges and difficult (crowd) objects by hand; results in
COCO's format; the numbers of pycocotools' COCOeval, exactly, on a user's
file, on subsets of it, on random cases, and from a COCO dataset."""
import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from conftest import coco_ann, pycocotools_eval, write_coco
from data.coco_dataset import COCOBboxDataset
from utils.coco_eval import (_cocoeval, _dets_of, eval_coco_results,
                             eval_detection_coco, load_coco_gt,
                             to_coco_results)

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
    ann_file, img_dir = write_coco(tmp_path, [
        coco_ann(1, 7, 18, [10, 20, 30, 5]), coco_ann(2, 7, 1, [0, 0, 8, 9]),
        coco_ann(3, 3, 3, [2, 2, 4, 4]), coco_ann(4, 3, 1, [0, 0, 20, 20], 1)])
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


# ------------------------------------------ pycocotools' numbers, exactly

# A user's file: category ids 3, 7 and 11 declared out of order; image ids
# neither contiguous nor sorted; an image without objects; areas unlike the
# boxes' (the 40 x 40 boxes are small by their area, medium by their box);
# crowd regions; a box of zero width; annotation ids from 500.
USER_CATEGORIES = [{'id': 11, 'name': 'bird'}, {'id': 3, 'name': 'cat'},
                   {'id': 7, 'name': 'dog'}]
USER_IMAGES = [{'id': 42, 'file_name': 'a.png', 'height': 200, 'width': 220},
               {'id': 5, 'file_name': 'b.png', 'height': 120, 'width': 100},
               {'id': 17, 'file_name': 'c.png', 'height': 150, 'width': 90},
               {'id': 99, 'file_name': 'empty.png', 'height': 50,
                'width': 60}]


def _user_annotations():
    objects = [  # image, category, [x, y, w, h], area, iscrowd
        (42, 3, [10, 10, 40, 40], 900.0, 0),
        (42, 3, [100, 20, 40, 40], 1000.0, 0),
        (42, 7, [10, 100, 120, 80], 8000.0, 0),
        (42, 11, [150, 150, 60, 40], 2000.0, 1),
        (5, 11, [5, 5, 20, 30], 500.0, 0),
        (5, 3, [50, 40, 40, 40], 1600.0, 0),
        (5, 7, [0, 60, 0, 20], 0.0, 0),
        (17, 7, [10, 10, 70, 130], 9500.0, 0),
        (17, 3, [0, 0, 90, 150], 13500.0, 1),
    ]
    return [{'id': 500 + 3 * n, 'image_id': img, 'category_id': cat,
             'bbox': bbox, 'area': area, 'iscrowd': crowd}
            for n, (img, cat, bbox, area, crowd) in enumerate(objects)]


def _user_results():
    """Detections of the user's file, in COCO's results format: found,
    poorly placed, duplicated, confused, on a crowd region, on the
    image without objects."""
    dets = [  # image, category, [x, y, w, h], score
        (42, 3, [10, 10, 40, 40], 0.9), (42, 3, [12, 10, 40, 40], 0.8),
        (42, 3, [100, 30, 40, 40], 0.75), (42, 7, [10, 100, 110, 80], 0.7),
        (42, 11, [150, 150, 30, 20], 0.6), (42, 11, [10, 10, 40, 40], 0.65),
        (5, 11, [5, 5, 20, 30], 0.85), (5, 3, [60, 40, 40, 40], 0.5),
        (5, 7, [0, 60, 2, 20], 0.4), (17, 7, [10, 10, 70, 100], 0.95),
        (17, 3, [20, 20, 40, 40], 0.3), (99, 7, [0, 0, 30, 30], 0.55),
    ]
    return [{'image_id': img, 'category_id': cat, 'bbox': [float(v) for v in
                                                           bbox],
             'score': score} for img, cat, bbox, score in dets]


def _write_user_file(tmp_path, annotations=None):
    path = str(tmp_path / 'user.json')
    with open(path, 'w') as f:
        json.dump({'images': USER_IMAGES, 'categories': USER_CATEGORIES,
                   'annotations': (_user_annotations() if annotations is None
                                   else annotations)}, f)
    return path


_HEADLINE = ('map', 'ap50', 'ap75', 'ap_small', 'ap_medium', 'ap_large')


def _assert_equal_to(result, coco_eval):
    """Our numbers are COCOeval's, exactly."""
    assert list(result['stats']) == list(coco_eval.stats)
    assert [result[key] for key in _HEADLINE] == list(coco_eval.stats[:6])


def test_results_on_the_users_file_score_as_pycocotools(tmp_path):
    ann_file = _write_user_file(tmp_path)
    results = _user_results()
    result = eval_coco_results(ann_file, results)
    coco_eval = pycocotools_eval(ann_file, results)
    _assert_equal_to(result, coco_eval)
    # Every number is one that the case decides.
    assert 0 < result['map'] < result['ap50'] < 1
    assert result['ap_small'] > 0 and result['ap_large'] > 0
    # Per class, in the order of the ids (cat 3, dog 7, bird 11).
    precision = coco_eval.eval['precision'][:, :, :, 0, -1]
    assert result['ap'].tolist() == [
        precision[:, :, k][precision[:, :, k] > -1].mean() for k in range(3)]
    assert result['summary'].splitlines()[0].startswith(
        ' Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all')


def test_the_files_areas_decide_the_sizes(tmp_path):
    # The same boxes sized by their own areas: other numbers.
    ann_file = _write_user_file(tmp_path)
    by_file = eval_coco_results(ann_file, _user_results())
    annotations = _user_annotations()
    for ann in annotations:
        ann['area'] = ann['bbox'][2] * ann['bbox'][3]
    (tmp_path / 'boxes').mkdir()
    by_box = eval_coco_results(
        _write_user_file(tmp_path / 'boxes', annotations), _user_results())
    assert by_file['ap_small'] != by_box['ap_small']
    assert by_file['ap_medium'] != by_box['ap_medium']
    assert by_file['map'] == by_box['map']


def test_a_subset_of_the_images_scores_as_cocoeval_with_those_ids(tmp_path):
    ann_file = _write_user_file(tmp_path)
    result = eval_coco_results(ann_file, _user_results(), image_ids=[42, 5])
    _assert_equal_to(result, pycocotools_eval(ann_file, _user_results(),
                                          image_ids=[42, 5]))
    assert result['map'] != eval_coco_results(ann_file,
                                              _user_results())['map']


def test_no_detection_at_all_scores_zero_as_cocoeval(tmp_path):
    ann_file = _write_user_file(tmp_path)
    result = eval_coco_results(ann_file, [])
    _assert_equal_to(result, pycocotools_eval(ann_file, []))
    assert result['map'] == 0
    assert result['ap'].tolist() == [0, 0, 0]


def test_results_from_a_json_file_and_left_unchanged(tmp_path):
    ann_file = _write_user_file(tmp_path)
    results = _user_results()
    path = str(tmp_path / 'detections.json')
    with open(path, 'w') as f:
        json.dump(results, f)
    assert eval_coco_results(ann_file, path)['stats'].tolist() == \
        eval_coco_results(ann_file, results)['stats'].tolist()
    # loadRes would have added 'area', 'id', 'iscrowd', 'segmentation'.
    assert results == _user_results()


def test_a_result_of_an_image_not_in_the_file_is_named(tmp_path):
    ann_file = _write_user_file(tmp_path)
    results = _user_results() + [{'image_id': 1000, 'category_id': 3,
                                  'bbox': [0, 0, 1, 1], 'score': 0.5}]
    with pytest.raises(ValueError) as excinfo:
        eval_coco_results(ann_file, results)
    assert str(excinfo.value) == (
        'the results hold image id 1000, which the annotation file does not '
        'list (1 results of unknown images)')


def test_a_file_without_area_or_iscrowd_is_scored_by_the_boxes(tmp_path):
    annotations = [{k: v for k, v in ann.items()
                    if k not in ('area', 'iscrowd')}
                   for ann in _user_annotations()]
    complete = [dict(ann, area=ann['bbox'][2] * ann['bbox'][3], iscrowd=0)
                for ann in annotations]
    result = eval_coco_results(
        load_coco_gt(_write_user_file(tmp_path, annotations)),
        _user_results())
    (tmp_path / 'complete').mkdir()
    _assert_equal_to(result, pycocotools_eval(
        _write_user_file(tmp_path / 'complete', complete), _user_results()))


def _random_case(rng, n_img=12):
    """A random file and results with what the matching must get right:
    tied scores, IoUs exactly at the thresholds (boxes on a grid), areas at
    the range limits, crowd regions, objects of annotation id 0, more than
    100 detections of one class in an image, categories without anything,
    images without anything."""
    categories = [{'id': c} for c in (3, 7, 11, 40)]
    images = [{'id': int(i)} for i in rng.permutation(n_img) * 3 + 1]
    annotations, results = [], []
    for img in images:
        for _ in range(rng.poisson(4)):
            annotations.append({
                'id': 0 if rng.rand() < 0.05 else len(annotations) + 1,
                'image_id': img['id'],
                'category_id': int(rng.choice([3, 7, 11])),
                'bbox': [float(v) for v in np.concatenate((
                    rng.randint(0, 10, 2) * 10,
                    rng.choice([0, 10, 20, 32, 40, 96, 100], 2)))],
                'area': float(rng.choice([32 ** 2, 96 ** 2, 500, 5000,
                                          20000])),
                'iscrowd': int(rng.rand() < 0.15)})
        objects = [a for a in annotations if a['image_id'] == img['id']]
        for _ in range(rng.poisson(8)):
            if objects and rng.rand() < 0.7:
                obj = objects[rng.randint(len(objects))]
                bbox = [v + float(rng.choice([0, 0, 2, -5, 10]))
                        for v in obj['bbox']]
                cat = obj['category_id'] if rng.rand() < 0.8 else 7
            else:
                bbox = [float(v) for v in np.concatenate((
                    rng.randint(0, 10, 2) * 10, rng.choice([10, 40, 96], 2)))]
                cat = int(rng.choice([3, 7, 11]))
            results.append({'image_id': img['id'], 'category_id': cat,
                            'bbox': bbox,
                            'score': float(rng.choice([0.3, 0.6, 0.9,
                                                       rng.rand()]))})
    # 130 detections of one class in one image: COCOeval keeps 100.
    img = images[0]['id']
    results += [{'image_id': img, 'category_id': 3,
                 'bbox': [float(rng.randint(0, 5) * 10)] * 2 + [20., 20.],
                 'score': float(rng.choice([0.1, 0.2, rng.rand()]))}
                for _ in range(130)]
    order = rng.permutation(len(results))
    return ({'images': images, 'annotations': annotations,
             'categories': categories}, [results[i] for i in order])


@pytest.mark.parametrize('seed', range(12))
def test_random_cases_give_cocoevals_arrays(seed):
    rng = np.random.RandomState(seed)
    dataset, results = _random_case(rng)
    image_ids = None
    if seed % 3 == 0:
        image_ids = [img['id'] for img in dataset['images'][:8]]
    coco_eval = pycocotools_eval(dataset, results, image_ids)
    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
    ours = _cocoeval(coco_gt, _dets_of(results, coco_gt), image_ids)
    for key in ('precision', 'recall', 'scores'):
        np.testing.assert_array_equal(ours.eval[key], coco_eval.eval[key])
    _assert_equal_to(eval_coco_results(coco_gt, results, image_ids),
                     coco_eval)


def test_eval_detection_coco_is_cocoeval_on_the_same_file():
    # The arrays' numbers are those of pycocotools on the file they make.
    rng = np.random.RandomState(5)
    gts = [[(_square(*rng.randint(0, 50, 2), rng.choice([10, 40, 100])),
             rng.randint(3)) for _ in range(rng.randint(0, 4))]
           for _ in range(10)]
    preds = [[(box if rng.rand() < 0.7 else FAR, label,
               rng.choice([0.5, 0.9])) for box, label in gt] + [
                   (_square(0, 0, 20), 1, 0.7)] for gt in gts]
    difficults = [[rng.rand() < 0.2 for _ in gt] for gt in gts]
    result = _eval(preds, gts, gt_difficults=difficults)
    images = [{'id': i} for i in range(1, len(gts) + 1)]
    annotations = []
    for img_id, (gt, difficult) in enumerate(zip(gts, difficults), 1):
        for ((y_min, x_min, y_max, x_max), label), d in zip(gt, difficult):
            box = [float(x_min), float(y_min), float(x_max - x_min),
                   float(y_max - y_min)]
            annotations.append({
                'id': len(annotations) + 1, 'image_id': img_id,
                'category_id': int(label) + 1, 'bbox': box,
                'area': box[2] * box[3], 'iscrowd': int(d)})
    results = [{'image_id': img_id, 'category_id': int(label) + 1,
                'bbox': [float(box[1]), float(box[0]),
                         float(box[3] - box[1]), float(box[2] - box[0])],
                'score': float(np.float32(score))}
               for img_id, pred in enumerate(preds, 1)
               for box, label, score in pred]
    coco_eval = pycocotools_eval({'images': images, 'annotations': annotations,
                              'categories': [{'id': k} for k in (1, 2, 3)]},
                             results)
    _assert_equal_to(result, coco_eval)


def test_of_equal_ious_the_last_object_in_the_file_is_taken():
    # Objects A and B, B 2 pixels right of A; the first detection, between
    # them, overlaps both by 90/110; COCOeval gives it the last of equal
    # IoUs, B. The second, 1 pixel left of A, then takes A at 90/110 too:
    # both found at IoU thresholds 0.50 to 0.80, none above, AP 7/10.
    # (Given A, it would leave the second B at 70/130.)
    dataset = {'images': [{'id': 1}], 'categories': [{'id': 1}],
               'annotations': [
                   {'id': 1, 'image_id': 1, 'category_id': 1, 'iscrowd': 0,
                    'bbox': [0, 0, 10, 10], 'area': 100},
                   {'id': 2, 'image_id': 1, 'category_id': 1, 'iscrowd': 0,
                    'bbox': [2, 0, 10, 10], 'area': 100}]}
    results = [{'image_id': 1, 'category_id': 1, 'bbox': [1, 0, 10, 10],
                'score': 0.9},
               {'image_id': 1, 'category_id': 1, 'bbox': [-1, 0, 10, 10],
                'score': 0.8}]
    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
    result = eval_coco_results(coco_gt, results)
    _assert_equal_to(result, pycocotools_eval(dataset, results))
    assert result['map'] == pytest.approx(0.7)
