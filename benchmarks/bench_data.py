"""CPU timings of the data side: VOC evaluation and preprocessing.

Run from the repository root::

    python benchmarks/bench_data.py

Prints medians over repeated runs:

* ``eval_detection_voc`` at VOC2007-test scale (4952 images, 300
  detections each, about 3 ground truth boxes per image over 20 classes,
  some difficult), split into the matching (precision/recall) and the AP
  parts, for both metrics;
* ``preprocess`` of a 500x375 image (VOC's usual size) to 800x600, both
  normalizations, next to the scikit-image resize alone and to reading the
  JPEG, as ratios.
"""
import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import skimage
from skimage import transform as sktsf
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.dataset import preprocess  # noqa: E402
from data.util import read_image  # noqa: E402
from utils.eval_tool import (calc_detection_voc_ap,  # noqa: E402
                             calc_detection_voc_prec_rec)


def median_time(fn, repeats):
    """The median wall time of ``fn()`` over ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def voc_test_like(n_images, n_det, n_fg_class=20, img_size=(375, 500),
                  seed=0):
    """Random detections and ground truth shaped like a VOC07 test run.

    A third of the detections are jittered copies of ground truth boxes,
    the rest random boxes; labels and scores are random.
    """
    rng = np.random.RandomState(seed)
    H, W = img_size
    pred_bboxes, pred_labels, pred_scores = [], [], []
    gt_bboxes, gt_labels, gt_difficults = [], [], []
    for _ in range(n_images):
        n_gt = rng.randint(1, 6)
        y_min = rng.uniform(0, H - 40, n_gt)
        x_min = rng.uniform(0, W - 40, n_gt)
        gt_bbox = np.stack([y_min, x_min,
                            y_min + rng.uniform(20, H - y_min),
                            x_min + rng.uniform(20, W - x_min)], axis=1)
        gt_label = rng.randint(0, n_fg_class, n_gt)

        n_near = n_det // 3
        near = gt_bbox[rng.randint(0, n_gt, n_near)]
        near = near + rng.normal(0, 10, near.shape)
        y_min = rng.uniform(0, H - 20, n_det - n_near)
        x_min = rng.uniform(0, W - 20, n_det - n_near)
        far = np.stack([y_min, x_min,
                        y_min + rng.uniform(10, H - y_min),
                        x_min + rng.uniform(10, W - x_min)], axis=1)

        pred_bboxes.append(np.concatenate([near, far]).astype(np.float32))
        pred_labels.append(rng.randint(0, n_fg_class, n_det).astype(np.int32))
        pred_scores.append(rng.uniform(0, 1, n_det).astype(np.float32))
        gt_bboxes.append(gt_bbox.astype(np.float32))
        gt_labels.append(gt_label.astype(np.int32))
        gt_difficults.append(rng.uniform(0, 1, n_gt) < 0.1)
    return (pred_bboxes, pred_labels, pred_scores,
            gt_bboxes, gt_labels, gt_difficults)


def bench_eval(n_images, n_det, repeats):
    inputs = voc_test_like(n_images, n_det)
    prec_rec = []
    t_prec_rec = median_time(
        lambda: prec_rec.append(calc_detection_voc_prec_rec(*inputs)),
        repeats)
    prec, rec = prec_rec[0]
    t_area = median_time(lambda: calc_detection_voc_ap(prec, rec), repeats)
    t_07 = median_time(
        lambda: calc_detection_voc_ap(prec, rec, use_07_metric=True), repeats)
    ap = calc_detection_voc_ap(prec, rec, use_07_metric=True)

    print('eval_detection_voc: {} images x {} detections, {} gt boxes, '
          '{} repeats'.format(n_images, n_det,
                              sum(len(b) for b in inputs[3]), repeats))
    print('  matching (calc_detection_voc_prec_rec): {:8.3f} s  '
          '({:.3f} ms/image)'.format(t_prec_rec, 1e3 * t_prec_rec / n_images))
    print('  AP, area metric:                        {:8.3f} s'.format(t_area))
    print('  AP, VOC07 11-point metric:              {:8.3f} s'.format(t_07))
    print('  whole eval, 11-point:                   {:8.3f} s  '
          '(mAP of the random detections {:.4f})'.format(
              t_prec_rec + t_07, np.nanmean(ap)))


def bench_preprocess(repeats):
    rng = np.random.RandomState(0)
    rgb = rng.randint(0, 256, (375, 500, 3)).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'img.jpg')
        Image.fromarray(rgb).save(path, quality=95)
        t_read = median_time(lambda: read_image(path), repeats)
        img = read_image(path)

    t_tv = median_time(lambda: preprocess(img), repeats)
    t_caffe = median_time(lambda: preprocess(img, caffe_pretrain=True),
                          repeats)
    t_resize = median_time(
        lambda: sktsf.resize(img / 255., (3, 600, 800),
                             mode='reflect', anti_aliasing=False),
        repeats)

    print('preprocess: 3x375x500 -> {}, {} repeats'.format(
        'x'.join(map(str, preprocess(img).shape)), repeats))
    print('  torchvision normalization: {:7.2f} ms'.format(1e3 * t_tv))
    print('  caffe normalization:       {:7.2f} ms  ({:.2f}x torchvision)'
          .format(1e3 * t_caffe, t_caffe / t_tv))
    print('  skimage resize alone:      {:7.2f} ms  (preprocess = {:.2f}x '
          'the resize)'.format(1e3 * t_resize, t_tv / t_resize))
    print('  read_image of the JPEG:    {:7.2f} ms  (preprocess = {:.2f}x '
          'the read)'.format(1e3 * t_read, t_tv / t_read))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--n-images', type=int, default=4952)
    parser.add_argument('--n-det', type=int, default=300)
    parser.add_argument('--eval-repeats', type=int, default=3)
    parser.add_argument('--preprocess-repeats', type=int, default=21)
    args = parser.parse_args()

    print('python {}, numpy {}, torch {} ({} threads), scikit-image {}, '
          '{} CPUs'.format(platform.python_version(), np.__version__,
                           torch.__version__, torch.get_num_threads(),
                           skimage.__version__, os.cpu_count()))
    print('command: python benchmarks/bench_data.py --n-images {} --n-det {} '
          '--eval-repeats {} --preprocess-repeats {}'.format(
              args.n_images, args.n_det, args.eval_repeats,
              args.preprocess_repeats))
    bench_preprocess(args.preprocess_repeats)
    bench_eval(args.n_images, args.n_det, args.eval_repeats)


if __name__ == '__main__':
    main()
