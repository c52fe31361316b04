"""Training images per second at batch sizes 1, 2, 4 and 8, as ratios to
batch size 1.

    python benchmarks/bench_batch.py [--model toy|vgg16] [--device cpu|cuda]
                                     [--steps 4] [--repeats 3] [--threads N]
    torchrun --nproc_per_node=K benchmarks/bench_batch.py --model vgg16 \\
        --device cuda

The toy model on the toy preset's 256x256 images (the default, for a CPU),
or VGG16 at 600x1000 (for a GPU), from random weights, on random images of
one size (no padding) with four gt boxes each. Each batch size takes one
warm-up step; then, ``--repeats`` times in turn, each batch size times
``--steps`` steps of ``FasterRCNNTrainer.train_step``, and the median of
its repeats is reported (a busy machine slows all batch sizes alike).
Under torchrun every process trains on its own batch of N through
DistributedDataParallel and the figures are for all K processes together
(K N images a step).
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT]

from model import FasterRCNNVGG16  # noqa: E402
from model.faster_rcnn_toy import FasterRCNNToy  # noqa: E402
from trainer import FasterRCNNTrainer  # noqa: E402
from utils import distributed  # noqa: E402

SIZES = dict(toy=(256, 256), vgg16=(600, 1000))


def batch(rng, n, size):
    """N random images of ``size`` with four gt boxes each."""
    h, w = size
    imgs = torch.from_numpy(rng.normal(size=(n, 3, h, w)).astype(np.float32))
    bboxes, labels = [], []
    for _ in range(n):
        y, x = rng.uniform(0, h / 2, 4), rng.uniform(0, w / 2, 4)
        bh, bw = rng.uniform(20, h / 2, 4), rng.uniform(20, w / 2, 4)
        bboxes.append(torch.tensor(np.stack([y, x, y + bh, x + bw], axis=1),
                                   dtype=torch.float32))
        labels.append(torch.from_numpy(rng.randint(0, 5, 4).astype(
            np.int32)))
    return imgs, bboxes, labels


def train_step(trainer, n, size, device, rng):
    imgs, bboxes, labels = batch(rng, n, size)
    trainer.train_step(imgs.to(device), bboxes, labels, 1.)  # gt on the host


def images_per_second(trainer, n, size, steps, device, rng):
    """Training images a second (of all processes) at batch size n."""
    if device.type == 'cuda':
        torch.cuda.synchronize()
    distributed.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        train_step(trainer, n, size, device, rng)
    if device.type == 'cuda':
        torch.cuda.synchronize()
    distributed.barrier()
    return n * steps * distributed.world_size() / (
        time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', choices=sorted(SIZES), default='toy')
    parser.add_argument('--device', default=None,
                        help='cpu or cuda (default: cuda when available)')
    parser.add_argument('--steps', type=int, default=4)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch\'s)')
    parser.add_argument('--batch-sizes', type=int, nargs='+',
                        default=[1, 2, 4, 8])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = distributed.init(args.device)
    torch.manual_seed(0)
    if args.model == 'toy':
        model = FasterRCNNToy(n_fg_class=5)
    else:
        model = FasterRCNNVGG16(n_fg_class=20, pretrained_model=None)
    trainer = FasterRCNNTrainer(model).to(device)
    if distributed.world_size() > 1:
        trainer.wrap_ddp(device_ids=[device.index] if device.type == 'cuda'
                         else None)
    np.random.seed(distributed.rank())
    rng = np.random.RandomState(distributed.rank())

    size = SIZES[args.model]
    for n in args.batch_sizes:
        train_step(trainer, n, size, device, rng)  # warm-up
    runs = {n: [] for n in args.batch_sizes}
    for _ in range(args.repeats):
        for n in args.batch_sizes:
            runs[n].append(images_per_second(trainer, n, size, args.steps,
                                             device, rng))
    rates = {n: float(np.median(r)) for n, r in runs.items()}
    if distributed.is_main():
        print('{} at {}x{} on {} x {} ({} threads), median of {} x {} '
              'steps'.format(args.model, *size, distributed.world_size(),
                             device, torch.get_num_threads(), args.repeats,
                             args.steps))
        base = rates[args.batch_sizes[0]]
        print('batch  img/s  ratio to batch {}'.format(args.batch_sizes[0]))
        for n, rate in rates.items():
            print('{:5d}  {:5.2f}  {:.2f}'.format(n, rate, rate / base))
    distributed.shutdown()


if __name__ == '__main__':
    main()
