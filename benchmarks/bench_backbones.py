"""Each backbone's size and CPU speed, from random init: parameters, seconds
per training step and per image predicted, peak memory.

    python benchmarks/bench_backbones.py [--backbones toy vgg16 ...]
        [--sizes 600x1000 256x256] [--steps 3] [--quick]
    python benchmarks/bench_backbones.py --converted [--steps 3] [--quick]

The backbones are train.py's ``--backbone`` choices, each built for 20
classes with ``pretrained_model=None``, with ``min_size`` and ``max_size``
set to each size in turn, and each frozen BatchNorm set to the mean and
variance of its input on a random image (see
``calibrate_frozen_batchnorms``). A training step is
``FasterRCNNTrainer.train_step`` (lr 1e-3) on one random image of that
size with three gt boxes, each step from that init (a trainer built
afresh, untimed); a prediction is ``detect`` on one raw image that
preprocesses to that size, in eval mode with the 'evaluate' preset. Each
figure is the median of ``--steps`` calls after one warm-up call. The
table also gives each process's peak resident memory (over all its
sizes) and the number of detections of the random-init model on that
image at each size (what the post-processing of a prediction had to do).

``--converted`` times instead the detectors converted from torchvision's
(``model.utils.convert_torchvision``, from torchvision's random init, as
offline) at their own settings on a 480x640 raw image, beside torchvision's
own model on the same image (its BatchNorms frozen, as torchvision builds
it for its published weights): seconds per image and their ratio.

Each model runs in a process of its own, with torch's default threads, so
that its peak resident memory is its own.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torchvision
from torchvision.ops import FrozenBatchNorm2d

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'benchmarks')]

from bench_batch import batch  # noqa: E402
from bench_data import median_time  # noqa: E402
from model import load_detector  # noqa: E402
from model.utils.convert_torchvision import (ARCHS,  # noqa: E402
                                             convert_torchvision)
from trainer import FasterRCNNTrainer  # noqa: E402
from utils.detectors import BACKBONES  # noqa: E402

SIZES = ('600x1000', '256x256')
CONVERTED_SIZE = (480, 640)


def peak_mib():
    """This process's peak resident memory (ru_maxrss is in KiB on
    Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def n_params(model, trainable=False):
    return sum(p.numel() for p in model.parameters()
               if p.requires_grad or not trainable)


def warm_median(call, steps):
    """The median seconds of ``steps`` calls after one warm-up call, and
    the warm-up call's result."""
    result = call()
    return median_time(call, steps), result


def build(name, size):
    """A trainer of backbone ``name`` for 20 classes, from the random init
    of seed 0, preprocessing to ``size``."""
    torch.manual_seed(0)
    np.random.seed(0)  # the numpy sampler's
    h, w = size
    model = BACKBONES[name](n_fg_class=20, pretrained_model=None,
                            min_size=min(h, w), max_size=max(h, w))
    calibrate_frozen_batchnorms(model, size)
    return FasterRCNNTrainer(model, lr=1e-3)


def calibrate_frozen_batchnorms(model, size):
    """Sets each frozen BatchNorm's mean and variance to those of its input
    on one random image, so that the activations keep about unit scale as
    ImageNet weights keep them. Left at random init, the frozen BatchNorms
    normalize nothing: a deep backbone's features blow up, its RPN finds no
    proposals, and the head, whose work grows with them, is barely timed."""
    def set_statistics(bn, inputs):
        x = inputs[0].float()
        bn.running_mean.copy_(x.mean((0, 2, 3)))
        bn.running_var.copy_(x.var((0, 2, 3)))
        hooks.pop(bn).remove()  # its first input only

    hooks = {bn: bn.register_forward_pre_hook(set_statistics)
             for bn in model.modules() if isinstance(bn, FrozenBatchNorm2d)}
    model.eval()
    raw = np.random.RandomState(1).randint(0, 256, (3, *size))
    model.detect([raw.astype(np.float32)])
    for hook in hooks.values():  # layers an empty detection never reached
        hook.remove()
    model.train()


def train_seconds(name, size, steps, imgs, bboxes, labels):
    """The median seconds of ``steps`` training steps after a warm-up one,
    each the first step of a trainer built afresh (untimed), so that no
    step's cost depends on what the steps before it learnt."""
    times = []
    for _ in range(steps + 1):
        trainer = build(name, size)
        start = time.perf_counter()
        trainer.train_step(imgs, bboxes, labels, 1.)
        times.append(time.perf_counter() - start)
        del trainer  # before the next is built
    return statistics.median(times[1:])


def measure_backbone(name, size, steps):
    """Seconds per training step and per image predicted at ``size``."""
    rng = np.random.RandomState(0)
    imgs, bboxes, labels = batch(rng, 1, size)
    bboxes, labels = [bboxes[0][:3]], [labels[0][:3]]
    train = train_seconds(name, size, steps, imgs, bboxes, labels)
    model = build(name, size).faster_rcnn
    model.eval()
    model.use_preset('evaluate')
    raw = rng.randint(0, 256, (3, *size)).astype(np.float32)
    detect, detections = warm_median(lambda: model.detect([raw]), steps)
    return dict(params=n_params(model), trainable=n_params(model, True),
                train=train, detect=detect,
                n_det=len(detections[0]['labels']))


def freeze_batchnorms(model):
    """Replaces each BatchNorm2d by a FrozenBatchNorm2d of its statistics:
    torchvision builds its detectors so for published weights, and builds
    plain BatchNorms (a faster fused op) only without any."""
    for parent in list(model.modules()):
        for name, bn in parent.named_children():
            if isinstance(bn, torch.nn.BatchNorm2d):
                frozen = FrozenBatchNorm2d(bn.num_features, bn.eps)
                frozen.load_state_dict(bn.state_dict(), strict=False)
                setattr(parent, name, frozen)


def measure_converted(arch, steps):
    """Seconds per image of the converted detector and of torchvision's."""
    torch.manual_seed(0)
    theirs = getattr(torchvision.models.detection, arch)(
        weights=None, weights_backbone=None).eval()
    freeze_batchnorms(theirs)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, 'torchvision.pth')
        torch.save(theirs.state_dict(), src)
        ours = load_detector(convert_torchvision(
            arch, src, os.path.join(tmp, 'converted.pth')))[0]
    img = np.random.RandomState(0).randint(
        0, 256, (3, *CONVERTED_SIZE)).astype(np.float32)
    x = torch.from_numpy(img) / 255

    def torchvision_detect():
        with torch.no_grad():
            return theirs([x])
    seconds, detections = warm_median(lambda: ours.detect([img]), steps)
    their_seconds, their_detections = warm_median(torchvision_detect, steps)
    return dict(ours=seconds, theirs=their_seconds,
                n_ours=len(detections[0]['labels']),
                n_theirs=len(their_detections[0]['labels']))


def child(args):
    """One model in this process; prints its figures as JSON."""
    if args.converted:
        out = measure_converted(args.child, args.steps)
    else:
        out = {size: measure_backbone(args.child, parse_size(size),
                                      args.steps) for size in args.sizes}
    out['peak_mib'] = peak_mib()
    print(json.dumps(out))


def run_child(args, name):
    command = [sys.executable, os.path.abspath(__file__), '--child', name,
               '--steps', str(args.steps), '--sizes', *args.sizes]
    if args.converted:
        command.append('--converted')
    print('measuring', name, file=sys.stderr, flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        sys.exit('{} failed:\n{}'.format(name, result.stderr))
    return json.loads(result.stdout.strip().splitlines()[-1])


def parse_size(text):
    h, w = text.split('x')
    return int(h), int(w)


def print_backbones(args):
    header = (['backbone', 'params', 'trainable'] +
              ['s/step ' + s for s in args.sizes] +
              ['s/img ' + s for s in args.sizes] +
              ['peak RSS MiB', 'detections'])
    rows = []
    for name in args.backbones:
        out = run_child(args, name)
        first = out[args.sizes[0]]
        rows.append([name, '{:.2f}M'.format(first['params'] / 1e6),
                     '{:.2f}M'.format(first['trainable'] / 1e6)] +
                    ['{:.3f}'.format(out[s]['train']) for s in args.sizes] +
                    ['{:.3f}'.format(out[s]['detect']) for s in args.sizes] +
                    ['{:.0f}'.format(out['peak_mib']),
                     ', '.join(str(out[s]['n_det']) for s in args.sizes)])
    print('CPU, {} threads, median of {} after one warm-up; 20 classes, '
          'random init'.format(torch.get_num_threads(), args.steps))
    print_table(header, rows)


def print_converted(args):
    header = ['arch', 's/img converted', 's/img torchvision', 'ratio',
              'detections', 'peak RSS MiB']
    rows = []
    for arch in ARCHS:
        out = run_child(args, arch)
        rows.append([arch, '{:.3f}'.format(out['ours']),
                     '{:.3f}'.format(out['theirs']),
                     '{:.2f}x'.format(out['ours'] / out['theirs']),
                     '{} / {}'.format(out['n_ours'], out['n_theirs']),
                     '{:.0f}'.format(out['peak_mib'])])
    print('Converted torchvision detectors at their own settings, a {}x{} '
          'raw image; CPU, {} threads, median of {} after one warm-up; '
          'random init'.format(*CONVERTED_SIZE, torch.get_num_threads(),
                               args.steps))
    print_table(header, rows)


def print_table(header, rows):
    print('| ' + ' | '.join(header) + ' |')
    print('| --- |' + ' ---: |' * (len(header) - 1))
    for row in rows:
        print('| ' + ' | '.join(row) + ' |')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--backbones', nargs='+', choices=list(BACKBONES),
                        default=list(BACKBONES))
    parser.add_argument('--sizes', nargs='+', default=list(SIZES),
                        help='HxW input sizes')
    parser.add_argument('--steps', type=int, default=3,
                        help='timed calls per figure (after one warm-up)')
    parser.add_argument('--quick', action='store_true',
                        help='a smoke test: --steps 1, 256x256 only')
    parser.add_argument('--converted', action='store_true',
                        help="time the detectors converted from "
                             "torchvision's instead")
    parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    for size in args.sizes:
        try:
            parse_size(size)
        except ValueError:
            parser.error('--sizes takes HxW sizes, got {!r}'.format(size))
    if args.quick:
        args.steps, args.sizes = 1, ['256x256']
    if args.child:
        return child(args)
    if args.converted:
        print_converted(args)
    else:
        print_backbones(args)


if __name__ == '__main__':
    main()
