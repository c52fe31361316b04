"""PASCAL VOC detection metrics: average precision per class and its mean.

Shape shorthand: :math:`R` predicted boxes and :math:`R'` ground truth boxes
of one image, :math:`L` foreground classes. Boxes are
``(y_min, x_min, y_max, x_max)``.
"""
from collections import defaultdict
import itertools

import numpy as np

from model.utils.bbox_tools import bbox_iou


def eval_detection_voc(
        pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels,
        gt_difficults=None,
        iou_thresh=0.5, use_07_metric=False):
    """Evaluates detections with the PASCAL VOC average precision.

    Objects marked difficult are neither counted as positives nor
    penalised: a detection matched to one is ignored.

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
        iou_thresh (float): A prediction is correct if its IoU with a ground
            truth box is at least this.
        use_07_metric (bool): Use the VOC2007 11-point metric instead of the
            area under the precision-recall curve.

    Returns:
        dict: ``'ap'``, an array of shape :math:`(L,)` holding each class's
        average precision (``nan`` for a class without ground truth), and
        ``'map'``, the mean of ``'ap'`` over the other classes.
    """
    prec, rec = calc_detection_voc_prec_rec(
        pred_bboxes, pred_labels, pred_scores,
        gt_bboxes, gt_labels, gt_difficults,
        iou_thresh=iou_thresh)

    ap = calc_detection_voc_ap(prec, rec, use_07_metric=use_07_metric)

    return {'ap': ap, 'map': np.nanmean(ap)}


def calc_detection_voc_prec_rec(
        pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels,
        gt_difficults=None,
        iou_thresh=0.5):
    """Computes the precision and recall curves of each class.

    Predictions of a class are ranked by score over all images; each is a
    true positive if it is the first to match (IoU at least ``iou_thresh``)
    its best ground truth box, ignored if that box is difficult, and a false
    positive otherwise. As in the VOC devkit, boxes are treated as integer
    pixel ranges: 1 is added to ``y_max`` and ``x_max`` before the IoU.

    Args:
        pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels,
            gt_difficults, iou_thresh: As in :func:`eval_detection_voc`.

    Returns:
        tuple of two lists (prec, rec): ``prec[l]`` and ``rec[l]`` are
        arrays of the precision and recall of class ``l`` after each of its
        ranked predictions. Both are ``None`` for a label that appears in
        no prediction and no ground truth; ``rec[l]`` is ``None`` for a
        class without non-difficult ground truth. The lists have length
        :math:`L`, one more than the largest label seen.

    Raises:
        ValueError: if the iterables differ in length, or hold no box at
            all.
    """
    inputs = [pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels]
    if gt_difficults is not None:
        inputs.append(gt_difficults)

    n_pos = defaultdict(int)
    score = defaultdict(list)
    match = defaultdict(list)

    for example in _zip_same_length(*inputs):
        pred_bbox, pred_label, pred_score, gt_bbox, gt_label = example[:5]
        gt_difficult = example[5] if gt_difficults is not None else None
        if gt_difficult is None:
            gt_difficult = np.zeros(gt_bbox.shape[0], dtype=bool)

        for l in np.unique(np.concatenate((pred_label, gt_label)).astype(int)):
            pred_mask_l = pred_label == l
            pred_bbox_l = pred_bbox[pred_mask_l]
            pred_score_l = pred_score[pred_mask_l]
            # sort by score
            order = pred_score_l.argsort()[::-1]
            pred_bbox_l = pred_bbox_l[order]
            pred_score_l = pred_score_l[order]

            gt_mask_l = gt_label == l
            gt_bbox_l = gt_bbox[gt_mask_l]
            gt_difficult_l = gt_difficult[gt_mask_l]

            n_pos[l] += np.logical_not(gt_difficult_l).sum()
            score[l].extend(pred_score_l)

            if len(pred_bbox_l) == 0:
                continue
            if len(gt_bbox_l) == 0:
                match[l].extend((0,) * pred_bbox_l.shape[0])
                continue

            # VOC evaluation follows integer typed bounding boxes.
            pred_bbox_l = pred_bbox_l.copy()
            pred_bbox_l[:, 2:] += 1
            gt_bbox_l = gt_bbox_l.copy()
            gt_bbox_l[:, 2:] += 1

            iou = bbox_iou(pred_bbox_l, gt_bbox_l)
            gt_index = iou.argmax(axis=1)
            # set -1 if there is no matching ground truth
            gt_index[iou.max(axis=1) < iou_thresh] = -1
            del iou

            selec = np.zeros(gt_bbox_l.shape[0], dtype=bool)
            for gt_idx in gt_index:
                if gt_idx >= 0:
                    if gt_difficult_l[gt_idx]:
                        match[l].append(-1)
                    else:
                        if not selec[gt_idx]:
                            match[l].append(1)
                        else:
                            match[l].append(0)
                    selec[gt_idx] = True
                else:
                    match[l].append(0)

    if not n_pos:
        raise ValueError(
            'calc_detection_voc_prec_rec got no predicted and no ground truth '
            'box; expected at least one box to evaluate')
    n_fg_class = max(n_pos.keys()) + 1
    prec = [None] * n_fg_class
    rec = [None] * n_fg_class

    for l in n_pos.keys():
        score_l = np.array(score[l])
        match_l = np.array(match[l], dtype=np.int8)

        order = score_l.argsort()[::-1]
        match_l = match_l[order]

        tp = np.cumsum(match_l == 1)
        fp = np.cumsum(match_l == 0)

        # If an element of fp + tp is 0,
        # the corresponding element of prec[l] is nan.
        with np.errstate(invalid='ignore'):
            prec[l] = tp / (fp + tp)
        # If n_pos[l] is 0, rec[l] is None.
        if n_pos[l] > 0:
            rec[l] = tp / n_pos[l]

    return prec, rec


def _zip_same_length(*iterables):
    """Like :func:`zip`, but raises ValueError if the lengths differ.

    Unlike checking what is left after :func:`zip`, this also catches an
    earlier iterable that is one item longer than a later one.
    """
    sentinel = object()
    for items in itertools.zip_longest(*iterables, fillvalue=sentinel):
        if any(item is sentinel for item in items):
            raise ValueError(
                'the predictions and ground truths must hold one entry per '
                'image, but their lengths differ')
        yield items


def calc_detection_voc_ap(prec, rec, use_07_metric=False):
    """Computes the average precision of each class from its curves.

    Args:
        prec (list of ~numpy.ndarray): ``prec[l]`` is the precision curve of
            class ``l``, or ``None``.
        rec (list of ~numpy.ndarray): ``rec[l]`` is the recall curve of
            class ``l``, or ``None``.
        use_07_metric (bool): Use the VOC2007 11-point metric (the mean of
            the best precision at recall >= 0, 0.1, ..., 1) instead of the
            area under the precision-recall curve made monotone.

    Returns:
        ~numpy.ndarray: The average precision of each class, shape
        :math:`(L,)`; ``nan`` where ``prec[l]`` or ``rec[l]`` is ``None``.
    """
    n_fg_class = len(prec)
    ap = np.empty(n_fg_class)
    for l in range(n_fg_class):
        if prec[l] is None or rec[l] is None:
            ap[l] = np.nan
            continue

        if use_07_metric:
            # 11 point metric
            ap[l] = 0
            for t in np.arange(0., 1.1, 0.1):
                if np.sum(rec[l] >= t) == 0:
                    p = 0
                else:
                    p = np.max(np.nan_to_num(prec[l])[rec[l] >= t])
                ap[l] += p / 11
        else:
            # correct AP calculation
            # first append sentinel values at the end
            mpre = np.concatenate(([0], np.nan_to_num(prec[l]), [0]))
            mrec = np.concatenate(([0], rec[l], [1]))

            mpre = np.maximum.accumulate(mpre[::-1])[::-1]

            # to calculate area under PR curve, look for points
            # where X axis (recall) changes value
            i = np.where(mrec[1:] != mrec[:-1])[0]

            # and sum (\Delta recall) * prec
            ap[l] = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])

    return ap
