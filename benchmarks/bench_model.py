"""CPU medians of the model's parts on a 600x1000 input with 20 gt boxes.

    python benchmarks/bench_model.py [--repeats 5] [--threads 2]

Each creator is timed beside the original design's numpy code
(reference/original.py), run in the same process on the same inputs,
and reported as a ratio to it: these machines are noisy, ratios less so.
predict's suppression of 300 RoIs x 20 classes is timed both ways,
torchvision's batched_nms as a ratio to the per-class loop. The network
figures (VGG16 forward, a training forward + backward) have no such
baseline and are printed as they are.
"""
import argparse
import os
import sys
from functools import partial

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'benchmarks')]

from bench_data import median_time  # noqa: E402
from model import FasterRCNNVGG16  # noqa: E402
from model.utils.creator_tool import (AnchorTargetCreator,  # noqa: E402
                                      ProposalCreator, ProposalTargetCreator)
from model.utils.suppression import (batched_nms,  # noqa: E402
                                     candidates, per_class_nms)
from reference import original  # noqa: E402
from trainer import FasterRCNNTrainer  # noqa: E402

H, W, N_BOX, STRIDE = 600, 1000, 20, 16


def random_boxes(rng, n):
    y = rng.uniform(0, H - 100, n)
    x = rng.uniform(0, W - 100, n)
    h = rng.uniform(30, min(300, H), n)
    w = rng.uniform(30, min(400, W), n)
    return np.stack([y, x, np.minimum(y + h, H), np.minimum(x + w, W)],
                    axis=1).astype(np.float32)


class Parent(torch.nn.Module):
    """Stands in for the RPN: only its ``training`` flag is read."""


def creator_inputs(rng):
    anchor_base = original.generate_anchor_base()
    anchor = original._enumerate_shifted_anchor(anchor_base, STRIDE,
                                                H // STRIDE, W // STRIDE)
    n_anchor = len(anchor)
    loc = (rng.randn(n_anchor, 4) * 0.1).astype(np.float32)
    score = rng.rand(n_anchor).astype(np.float32)
    bbox = random_boxes(rng, N_BOX)
    label = rng.randint(0, 20, N_BOX).astype(np.int32)
    roi = random_boxes(rng, 2000)
    return dict(anchor=anchor, loc=loc, score=score, bbox=bbox, label=label,
                roi=roi)


def bench_creators(repeats):
    inputs = creator_inputs(np.random.RandomState(0))
    t = {k: torch.from_numpy(v) for k, v in inputs.items()}
    rows = []
    for mode in ('train', 'test'):
        # One parent per row: the creators read its mode at call time.
        parent = Parent().train(mode == 'train')
        ours = ProposalCreator(parent)
        theirs = original.ProposalCreator(parent)
        rows.append(('ProposalCreator ({})'.format(mode),
                     partial(ours, t['loc'], t['score'], t['anchor'], (H, W)),
                     partial(theirs, inputs['loc'], inputs['score'],
                             inputs['anchor'], (H, W))))
    rows.append(('AnchorTargetCreator',
                 partial(AnchorTargetCreator(), t['bbox'], t['anchor'],
                         (H, W)),
                 partial(original.AnchorTargetCreator(), inputs['bbox'],
                         inputs['anchor'], (H, W))))
    rows.append(('ProposalTargetCreator',
                 partial(ProposalTargetCreator(), t['roi'], t['bbox'],
                         t['label']),
                 partial(original.ProposalTargetCreator(), inputs['roi'],
                         inputs['bbox'], inputs['label'])))
    print('{:<28} {:>12} {:>14} {:>8}'.format(
        'creator (tensor in/out)', 'this, ms', 'original, ms', 'ratio'))
    for name, ours, theirs in rows:
        ours(), theirs()  # warm-up
        np.random.seed(0)
        t_ours = median_time(ours, repeats)
        np.random.seed(0)
        t_theirs = median_time(theirs, repeats)
        print('{:<28} {:>12.2f} {:>14.2f} {:>7.2f}x'.format(
            name, 1e3 * t_ours, 1e3 * t_theirs, t_ours / t_theirs))


def head_outputs(rng, n_roi=300, n_class=21):
    """What predict suppresses: each RoI near one of 10 objects, its box
    per class jittered, and a softmax over classes that favours one."""
    center = rng.uniform(100, 500, size=(10, 2))
    c = center[rng.randint(0, 10, n_roi)][:, None] \
        + rng.normal(0, 15, size=(n_roi, n_class, 2))
    hw = rng.uniform(40, 200, size=(n_roi, n_class, 2))
    cls_bbox = np.concatenate((c - hw / 2, c + hw / 2), axis=2).clip(0, 600)
    logit = rng.normal(0, 1, size=(n_roi, n_class))
    logit[np.arange(n_roi), rng.randint(0, n_class, n_roi)] += 4
    prob = np.exp(logit) / np.exp(logit).sum(axis=1, keepdims=True)
    return (torch.from_numpy(cls_bbox.reshape(n_roi, -1).astype(np.float32)),
            torch.from_numpy(prob.astype(np.float32)))


def bench_suppression(repeats):
    cls_bbox, prob = head_outputs(np.random.RandomState(0))
    n_class = prob.shape[1] - 1
    print('\n{:<28} {:>12} {:>14} {:>8}'.format(
        'suppression (300 x 20)', 'per-class, ms', 'batched, ms', 'ratio'))
    for preset, score_thresh in (('evaluate', 0.05), ('visualize', 0.7)):
        bbox, score, label = candidates(cls_bbox, prob, score_thresh)
        loop = partial(per_class_nms, bbox, score, label, n_class, 0.3)
        batched = partial(batched_nms, bbox, score, label, 0.3)
        same = torch.equal(loop().sort()[0], batched().sort()[0])
        t_loop = median_time(loop, repeats)
        t_batched = median_time(batched, repeats)
        print('{:<28} {:>12.2f} {:>14.2f} {:>7.2f}x{}'.format(
            '{} ({} candidates)'.format(preset, len(label)), 1e3 * t_loop,
            1e3 * t_batched, t_batched / t_loop,
            '' if same else '  (kept boxes differ: an IoU at rounding)'))


def bench_network(repeats):
    torch.manual_seed(0)
    faster_rcnn = FasterRCNNVGG16(pretrained_model=None)
    trainer = FasterRCNNTrainer(faster_rcnn)
    img = torch.randn(1, 3, H, W)
    bbox = torch.from_numpy(random_boxes(np.random.RandomState(1), N_BOX))
    label = torch.randint(0, 20, (1, N_BOX), dtype=torch.int32)

    def vgg16_forward():
        with torch.no_grad():
            faster_rcnn.extractor(img)

    def predict_forward():
        with torch.no_grad():
            faster_rcnn.eval()
            faster_rcnn(img)
            faster_rcnn.train()

    def train_forward_backward():
        trainer.optimizer.zero_grad()
        trainer(img, bbox[None], label, 1.).total_loss.backward()

    print('\n{:<44} {:>10}'.format('network (VGG16, 600x1000)', 'median, s'))
    for name, fn in (('VGG16 extractor forward', vgg16_forward),
                     ('FasterRCNN forward (test mode, 300 RoIs)',
                      predict_forward),
                     ('training forward + backward (trainer)',
                      train_forward_backward)):
        fn()  # warm-up
        print('{:<44} {:>10.3f}'.format(name, median_time(fn, repeats)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print('torch {}, {} threads, CPU\n'.format(torch.__version__,
                                               args.threads))
    bench_creators(max(args.repeats, 11))
    bench_suppression(max(args.repeats, 11))
    bench_network(args.repeats)


if __name__ == '__main__':
    main()
