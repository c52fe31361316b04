"""utils/report.py: the kinds of errors, the per-class rows, the files of an
evaluation report, and the training history.

Boxes are measured as the VOC metric measures them, as integer pixel
ranges: ``(0, 0, 9, 9)`` is 10 x 10 pixels. So against the object SQUARE
below, a box ``(0, 0, 9, h - 1)`` has IoU ``h / 10``.
"""
import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from utils.eval_tool import calc_detection_voc_prec_rec, eval_detection_voc
from utils.report import (ERROR_KINDS, KINDS, append_history,
                          class_rows, classify_detections, count_kinds,
                          draw_training_curves, precision_recall,
                          read_history, write_report)

SQUARE = (0, 0, 9, 9)


def _boxes(*boxes):
    return np.array(boxes, dtype=np.float32).reshape((-1, 4))


def _columns(images):
    """Per image ``(detections, objects)``, each a list of tuples
    ``(box, label, score)`` and ``(box, label, difficult)``, as the six
    lists of eval_detection_voc."""
    dets, objs = zip(*images)
    return ([_boxes(*[d[0] for d in ds]) for ds in dets],
            [np.array([d[1] for d in ds], np.int32) for ds in dets],
            [np.array([d[2] for d in ds], np.float32) for ds in dets],
            [_boxes(*[o[0] for o in os]) for os in objs],
            [np.array([o[1] for o in os], np.int32) for os in objs],
            [np.array([o[2] for o in os], bool) for os in objs])


def _shift(box, dy, dx):
    y_min, x_min, y_max, x_max = box
    return (y_min + dy, x_min + dx, y_max + dy, x_max + dx)


# One image with every kind once. Objects: 0 a class-0 square, 1 a
# class-1 square, 2 a difficult class-0 square, 3 a class-0 square that
# nothing finds.
OBJECTS = [(SQUARE, 0, False), (_shift(SQUARE, 100, 100), 1, False),
           (_shift(SQUARE, 200, 200), 0, True),
           (_shift(SQUARE, 300, 300), 0, False)]
DETECTIONS = [
    (SQUARE, 0, 0.9),                      # true positive
    (SQUARE, 0, 0.8),                      # duplicate of object 0
    ((0, 0, 9, 3), 0, 0.7),                # IoU 0.4: localization
    (_shift(SQUARE, 100, 100), 0, 0.95),   # on the class-1 object
    (_shift(SQUARE, 500, 500), 1, 0.6),    # background
    (_shift(SQUARE, 200, 200), 0, 0.5),    # on the difficult object
]
EXPECTED_KINDS = ['true_positive', 'duplicate', 'localization', 'confusion',
                  'background', 'ignored']


def test_each_kind_of_detection_and_the_missed_object():
    result = classify_detections(*_columns([(DETECTIONS, OBJECTS)]))
    assert result.kinds[0].tolist() == EXPECTED_KINDS
    # The object that decided each kind; none for the background.
    assert result.gt_index[0].tolist() == [0, 0, 0, 1, -1, 2]
    # Missed: the class-1 object (only a class-0 box found it) and the one
    # nothing found; never the difficult one.
    assert result.missed[0].tolist() == [False, True, False, True]


def test_counts_by_class_and_kind():
    columns = _columns([(DETECTIONS, OBJECTS), (DETECTIONS[4:5], [])])
    result = classify_detections(*columns)
    counts = count_kinds(result.kinds, result.missed, columns[1],
                         columns[4], n_fg_class=3)
    assert set(counts) == set(KINDS) | {'missed'}
    expected = {'true_positive': [1, 0, 0], 'duplicate': [1, 0, 0],
                'localization': [1, 0, 0], 'confusion': [1, 0, 0],
                'background': [0, 2, 0], 'ignored': [1, 0, 0],
                'missed': [1, 1, 0]}
    for kind, count in expected.items():
        assert counts[kind].tolist() == count, kind


@pytest.mark.parametrize('height, kind', [
    (5, 'true_positive'),     # IoU exactly 0.5: a match
    (4, 'localization'),      # IoU 0.4
    (1, 'localization'),      # IoU exactly 0.1
])
def test_the_iou_thresholds_at_their_boundaries(height, kind):
    dets = [((0, 0, 9, height - 1), 0, 0.9)]
    result = classify_detections(*_columns([(dets, [(SQUARE, 0, False)])]))
    assert result.kinds[0].tolist() == [kind]


def test_below_the_low_threshold_is_background():
    # A 10 x 1 box inside a 10 x 10 object, then one 9 pixels long: IoU
    # 0.1 and 0.09.
    dets = [((0, 0, 0, 9), 0, 0.9), ((0, 0, 0, 8), 0, 0.8)]
    result = classify_detections(*_columns([(dets, [(SQUARE, 0, False)])]))
    assert result.kinds[0].tolist() == ['localization', 'background']
    assert result.gt_index[0].tolist() == [0, -1]


def test_errors_on_the_own_class_come_before_confusion():
    # Objects of classes 0 and 1 in the same place: a second class-0
    # detection there is a duplicate, a poorly placed one a localization
    # error, though both overlap the class-1 object as much.
    objects = [(SQUARE, 0, False), (SQUARE, 1, False)]
    dets = [(SQUARE, 0, 0.9), (SQUARE, 0, 0.8), ((0, 0, 9, 3), 0, 0.7)]
    result = classify_detections(*_columns([(dets, objects)]))
    assert result.kinds[0].tolist() == [
        'true_positive', 'duplicate', 'localization']
    assert result.missed[0].tolist() == [False, True]


def test_a_duplicate_is_by_the_best_object_only_as_voc_matches():
    # The second detection's best object is taken; VOC's rule does not try
    # the next best, though it overlaps by 100/110.
    objects = [(SQUARE, 0, False), ((0, 0, 9, 10), 0, False)]
    dets = [(SQUARE, 0, 0.9), (SQUARE, 0, 0.8)]
    columns = _columns([(dets, objects)])
    result = classify_detections(*columns)
    assert result.kinds[0].tolist() == ['true_positive', 'duplicate']
    assert result.missed[0].tolist() == [False, True]
    prec, rec = calc_detection_voc_prec_rec(*columns)
    np.testing.assert_array_equal(rec[0], [0.5, 0.5])


def test_the_higher_score_takes_the_object_whatever_the_order():
    objects = [(SQUARE, 0, False)]
    dets = [((0, 0, 9, 5), 0, 0.3), (SQUARE, 0, 0.9)]
    result = classify_detections(*_columns([(dets, objects)]))
    assert result.kinds[0].tolist() == ['duplicate', 'true_positive']


def test_images_without_detections_or_objects():
    columns = _columns([([], [(SQUARE, 0, False), (SQUARE, 1, True)]),
                        ([(SQUARE, 1, 0.5)], []), ([], [])])
    result = classify_detections(*columns)
    assert [k.tolist() for k in result.kinds] == [[], ['background'], []]
    assert [m.tolist() for m in result.missed] == [[True, False], [], []]


def test_true_positives_and_misses_are_those_of_the_voc_curves():
    # Random boxes on a small grid (many equal IoUs, IoUs exactly at the
    # thresholds), tied scores, difficult objects, three classes.
    rng = np.random.RandomState(0)

    def box():
        y, x = rng.randint(0, 4, 2) * 5
        h, w = rng.choice([4, 9, 14], 2)
        return (y, x, y + h, x + w)

    images = []
    for _ in range(60):
        objects = [(box(), rng.randint(3), rng.rand() < 0.2)
                   for _ in range(rng.randint(0, 5))]
        dets = []
        for _ in range(rng.randint(0, 8)):
            if objects and rng.rand() < 0.6:  # near an object
                obj_box, label, _ = objects[rng.randint(len(objects))]
                det_box = _shift(obj_box, *rng.randint(-3, 4, 2))
                if rng.rand() < 0.2:
                    label = rng.randint(3)
            else:
                det_box, label = box(), rng.randint(3)
            dets.append((det_box, label, rng.choice([0.2, 0.5, 0.9])))
        images.append((dets, objects))
    columns = _columns(images)
    result = classify_detections(*columns)
    counts = count_kinds(result.kinds, result.missed, columns[1],
                         columns[4], n_fg_class=3)
    prec, rec = calc_detection_voc_prec_rec(*columns)
    gt_label = np.concatenate(columns[4])[~np.concatenate(columns[5])]
    n_pos = np.bincount(gt_label, minlength=3)
    for l in range(3):
        n_true = int(round(rec[l][-1] * n_pos[l]))
        assert counts['true_positive'][l] == n_true
        assert counts['missed'][l] == n_pos[l] - n_true
        # The curve counts every detection but the ignored ones.
        n_false = int(round(n_true / prec[l][-1])) - n_true
        assert sum(counts[k][l] for k in ERROR_KINDS) == n_false
    # Every kind is there to be counted.
    assert all(counts[kind].sum() > 0 for kind in KINDS)


# ------------------------------------------------------ per-class rows

def test_precision_recall_is_the_voc_curves_padded_to_every_class():
    columns = _columns([(DETECTIONS, OBJECTS)])
    prec, rec = precision_recall(*columns, n_fg_class=4)
    want_prec, want_rec = calc_detection_voc_prec_rec(*columns)
    assert len(prec) == len(rec) == 4
    for l in range(2):
        np.testing.assert_array_equal(prec[l], want_prec[l])
    np.testing.assert_array_equal(rec[1], [0.])  # its detection is false
    assert prec[2] is prec[3] is rec[2] is rec[3] is None


def test_class_rows():
    columns = _columns([(DETECTIONS, OBJECTS)])
    _, rec = precision_recall(*columns, n_fg_class=3)
    rows = class_rows(['cat', 'dog', 'bird'], np.array([0.25, np.nan]), rec,
                      columns[1], columns[4], columns[5])
    assert rows[0] == {'name': 'cat', 'ap': 0.25, 'n_gt': 2, 'n_det': 5,
                       'recall': 0.5}
    assert rows[1]['n_gt'] == 1 and rows[1]['n_det'] == 1
    assert rows[1]['recall'] == 0  # its object found by another class
    assert math.isnan(rows[1]['ap'])
    assert rows[2]['n_gt'] == rows[2]['n_det'] == 0
    assert math.isnan(rows[2]['recall']) and math.isnan(rows[2]['ap'])


# ---------------------------------------------------------- the report

NAMES = ('cat', 'dog', 'bird')
IMG_SIZE = (3, 520, 530)
# The colour of the images: the thumbnails in worst.png show it.
IMG_COLOR = (20, 200, 240)


def _image(i):
    img = np.empty(IMG_SIZE, np.float32)
    img[:] = np.array(IMG_COLOR, np.float32)[:, None, None]
    return img


def _png(path):
    with Image.open(str(path)) as img:
        return np.asarray(img.convert('RGB'))


def _write(tmp_path, metrics, **kwargs):
    columns = _columns([(DETECTIONS, OBJECTS), (DETECTIONS[4:5], [])])
    return write_report(str(tmp_path / 'report'), metrics, NAMES, *columns,
                        **kwargs)


def test_report_files_and_their_content(tmp_path):
    metrics = eval_detection_voc(
        *_columns([(DETECTIONS, OBJECTS), (DETECTIONS[4:5], [])]),
        use_07_metric=True)
    asked = []

    def image_getter(i):
        asked.append(i)
        return _image(i)
    paths = _write(tmp_path, metrics, image_getter=image_getter,
                   metric='voc07')
    assert sorted(paths) == ['errors.png', 'metrics.json', 'pr_curves.png',
                             'report.md', 'worst.png']

    with open(paths['metrics.json']) as f:
        written = json.load(f)
    # dog: its object missed, AP 0; bird: never seen, no AP (null).
    assert written == {'metric': 'voc07', 'map': metrics['map'],
                       'ap': {'cat': metrics['ap'][0], 'dog': 0.0,
                              'bird': None}}
    assert 0 < metrics['ap'][0] < 1

    with open(paths['report.md']) as f:
        report = f.read()
    assert '| map | {:.4f} |'.format(metrics['map']) in report
    assert '| cat | {:.4f} | 2 | 5 | 0.5000 |'.format(
        metrics['ap'][0]) in report
    assert '| dog | 0.0000 | 1 | 2 | 0.0000 |' in report
    assert '| bird | - | 0 | 0 | - |' in report
    # true positive, duplicate, localization, confusion, background,
    # ignored, missed
    assert '| cat | 1 | 1 | 1 | 1 | 0 | 1 | 1 |' in report
    assert '| dog | 0 | 0 | 0 | 0 | 2 | 0 | 1 |' in report
    assert '| **all** | 1 | 1 | 1 | 1 | 2 | 1 | 2 |' in report

    # The pictures: their sizes follow the classes; they are not blank.
    for name, size in (('pr_curves.png', (2 * 2.2 + 0.5, 2 * 2.2)),
                       ('errors.png', (1.4 + 0.28 * 4, 11))):
        pixels = _png(paths[name])
        assert pixels.shape[:2] == tuple(round(100 * s) for s in size)
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20, name
    # worst.png: the five false positives (a row and a half) and the two
    # missed objects (a row), each cut out of its image (of IMG_COLOR);
    # only the images needed were read.
    pixels = _png(paths['worst.png'])
    assert pixels.shape[:2] == (round(100 * (3 * 2.7 + 0.4)), 4 * 260)
    assert np.all(pixels == IMG_COLOR, axis=2).sum() > 5 * 1000
    assert sorted(asked) == [0, 1]


def test_report_without_images_has_no_worst_png(tmp_path):
    metrics = {'map': 0.5, 'ap': np.array([0.5])}
    paths = _write(tmp_path, metrics)
    assert 'worst.png' not in paths
    assert not (tmp_path / 'report' / 'worst.png').exists()


def test_coco_metrics_json_has_every_number_and_the_summary_in_markdown(
        tmp_path):
    stats = np.array([0.5, 0.75, 0.5, -1, 0.25, 0.5, 0.1, 0.2, 0.3, -1, 0.4,
                      0.5])
    metrics = dict(zip(('map', 'ap50', 'ap75', 'ap_small', 'ap_medium',
                        'ap_large'), stats[:6]),
                   ap=np.array([0.5, np.nan, np.nan]), stats=stats,
                   summary=' Average Precision  (AP) @[ ... ] = 0.500\n')
    paths = _write(tmp_path, metrics, metric='coco')
    with open(paths['metrics.json']) as f:
        written = json.load(f)
    assert written == {
        'metric': 'coco', 'map': 0.5, 'ap50': 0.75, 'ap75': 0.5,
        'ap_small': -1, 'ap_medium': 0.25, 'ap_large': 0.5,
        'stats': stats.tolist(),
        'ap': {'cat': 0.5, 'dog': None, 'bird': None}}
    with open(paths['report.md']) as f:
        report = f.read()
    assert '| ap_small | -1.0000 |' in report
    assert '```\n Average Precision  (AP) @[ ... ] = 0.500\n```' in report


# ------------------------------------------------------------- history

LOSSES = ('rpn_loc_loss', 'rpn_cls_loss', 'roi_loc_loss', 'roi_cls_loss',
          'total_loss')


def _losses(epoch):
    return {name: 1 / (epoch + 1 + i) for i, name in enumerate(LOSSES)}


def test_history_one_row_per_epoch_and_a_resumed_run_appends(tmp_path):
    out_dir = str(tmp_path / 'run')
    for epoch in range(3):
        path = append_history(out_dir, epoch, 1e-3, 0.1 * epoch,
                              _losses(epoch))
    # Resumed from the checkpoint of epoch 1: epoch 2 again, then 3.
    append_history(out_dir, 2, 1e-4, 0.25, _losses(2))
    append_history(out_dir, 3, 1e-4, 0.3, _losses(3))
    with open(path, newline='') as f:
        rows = list(csv.reader(f))
    assert rows[0] == ['epoch', 'lr', 'map'] + list(LOSSES)
    assert [row[:3] for row in rows[1:]] == [
        ['0', '0.001', '0.0'], ['1', '0.001', '0.1'],
        ['2', '0.001', '0.2'], ['2', '0.0001', '0.25'],
        ['3', '0.0001', '0.3']]
    assert float(rows[2][3]) == _losses(1)['rpn_loc_loss']

    history = read_history(path)
    np.testing.assert_array_equal(history['epoch'], [0, 1, 2, 3])
    np.testing.assert_array_equal(history['map'], [0, 0.1, 0.25, 0.3])
    np.testing.assert_array_equal(history['total_loss'], [
        _losses(e)['total_loss'] for e in range(4)])


def test_history_keeps_its_header_when_a_row_differs(tmp_path):
    out_dir = str(tmp_path)
    append_history(out_dir, 0, 1e-3, 0.5, {'total_loss': 2.0,
                                           'rpn_cls_loss': 1.0})
    path = append_history(out_dir, 1, 1e-3, 0.6, {'total_loss': 1.5,
                                                  'new_loss': 3.0})
    with open(path) as f:
        assert f.read().splitlines() == [
            'epoch,lr,map,total_loss,rpn_cls_loss', '0,0.001,0.5,2.0,1.0',
            '1,0.001,0.6,1.5,']
    assert np.isnan(read_history(path)['rpn_cls_loss'][1])


def test_training_curves_png(tmp_path):
    out_dir = str(tmp_path)
    for epoch in range(4):
        append_history(out_dir, epoch, 1e-3 if epoch < 2 else 1e-4,
                       0.2 * epoch, _losses(epoch))
    path = draw_training_curves(out_dir)
    assert path == str(tmp_path / 'training_curves.png')
    pixels = _png(path)
    assert pixels.shape[:2] == (380, 1300)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20
