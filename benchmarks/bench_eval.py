"""CPU timing of ``eval_detection_voc`` against the original design's numpy.

Run from the repository root::

    python benchmarks/bench_eval.py

Times, in one run and on the same seeded inputs, the original's evaluation
(chainercv's ``eval_detection_voc``, transcribed in
:func:`reference.original.eval_detection_voc`, numpy throughout) and
:func:`utils.eval_tool.eval_detection_voc`, checks that both give the same
average precisions bit for bit, and prints the medians and their ratio, at
VOC2007-test scale (4952 images, 300 detections each, about 2.4 ground truth
boxes per image over 20 classes, some difficult) and on a smaller run.
"""
import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reference import original  # noqa: E402
from utils.eval_tool import eval_detection_voc  # noqa: E402


# ------------------------------------------------------------- the inputs

def voc_test_like(n_images, n_det, n_fg_class=20, img_size=(375, 500),
                  seed=0):
    """Seeded random detections and ground truth shaped like a VOC07 test run.

    Each image has :math:`1 + \\mathrm{Poisson}(1.4)` ground truth boxes
    (2.4 on average, as VOC2007 test has 12032 non-difficult objects in
    4952 images), a sixth of them difficult. A third of the ``n_det``
    detections are jittered copies of ground truth boxes, the rest random
    boxes; labels are random, scores uniform float32. Boxes are float32
    ``(y_min, x_min, y_max, x_max)``.

    Returns:
        tuple: ``pred_bboxes, pred_labels, pred_scores, gt_bboxes,
        gt_labels, gt_difficults``, each a list of one array per image.
    """
    rng = np.random.RandomState(seed)
    H, W = img_size
    pred_bboxes, pred_labels, pred_scores = [], [], []
    gt_bboxes, gt_labels, gt_difficults = [], [], []
    for _ in range(n_images):
        n_gt = 1 + rng.poisson(1.4)
        y_min = rng.uniform(0, H - 40, n_gt)
        x_min = rng.uniform(0, W - 40, n_gt)
        gt_bbox = np.stack([y_min, x_min,
                            y_min + rng.uniform(20, H - y_min),
                            x_min + rng.uniform(20, W - x_min)], axis=1)
        gt_label = rng.randint(0, n_fg_class, n_gt)

        n_near = n_det // 3
        near_index = rng.randint(0, n_gt, n_near)
        near = gt_bbox[near_index] + rng.normal(0, 10, (n_near, 4))
        y_min = rng.uniform(0, H - 20, n_det - n_near)
        x_min = rng.uniform(0, W - 20, n_det - n_near)
        far = np.stack([y_min, x_min,
                        y_min + rng.uniform(10, H - y_min),
                        x_min + rng.uniform(10, W - x_min)], axis=1)
        # Most near copies carry their box's label, as a detector's would.
        near_label = np.where(rng.uniform(0, 1, n_near) < 0.5,
                              gt_label[near_index],
                              rng.randint(0, n_fg_class, n_near))

        pred_bboxes.append(np.concatenate([near, far]).astype(np.float32))
        pred_labels.append(np.concatenate(
            [near_label, rng.randint(0, n_fg_class, n_det - n_near)])
            .astype(np.int32))
        pred_scores.append(rng.uniform(0, 1, n_det).astype(np.float32))
        gt_bboxes.append(gt_bbox.astype(np.float32))
        gt_labels.append(gt_label.astype(np.int32))
        gt_difficults.append(rng.uniform(0, 1, n_gt) < 1 / 6)
    return (pred_bboxes, pred_labels, pred_scores,
            gt_bboxes, gt_labels, gt_difficults)


# ----------------------------------------------------------------- timing

def median_times(fns, repeats):
    """The median wall time of each function, in seconds, over ``repeats``
    rounds that call them in turn (so that a load on the machine weighs on
    all alike), and each one's last result.

    Args:
        fns (list of callable): Functions of no argument.
        repeats (int): The number of rounds.

    Returns:
        tuple of two lists: The medians and the results, in the order of
        ``fns``.
    """
    times = [[] for _ in fns]
    results = [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            results[i] = fn()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times], results


def bench(n_images, n_det, repeats):
    """Times both evaluations on one seeded input, for both metrics, and
    checks that their APs are equal bit for bit."""
    inputs = voc_test_like(n_images, n_det)
    print('{} images x {} detections, {} gt boxes ({} difficult), '
          '{} repeats'.format(
              n_images, n_det, sum(len(b) for b in inputs[3]),
              sum(int(d.sum()) for d in inputs[5]), repeats))
    for use_07_metric in (True, False):
        (t_orig, t_ours), (orig, ours) = median_times([
            lambda: original.eval_detection_voc(
                *inputs, use_07_metric=use_07_metric),
            lambda: eval_detection_voc(*inputs, use_07_metric=use_07_metric),
        ], repeats)
        np.testing.assert_array_equal(ours['ap'], orig['ap'])
        assert ours['map'] == orig['map'] or (
            np.isnan(ours['map']) and np.isnan(orig['map']))
        print('  {:10s} original {:7.3f} s   ours {:7.3f} s   '
              'ratio {:5.2f}x   (identical APs, mAP {:.6f})'.format(
                  '11-point:' if use_07_metric else 'area:',
                  t_orig, t_ours, t_orig / t_ours, ours['map']))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--n-images', type=int, default=4952)
    parser.add_argument('--n-det', type=int, default=300)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--small-images', type=int, default=500)
    parser.add_argument('--small-repeats', type=int, default=7)
    args = parser.parse_args()

    print('python {}, numpy {}, {} CPUs'.format(
        platform.python_version(), np.__version__, os.cpu_count()))
    print('command: python benchmarks/bench_eval.py --n-images {} --n-det {} '
          '--repeats {} --small-images {} --small-repeats {}'.format(
              args.n_images, args.n_det, args.repeats, args.small_images,
              args.small_repeats))
    bench(args.n_images, args.n_det, args.repeats)
    bench(args.small_images, args.n_det, args.small_repeats)


if __name__ == '__main__':
    main()
