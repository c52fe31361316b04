"""What a detector gets wrong, in files: an evaluation report and the
training history.

:func:`write_report` writes, for one evaluation of a test set:

* ``metrics.json``: every number of the metric and each class's AP;
* ``report.md``: a table of the classes (AP, objects, detections, recall)
  and one of their errors;
* ``pr_curves.png``: each class's precision-recall curve at IoU 0.5;
* ``errors.png``: the detections of each class by kind (true positive, or
  a false positive of poor localization, duplicate, confusion with
  another class or background; see :func:`classify_detections`) and the
  missed objects;
* ``worst.png``: the highest-scoring false positives and the largest
  missed objects, cut out of their images.

:func:`append_history` and :func:`draw_training_curves` keep a training
run's losses, learning rate and mAP per epoch in ``history.csv`` and draw
them.

Pictures are drawn on matplotlib Agg canvases (no pyplot), so they are
written without a display and leave a notebook's backend alone.

Shape shorthand: :math:`R` predicted boxes and :math:`R'` ground truth
boxes of one image, :math:`L` foreground classes; boxes are
``(y_min, x_min, y_max, x_max)``, float32, in the image's pixels; labels
are in :math:`[0, L - 1]`.
"""
import collections
import csv
import json
import math
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from model.utils.bbox_tools import bbox_iou
from utils.coco_eval import STAT_KEYS
from utils.eval_tool import _zip_same_length, calc_detection_voc_prec_rec

# What a detection is at IoU 0.5, the false positives' kinds in the order
# they are decided (see classify_detections).
TRUE_POSITIVE = 'true_positive'
ERROR_KINDS = ('duplicate', 'localization', 'confusion', 'background')
# A detection of a difficult object: neither true nor false (VOC's rule).
IGNORED = 'ignored'
KINDS = (TRUE_POSITIVE,) + ERROR_KINDS + (IGNORED,)

# The colour of each kind, and of the missed objects, in the pictures.
KIND_COLORS = {TRUE_POSITIVE: '#4daf4a', 'duplicate': '#984ea3',
               'localization': '#ff7f00', 'confusion': '#377eb8',
               'background': '#e41a1c', IGNORED: '#bbbbbb',
               'missed': '#555555'}

# Per image: each detection's kind (R,) and the ground truth object that
# decided it (R,), -1 for none; and which objects were missed (R',).
DetectionKinds = collections.namedtuple('DetectionKinds',
                                        'kinds gt_index missed')


# ------------------------------------------------------ error analysis

def classify_detections(pred_bboxes, pred_labels, pred_scores, gt_bboxes,
                        gt_labels, gt_difficults=None, iou_thresh=0.5,
                        low_iou_thresh=0.1):
    """Says what each detection is, and which objects were missed.

    Detections are matched to objects by the VOC rule of
    :func:`utils.eval_tool.eval_detection_voc`: per image and class, in
    descending score, each detection takes the object of its class it
    overlaps most (the first of equal IoUs), if their IoU is at least
    ``iou_thresh``; boxes count as integer pixel ranges (1 added to
    ``y_max`` and ``x_max``). So the true positives here are those of
    that metric's precision-recall curves. A detection is then, in this
    order of precedence (Hoiem et al., Diagnosing error in object
    detectors, ECCV 2012; COCO's ``analyze``: errors on an object of the
    detection's own class before confusion with another class, before
    background):

    * ``'true_positive'``: the first to take a non-difficult object;
    * ``'ignored'``: it takes a difficult object (neither true nor false);
    * ``'duplicate'``: it would take an object already taken by a
      detection of higher score;
    * ``'localization'``: the right class, poorly placed: its best IoU
      with an object of its class is in ``[low_iou_thresh, iou_thresh)``;
    * ``'confusion'``: an IoU of at least ``low_iou_thresh`` with an object
      of another class;
    * ``'background'``: otherwise.

    Difficult objects count as objects for the kinds (a box at IoU 0.3 on
    a difficult object of its class is poorly localized), but are never
    missed. An object is missed if it is not difficult and no detection
    took it.

    Args:
        pred_bboxes (iterable of ~numpy.ndarray): Per image, predicted boxes
            of shape :math:`(R, 4)`, each ``(y_min, x_min, y_max, x_max)``.
        pred_labels (iterable of ~numpy.ndarray): Per image, labels of
            shape :math:`(R,)`.
        pred_scores (iterable of ~numpy.ndarray): Per image, confidences of
            shape :math:`(R,)`.
        gt_bboxes (iterable of ~numpy.ndarray): Per image, ground truth
            boxes of shape :math:`(R', 4)`, each
            ``(y_min, x_min, y_max, x_max)``.
        gt_labels (iterable of ~numpy.ndarray): Per image, labels of shape
            :math:`(R',)`.
        gt_difficults (iterable of ~numpy.ndarray): Per image, bools of
            shape :math:`(R',)`; ``None`` means no object is difficult.
        iou_thresh (float): The least IoU of a match.
        low_iou_thresh (float): The least IoU of an error of localization
            or confusion.

    Returns:
        DetectionKinds: Per image, ``kinds`` (strings of :data:`KINDS`,
        shape :math:`(R,)`); ``gt_index`` (int, :math:`(R,)`), the object
        that decided the kind (the one taken, or would-be taken, or
        poorly located, or of highest IoU among the other classes'), -1
        for background; ``missed`` (bool, :math:`(R',)`).

    Raises:
        ValueError: if the iterables differ in length.
    """
    if gt_difficults is None:
        gt_difficults = [None] * len(gt_labels)
    kinds, gt_indices, missed = [], [], []
    for example in _zip_same_length(pred_bboxes, pred_labels, pred_scores,
                                    gt_bboxes, gt_labels, gt_difficults):
        kind, gt_index, miss = _classify_image(
            *example, iou_thresh=iou_thresh, low_iou_thresh=low_iou_thresh)
        kinds.append(kind)
        gt_indices.append(gt_index)
        missed.append(miss)
    return DetectionKinds(kinds, gt_indices, missed)


def _classify_image(pred_bbox, pred_label, pred_score, gt_bbox, gt_label,
                    gt_difficult, iou_thresh, low_iou_thresh):
    """:func:`classify_detections` for one image's arrays."""
    pred_bbox = np.asarray(pred_bbox).reshape((-1, 4))
    pred_label = np.asarray(pred_label).reshape(-1)
    pred_score = np.asarray(pred_score).reshape(-1)
    gt_bbox = np.asarray(gt_bbox).reshape((-1, 4))
    gt_label = np.asarray(gt_label).reshape(-1)
    gt_difficult = (np.zeros(len(gt_label), bool) if gt_difficult is None
                    else np.asarray(gt_difficult, dtype=bool).reshape(-1))
    kind = np.full(len(pred_label), 'background', dtype='<U13')
    gt_index = np.full(len(pred_label), -1, dtype=np.int64)
    taken = np.zeros(len(gt_label), dtype=bool)
    if len(pred_label) == 0 or len(gt_label) == 0:
        return kind, gt_index, ~gt_difficult

    iou = bbox_iou(_pixel_bbox(pred_bbox), _pixel_bbox(gt_bbox))  # (R, R')
    for l in np.unique(pred_label):
        pred = np.flatnonzero(pred_label == l)
        pred = pred[pred_score[pred].argsort()[::-1]]
        gt = np.flatnonzero(gt_label == l)
        if len(gt) == 0:
            continue
        iou_l = iou[np.ix_(pred, gt)]
        best = gt[iou_l.argmax(axis=1)]
        best_iou = iou_l.max(axis=1)
        for p, g, g_iou in zip(pred, best, best_iou):
            gt_index[p] = g
            if not g_iou < iou_thresh:  # as eval_detection_voc decides it
                if gt_difficult[g]:
                    kind[p] = IGNORED
                elif not taken[g]:
                    kind[p] = TRUE_POSITIVE
                    taken[g] = True
                else:
                    kind[p] = 'duplicate'
            elif g_iou >= low_iou_thresh:
                kind[p] = 'localization'
            else:
                gt_index[p] = -1

    other_iou = np.where(gt_label[None, :] != pred_label[:, None], iou, -1)
    confused = (kind == 'background') & (other_iou.max(axis=1)
                                         >= low_iou_thresh)
    kind[confused] = 'confusion'
    gt_index[confused] = other_iou.argmax(axis=1)[confused]
    return kind, gt_index, ~taken & ~gt_difficult


def _pixel_bbox(bbox):
    """Boxes as the VOC metric measures them: a copy with 1 added to
    ``y_max`` and ``x_max``."""
    bbox = bbox.copy()
    bbox[:, 2:] += 1
    return bbox


def count_kinds(kinds, missed, pred_labels, gt_labels, n_fg_class):
    """Counts the detections of each kind and the missed objects, by class.

    Args:
        kinds, missed (list of ~numpy.ndarray): As
            :func:`classify_detections` returns them.
        pred_labels, gt_labels (list of ~numpy.ndarray): Per image, the
            labels of the detections :math:`(R,)` and objects
            :math:`(R',)`.
        n_fg_class (int): :math:`L`.

    Returns:
        dict: For each of :data:`KINDS` and ``'missed'``, an int64 array
        of shape :math:`(L,)`, the count of each class.
    """
    pred_label = _concat(pred_labels, np.int64)
    gt_label = _concat(gt_labels, np.int64)
    kind = _concat(kinds, '<U13')
    miss = _concat(missed, bool)
    counts = {k: np.bincount(pred_label[kind == k], minlength=n_fg_class)
              for k in KINDS}
    counts['missed'] = np.bincount(gt_label[miss], minlength=n_fg_class)
    return counts


def _concat(arrays, dtype):
    arrays = [np.asarray(a).reshape(-1) for a in arrays]
    return (np.concatenate(arrays).astype(dtype, copy=False) if arrays
            else np.zeros(0, dtype))


# ---------------------------------------------------- per-class numbers

def precision_recall(pred_bboxes, pred_labels, pred_scores, gt_bboxes,
                     gt_labels, gt_difficults, n_fg_class, iou_thresh=0.5):
    """Each class's precision-recall curve, by
    :func:`utils.eval_tool.calc_detection_voc_prec_rec`.

    Args:
        pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels,
        gt_difficults: As :func:`classify_detections` takes them.
        n_fg_class (int): :math:`L`.
        iou_thresh (float): The least IoU of a match.

    Returns:
        tuple of two lists of length :math:`L` (prec, rec): ``prec[l]``
        and ``rec[l]`` are arrays of the precision and recall after each of
        class ``l``'s detections by descending score, ``None`` for a class
        with neither detection nor object; ``rec[l]`` is ``None`` for a
        class without non-difficult object.
    """
    if sum(len(label) for label in pred_labels) + sum(
            len(label) for label in gt_labels) == 0:
        return [None] * n_fg_class, [None] * n_fg_class
    prec, rec = calc_detection_voc_prec_rec(
        pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels,
        gt_difficults, iou_thresh=iou_thresh)
    if len(prec) > n_fg_class:
        raise ValueError('a label is {}; expected labels in [0, {}]'.format(
            len(prec) - 1, n_fg_class - 1))
    padding = [None] * (n_fg_class - len(prec))
    return prec + padding, rec + padding


def class_rows(label_names, ap, rec, pred_labels, gt_labels, gt_difficults):
    """One row per class: its name, AP, objects, detections and recall.

    Args:
        label_names (sequence of str): The class names, :math:`L`.
        ap (~numpy.ndarray): Each class's AP by the metric, shape
            :math:`(L,)` or shorter (missing ones are ``nan``).
        rec (list): Each class's recall curve, as
            :func:`precision_recall` returns it.
        pred_labels, gt_labels, gt_difficults (list of ~numpy.ndarray):
            Per image, as :func:`classify_detections` takes them
            (``gt_difficults`` may be ``None``).

    Returns:
        list of dict: Per class, ``'name'``; ``'ap'`` (float, ``nan``
        where the metric has none); ``'n_gt'``, its non-difficult
        objects; ``'n_det'``, its detections; ``'recall'``, the recall at
        the end of its curve at IoU 0.5 (all its detections counted; 0
        without detection, ``nan`` without object).
    """
    n_fg_class = len(label_names)
    gt_label = _concat(gt_labels, np.int64)
    if gt_difficults is not None:
        gt_label = gt_label[~_concat(gt_difficults, bool)]
    n_gt = np.bincount(gt_label, minlength=n_fg_class)
    n_det = np.bincount(_concat(pred_labels, np.int64),
                        minlength=n_fg_class)
    ap = _padded(ap, n_fg_class)
    rows = []
    for l, name in enumerate(label_names):
        if n_gt[l] == 0:
            recall = math.nan
        elif rec[l] is None or len(rec[l]) == 0:
            recall = 0.
        else:
            recall = float(rec[l][-1])
        rows.append({'name': name, 'ap': float(ap[l]), 'n_gt': int(n_gt[l]),
                     'n_det': int(n_det[l]), 'recall': recall})
    return rows


def _padded(ap, n_fg_class):
    """Per-class APs as a float array of length :math:`L` (``nan``
    past the end)."""
    ap = np.asarray(ap, dtype=np.float64).reshape(-1)
    if len(ap) > n_fg_class:
        raise ValueError('the metric has {} per-class APs but there are {} '
                         'class names; expected one name per class'.format(
                             len(ap), n_fg_class))
    return np.concatenate((ap, np.full(n_fg_class - len(ap), np.nan)))


# --------------------------------------------------------- the report

def write_report(report_dir, metrics, label_names, pred_bboxes, pred_labels,
                 pred_scores, gt_bboxes, gt_labels, gt_difficults=None,
                 image_getter=None, metric=None, n_worst=8):
    """Writes an evaluation report of detections to a directory.

    Args:
        report_dir (str): The directory, made if missing.
        metrics (dict): The metric's numbers, as
            :func:`utils.evaluation.score` returns them: ``'map'``,
            ``'ap'`` (per class) and, for COCO, ``'ap50'``, ...,
            ``'stats'`` and ``'summary'``.
        label_names (sequence of str): The class names, :math:`L`.
        pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels,
        gt_difficults: Per image, the detections and ground truth the
            metric scored, as :func:`classify_detections` takes them
            (:func:`utils.evaluation.collect_detections` returns them).
        image_getter (callable): ``image_getter(i)`` returns the ``i``-th
            image of those lists, shape :math:`(3, H, W)`, RGB, float32 in
            [0, 255]; ``None``: ``worst.png`` is not written.
        metric (str): The metric's name, written in the report.
        n_worst (int): How many false positives, and how many missed
            objects, ``worst.png`` shows.

    Returns:
        dict: The path of each file written, by name (``'metrics.json'``,
        ...).
    """
    os.makedirs(report_dir, exist_ok=True)
    n_fg_class = len(label_names)
    if gt_difficults is None:
        gt_difficults = [np.zeros(len(label), bool) for label in gt_labels]
    arrays = (pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels,
              gt_difficults)
    analysis = classify_detections(*arrays)
    counts = count_kinds(analysis.kinds, analysis.missed, pred_labels,
                         gt_labels, n_fg_class)
    prec, rec = precision_recall(*arrays, n_fg_class=n_fg_class)
    rows = class_rows(label_names, metrics['ap'], rec, pred_labels,
                      gt_labels, gt_difficults)

    paths = {name: os.path.join(report_dir, name) for name in (
        'metrics.json', 'report.md', 'pr_curves.png', 'errors.png')}
    write_metrics_json(paths['metrics.json'], metrics, label_names, metric)
    write_markdown(paths['report.md'], metrics, rows, counts, label_names,
                   metric, n_images=len(gt_labels))
    draw_pr_curves(paths['pr_curves.png'], prec, rec, label_names,
                   [row['ap'] for row in rows], metric)
    draw_errors(paths['errors.png'], counts, label_names)
    if image_getter is not None:
        paths['worst.png'] = os.path.join(report_dir, 'worst.png')
        draw_worst(paths['worst.png'], analysis, arrays, label_names,
                   image_getter, n_worst)
    return paths


def metric_lines(metrics, label_names, metric):
    """The metric's numbers as lines to print: COCOeval's summary (for
    'coco') or the mAP, then each class's AP."""
    if metric == 'coco':
        lines = metrics['summary'].splitlines()
    else:
        lines = ['mAP ({}, IoU 0.5): {:.4f}'.format(metric, metrics['map'])]
    width = max(len(name) for name in label_names)
    return lines + ['  AP {:<{}}  {:.4f}'.format(name, width, ap)
                    for name, ap in zip(label_names, metrics['ap'])]


def write_metrics_json(path, metrics, label_names, metric=None):
    """Writes the metric's numbers as JSON.

    Every number of ``metrics`` is written under its key (arrays as lists,
    ``nan`` as ``null``), but ``'ap'``, written as an object from class
    name to AP, and the text ``'summary'``, left to ``report.md``;
    ``"metric"`` names the metric.

    Args:
        path (str): The file to write.
        metrics (dict): As :func:`write_report` takes it.
        label_names (sequence of str): The class names, :math:`L`.
        metric (str): The metric's name, or ``None``.
    """
    out = {'metric': metric}
    for key, value in metrics.items():
        if key in ('ap', 'summary'):
            continue
        out[key] = _json_number(value)
    out['ap'] = {name: _json_number(ap) for name, ap in zip(
        label_names, _padded(metrics['ap'], len(label_names)))}
    with open(path, 'w') as f:
        json.dump(out, f, indent=2, allow_nan=False)
        f.write('\n')


def _json_number(value):
    """A number or array as JSON takes it: floats and lists, ``nan`` as
    ``None``."""
    value = np.asarray(value)
    if value.ndim:
        return [_json_number(v) for v in value]
    value = value.item()
    return None if isinstance(value, float) and not math.isfinite(
        value) else value


def write_markdown(path, metrics, rows, counts, label_names, metric=None,
                   n_images=None):
    """Writes ``report.md``: the metric's numbers, a table of the classes
    and a table of their errors at IoU 0.5.

    Args:
        path (str): The file to write.
        metrics (dict): As :func:`write_report` takes it.
        rows (list of dict): As :func:`class_rows` returns them.
        counts (dict): As :func:`count_kinds` returns them.
        label_names (sequence of str): The class names, :math:`L`.
        metric (str): The metric's name, or ``None``.
        n_images (int): The number of images evaluated, or ``None``.
    """
    lines = ['# Evaluation report', '']
    about = ['metric: {}'.format(metric or 'unnamed')]
    if n_images is not None:
        about.append('{} images'.format(n_images))
    about.append('{} detections'.format(sum(row['n_det'] for row in rows)))
    about.append('{} objects (difficult ones not counted)'.format(
        sum(row['n_gt'] for row in rows)))
    lines += [', '.join(about), '', '| number | value |', '| --- | ---: |']
    lines += ['| {} | {} |'.format(key, _cell(metrics[key]))
              for key in STAT_KEYS if key in metrics]

    lines += ['', '## Classes', '',
              'AP by the metric; objects: ground truth objects, difficult '
              'ones not counted; detections: those kept by the detector; '
              'recall: at the end of the precision-recall curve at IoU '
              '0.5.', '',
              '| class | AP | objects | detections | recall |',
              '| --- | ---: | ---: | ---: | ---: |']
    lines += ['| {} | {} | {} | {} | {} |'.format(
        _escape(row['name']), _cell(row['ap']), row['n_gt'], row['n_det'],
        _cell(row['recall'])) for row in rows]

    kinds = (TRUE_POSITIVE,) + ERROR_KINDS + (IGNORED, 'missed')
    lines += ['', '## Errors at IoU 0.5', '',
              'Detections by kind (see utils.report.classify_detections); '
              'missed: objects no detection found.', '',
              '| class | ' + ' | '.join(k.replace('_', ' ') for k in kinds)
              + ' |', '| --- |' + ' ---: |' * len(kinds)]
    for l, name in enumerate(label_names):
        lines.append('| {} | '.format(_escape(name)) + ' | '.join(
            str(int(counts[k][l])) for k in kinds) + ' |')
    lines.append('| **all** | ' + ' | '.join(
        str(int(counts[k].sum())) for k in kinds) + ' |')
    if metrics.get('summary'):
        lines += ['', "## COCOeval's summary", '', '```',
                  metrics['summary'].rstrip('\n'), '```']
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def _cell(value):
    return '-' if value is None or math.isnan(value) else '{:.4f}'.format(
        value)


def _escape(name):
    return str(name).replace('|', '\\|')


# ----------------------------------------------------------- pictures

def _figure(width, height, dpi=100):
    """A matplotlib figure on its own Agg canvas, ``width`` x ``height``
    inches."""
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def draw_pr_curves(path, prec, rec, label_names, ap=None, metric=None,
                   n_cols=None):
    """Draws each class's precision-recall curve, one small axis each.

    Args:
        path (str): The PNG file to write.
        prec, rec (list): As :func:`precision_recall` returns them.
        label_names (sequence of str): The class names, :math:`L`.
        ap (sequence of float): Each class's AP, written on its axis.
        metric (str): The name of the metric of ``ap``.
        n_cols (int): Axes per row; default: about the square root of
            :math:`L`.
    """
    n_fg_class = len(label_names)
    n_cols = n_cols or max(1, math.ceil(math.sqrt(n_fg_class)))
    n_rows = max(1, math.ceil(n_fg_class / n_cols))
    fig = _figure(2.2 * n_cols, 2.2 * n_rows + 0.5)
    for l, name in enumerate(label_names):
        ax = fig.add_subplot(n_rows, n_cols, l + 1)
        if rec[l] is not None and len(rec[l]):
            ax.plot(rec[l], np.nan_to_num(prec[l]), marker='.',
                    markersize=3, color=KIND_COLORS[TRUE_POSITIVE])
        else:
            ax.text(0.5, 0.5, 'no objects' if rec[l] is None
                    else 'no detections', ha='center', va='center',
                    fontsize=8, transform=ax.transAxes)
        title = str(name)
        if ap is not None and not math.isnan(ap[l]):
            title += ' (AP {:.3f})'.format(ap[l])
        ax.set_title(title, fontsize=8)
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=6)
        if l % n_cols == 0:
            ax.set_ylabel('precision', fontsize=7)
        if l >= n_fg_class - n_cols:
            ax.set_xlabel('recall', fontsize=7)
    fig.suptitle('Precision-recall at IoU 0.5' + (
        '; AP by the {} metric'.format(metric) if metric else ''),
        fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    fig.savefig(path)


def draw_errors(path, counts, label_names):
    """Draws each class's detections by kind and its missed objects.

    Two panels of horizontal bars, one bar per class and one for all
    classes: the detections as fractions by kind (stacked: true
    positives, then the false positives by kind), and the fraction of the
    objects missed; the counts are written at the bars' ends.

    Args:
        path (str): The PNG file to write.
        counts (dict): As :func:`count_kinds` returns them.
        label_names (sequence of str): The class names, :math:`L`.
    """
    kinds = (TRUE_POSITIVE,) + ERROR_KINDS
    names = ['all'] + [str(name) for name in label_names]
    det = np.array([[counts[k].sum()] + list(counts[k]) for k in kinds],
                   dtype=np.float64)                     # (kinds, 1 + L)
    found = counts[TRUE_POSITIVE]
    missed = counts['missed']
    n_obj = np.concatenate(([found.sum() + missed.sum()], found + missed))
    n_missed = np.concatenate(([missed.sum()], missed))
    y = np.arange(len(names))[::-1]

    fig = _figure(11, 1.4 + 0.28 * len(names))
    ax = fig.add_subplot(1, 2, 1)
    total = det.sum(axis=0)
    share = det / np.maximum(total, 1)
    left = np.zeros(len(names))
    for kind, part in zip(kinds, share):
        ax.barh(y, part, left=left, color=KIND_COLORS[kind],
                label=kind.replace('_', ' '), height=0.8)
        left += part
    _class_bars_axis(ax, y, names, [str(int(n)) for n in total], 1.12,
                     'fraction of the detections (count at the end)')
    # The legend between the axes and the title.
    ax.set_title('Detections at IoU 0.5, by kind', fontsize=10, pad=22)
    ax.legend(fontsize=7, loc='lower center', ncol=5,
              bbox_to_anchor=(0.5, 1.0), frameon=False)

    ax = fig.add_subplot(1, 2, 2)
    ax.barh(y, n_missed / np.maximum(n_obj, 1), color=KIND_COLORS['missed'],
            height=0.8)
    _class_bars_axis(ax, y, names, ['{} of {}'.format(int(m), int(n))
                                    for n, m in zip(n_obj, n_missed)],
                     1.25, 'fraction of the objects missed')
    ax.set_title('Missed objects', fontsize=10, pad=22)
    fig.tight_layout()
    fig.savefig(path)


def _class_bars_axis(ax, y, names, ends, x_max, xlabel):
    """A panel of one bar per class at heights ``y``: the class names on
    the left, the text ``ends`` after each bar, fractions up to
    ``x_max``."""
    for yy, text in zip(y, ends):
        ax.text(1.01, yy, text, va='center', fontsize=7)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlim(0, x_max)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlabel(xlabel)


# The worst cases to show: where (image, box, label, score, kind, the
# object that decided the kind).
_Case = collections.namedtuple('_Case',
                               'img bbox label score kind gt_bbox gt_label')


def worst_cases(analysis, arrays, n):
    """The ``n`` false positives of highest score and the ``n`` largest
    missed objects.

    Args:
        analysis (DetectionKinds): As :func:`classify_detections` returns.
        arrays (tuple): The six per-image lists it was computed from.
        n (int): How many of each.

    Returns:
        tuple of two lists of ``_Case``: the false positives (by descending
        score) and the missed objects (by descending area; ``score`` is
        ``None``, ``kind`` 'missed').
    """
    pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels, _ = arrays
    false = [(float(pred_scores[i][j]), i, j)
             for i, kind in enumerate(analysis.kinds)
             for j in np.flatnonzero(np.isin(kind, ERROR_KINDS))]
    false.sort(key=lambda case: -case[0])
    cases = []
    for score, i, j in false[:n]:
        g = analysis.gt_index[i][j]
        cases.append(_Case(i, pred_bboxes[i][j], int(pred_labels[i][j]),
                           score, str(analysis.kinds[i][j]),
                           gt_bboxes[i][g] if g >= 0 else None,
                           int(gt_labels[i][g]) if g >= 0 else None))
    missed = []
    for i, miss in enumerate(analysis.missed):
        for j in np.flatnonzero(miss):
            y_min, x_min, y_max, x_max = gt_bboxes[i][j]
            missed.append(((y_max - y_min) * (x_max - x_min), i, j))
    missed.sort(key=lambda case: -case[0])
    missed = [_Case(i, gt_bboxes[i][j], int(gt_labels[i][j]), None,
                    'missed', None, None) for _, i, j in missed[:n]]
    return cases, missed


def draw_worst(path, analysis, arrays, label_names, image_getter, n=8,
               n_cols=4):
    """Draws the worst false positives and missed objects as thumbnails
    (see :func:`worst_cases`): each a crop of its image around the box,
    the box drawn in its kind's colour, the object that decided a false
    positive's kind dashed, captioned with class, score and kind.

    Args:
        path (str): The PNG file to write.
        analysis (DetectionKinds): As :func:`classify_detections` returns.
        arrays (tuple): The six per-image lists it was computed from.
        label_names (sequence of str): The class names, :math:`L`.
        image_getter (callable): ``image_getter(i)``: image ``i``,
            :math:`(3, H, W)`, RGB in [0, 255].
        n (int): How many false positives, and how many missed objects.
        n_cols (int): Thumbnails per row.
    """
    false, missed = worst_cases(analysis, arrays, n)
    rows_false = math.ceil(len(false) / n_cols)
    rows_missed = math.ceil(len(missed) / n_cols)
    n_rows = max(1, rows_false + rows_missed)
    fig = _figure(2.6 * n_cols, 2.7 * n_rows + 0.4)
    if not false and not missed:
        fig.text(0.5, 0.5, 'no false positive and no missed object',
                 ha='center', va='center')
    images = {}
    slots = ([(r * n_cols + c + 1) for r in range(rows_false)
              for c in range(n_cols)][:len(false)]
             + [((rows_false + r) * n_cols + c + 1)
                for r in range(rows_missed) for c in range(n_cols)]
             [:len(missed)])
    for case, slot in zip(false + missed, slots):
        if case.img not in images:
            images[case.img] = np.asarray(image_getter(case.img))
        ax = fig.add_subplot(n_rows, n_cols, slot)
        _draw_case(ax, images[case.img], case, label_names)
    fig.suptitle('False positives of highest score, then the largest missed '
                 'objects', fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    fig.savefig(path)


def _draw_case(ax, img, case, label_names):
    """One thumbnail of :func:`draw_worst` on ``ax``."""
    boxes = [case.bbox] + ([case.gt_bbox] if case.gt_bbox is not None
                           else [])
    boxes = np.array(boxes, dtype=np.float64)
    _, H, W = img.shape
    top, left = boxes[:, :2].min(axis=0)
    bottom, right = boxes[:, 2:].max(axis=0)
    margin = 0.25 * max(bottom - top, right - left) + 4
    # At least a pixel of the image, should a box lie outside it.
    top = int(np.clip(math.floor(top - margin), 0, H - 1))
    left = int(np.clip(math.floor(left - margin), 0, W - 1))
    bottom = int(np.clip(math.ceil(bottom + margin), top + 1, H))
    right = int(np.clip(math.ceil(right + margin), left + 1, W))
    crop = img[:, top:bottom, left:right]
    ax.imshow(np.clip(crop.transpose((1, 2, 0)), 0, 255).astype(np.uint8),
              extent=(left, left + crop.shape[2], top + crop.shape[1], top))
    color = KIND_COLORS[case.kind]
    _add_box(ax, case.bbox, color, '-')
    if case.gt_bbox is not None:
        _add_box(ax, case.gt_bbox, KIND_COLORS[TRUE_POSITIVE], '--')
    name = _name(label_names, case.label)
    if case.kind == 'missed':
        title = 'missed {}'.format(name)
    else:
        title = '{} {:.2f}: {}'.format(name, case.score, case.kind)
        if case.kind == 'confusion':
            title += ' ({})'.format(_name(label_names, case.gt_label))
    ax.set_title(title, fontsize=8, color=color)
    ax.axis('off')


def _add_box(ax, bbox, color, linestyle):
    y_min, x_min, y_max, x_max = bbox
    ax.add_patch(Rectangle((x_min, y_min), x_max - x_min, y_max - y_min,
                           fill=False, edgecolor=color, linewidth=2,
                           linestyle=linestyle))


def _name(label_names, label):
    return (str(label_names[label]) if 0 <= label < len(label_names)
            else str(label))


# ---------------------------------------------------- training history

HISTORY_FILE = 'history.csv'
TRAINING_CURVES_FILE = 'training_curves.png'


def append_history(out_dir, epoch, lr, eval_map, losses):
    """Appends one epoch's row to ``out_dir/history.csv``.

    The columns are ``epoch``, ``lr``, ``map`` and the losses' names; the
    header is written with the first row. A resumed run appends to the
    file under its header (a loss the header lacks is left out, a column
    the row lacks is left empty), so that the history runs on; a later row
    of an epoch replaces an earlier one in :func:`read_history`.

    Args:
        out_dir (str): The run's directory, made if missing.
        epoch (int): The epoch.
        lr (float): Its learning rate.
        eval_map (float): Its mAP on the test set.
        losses (dict): Its mean losses, by name (the trainer's
            ``get_meter_data()``).

    Returns:
        str: The file's path.
    """
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, HISTORY_FILE)
    row = {'epoch': epoch, 'lr': lr, 'map': eval_map}
    row.update((name, float(value)) for name, value in losses.items())
    header = None
    if os.path.isfile(path) and os.path.getsize(path) > 0:
        with open(path, newline='') as f:
            header = next(csv.reader(f), None)
    with open(path, 'a', newline='') as f:
        writer = csv.DictWriter(f, header or list(row), restval='',
                                extrasaction='ignore')
        if header is None:
            writer.writeheader()
        writer.writerow(row)
    return path


def read_history(path):
    """Reads a ``history.csv`` that :func:`append_history` wrote.

    Returns:
        dict: Each column's values as a float array (``nan`` where
        empty), one per epoch in ascending order; of rows of one epoch,
        the last.
    """
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    by_epoch = {}
    for row in rows:
        by_epoch[float(row['epoch'])] = row
    epochs = sorted(by_epoch)
    columns = list(rows[0]) if rows else ['epoch']
    return {name: np.array([_float(by_epoch[e].get(name)) for e in epochs])
            for name in columns}


def _float(text):
    return float(text) if text not in (None, '') else math.nan


def draw_training_curves(out_dir):
    """Draws ``out_dir/history.csv`` into ``out_dir/training_curves.png``:
    the losses, the mAP and the learning rate against the epoch.

    Returns:
        str: The PNG's path.
    """
    history = read_history(os.path.join(out_dir, HISTORY_FILE))
    epoch = history['epoch']
    fig = _figure(13, 3.8)
    ax = fig.add_subplot(1, 3, 1)
    for name, values in history.items():
        if name not in ('epoch', 'lr', 'map'):
            ax.plot(epoch, values, marker='.', label=name)
    ax.set_xlabel('epoch')
    ax.set_title('losses', fontsize=10)
    if len(history) > 3:
        ax.legend(fontsize=7)
    for i, name in ((2, 'map'), (3, 'lr')):
        ax = fig.add_subplot(1, 3, i)
        ax.plot(epoch, history.get(name, np.full(len(epoch), np.nan)),
                marker='.', color=KIND_COLORS[TRUE_POSITIVE] if name == 'map'
                else 'black')
        ax.set_xlabel('epoch')
        ax.set_title('mAP on the test set' if name == 'map'
                     else 'learning rate', fontsize=10)
        lr = history.get('lr', np.zeros(0))
        if name == 'lr' and np.all(lr[~np.isnan(lr)] > 0) and len(lr):
            ax.set_yscale('log')
    fig.tight_layout()
    path = os.path.join(out_dir, TRAINING_CURVES_FILE)
    fig.savefig(path)
    return path
