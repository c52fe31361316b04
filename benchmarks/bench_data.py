"""CPU timings of the data side: preprocessing.

Run from the repository root::

    python benchmarks/bench_data.py

Prints the medians over repeated runs of ``preprocess`` of a 500x375 image
(VOC's usual size) to 800x600, both normalizations, next to the
scikit-image resize alone and to reading the JPEG, as ratios.

VOC evaluation is timed by ``benchmarks/bench_eval.py``, against the
original design's. :func:`median_time` is shared with the other
benchmarks (``bench_model.py`` imports it from here).
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


def median_time(fn, repeats):
    """The median wall time of ``fn()`` over ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
    parser.add_argument('--preprocess-repeats', type=int, default=21)
    args = parser.parse_args()

    print('python {}, numpy {}, torch {} ({} threads), scikit-image {}, '
          '{} CPUs'.format(platform.python_version(), np.__version__,
                           torch.__version__, torch.get_num_threads(),
                           skimage.__version__, os.cpu_count()))
    print('command: python benchmarks/bench_data.py --preprocess-repeats {}'
          .format(args.preprocess_repeats))
    bench_preprocess(args.preprocess_repeats)


if __name__ == '__main__':
    main()
