"""COCO detection metrics: the numbers of pycocotools' COCOeval, computed
fast.

:func:`eval_detection_coco` takes the same per-image arrays as
:func:`utils.eval_tool.eval_detection_voc`, so any dataset (VOC-layout ones
too) can be scored with COCO's AP averaged over IoU thresholds 0.50:0.95.
:func:`eval_coco_results` scores a results list (COCO's format, as
:func:`to_coco_results` writes it) against a COCO annotation file itself:
the numbers are those of ``COCOeval(COCO(file), COCO(file).loadRes(
results), 'bbox')``, bit for bit.

Both run COCOeval's ``evaluate`` and ``accumulate`` as array operations
(:func:`_match` and :func:`_accumulate`): the same matching, the same
arithmetic in the same order, the same ``precision``, ``recall`` and
``scores`` arrays, which COCOeval's own ``summarize`` then reads. The IoUs
come from pycocotools' own ``mask.iou``. On 5,000 images of 100
detections over 80 classes, pycocotools' Python loops took 49-56 s and a
3.4 GB peak on a 2-core machine, this 4 s and 1.1 GB, the file read and
the results built included (``benchmarks/bench_coco.py``).

Shape shorthand: :math:`R` predicted boxes and :math:`R'` ground truth boxes
of one image, :math:`L` foreground classes; :math:`N` detections and
:math:`M` ground truth objects of all images, :math:`P` (detection, ground
truth) pairs of one image and category, :math:`T` IoU thresholds (10),
:math:`A` area ranges (4), :math:`K` categories. Boxes are
``(y_min, x_min, y_max, x_max)``; COCO's are ``[x, y, width, height]``.
"""
import collections
import contextlib
import datetime
import io
import json
import os

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from utils.eval_tool import _zip_same_length

# The first six of COCOeval's twelve summary numbers, in its order.
STAT_KEYS = ('map', 'ap50', 'ap75', 'ap_small', 'ap_medium', 'ap_large')


def eval_detection_coco(
        pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels,
        gt_difficults=None, gt_areas=None):
    """Evaluates detections with the COCO average precision.

    Each image becomes a COCO image, each label ``l`` the category
    ``l + 1``, and COCOeval's standard settings apply: IoU thresholds
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

    To score a COCO-format test set exactly as COCOeval does on its own
    file (object sizes from the file's ``area``, boxes of zero width or
    height counted), use :func:`eval_coco_results` on that file instead.

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
        ValueError: if the iterables differ in length, hold no box at
            all, or hold a negative label.
    """
    inputs = [pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels]
    if gt_difficults is not None:
        inputs.append(gt_difficults)
    if gt_areas is not None:
        inputs.append(gt_areas)
    examples = list(_zip_same_length(*inputs))

    images, gt_anns = [], []
    pred_bboxes, pred_labels, pred_scores, pred_img_ids = [], [], [], []
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
                _to_xywh(gt_bbox).tolist(), gt_label, gt_difficult,
                gt_area):
            # Annotation ids start at 1: COCOeval marks "unmatched" with 0.
            gt_anns.append({
                'id': len(gt_anns) + 1, 'image_id': img_id,
                'category_id': int(l) + 1, 'bbox': box, 'area': float(area),
                'iscrowd': int(bool(difficult))})
        pred_label = np.asarray(pred_label, dtype=int).reshape(-1)
        pred_bboxes.append(
            np.asarray(pred_bbox, dtype=np.float64).reshape((-1, 4)))
        pred_labels.append(pred_label)
        pred_scores.append(
            np.asarray(pred_score, dtype=np.float64).reshape(-1))
        pred_img_ids.append(np.full(len(pred_label), img_id))

    pred_label = np.concatenate(pred_labels) if examples else np.zeros(0, int)
    gt_label = np.array([ann['category_id'] - 1 for ann in gt_anns], int)
    labels = np.concatenate((pred_label, gt_label))
    if len(labels) == 0:
        raise ValueError(
            'eval_detection_coco got no predicted and no ground truth box; '
            'expected at least one box to evaluate')
    if labels.min() < 0:
        raise ValueError(
            'labels must be in [0, L - 1], got {}'.format(labels.min()))
    n_fg_class = int(labels.max()) + 1

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {
            'images': images, 'annotations': gt_anns,
            'categories': [{'id': l + 1} for l in range(n_fg_class)]}
        coco_gt.createIndex()
    dets = _Dets(img_id=np.concatenate(pred_img_ids), cat_id=pred_label + 1,
                 bbox=_to_xywh(np.concatenate(pred_bboxes)),
                 score=np.concatenate(pred_scores))
    return _score(coco_gt, dets)


def load_coco_gt(ann_file):
    """Reads a COCO annotation file as pycocotools' ground truth.

    As ``pycocotools.coco.COCO(ann_file)``, silently, with three
    differences that leave every bbox metric unchanged: an annotation
    without ``iscrowd`` gets 0 and one without ``area`` gets its box's
    ``width * height`` (pycocotools' COCOeval would stop with a KeyError on
    such a file; files from labelling tools often lack both), and the
    ``segmentation`` masks, which the bbox metric never reads, are not kept
    in memory.

    Args:
        ann_file (str): Path to the annotation JSON file.

    Returns:
        pycocotools.coco.COCO: The indexed file.
    """
    with open(ann_file) as f:
        dataset = json.load(f, object_hook=_without_segmentation)
    for ann in dataset.get('annotations', []):
        ann.setdefault('iscrowd', 0)
        if 'area' not in ann:
            ann['area'] = ann['bbox'][2] * ann['bbox'][3]
    coco_gt = COCO()
    coco_gt.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
    return coco_gt


def _without_segmentation(obj):
    """A JSON object without its ``segmentation``, dropped as the file is
    read: the masks never fill the memory."""
    obj.pop('segmentation', None)
    return obj


def eval_coco_results(coco_gt, results, image_ids=None):
    """Scores detections in COCO's results format against a COCO file.

    The numbers are those of pycocotools' COCOeval on the file itself,
    exactly: ``COCOeval(COCO(ann_file), COCO(ann_file).loadRes(results),
    'bbox')`` with ``params.imgIds = image_ids`` when given, then
    ``evaluate()``, ``accumulate()`` and ``summarize()``. So objects are
    sized by the file's ``area``, crowd regions are ignored, and every
    annotation counts, boxes of zero width or height included (no
    detection overlaps those, so each is a missed object). Unlike
    ``loadRes``, an empty list is scored (AP 0 where objects exist), and
    ``results`` is not modified.

    Args:
        coco_gt (str or pycocotools.coco.COCO): The annotation file, or
            the file read by :func:`load_coco_gt` (or ``COCO(ann_file)``).
        results (list of dict or str): Detections, one dict per box with
            ``'image_id'`` and ``'category_id'`` of the file,
            ``'bbox'`` ``[x, y, width, height]`` and ``'score'``, as
            :func:`to_coco_results` returns them; or the path of a JSON
            file holding that list.
        image_ids (iterable): The image ids to score, e.g. those of the
            images predicted when only the first ones were; ``None``: every
            image of the file (as COCOeval's default). Detections of other
            images are left out.

    Returns:
        dict: As :func:`eval_detection_coco`; ``'ap'`` has one entry per
        category of the file, in the order of their ids (the labels of a
        :class:`~data.coco_dataset.COCOBboxDataset`).

    Raises:
        ValueError: if a result lacks a key, or names an image that the
            file does not list.
    """
    if isinstance(coco_gt, (str, os.PathLike)):
        coco_gt = load_coco_gt(coco_gt)
    if isinstance(results, (str, os.PathLike)):
        with open(results) as f:
            results = json.load(f)
    return _score(coco_gt, _dets_of(results, coco_gt), image_ids)


def to_coco_results(bboxes, labels, scores, image_ids, category_ids):
    """Turns per-image detections into COCO's results format.

    The list can be written with :func:`json.dump` and read by
    ``COCO.loadRes`` or the COCO evaluation server; :func:`eval_coco_results`
    scores it against the annotation file.

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
    category_ids = [_plain(cat_id) for cat_id in category_ids]
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
        unknown = (label < 0) | (label >= len(category_ids))
        if unknown.any():
            raise ValueError(
                'label {} of image {} has no category id; expected '
                'labels in [0, {}]'.format(
                    label[unknown][0], img_id, len(category_ids) - 1))
        img_id = _plain(img_id)
        results += [
            {'image_id': img_id, 'category_id': category_ids[l], 'bbox': box,
             'score': s}
            for box, l, s in zip(_to_xywh(bbox).tolist(), label.tolist(),
                                 score.astype(np.float64).tolist())]
    return results


def _to_xywh(bbox):
    """Boxes :math:`(R, 4)`, float64, each ``(y_min, x_min, y_max,
    x_max)``, as COCO's ``[x, y, width, height]`` rows, float64."""
    y_min, x_min, y_max, x_max = bbox.T
    return np.stack((x_min, y_min, x_max - x_min, y_max - y_min), axis=1)


def _plain(value):
    """A numpy scalar as the Python number it holds, for json.dump."""
    return value.item() if isinstance(value, np.generic) else value


# ------------------------------------------------- COCOeval, as arrays

# The detections of a results list: image and category ids (N,), boxes
# (N, 4) float64 [x, y, width, height], scores (N,) float64.
_Dets = collections.namedtuple('_Dets', 'img_id cat_id bbox score')


def _dets_of(results, coco_gt):
    """A results list as :class:`_Dets`, checked against the file."""
    if not isinstance(results, list):
        raise ValueError('the results are a {}; expected a list of '
                         'detections'.format(type(results).__name__))
    try:
        img_id = [r['image_id'] for r in results]
        cat_id = [r['category_id'] for r in results]
        bbox = np.array([r['bbox'] for r in results],
                        dtype=np.float64).reshape((-1, 4))
        score = np.array([r['score'] for r in results], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            'a result is not {{"image_id", "category_id", "bbox": [x, y, w, '
            'h], "score"}}: {!r}'.format(err)) from None
    unknown = [i for i in img_id if i not in coco_gt.imgs]
    if unknown:
        raise ValueError(
            'the results hold image id {}, which the annotation file does '
            'not list ({} results of unknown images)'.format(
                unknown[0], len(unknown)))
    return _Dets(img_id, cat_id, bbox, score)


def _score(coco_gt, dets, image_ids=None):
    """COCOeval's numbers for ``dets`` (a :class:`_Dets`) on ``coco_gt``,
    as :func:`eval_detection_coco` returns them."""
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        coco_eval = _cocoeval(coco_gt, dets, image_ids)
        coco_eval.summarize()
    result = {key: float(value)
              for key, value in zip(STAT_KEYS, coco_eval.stats)}
    result['ap'] = _ap_per_class(coco_eval)
    result['stats'] = np.array(coco_eval.stats, dtype=np.float64)
    result['summary'] = summary.getvalue()
    return result


def _cocoeval(coco_gt, dets, image_ids=None):
    """A COCOeval of ``dets`` (a :class:`_Dets`) on ``coco_gt`` after its
    ``evaluate()`` and ``accumulate()``: its ``eval`` is theirs, ready for
    ``summarize()``.

    The parameters are COCOeval's defaults for 'bbox' (all images and
    categories of ``coco_gt``), but for ``image_ids`` when given.
    """
    coco_eval = COCOeval(coco_gt, iouType='bbox')
    params = coco_eval.params
    if image_ids is not None:
        params.imgIds = list(image_ids)
    # As COCOeval.evaluate prepares them.
    params.imgIds = list(np.unique(params.imgIds))
    params.catIds = list(np.unique(params.catIds))
    params.maxDets = sorted(params.maxDets)
    area_rng = np.array(params.areaRng, dtype=np.float64)
    n_img = len(params.imgIds)

    pair_of = _pair_index(params.imgIds, params.catIds)
    gt = _gts_of(coco_gt, params, pair_of)
    det = _ranked_dets(dets, pair_of, params.maxDets[-1])
    entry_det, entry_gt, entry_iou = _same_pair_ious(det, gt, n_img)

    # gt_ignore (M, A): a crowd region, or an area out of the range.
    gt_ignore = (gt.ignore[:, None] | (gt.area[:, None] < area_rng[:, 0])
                 | (gt.area[:, None] > area_rng[:, 1]))
    det_match, det_ignore = _match(
        len(det.pair), det.rank[entry_det], entry_det, entry_gt, entry_iou,
        gt.crowd, gt_ignore, gt.id != 0, params.iouThrs)
    det_out = ((det.area[:, None] < area_rng[:, 0])
               | (det.area[:, None] > area_rng[:, 1]))
    det_ignore |= ~det_match & det_out[:, :, None]

    coco_eval.eval = _accumulate(
        params, det.pair // max(n_img, 1), det.rank, det.score, det_match,
        det_ignore, gt.pair // max(n_img, 1), gt_ignore)
    coco_eval._paramsEval = params
    return coco_eval


def _pair_index(img_ids, cat_ids):
    """The function that numbers an (image id, category id) pair
    ``k * n_img + i`` (``k``, ``i``: their positions in ``cat_ids`` and
    ``img_ids``), or -1 for ids not evaluated: pairs numbered category by
    category, images in order within one, as COCOeval's accumulate
    concatenates them."""
    img_index = {img_id: i for i, img_id in enumerate(img_ids)}
    cat_index = {cat_id: k for k, cat_id in enumerate(cat_ids)}
    n_img = len(img_ids)

    def pair_of(img_id, cat_id):
        i = img_index.get(img_id, -1)
        k = cat_index.get(cat_id, -1)
        return k * n_img + i if i >= 0 and k >= 0 else -1
    return pair_of


_Gts = collections.namedtuple('_Gts', 'pair bbox area crowd ignore id')


def _gts_of(coco_gt, params, pair_of):
    """The ground truth objects COCOeval evaluates, as arrays of shape
    :math:`(M, ...)` ordered by pair, each pair's in COCOeval's order.

    They are fetched as COCOeval's ``_prepare`` does, so that a file's
    quirks (annotations sharing an id) give what they give there. ``crowd``
    is ``int(iscrowd) != 0``, the crowd rule of the IoU and the matching;
    ``ignore`` is the truth of ``iscrowd``, ``_prepare``'s ignore flag.
    """
    anns = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=params.imgIds,
                                              catIds=params.catIds))
    pair = np.array([pair_of(a['image_id'], a['category_id']) for a in anns],
                    dtype=np.int64)
    keep = np.flatnonzero(pair >= 0)
    keep = keep[np.argsort(pair[keep], kind='stable')]
    anns = [anns[i] for i in keep]
    iscrowd = [a['iscrowd'] for a in anns]
    return _Gts(
        pair=pair[keep],
        bbox=np.array([a['bbox'] for a in anns],
                      dtype=np.float64).reshape((-1, 4)),
        area=np.array([a['area'] for a in anns], dtype=np.float64),
        crowd=np.array([int(c) for c in iscrowd], dtype=np.int64) != 0,
        ignore=np.array([bool(c) for c in iscrowd], dtype=bool),
        id=np.array([a['id'] for a in anns]))


_RankedDets = collections.namedtuple('_RankedDets',
                                     'pair rank bbox area score')


def _ranked_dets(dets, pair_of, max_det):
    """The detections COCOeval evaluates, as arrays of shape :math:`(N,)`
    (``bbox`` :math:`(N, 4)`) ordered by pair, then by descending score
    (ties in the results' order, as COCOeval's mergesort leaves them), at
    most ``max_det`` of a pair; ``rank`` is the position in the pair and
    ``area`` the box's ``width * height``, as ``loadRes`` computes it."""
    pair = np.array([pair_of(i, k) for i, k in zip(dets.img_id, dets.cat_id)],
                    dtype=np.int64)
    order = np.argsort(-dets.score, kind='mergesort')
    order = order[np.argsort(pair[order], kind='stable')]
    order = order[pair[order] >= 0]
    pair = pair[order]
    start = np.searchsorted(pair, pair)  # the first of each one's pair
    rank = np.arange(len(pair)) - start
    keep = order[rank < max_det]
    bbox = dets.bbox[keep]
    return _RankedDets(pair=pair[rank < max_det], rank=rank[rank < max_det],
                       bbox=bbox, area=bbox[:, 2] * bbox[:, 3],
                       score=dets.score[keep])


def _same_pair_ious(det, gt, n_img):
    """The IoU of every detection with every object of its image and
    category, by pycocotools' ``mask.iou`` (a crowd region's overlap is
    the intersection over the detection's area). ``n_img`` is the number
    of images in the pairs' numbering (see :func:`_pair_index`).

    Returns:
        tuple of three arrays of shape :math:`(P,)`: the detection and
        the object (indices into ``det`` and ``gt``) of each of the
        :math:`P` pairs, sorted by detection then object, and their IoU.
    """
    if len(det.pair) == 0 or len(gt.pair) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    # Image by image: one call for its detections and objects of any class.
    det_img, gt_img = det.pair % n_img, gt.pair % n_img
    det_order = np.argsort(det_img, kind='stable')
    gt_order = np.argsort(gt_img, kind='stable')
    det_start = np.searchsorted(det_img[det_order], np.arange(n_img + 1))
    gt_start = np.searchsorted(gt_img[gt_order], np.arange(n_img + 1))
    crowd = gt.crowd.astype(np.uint8)
    entries = []
    for i in np.flatnonzero((np.diff(det_start) > 0)
                            & (np.diff(gt_start) > 0)):
        d = det_order[det_start[i]:det_start[i + 1]]
        g = gt_order[gt_start[i]:gt_start[i + 1]]
        dd, gg = np.nonzero(det.pair[d][:, None] == gt.pair[g][None, :])
        if len(dd) == 0:
            continue
        iou = mask_utils.iou(det.bbox[d], gt.bbox[g], crowd[g])
        entries.append((d[dd], g[gg], iou[dd, gg]))
    if not entries:
        return _same_pair_ious(det[:0], gt, n_img)
    entry_det, entry_gt, entry_iou = (np.concatenate(e)
                                      for e in zip(*entries))
    order = np.lexsort((entry_gt, entry_det))
    return entry_det[order], entry_gt[order], entry_iou[order]


def _match(n_det, entry_rank, entry_det, entry_gt, entry_iou, gt_crowd,
           gt_ignore, gt_id_nonzero, iou_thrs):
    """COCOeval's greedy matching, for every area range and IoU threshold.

    Within one image and category the detections, by descending score,
    each take an object that no earlier detection took (a crowd region may
    be taken again) with an IoU of at least the threshold: the one of
    highest IoU among the objects not ignored, else among the ignored ones
    (crowd regions, objects of another area range); of equal IoUs, the last
    in the file. Detection by detection, this is the loop of
    ``COCOeval.evaluateImg``; here the detections of one rank in every
    image and category are matched at once.

    Args:
        n_det (int): :math:`N`.
        entry_rank, entry_det, entry_gt, entry_iou (~numpy.ndarray): Shape
            :math:`(P,)` each, the (detection, object) pairs of one image
            and category, sorted by detection then object: the detection's
            rank in its image and category, the two indices and the IoU.
        gt_crowd (~numpy.ndarray): Shape :math:`(M,)`, bool.
        gt_ignore (~numpy.ndarray): Shape :math:`(M, A)`, bool: the object
            is ignored in area range ``a``.
        gt_id_nonzero (~numpy.ndarray): Shape :math:`(M,)`, bool: the
            object's annotation id is not 0. COCOeval records a match as
            the object's id, so a match with an object of id 0 counts as
            none (but for the detection's ignore flag).
        iou_thrs (~numpy.ndarray): Shape :math:`(T,)`.

    Returns:
        tuple of two arrays of shape :math:`(N, A, T)`, bool: whether each
        detection is matched (to an object of non-zero id), and whether it
        is matched to an ignored object.
    """
    n_area, n_thresh = gt_ignore.shape[1], len(iou_thrs)
    thresh = np.minimum(iou_thrs, 1 - 1e-10)  # as evaluateImg clips it
    taken = np.zeros((len(gt_crowd), n_area, n_thresh), dtype=bool)
    match = np.zeros((n_det, n_area, n_thresh), dtype=bool)
    ignore = np.zeros((n_det, n_area, n_thresh), dtype=bool)

    by_rank = np.argsort(entry_rank, kind='stable')
    rank_start = np.flatnonzero(np.diff(entry_rank[by_rank], prepend=-1))
    rank_stop = np.append(rank_start[1:], len(by_rank))
    for start, stop in zip(rank_start, rank_stop):
        e = by_rank[start:stop]
        det, gt, iou = entry_det[e], entry_gt[e], entry_iou[e, None, None]
        seg_start = np.flatnonzero(np.diff(det, prepend=-1))
        seg = np.cumsum(np.diff(det, prepend=-1) != 0) - 1
        # The pairs of this rank's detections: (P', A, T).
        free = ~taken[gt] & (iou >= thresh)
        regular = ~gt_ignore[gt][:, :, None]
        # Objects not ignored first; the ignored only where none is free.
        any_regular = np.logical_or.reduceat(free & regular, seg_start)
        candidate = free & (regular == any_regular[seg])
        value = np.where(candidate, iou, -np.inf)
        best = np.maximum.reduceat(value, seg_start)
        last = np.where(candidate & (value == best[seg]),
                        np.arange(len(e))[:, None, None], -1)
        # Per detection of this rank: the chosen pair, or -1.
        chosen = np.maximum.reduceat(last, seg_start)
        d, a, t = np.nonzero(chosen >= 0)
        g = gt[chosen[d, a, t]]
        d = det[seg_start[d]]
        match[d, a, t] = gt_id_nonzero[g]
        ignore[d, a, t] = gt_ignore[g, a]
        kept = ~gt_crowd[g]
        taken[g[kept], a[kept], t[kept]] = True
    return match, ignore


def _accumulate(params, det_cat, det_rank, det_score, det_match, det_ignore,
                gt_cat, gt_ignore):
    """COCOeval's accumulate: precision, recall and scores per IoU
    threshold, recall point, category, area range and detection limit.

    The same operations on the same arrays as ``COCOeval.accumulate``:
    per category, the detections concatenated image by image (each
    image's first ``maxDet``) and ranked by a mergesort of their negated
    scores; cumulative true and false positives as floats; ``tp / n_pos``
    and ``tp / (fp + tp + eps)``; the precision made monotone from the
    right and read at the first rank reaching each recall point (0 past
    the end). Categories and area ranges without a counted object stay -1.

    Args:
        params (pycocotools.cocoeval.Params): The settings.
        det_cat, det_rank, det_score (~numpy.ndarray): Shape :math:`(N,)`,
            each detection's category index, rank in its image and
            category, and score; ordered by category, then image, then rank.
        det_match, det_ignore (~numpy.ndarray): Shape :math:`(N, A, T)`,
            bool, as ``evaluateImg``'s ``dtMatches != 0`` and ``dtIgnore``.
        gt_cat (~numpy.ndarray): Shape :math:`(M,)`, each object's category
            index.
        gt_ignore (~numpy.ndarray): Shape :math:`(M, A)`, bool.

    Returns:
        dict: As ``COCOeval.eval``: ``'precision'`` :math:`(T, 101, K, A,
        3)`, ``'recall'`` :math:`(T, K, A, 3)`, ``'scores'``, ``'params'``,
        ``'counts'`` and ``'date'``.
    """
    n_thresh, n_rec = len(params.iouThrs), len(params.recThrs)
    n_cat, n_area = len(params.catIds), len(params.areaRng)
    n_max_det = len(params.maxDets)
    precision = -np.ones((n_thresh, n_rec, n_cat, n_area, n_max_det))
    recall = -np.ones((n_thresh, n_cat, n_area, n_max_det))
    scores = -np.ones((n_thresh, n_rec, n_cat, n_area, n_max_det))

    n_pos = np.zeros((n_cat, n_area), dtype=np.int64)
    for a in range(n_area):
        n_pos[:, a] = np.bincount(gt_cat[~gt_ignore[:, a]],
                                  minlength=n_cat)[:n_cat]
    cat_start = np.searchsorted(det_cat, np.arange(n_cat + 1))
    for k in np.flatnonzero(n_pos.any(axis=1)):
        in_cat = np.arange(cat_start[k], cat_start[k + 1])
        for m, max_det in enumerate(params.maxDets):
            dets = in_cat[det_rank[in_cat] < max_det]
            order = np.argsort(-det_score[dets], kind='mergesort')
            dets = dets[order]
            n_det = len(dets)
            for a in np.flatnonzero(n_pos[k]):
                dtm = det_match[dets, a].T       # (T, n_det)
                counted = ~det_ignore[dets, a].T
                tp = np.cumsum(dtm & counted, axis=1).astype(dtype=float)
                fp = np.cumsum(~dtm & counted, axis=1).astype(dtype=float)
                rc = tp / n_pos[k, a]
                pr = tp / (fp + tp + np.spacing(1))
                recall[:, k, a, m] = rc[:, -1] if n_det else 0
                pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
                precision[:, :, k, a, m] = 0
                scores[:, :, k, a, m] = 0
                for t in range(n_thresh):
                    at = np.searchsorted(rc[t], params.recThrs, side='left')
                    reached = at < n_det
                    precision[t, reached, k, a, m] = pr[t, at[reached]]
                    scores[t, reached, k, a, m] = det_score[dets][at[reached]]
    return {
        'params': params,
        'counts': [n_thresh, n_rec, n_cat, n_area, n_max_det],
        'date': datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S'),
        'precision': precision, 'recall': recall, 'scores': scores}


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
