"""utils/evaluation.py: the stop check evaluate is given, test_num, the
collected detections, each metric's numbers (score_detections), and a
COCO-format test set scored as pycocotools scores its file."""
import json
import types

import numpy as np
import pytest
from torch.utils.data import DataLoader

from conftest import pycocotools_eval, toy_model, toy_options, write_coco
from data import dataset
from data.coco_dataset import COCOBboxDataset
from data.sampler import collate_test, eval_batches
from data.synthetic import TOY_LABEL_NAMES, generate_voc
from utils import evaluation
from utils.coco_eval import eval_detection_coco, to_coco_results
from utils.eval_tool import eval_detection_voc
from utils.evaluation import (collect_detections, evaluate, score,
                              score_detections)


@pytest.fixture(scope='module')
def testset(tmp_path_factory):
    data_dir = generate_voc(str(tmp_path_factory.mktemp('toy')), n_images=5,
                            img_size=128, max_obj_size=60, test_fraction=1,
                            seed=3)
    return dataset.TestDataset(toy_options(data_dir),
                               label_names=TOY_LABEL_NAMES)


class Stop(Exception):
    pass


def test_the_stop_check_runs_before_each_batch_and_can_stop(testset):
    loader = DataLoader(testset, collate_fn=collate_test,
                        batch_sampler=eval_batches(5, 2, 0, 1))
    calls = []
    result = evaluate(loader, toy_model(), check_stop=lambda: calls.append(1))
    assert len(calls) == len(loader) == 3  # batches of 2, 2 and 1
    assert 0 <= result['map'] <= 1

    def stop_at_the_second():
        calls.append(1)
        if len(calls) == 5:
            raise Stop
    with pytest.raises(Stop):
        evaluate(loader, toy_model(), check_stop=stop_at_the_second)


def test_test_num_scores_the_first_images_only(testset):
    model = toy_model()
    first_three = evaluate(DataLoader(testset, batch_size=1), model,
                           test_num=3)
    want = evaluate(DataLoader([testset[i] for i in range(3)], batch_size=1),
                    model)
    assert first_three['map'] == want['map']
    # the test bites: all five score otherwise
    assert evaluate(DataLoader(testset, batch_size=1), model)['map'] != \
        want['map']


def test_score_detections_by_metric():
    """One image, two objects of one class; a false positive ranked first,
    then one object found exactly, the other missed: precision 0 then 1/2,
    recall 0 then 1/2."""
    gt_bbox = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=np.float32)
    pred_bbox = np.array([[50, 50, 60, 60], [0, 0, 10, 10]], np.float32)
    arrays = ([pred_bbox], [np.array([0, 0])], [np.array([0.9, 0.8])],
              [gt_bbox], [np.array([0, 0])], [np.array([False, False])])
    # VOC07: 11 recall points 0, 0.1, ..., 1; precision 1/2 up to 0.5.
    assert score_detections('voc07', *arrays)['map'] == pytest.approx(
        6 * 0.5 / 11)
    # VOC area: recall 1/2 at precision 1/2.
    assert score_detections('voc', *arrays)['map'] == pytest.approx(
        0.25)
    # COCO: 101 recall points 0, 0.01, ..., 1, the same at every IoU
    # threshold (the found box is exact).
    result = score_detections('coco', *arrays)
    assert result['map'] == pytest.approx(51 * 0.5 / 101)
    assert result['ap50'] == result['ap75'] == pytest.approx(result['map'])


# ----------------------------------------- a COCO-format test set, exactly

# Category ids 3, 7 and 11 (labels 0, 1, 2), image ids out of order, an
# image without objects, areas unlike the boxes' (the 40 x 40 boxes are
# small by the file), a crowd region, a box of zero width.
COCO_IMAGES = [(42, 'a.png', 200, 220), (5, 'b.png', 120, 100),
               (17, 'c.png', 150, 90), (99, 'empty.png', 50, 60)]
COCO_OBJECTS = [  # image, category, [x, y, w, h], area, iscrowd
    (42, 3, [10, 10, 40, 40], 900.0, 0), (42, 3, [100, 20, 40, 40], 1000.0, 0),
    (42, 7, [10, 100, 120, 80], 8000.0, 0),
    (42, 11, [150, 150, 60, 40], 2000.0, 1),
    (5, 11, [5, 5, 20, 30], 500.0, 0), (5, 3, [50, 40, 40, 40], 1600.0, 0),
    (5, 7, [0, 60, 0, 20], 0.0, 0), (17, 7, [10, 10, 70, 130], 9500.0, 0)]
# Per image (by size), the detector's boxes (y_min, x_min, y_max, x_max),
# labels and scores.
PREDICTIONS = {
    (200, 220): ([[10, 10, 50, 50], [10, 12, 50, 52], [30, 100, 70, 140],
                  [100, 10, 180, 120], [150, 150, 170, 180]],
                 [0, 0, 0, 1, 2], [0.9, 0.8, 0.75, 0.7, 0.6]),
    (120, 100): ([[5, 5, 35, 25], [40, 60, 80, 100], [60, 0, 80, 2]],
                 [2, 0, 1], [0.85, 0.5, 0.4]),
    (150, 90): ([[10, 10, 110, 80], [20, 20, 60, 60]], [1, 0], [0.95, 0.3]),
    (50, 60): ([[0, 0, 30, 30]], [1], [0.55]),
}


@pytest.fixture
def coco_testset(tmp_path):
    images = [{'id': img_id, 'file_name': name, 'height': H, 'width': W}
              for img_id, name, H, W in COCO_IMAGES]
    annotations = [{'id': 500 + n, 'image_id': img, 'category_id': cat,
                    'bbox': bbox, 'area': area, 'iscrowd': crowd}
                   for n, (img, cat, bbox, area, crowd)
                   in enumerate(COCO_OBJECTS)]
    ann_file, img_dir = write_coco(
        tmp_path, annotations, images=images,
        categories=[{'id': 11, 'name': 'bird'}, {'id': 3, 'name': 'cat'},
                    {'id': 7, 'name': 'dog'}])
    db = COCOBboxDataset(ann_file, img_dir, use_difficult=True)
    opt = types.SimpleNamespace(min_size=64, max_size=64,
                                caffe_pretrain=False)
    return dataset.TestDataset(opt, db=db)


class ScriptedDetector:
    """Stands in for FasterRCNN: ``predict`` returns the PREDICTIONS of
    each image, found by its size."""

    def predict(self, imgs, sizes):
        out = [PREDICTIONS[tuple(int(v) for v in size)] for size in sizes]
        return ([np.array(bbox, np.float32) for bbox, _, _ in out],
                [np.array(label, np.int32) for _, label, _ in out],
                [np.array(score, np.float32) for _, _, score in out])


def _detections_json(testset, tmp_path, n=None):
    """The detections of the first ``n`` images as predict.py writes them
    for a COCO file: the file's image and category ids."""
    db = testset.db
    n = len(db) if n is None else n
    preds = [PREDICTIONS[db.get_size(i)] for i in range(n)]
    results = to_coco_results(
        [np.array(p[0], np.float32) for p in preds],
        [np.array(p[1], np.int32) for p in preds],
        [np.array(p[2], np.float32) for p in preds], db.ids[:n], db.cat_ids)
    path = str(tmp_path / 'detections.json')
    with open(path, 'w') as f:
        json.dump(results, f)
    return path


STAT_KEYS = ('map', 'ap50', 'ap75', 'ap_small', 'ap_medium', 'ap_large')


def test_coco_metric_on_a_coco_test_set_is_pycocotools_on_its_file(
        coco_testset, tmp_path):
    result = evaluate(DataLoader(coco_testset, batch_size=1),
                      ScriptedDetector(), metric='coco')
    want = list(pycocotools_eval(
        coco_testset.db.ann_file,
        _detections_json(coco_testset, tmp_path)).stats)
    assert list(result['stats']) == want
    assert [result[key] for key in STAT_KEYS] == want[:6]
    assert 0 < result['map'] < 1 and result['ap_small'] > 0
    # Per class in label order: cat (3), dog (7), bird (11).
    assert result['ap'].shape == (3,)

    # The test bites: from the loader's arrays (sizes by the boxes, the
    # zero-width box left out) the numbers differ.
    detections = collect_detections(DataLoader(coco_testset, batch_size=1),
                                    ScriptedDetector())
    from_arrays = eval_detection_coco(*detections[:6])
    assert from_arrays['ap_small'] != result['ap_small']
    assert from_arrays['map'] != result['map']


def test_test_num_scores_the_first_images_of_the_file(coco_testset,
                                                       tmp_path):
    result = evaluate(DataLoader(coco_testset, batch_size=1),
                      ScriptedDetector(), test_num=2, metric='coco')
    want = list(pycocotools_eval(
        coco_testset.db.ann_file,
        _detections_json(coco_testset, tmp_path, n=2),
        image_ids=[42, 5]).stats)
    assert list(result['stats']) == want


def test_collected_detections_scored_are_what_evaluate_gives(coco_testset):
    loader = DataLoader(coco_testset, collate_fn=collate_test,
                        batch_sampler=eval_batches(4, 3, 0, 1))
    detections = collect_detections(loader, ScriptedDetector())
    assert detections.indices == [0, 1, 2, 3]
    np.testing.assert_array_equal(detections.pred_labels[1], [2, 0, 1])
    # Ground truth as the dataset gives it: the crowd region kept and
    # flagged, the zero-width box left out.
    assert detections.gt_difficults[0].tolist() == [False, False, False,
                                                    True]
    assert detections.gt_labels[1].tolist() == [2, 0]
    for metric in ('coco', 'voc07'):
        got = score(detections, metric, coco_testset.db)
        want = evaluate(loader, ScriptedDetector(), metric=metric)
        assert got['map'] == want['map']
    assert score(detections, 'voc07', coco_testset.db)['map'] == \
        eval_detection_voc(*detections[:6], use_07_metric=True)['map']


def test_score_detections_receives_the_coco_file_positionally(
        coco_testset, monkeypatch):
    # A wrapper of score_detections(metric, *args), as tests and tools
    # write them, passes the file on.
    calls = []

    def spy(metric, *args):
        calls.append(args[-1])
        return score_detections(metric, *args)
    monkeypatch.setattr(evaluation, 'score_detections', spy)
    result = evaluate(DataLoader(coco_testset, batch_size=1),
                      ScriptedDetector(), metric='coco')
    [source] = calls
    assert source == (coco_testset.db.ann_file, [42, 5, 17, 99], (3, 7, 11))
    assert result['map'] == score(
        collect_detections(DataLoader(coco_testset, batch_size=1),
                           ScriptedDetector()), 'coco',
        coco_testset.db)['map']
