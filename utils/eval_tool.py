"""PASCAL VOC detection metrics: average precision per class and its mean.

Shape shorthand: :math:`R` predicted boxes and :math:`R'` ground truth boxes
of one image, :math:`L` foreground classes; :math:`N` predicted and :math:`M`
ground truth boxes of all images together, in :math:`G` groups (one class in
one image). Boxes are ``(y_min, x_min, y_max, x_max)``.

The matching is vectorised over all images, yet gives the original per-image,
per-class loop's precision and recall bit for bit, down to the order in which
``argsort()[::-1]`` ranks tied scores (see :func:`_rerank_ties`).
"""
from collections import namedtuple
import itertools

import numpy as np


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
        ValueError: if the iterables differ in length, hold no box at
            all, or hold a negative label.
    """
    inputs = [pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels]
    if gt_difficults is not None:
        inputs.append(gt_difficults)
    pred, gt, image_preds = _gather(_zip_same_length(*inputs))

    if len(pred.label) + len(gt.label) == 0:
        raise ValueError(
            'calc_detection_voc_prec_rec got no predicted and no ground truth '
            'box; expected at least one box to evaluate')
    labels = (pred.label, gt.label)
    lowest = min(label.min() for label in labels if len(label))
    if lowest < 0:
        raise ValueError(
            'labels must be in [0, L - 1], got {}'.format(lowest))
    n_fg_class = int(max(label.max() for label in labels if len(label))) + 1
    # The classes of any prediction or ground truth box, ascending.
    classes = np.flatnonzero(sum(
        np.bincount(label, minlength=n_fg_class) for label in labels))
    n_pos = np.bincount(gt.label[~gt.difficult], minlength=n_fg_class)

    # Rank the predictions by class, then image, then score, as the
    # original visits them, and match each (image, class) group greedily.
    n_img = len(image_preds)
    order = _rank(pred.label, pred.score, pred.img)
    group = pred.label[order] * n_img + pred.img[order]
    group_start = _run_starts(group)
    order = _rerank_ties(order, pred.score, pred.img, group_start,
                         image_preds)
    best_gt = _best_gt(pred.bbox, order, group, group_start,
                       gt.bbox, gt.label * n_img + gt.img, iou_thresh)
    match = _match(best_gt, gt.difficult)

    prec = [None] * n_fg_class
    rec = [None] * n_fg_class
    class_start = np.searchsorted(group, classes * n_img)
    class_stop = np.searchsorted(group, (classes + 1) * n_img)
    for l, start, stop in zip(classes, class_start, class_stop):
        prec[l], rec[l] = _prec_rec(
            pred.score[order[start:stop]], match[start:stop], n_pos[l])

    return prec, rec


_Preds = namedtuple('_Preds', 'bbox label score img')
_Gts = namedtuple('_Gts', 'bbox label difficult img')


def _gather(examples):
    """Concatenates the boxes of all images.

    Args:
        examples (iterable of tuple): Per image, ``(pred_bbox, pred_label,
            pred_score, gt_bbox, gt_label)`` and optionally
            ``gt_difficult``, shaped as in :func:`eval_detection_voc`.

    Returns:
        tuple of (_Preds, _Gts, list): The :math:`N` predictions of all
        images, ``bbox`` :math:`(N, 4)` each ``(y_min, x_min, y_max,
        x_max)``, ``label`` :math:`(N,)` int64, ``score`` :math:`(N,)` and
        ``img`` :math:`(N,)`, the index of each one's image; the :math:`M`
        ground truth boxes alike, with ``difficult`` :math:`(M,)` bool in
        place of ``score``; and per image ``(start, pred_label,
        pred_score)``, its first prediction's index and its own arrays.
    """
    pred_bboxes, pred_labels, pred_scores = [], [], []
    gt_bboxes, gt_labels, gt_difficults = [], [], []
    image_preds = []
    start = 0
    for example in examples:
        pred_bbox, pred_label, pred_score, gt_bbox, gt_label = (
            np.asarray(a) for a in example[:5])
        gt_difficult = example[5] if len(example) > 5 else None
        if gt_difficult is None:
            gt_difficult = np.zeros(len(gt_label), dtype=bool)
        pred_bboxes.append(pred_bbox.reshape((-1, 4)))
        pred_labels.append(pred_label)
        pred_scores.append(pred_score)
        gt_bboxes.append(gt_bbox.reshape((-1, 4)))
        gt_labels.append(gt_label)
        gt_difficults.append(np.asarray(gt_difficult, dtype=bool))
        image_preds.append((start, pred_label, pred_score))
        start += len(pred_label)

    def images(arrays, dtype=None):
        if not arrays:
            return np.zeros(0, dtype)
        joined = np.concatenate(arrays)
        return joined if dtype is None else joined.astype(dtype, copy=False)

    def boxes(arrays):
        return np.concatenate(arrays) if arrays else np.zeros((0, 4))

    def image_index(labels):
        return np.repeat(np.arange(len(labels)),
                         [len(label) for label in labels])

    pred = _Preds(boxes(pred_bboxes), images(pred_labels, np.int64),
                  images(pred_scores), image_index(pred_labels))
    gt = _Gts(boxes(gt_bboxes), images(gt_labels, np.int64),
              images(gt_difficults, bool), image_index(gt_labels))
    return pred, gt, image_preds


def _rank(label, score, img):
    """The order of the predictions by class, then image, then descending
    score.

    Args:
        label, score, img (~numpy.ndarray): Shape :math:`(N,)` each; labels
            and image indices are non-negative integers.

    Returns:
        ~numpy.ndarray: A permutation of shape :math:`(N,)`. Predictions
        of one class and image with equal scores come in any order; see
        :func:`_rerank_ties`.
    """
    order = score.argsort()[::-1]
    # Stable sorts keep the order of the previous key; on keys of 16 bits
    # or fewer numpy sorts by radix, so the key casts are a speed-up only.
    for key in (img, label):
        key = key[order]
        if len(key):
            key = key.astype(np.min_scalar_type(key.max()))
        order = order[key.argsort(kind='stable')]
    return order


def _run_starts(key):
    """The index of the first element of each run of equal keys.

    Args:
        key (~numpy.ndarray): Shape :math:`(N,)`.

    Returns:
        ~numpy.ndarray: Shape :math:`(G,)`, the start of each of the
        :math:`G` runs, ascending from 0 (empty when :math:`N = 0`).
    """
    return np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1]))) \
        if len(key) else np.zeros(0, np.int64)


def _rerank_ties(order, score, img, group_start, image_preds):
    """Orders each group with tied scores exactly as the original does.

    The original ranks the predictions of one class in one image by
    ``pred_score_l.argsort()[::-1]``, numpy's unstable sort reversed; the
    order it gives to equal scores decides which of them is the true
    positive, and where they land in the final ranking. So a group whose
    scores are not strictly decreasing (ties, or ``nan``) is ranked again
    by that same call on that same array; the other groups have one
    possible order.

    Args:
        order (~numpy.ndarray): Shape :math:`(N,)`, the predictions ranked
            by :func:`_rank`.
        score (~numpy.ndarray): Shape :math:`(N,)`, all predictions'
            scores.
        img (~numpy.ndarray): Shape :math:`(N,)`, each prediction's image.
        group_start (~numpy.ndarray): Shape :math:`(G,)`, where each
            (class, image) group starts in ``order``.
        image_preds (list of tuple): Per image, ``(start, pred_label,
            pred_score)`` as :func:`_gather` returns them.

    Returns:
        ~numpy.ndarray: ``order``, re-ranked in place.
    """
    ranked = score[order]
    tied = ~(ranked[1:] < ranked[:-1])
    tied[group_start[1:] - 1] = False  # pairs across two groups
    group_stop = np.append(group_start[1:], len(order))
    for g in np.unique(np.searchsorted(group_start, np.flatnonzero(tied),
                                       side='right') - 1):
        start, stop = group_start[g], group_stop[g]
        first = order[start]
        image_start, pred_label, pred_score = image_preds[img[first]]
        in_group = np.flatnonzero(
            pred_label == pred_label[first - image_start])
        order[start:stop] = image_start + in_group[
            pred_score[in_group].argsort()[::-1]]
    return order


def _best_gt(pred_bbox, order, group, group_start, gt_bbox, gt_group,
             iou_thresh):
    """The ground truth box each prediction overlaps most, if enough.

    As in the VOC devkit, boxes are integer pixel ranges: 1 is added to
    ``y_max`` and ``x_max`` before the IoU. Among equal IoUs the first box
    (in input order) wins.

    Args:
        pred_bbox (~numpy.ndarray): Shape :math:`(N, 4)`, each
            ``(y_min, x_min, y_max, x_max)``.
        order (~numpy.ndarray): Shape :math:`(N,)`, the ranking:
            ``pred_bbox[order[i]]`` is the :math:`i`-th prediction.
        group (~numpy.ndarray): Shape :math:`(N,)`, ascending, the group
            of each ranked prediction; a prediction is compared with the
            boxes of its group (one class in one image).
        group_start (~numpy.ndarray): Shape :math:`(G,)`, where each run
            of ``group`` starts.
        gt_bbox (~numpy.ndarray): Shape :math:`(M, 4)`, each
            ``(y_min, x_min, y_max, x_max)``.
        gt_group (~numpy.ndarray): Shape :math:`(M,)`, the group of each
            ground truth box.
        iou_thresh (float): The least IoU of a match.

    Returns:
        ~numpy.ndarray: Shape :math:`(N,)`, the index in ``gt_bbox`` of
        each ranked prediction's best box, or -1 where its group has no box or
        its best IoU is below ``iou_thresh``.
    """
    best = np.full(len(group), -1, dtype=np.int64)
    gt_order = gt_group.argsort(kind='stable')
    gt_group = gt_group[gt_order]
    first_gt = np.searchsorted(gt_group, group[group_start])
    n_gt = np.searchsorted(gt_group, group[group_start],
                           side='right') - first_gt
    n_pred = np.diff(np.append(group_start, len(group)))
    # The predictions of the groups with boxes, each paired with every box
    # of its group: a segment of n_gt pairs per prediction.
    with_gt = np.flatnonzero(n_gt)
    if len(with_gt) == 0:
        return best
    n_pred = n_pred[with_gt]
    pred_index = _ranges(group_start[with_gt], n_pred)
    n_gt = np.repeat(n_gt[with_gt], n_pred)
    pair_gt = gt_order[_ranges(np.repeat(first_gt[with_gt], n_pred), n_gt)]
    pair_pred = np.repeat(pred_index, n_gt)

    iou = _pair_iou(_pixel_bbox(pred_bbox[order[pair_pred]]),
                    _pixel_bbox(gt_bbox[pair_gt]))
    max_iou, argmax = _segment_max(iou, np.cumsum(n_gt) - n_gt)
    # As ``iou.max() < iou_thresh`` decides in the original: nan matches.
    hit = ~(max_iou < iou_thresh)
    best[pred_index[hit]] = pair_gt[argmax[hit]]
    return best


def _ranges(start, length):
    """Consecutive integers from each start.

    Args:
        start, length (~numpy.ndarray): Shape :math:`(S,)` each, integers,
            ``length`` non-negative.

    Returns:
        ~numpy.ndarray: Shape :math:`(\\sum length,)`, the concatenation of
        ``arange(start[s], start[s] + length[s])`` over :math:`s`.
    """
    offset = np.cumsum(length) - length
    return np.arange(offset[-1] + length[-1] if len(length) else 0) \
        + np.repeat(start - offset, length)


def _pixel_bbox(bbox):
    """Adds 1 to ``y_max`` and ``x_max`` of boxes of shape :math:`(K, 4)`,
    in place, and returns them."""
    bbox[:, 2:] += 1
    return bbox


def _pair_iou(bbox_a, bbox_b):
    """Intersection over union of the boxes of two aligned sets.

    The arithmetic is that of :func:`model.utils.bbox_tools.bbox_iou` (in
    torch), to the bit: the same operations in the same order and types.
    Where torch's types differ from numpy's it is spelled out: integer with
    float boxes compute in the float type, integer areas are int64 and
    divide in float32.

    Args:
        bbox_a (~numpy.ndarray): Shape :math:`(K, 4)`, each
            ``(y_min, x_min, y_max, x_max)``.
        bbox_b (~numpy.ndarray): Shape :math:`(K, 4)`, same order.

    Returns:
        ~numpy.ndarray: Shape :math:`(K,)`; element ``k`` is the IoU of
        ``bbox_a[k]`` and ``bbox_b[k]`` (``nan`` for two empty boxes).
    """
    dtype = _torch_result_type(bbox_a.dtype, bbox_b.dtype)
    bbox_i = np.concatenate((
        np.maximum(bbox_a[:, :2].astype(dtype, copy=False),
                   bbox_b[:, :2].astype(dtype, copy=False)),
        np.minimum(bbox_a[:, 2:].astype(dtype, copy=False),
                   bbox_b[:, 2:].astype(dtype, copy=False))), axis=1)
    area_i = _area(bbox_i) * ((bbox_i[:, 0] < bbox_i[:, 2])
                              & (bbox_i[:, 1] < bbox_i[:, 3]))
    area_a = _area(bbox_a)
    area_b = _area(bbox_b)
    dtype = _torch_result_type(area_a.dtype, area_b.dtype)
    area_u = (area_a.astype(dtype, copy=False)
              + area_b.astype(dtype, copy=False)) - area_i
    if not np.issubdtype(area_u.dtype, np.floating):
        area_i = area_i.astype(np.float32)
        area_u = area_u.astype(np.float32)
    with np.errstate(divide='ignore', invalid='ignore'):
        return area_i / area_u


def _area(bbox):
    """``(y_max - y_min) * (x_max - x_min)`` of boxes of shape
    :math:`(K, 4)`, each ``(y_min, x_min, y_max, x_max)``, as torch's
    ``prod`` computes it: in the boxes' float type, or in int64."""
    size = bbox[:, 2:] - bbox[:, :2]
    if not np.issubdtype(size.dtype, np.floating):
        size = size.astype(np.int64)
    return size[:, 0] * size[:, 1]


def _torch_result_type(dtype_a, dtype_b):
    """numpy's type promotion, except that integers with floats give the
    float type, as in torch."""
    a_is_float = np.issubdtype(dtype_a, np.floating)
    if a_is_float != np.issubdtype(dtype_b, np.floating):
        return dtype_a if a_is_float else dtype_b
    return np.result_type(dtype_a, dtype_b)


def _segment_max(values, segment_start):
    """The maximum of each segment and where it first occurs.

    Args:
        values (~numpy.ndarray): Shape :math:`(K,)`, float.
        segment_start (~numpy.ndarray): Shape :math:`(S,)`, the ascending
            starts of :math:`S` non-empty segments, the first at 0.

    Returns:
        tuple of two arrays of shape :math:`(S,)`: each segment's maximum
        and the index in ``values`` of its first occurrence, as
        :func:`numpy.max` and :func:`numpy.argmax` give them (a ``nan`` is
        the maximum; equal values, ``-0.0`` and ``0.0`` among them, go to
        the first).
    """
    segment_max = np.maximum.reduceat(values, segment_start)
    of_segment = np.repeat(segment_max, np.diff(
        np.append(segment_start, len(values))))
    at_max = (values == of_segment) | (np.isnan(values) & np.isnan(of_segment))
    index = np.where(at_max, np.arange(len(values)), len(values))
    return segment_max, np.minimum.reduceat(index, segment_start)


def _match(best_gt, gt_difficult):
    """Greedy matching of ranked predictions to ground truth boxes.

    A prediction whose best box is difficult is ignored; otherwise it is
    a true positive if it is the first (highest ranked) to claim its best
    box, and a false positive if it comes later or has no best box.

    Args:
        best_gt (~numpy.ndarray): Shape :math:`(N,)`, ranked; each
            prediction's best box, an index into ``gt_difficult``, or -1.
        gt_difficult (~numpy.ndarray): Shape :math:`(M,)`, bool.

    Returns:
        ~numpy.ndarray: Shape :math:`(N,)`, int8: 1 (true positive), 0
        (false positive) or -1 (ignored).
    """
    match = np.zeros(len(best_gt), dtype=np.int8)
    hit = np.flatnonzero(best_gt >= 0)
    difficult = gt_difficult[best_gt[hit]]
    match[hit[difficult]] = -1
    hit = hit[~difficult]
    _, first = np.unique(best_gt[hit], return_index=True)
    match[hit[first]] = 1
    return match


def _prec_rec(score, match, n_pos):
    """The precision and recall curves of one class.

    Args:
        score (~numpy.ndarray): Shape :math:`(K,)`, the class's prediction
            scores, image by image, each image's ranked.
        match (~numpy.ndarray): Shape :math:`(K,)`, their matches as
            :func:`_match` gives them.
        n_pos (int): The number of non-difficult ground truth boxes.

    Returns:
        tuple: The precision, shape :math:`(K,)`, and the recall, shape
        :math:`(K,)` or ``None`` when ``n_pos`` is 0, after each
        prediction ranked by ``score.argsort()[::-1]`` over all images.
    """
    match = match[score.argsort()[::-1]]
    tp = np.cumsum(match == 1)
    fp = np.cumsum(match == 0)
    # If an element of fp + tp is 0, the precision there is nan.
    with np.errstate(invalid='ignore'):
        prec = tp / (fp + tp)
    return prec, (tp / n_pos if n_pos > 0 else None)


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
            prec_l = np.nan_to_num(prec[l])
            ap[l] = 0
            for t in np.arange(0., 1.1, 0.1):
                reached = rec[l] >= t
                p = np.max(prec_l[reached]) if reached.any() else 0
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
