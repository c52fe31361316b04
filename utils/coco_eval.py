"""COCO detection metrics, computed by pycocotools.

:func:`eval_detection_coco` takes the same per-image arrays as
:func:`utils.eval_tool.eval_detection_voc`, so any dataset (VOC-layout ones
too) can be scored with COCO's AP averaged over IoU thresholds 0.50:0.95;
the numbers are those of ``pycocotools.cocoeval.COCOeval``, which receives
the boxes converted in memory.

Shape shorthand: :math:`R` predicted boxes and :math:`R'` ground truth boxes
of one image, :math:`L` foreground classes. Boxes are
``(y_min, x_min, y_max, x_max)``; COCO's are ``[x, y, width, height]``.
"""
import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from utils.eval_tool import _zip_same_length

# The first six of COCOeval's twelve summary numbers, in its order.
_STAT_KEYS = ('map', 'ap50', 'ap75', 'ap_small', 'ap_medium', 'ap_large')


def eval_detection_coco(
        pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels,
        gt_difficults=None, gt_areas=None):
    """Evaluates detections with the COCO average precision.

    Each image becomes a COCO image, each label ``l`` the category
    ``l + 1``, and COCOeval runs with its standard settings: IoU thresholds
    0.50, 0.55, ..., 0.95 (a match needs an IoU of at least the threshold),
    101 recall points, at most 100 detections per image and class, and the
    area ranges small (area <= 32^2), medium (32^2 <= area <= 96^2) and
    large (area >= 96^2); an area of exactly 32^2 or 96^2 counts in both
    ranges, as in pycocotools.

    Difficult objects are given to COCOeval as crowd regions (``iscrowd``
    1), which it ignores: they are not counted as positives, and a detection
    matched to one is neither a true nor a false positive. This is the only
    way to have a ground truth box ignored in the installed pycocotools:
    its ``_prepare`` overwrites an ``ignore`` field with ``iscrowd``. Two
    consequences differ from :func:`~utils.eval_tool.eval_detection_voc`:
    the overlap of a detection with a difficult box is its intersection over
    the detection's own area (COCO's rule for crowds), so a small detection
    inside a large difficult box is ignored rather than counted false; and
    any number of detections may be matched to one difficult box, each
    ignored (as in VOC).

    Args:
        pred_bboxes (iterable of ~numpy.ndarray): Per image, predicted boxes
            of shape :math:`(R, 4)`, each ``(y_min, x_min, y_max, x_max)``.
        pred_labels (iterable of ~numpy.ndarray): Per image, labels of shape
            :math:`(R,)`, in :math:`[0, L - 1]`.
        pred_scores (iterable of ~numpy.ndarray): Per image, confidences of
            shape :math:`(R,)`.
        gt_bboxes (iterable of ~numpy.ndarray): Per image, ground truth boxes
            of shape :math:`(R', 4)`, each ``(y_min, x_min, y_max, x_max)``.
        gt_labels (iterable of ~numpy.ndarray): Per image, labels of shape
            :math:`(R',)`, in :math:`[0, L - 1]`.
        gt_difficults (iterable of ~numpy.ndarray): Per image, bools of shape
            :math:`(R',)`; ``None`` means no object is difficult.
        gt_areas (iterable of ~numpy.ndarray): Per image, the area of each
            ground truth object, shape :math:`(R',)`, which decides its
            small/medium/large range (COCO's files give the area of the
            segmentation mask); ``None`` means the box's
            ``width * height`` in pixels. Detections always use their box's
            area.

    Returns:
        dict: ``'map'`` (AP at IoU 0.50:0.95), ``'ap50'``, ``'ap75'``,
        ``'ap_small'``, ``'ap_medium'`` and ``'ap_large'``, floats that are
        ``-1`` where no ground truth counts (COCOeval's convention);
        ``'ap'``, an array of shape :math:`(L,)` with each class's AP at
        0.50:0.95 (``nan`` for a class without non-difficult ground truth,
        as in ``eval_detection_voc``); ``'stats'``, COCOeval's twelve
        summary numbers (the six APs above, then six average recalls);
        and ``'summary'``, COCOeval's twelve-line printed summary.

    Raises:
        ValueError: if the iterables differ in length, or hold no box at
            all.
    """
    inputs = [pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels]
    if gt_difficults is not None:
        inputs.append(gt_difficults)
    if gt_areas is not None:
        inputs.append(gt_areas)
    examples = list(_zip_same_length(*inputs))

    images, gt_anns, preds = [], [], ([], [], [])
    n_fg_class = 0
    for img_id, example in enumerate(examples, 1):
        pred_bbox, pred_label, pred_score, gt_bbox, gt_label = example[:5]
        rest = list(example[5:])
        gt_difficult = rest.pop(0) if gt_difficults is not None else None
        gt_area = rest.pop(0) if gt_areas is not None else None
        gt_bbox = np.asarray(gt_bbox, dtype=np.float64).reshape((-1, 4))
        gt_label = np.asarray(gt_label, dtype=int).reshape(-1)
        if gt_difficult is None:
            gt_difficult = np.zeros(len(gt_bbox), dtype=bool)
        if gt_area is None:
            gt_area = ((gt_bbox[:, 2] - gt_bbox[:, 0])
                       * (gt_bbox[:, 3] - gt_bbox[:, 1]))

        images.append({'id': img_id})
        for box, l, difficult, area in zip(
                _to_xywh(gt_bbox), gt_label, gt_difficult, gt_area):
            # Annotation ids start at 1: COCOeval marks "unmatched" with 0.
            gt_anns.append({
                'id': len(gt_anns) + 1, 'image_id': img_id,
                'category_id': int(l) + 1, 'bbox': box, 'area': float(area),
                'iscrowd': int(bool(difficult))})
        for pred, value in zip(preds, (pred_bbox, pred_label, pred_score)):
            pred.append(value)
        n_fg_class = max([n_fg_class, *(gt_label + 1),
                          *(np.asarray(pred_label, dtype=int) + 1)])

    if n_fg_class == 0:
        raise ValueError(
            'eval_detection_coco got no predicted and no ground truth box; '
            'expected at least one box to evaluate')
    categories = [{'id': l + 1} for l in range(n_fg_class)]
    results = to_coco_results(*preds, image_ids=range(1, len(images) + 1),
                              category_ids=range(1, n_fg_class + 1))

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {'images': images, 'annotations': gt_anns,
                           'categories': categories}
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:
            # loadRes reads results[0], so an empty list needs its own set.
            coco_dt = COCO()
            coco_dt.dataset = {'images': images, 'annotations': [],
                               'categories': categories}
            coco_dt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_dt, iouType='bbox')
        coco_eval.evaluate()
        coco_eval.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        coco_eval.summarize()

    result = {key: float(value)
              for key, value in zip(_STAT_KEYS, coco_eval.stats)}
    result['ap'] = _ap_per_class(coco_eval)
    result['stats'] = np.array(coco_eval.stats, dtype=np.float64)
    result['summary'] = summary.getvalue()
    return result


def _ap_per_class(coco_eval):
    """Each class's AP at IoU 0.50:0.95, all areas, 100 detections.

    Mirrors COCOeval's summary: the mean of the precisions it did compute
    (-1 marks none); ``nan`` for a class with none.
    """
    # precision: (iou thresholds, recall points, classes, areas, max dets)
    precision = coco_eval.eval['precision'][:, :, :, 0, -1]
    ap = np.full(precision.shape[2], np.nan)
    for l in range(precision.shape[2]):
        p = precision[:, :, l]
        if np.any(p > -1):
            ap[l] = p[p > -1].mean()
    return ap


def to_coco_results(bboxes, labels, scores, image_ids, category_ids):
    """Turns per-image detections into COCO's results format.

    The list can be written with :func:`json.dump` and read by
    ``COCO.loadRes`` or the COCO evaluation server.

    Args:
        bboxes (iterable of ~numpy.ndarray): Per image, boxes of shape
            :math:`(R, 4)`, each ``(y_min, x_min, y_max, x_max)``.
        labels (iterable of ~numpy.ndarray): Per image, labels of shape
            :math:`(R,)`, in :math:`[0, L - 1]`.
        scores (iterable of ~numpy.ndarray): Per image, confidences of shape
            :math:`(R,)`.
        image_ids (iterable): The COCO image id of each image, e.g. a
            :class:`~data.coco_dataset.COCOBboxDataset`'s ``ids``.
        category_ids (sequence): The category id of each label, e.g. a
            :class:`~data.coco_dataset.COCOBboxDataset`'s ``cat_ids``.

    Returns:
        list of dict: One per box, with ``'image_id'``, ``'category_id'``,
        ``'bbox'`` (``[x, y, width, height]``, floats) and ``'score'``
        (a float), in the images' order and each image's box order.

    Raises:
        ValueError: if the iterables differ in length, or a label has no
            category id.
    """
    category_ids = list(category_ids)
    results = []
    for bbox, label, score, img_id in _zip_same_length(
            bboxes, labels, scores, image_ids):
        bbox = np.asarray(bbox, dtype=np.float64).reshape((-1, 4))
        label = np.asarray(label).reshape(-1)
        score = np.asarray(score).reshape(-1)
        if not len(bbox) == len(label) == len(score):
            raise ValueError(
                'image {} has {} boxes, {} labels and {} scores; expected '
                'one of each per detection'.format(
                    img_id, len(bbox), len(label), len(score)))
        for box, l, s in zip(_to_xywh(bbox), label, score):
            if not 0 <= l < len(category_ids):
                raise ValueError(
                    'label {} of image {} has no category id; expected '
                    'labels in [0, {}]'.format(
                        l, img_id, len(category_ids) - 1))
            results.append({'image_id': _plain(img_id),
                            'category_id': _plain(category_ids[int(l)]),
                            'bbox': box, 'score': float(s)})
    return results


def _to_xywh(bbox):
    """``(y_min, x_min, y_max, x_max)`` rows to ``[x, y, w, h]`` lists."""
    return [[float(x_min), float(y_min), float(x_max - x_min),
             float(y_max - y_min)]
            for y_min, x_min, y_max, x_max in bbox]


def _plain(value):
    """A numpy scalar as the Python number it holds, for json.dump."""
    return value.item() if isinstance(value, np.generic) else value
