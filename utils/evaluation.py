"""Evaluating a detector on a test loader, by the VOC or COCO metric."""
import torch
from tqdm import tqdm

from utils import distributed
from utils.coco_eval import eval_detection_coco
from utils.eval_tool import eval_detection_voc


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
    pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels, \
        gt_difficults = (list(column) for column in zip(
            *(results[i] for i in sorted(results)))) if results else [[]] * 6
    return score_detections(metric, pred_bboxes, pred_labels, pred_scores,
                            gt_bboxes, gt_labels, gt_difficults)


# The --metric choices: VOC AP at IoU 0.5 by 11-point interpolation (the
# original design's) or by area, and COCO's AP at IoU 0.50:0.95.
METRICS = ('voc07', 'voc', 'coco')


def score_detections(metric, pred_bboxes, pred_labels, pred_scores,
                     gt_bboxes, gt_labels, gt_difficults):
    """Scores detections by one of :data:`METRICS`.

    Args:
        metric ({'voc07', 'voc', 'coco'}): 'voc07' and 'voc' call
            :func:`utils.eval_tool.eval_detection_voc` with and without
            ``use_07_metric``; 'coco' calls
            :func:`utils.coco_eval.eval_detection_coco` (objects' sizes by
            their boxes' areas).
        pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels,
        gt_difficults: Per image, as those functions take them.

    Returns:
        dict: 'ap' (L,) per class and 'map', the headline number that
        training logs and picks its best checkpoint by (for 'coco': AP at
        IoU 0.50:0.95; its other numbers are in the dict too).
    """
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
