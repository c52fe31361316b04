"""Training and inference speed and peak memory: the original's way against
the fast settings, in one run, as ratios.

    python benchmarks/bench_speed.py                    # toy model, CPU, bf16
    python benchmarks/bench_speed.py --model vgg16 --device cuda --amp fp16

(a) the original's way: batch 1, float32, numpy's sampler, per-class
suppression; (b) the fast settings: ``--amp``, torch's sampler, one
batched_nms call, batch ``--batch`` (training and prediction). The toy
model runs on 256x256 images (the CPU default), VGG16 on 600x1000 and the
ResNet-50 FPN on 800x1333 (torchvision's size; both for a GPU), from
random weights, on random images with four gt boxes each. Each
setting runs in a process of its own (so that its peak memory is its own:
the CPU's peak resident set, or CUDA's peak allocation), ``--repeats``
times in turn, and the medians are reported. On CUDA it also counts the
host synchronisations of one training step (torch.cuda's sync debug mode).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'benchmarks')]

from bench_batch import SIZES, batch  # noqa: E402
from model import FasterRCNNFPNResNet50, FasterRCNNVGG16  # noqa: E402
from model.faster_rcnn_toy import FasterRCNNToy  # noqa: E402
from trainer import FasterRCNNTrainer  # noqa: E402
from utils.amp import autocast  # noqa: E402
from utils.cuda_syncs import cuda_syncs  # noqa: E402

SETTINGS = dict(
    original=dict(amp=None, sampler='numpy', suppression='per_class',
                  batch=1),
    fast=dict(amp=None, sampler='torch', suppression='batched', batch=None))
SIZES = dict(SIZES, resnet50_fpn=(800, 1333))


def build(model_name, setting, device):
    torch.manual_seed(0)
    if model_name == 'toy':
        model = FasterRCNNToy(n_fg_class=5)
    elif model_name == 'vgg16':
        model = FasterRCNNVGG16(n_fg_class=20, pretrained_model=None)
    else:
        model = FasterRCNNFPNResNet50(n_fg_class=20, pretrained_model=None,
                                      min_size=800, max_size=1333)
    model.suppression = setting['suppression']
    return FasterRCNNTrainer(model, sampler=setting['sampler'],
                             amp=setting['amp']).to(device)


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def device_batch(rng, n, size, device):
    """N random images on ``device``, their boxes and labels on the host,
    as train.py hands them to the trainer."""
    imgs, bboxes, labels = batch(rng, n, size)
    return imgs.to(device), bboxes, labels


def images_per_second(call, n, steps, device):
    """Images a second of ``call``, which handles n images: one warm-up
    call, then ``steps`` timed ones."""
    call()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        call()
    synchronize(device)
    return n * steps / (time.perf_counter() - start)


def train_rate(trainer, n, size, steps, device, rng):
    """Training images a second at batch size n."""
    def step():
        trainer.train_step(*device_batch(rng, n, size, device), 1.)
    return images_per_second(step, n, steps, device)


def syncs_per_step(trainer, n, size, device, rng):
    """Host synchronisations in one CUDA training step."""
    imgs, bboxes, labels = device_batch(rng, n, size, device)
    with cuda_syncs() as syncs:
        trainer.train_step(imgs, bboxes, labels, 1.)
    return len(syncs)


def predict_rate(model, n, size, steps, device, amp, rng):
    """Inference images a second, n preprocessed images a predict call."""
    h, w = size
    imgs = [rng.normal(size=(3, h, w)).astype(np.float32) for _ in range(n)]
    sizes = [size] * n

    def call():
        with autocast(device, amp):
            model.predict(imgs, sizes)
    return images_per_second(call, n, steps, device)


def child(args):
    """One setting in this process; prints its figures as JSON."""
    device = torch.device(args.device)
    setting = dict(SETTINGS[args.setting])
    if args.setting == 'fast':
        setting.update(amp=args.amp, batch=args.batch)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    trainer = build(args.model, setting, device)
    np.random.seed(0)
    rng = np.random.RandomState(0)
    size, n = SIZES[args.model], setting['batch']
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    out = dict(train=train_rate(trainer, n, size, args.steps, device, rng))
    if device.type == 'cuda':
        out['syncs'] = syncs_per_step(trainer, n, size, device, rng)
    out['predict'] = predict_rate(trainer.faster_rcnn, n, size, args.steps,
                                  device, setting['amp'], rng)
    if device.type == 'cuda':
        out['peak_mb'] = torch.cuda.max_memory_allocated() / 2 ** 20
    else:  # ru_maxrss is in KiB on Linux
        out['peak_mb'] = resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def run_child(args, setting):
    command = [sys.executable, os.path.abspath(__file__), '--setting',
               setting, '--model', args.model, '--device', args.device,
               '--amp', str(args.amp), '--batch', str(args.batch),
               '--steps', str(args.steps)]
    if args.threads:
        command += ['--threads', str(args.threads)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        sys.exit('the {} setting failed:\n{}'.format(setting, result.stderr))
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', choices=sorted(SIZES), default='toy')
    parser.add_argument('--device', default=None,
                        help='cpu or cuda (default: cuda when available)')
    parser.add_argument('--amp', default='bf16',
                        help="the fast setting's precision: bf16, fp16 or "
                             'None')
    parser.add_argument('--batch', type=int, default=4,
                        help="the fast setting's batch size")
    parser.add_argument('--steps', type=int, default=6)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--setting', choices=sorted(SETTINGS), default=None,
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.device = args.device or ('cuda' if torch.cuda.is_available()
                                  else 'cpu')
    args.amp = None if args.amp == 'None' else args.amp
    if args.setting:
        return child(args)

    runs = {name: [] for name in SETTINGS}
    for _ in range(args.repeats):
        for name in SETTINGS:
            runs[name].append(run_child(args, name))
    median = {name: {key: float(np.median([r[key] for r in rs]))
                     for key in rs[0]} for name, rs in runs.items()}
    a, b = median['original'], median['fast']
    print('{} at {}x{} on {}, median of {} runs of {} steps'.format(
        args.model, *SIZES[args.model], args.device, args.repeats,
        args.steps))
    print('(a) original: batch 1, fp32, numpy sampler, per-class nms')
    print('(b) fast: batch {}, {}, torch sampler, batched nms'.format(
        args.batch, args.amp or 'fp32'))
    print('{:<18}{:>10}{:>10}{:>8}'.format('', '(a)', '(b)', 'b/a'))
    for key, label in (('train', 'train img/s'), ('predict',
                                                  'predict img/s'),
                       ('peak_mb', 'peak memory MiB'), ('syncs',
                                                        'syncs per step')):
        if key in a:
            print('{:<18}{:>10.2f}{:>10.2f}{:>7.2f}x'.format(
                label, a[key], b[key], b[key] / a[key] if a[key] else
                float('nan')))


if __name__ == '__main__':
    main()
