"""Evaluating a detector on a test loader, by the VOC or COCO metric.

:func:`evaluate` is :func:`collect_detections` (predict every test image,
keep its ground truth) then :func:`score` (the metric); call the two
yourself to keep the detections, e.g. for
:func:`utils.report.write_report`.
"""
import collections

import torch
from tqdm import tqdm

from data.coco_dataset import COCOBboxDataset
from utils import distributed
from utils.coco_eval import (eval_coco_results, eval_detection_coco,
                             to_coco_results)
from utils.eval_tool import eval_detection_voc

# The --metric choices: VOC AP at IoU 0.5 by 11-point interpolation (the
# original design's) or by area, and COCO's AP at IoU 0.50:0.95.
METRICS = ('voc07', 'voc', 'coco')

# A test set's detections and ground truth, per image: lists of arrays in
# dataset order, the six that eval_detection_voc takes (so that
# ``eval_detection_voc(*detections[:6])`` scores them), and ``indices``,
# each image's index in the dataset.
Detections = collections.namedtuple('Detections', (
    'pred_bboxes', 'pred_labels', 'pred_scores', 'gt_bboxes', 'gt_labels',
    'gt_difficults', 'indices'))

# Where the images of a test set are in a COCO-format file: the file (its
# path, or the file read by utils.coco_eval.load_coco_gt), the image id of
# each image scored, and the category id of each label.
COCOSource = collections.namedtuple('COCOSource',
                                    'ann_file image_ids category_ids')


def evaluate(dataloader, faster_rcnn, test_num=10000, metric='voc07',
             check_stop=None):
    """The ``metric`` of ``faster_rcnn`` on a :class:`TestDataset` loader
    (see :func:`score_detections`): VOC07 11-point AP by default.

    The loader's batches may hold several images (see
    :func:`data.sampler.collate_test`; torch's default collate of a batch
    of one works too) and must not shuffle. Under torch.distributed each
    process evaluates the images its loader gives it (see
    :func:`data.sampler.eval_batches`), the results are gathered, and every
    process returns the mAP of all of them: the one a single process
    evaluating them all gets.

    When the loader's dataset reads a COCO-format file (its ``db`` is a
    :class:`~data.coco_dataset.COCOBboxDataset`) and ``metric`` is
    'coco', the numbers are those of pycocotools' COCOeval on that file
    (see :func:`score`).

    Args:
        dataloader: Batches of :class:`data.dataset.TestDataset`.
        faster_rcnn (FasterRCNN): The model; its ``predict`` is called.
        test_num (int): Evaluate the first ``test_num`` images only.
        metric (str): One of :data:`METRICS`.
        check_stop (callable): Called before each batch, e.g. to stop on a
            signal (under torch.distributed by every process alike).

    Returns:
        dict: 'ap' (L,) per class and 'map', as :func:`score_detections`.
    """
    detections = collect_detections(dataloader, faster_rcnn, test_num,
                                    check_stop)
    return score(detections, metric,
                 getattr(dataloader.dataset, 'db', None))


def collect_detections(dataloader, faster_rcnn, test_num=10000,
                       check_stop=None):
    """Predicts the images of a test loader and keeps their ground truth.

    Args:
        dataloader, faster_rcnn, test_num, check_stop: As in
            :func:`evaluate`.

    Returns:
        Detections: Per image, in dataset order (the first ``test_num`` of
        the loader's order): predicted boxes :math:`(R, 4)`, labels
        :math:`(R,)` and scores :math:`(R,)` at ``faster_rcnn``'s current
        preset, ground truth boxes :math:`(R', 4)`, labels :math:`(R',)`
        and difficult flags :math:`(R',)`, boxes
        ``(y_min, x_min, y_max, x_max)`` in the pixels of the image on
        disk; and each image's dataset index. Under torch.distributed
        every process returns those of all processes.
    """
    order = [i for batch in dataloader.batch_sampler for i in batch]
    order = iter(order[:test_num])
    results = {}  # dataset index -> (pred bbox, label, score, gt ...)
    for batch in tqdm(dataloader, desc='eval', leave=False,
                      disable=not distributed.is_main()):
        if check_stop is not None:
            check_stop()
        imgs, sizes, gt_bboxes, gt_labels, gt_difficults = _test_lists(batch)
        imgs = imgs[:test_num - len(results)]
        if not imgs:
            continue
        for result in zip(*faster_rcnn.predict(imgs, sizes), gt_bboxes,
                          gt_labels, gt_difficults):
            results[next(order)] = result
    results = {index: result
               for part in distributed.all_gather_object(results)
               for index, result in part.items()}
    indices = sorted(results)
    columns = zip(*(results[i] for i in indices)) if results else [[]] * 6
    return Detections(*(list(column) for column in columns),
                      indices=indices)


def score(detections, metric='voc07', db=None):
    """Scores collected detections by one of :data:`METRICS`.

    With ``metric`` 'coco' and a COCO-format ``db``, the detections are
    scored against ``db``'s annotation file itself, as pycocotools scores
    a results file (see :func:`utils.coco_eval.eval_coco_results`): the
    file's image and category ids, its ``area`` for the object sizes, its
    boxes of zero width or height (missed objects), the images of
    ``detections`` (all of the file unless ``test_num`` left some out).
    ``COCOeval(COCO(file), COCO(file).loadRes(results))`` on the same
    detections written by :func:`utils.coco_eval.to_coco_results` gives
    the same numbers, bit for bit. Otherwise the metric is computed from
    the collected arrays (COCO's object sizes from the boxes).

    Args:
        detections (Detections): As :func:`collect_detections` returns.
        metric (str): One of :data:`METRICS`.
        db: The test set's dataset (a :class:`TestDataset`'s ``db``), or
            ``None``.

    Returns:
        dict: As :func:`score_detections`.
    """
    coco_source = None
    if metric == 'coco' and isinstance(db, COCOBboxDataset):
        coco_source = COCOSource(
            db.ann_file, [db.ids[i] for i in detections.indices], db.cat_ids)
    # Positional, so that a wrapper of score_detections(metric, *args)
    # passes it on.
    return score_detections(metric, *detections[:6], coco_source)


def score_detections(metric, pred_bboxes, pred_labels, pred_scores,
                     gt_bboxes, gt_labels, gt_difficults, coco_source=None):
    """Scores detections by one of :data:`METRICS`.

    Args:
        metric ({'voc07', 'voc', 'coco'}): 'voc07' and 'voc' call
            :func:`utils.eval_tool.eval_detection_voc` with and without
            ``use_07_metric``; 'coco' calls
            :func:`utils.coco_eval.eval_detection_coco` (objects' sizes by
            their boxes' areas), or with ``coco_source``
            :func:`utils.coco_eval.eval_coco_results` on that file.
        pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels,
        gt_difficults: Per image, as those functions take them.
        coco_source (COCOSource): For 'coco', the annotation file the
            images come from, their image ids and the category id of each
            label: the detections are scored against the file, and the
            ``gt_`` arrays are not used.

    Returns:
        dict: 'ap' (L,) per class and 'map', the headline number that
        training logs and picks its best checkpoint by (for 'coco': AP at
        IoU 0.50:0.95; its other numbers are in the dict too).
    """
    if metric == 'coco' and coco_source is not None:
        results = to_coco_results(pred_bboxes, pred_labels, pred_scores,
                                  coco_source.image_ids,
                                  coco_source.category_ids)
        return eval_coco_results(coco_source.ann_file, results,
                                 coco_source.image_ids)
    if metric == 'coco':
        return eval_detection_coco(pred_bboxes, pred_labels, pred_scores,
                                   gt_bboxes, gt_labels, gt_difficults)
    return eval_detection_voc(pred_bboxes, pred_labels, pred_scores,
                              gt_bboxes, gt_labels, gt_difficults,
                              use_07_metric=metric == 'voc07')


def _test_lists(batch):
    """A test batch as lists of images, original (H, W) sizes, boxes,
    labels and difficult flags: from :func:`data.sampler.collate_test`, or
    from torch's default collate (a loader of batch size 1, as the
    original design built it)."""
    imgs, sizes, bboxes, labels, difficults = batch
    if isinstance(imgs, torch.Tensor):
        sizes = list(zip(*(size.tolist() for size in sizes)))
        return (list(imgs), sizes, list(bboxes.numpy()),
                list(labels.numpy()), list(difficults.numpy()))
    return batch
