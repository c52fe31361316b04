"""torchvision's COCO-trained Faster R-CNNs as this library's checkpoints.

::

    python -m model.utils.convert_torchvision --arch=fasterrcnn_resnet50_fpn \\
        --src=fasterrcnn_resnet50_fpn_coco-258fb6c6.pth --dst=coco_r50.pth

The checkpoint holds the FPN detector of the architecture
(:mod:`model.faster_rcnn_fpn`) with torchvision's weights and settings:
its preprocessing (values in [0, 1] normalized by ImageNet's mean and std,
the shorter side to 800 and the longer at most 1333 by bilinear
interpolation, padded to a multiple of 32), its RPN's numbers, and its
post-processing as the 'evaluate' preset (score above 0.05, NMS 0.5 per
class, at most 100 detections); and COCO's 80 class names with their
category ids (1 to 90, with COCO's gaps). :func:`model.load_detector`
rebuilds it, and its ``detect`` gives torchvision's detections.

torchvision predicts 91 classes, the 10 ids COCO leaves unused among them;
the converted head keeps background and the 80 used ones (their scores are
a softmax over those: the unused ones, never trained as positives, take a
negligible share of it).

torchvision's boxes and offsets are ``(x, y)``-ordered, this library's
``(y, x)``: the RPN's and the head's box layers are reordered.
"""
import os
import re
import sys

import torch
from torchvision.models.detection import (
    FasterRCNN_MobileNet_V3_Large_320_FPN_Weights,
    FasterRCNN_MobileNet_V3_Large_FPN_Weights,
    FasterRCNN_ResNet50_FPN_Weights)

from model.build import build_detector, detector_record
from model.fpn import LOC_CLIP
from model.utils.checkpoint import (WeightsNotFound, read_checkpoint,
                                    torchvision_state_dict)
from model.utils.command_line import ArgumentParser, UsageError

# torchvision's post-processing: the 'evaluate' preset (and the pictures'
# threshold for 'visualize').
TORCHVISION_PRESETS = {
    'evaluate': dict(nms_thresh=0.5, score_thresh=0.05,
                     detections_per_image=100),
    'visualize': dict(nms_thresh=0.5, score_thresh=0.7,
                      detections_per_image=100),
}
TORCHVISION_SETTINGS = dict(
    min_size=800, max_size=1333, resize='bilinear', size_divisible=32,
    presets=TORCHVISION_PRESETS, suppression='batched', min_det_size=1e-2,
    loc_clip=LOC_CLIP)

# Each architecture: torchvision's weights, this library's detector, and
# the settings that differ from TORCHVISION_SETTINGS.
ARCHS = {
    'fasterrcnn_resnet50_fpn': (
        FasterRCNN_ResNet50_FPN_Weights.COCO_V1, 'FasterRCNNFPNResNet50',
        {}),
    'fasterrcnn_mobilenet_v3_large_fpn': (
        FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
        'FasterRCNNFPNMobileNetV3Large',
        dict(rpn_params=dict(score_thresh=0.05))),
    'fasterrcnn_mobilenet_v3_large_320_fpn': (
        FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1,
        'FasterRCNNFPNMobileNetV3Large',
        dict(min_size=320, max_size=640, rpn_params=dict(
            score_thresh=0.05, n_test_pre_nms=150, n_test_post_nms=150))),
}

# torchvision's names -> this library's (torchvision's older names of the
# FPN and RPN convolutions, without the inner '.0', too).
KEYS = [
    (r'backbone\.body\.(.*)', r'extractor.body.\1'),
    (r'backbone\.fpn\.inner_blocks\.(\d+)\.(?:0\.)?(weight|bias)',
     r'extractor.lateral.\1.\2'),
    (r'backbone\.fpn\.layer_blocks\.(\d+)\.(?:0\.)?(weight|bias)',
     r'extractor.output.\1.\2'),
    (r'rpn\.head\.conv\.(?:0\.0\.)?(weight|bias)', r'rpn.conv.\1'),
    (r'rpn\.head\.cls_logits\.(.*)', r'rpn.score.\1'),
    (r'rpn\.head\.bbox_pred\.(.*)', r'rpn.loc.\1'),
    (r'roi_heads\.box_head\.(fc6|fc7)\.(.*)', r'head.classifier.\1.\2'),
    (r'roi_heads\.box_predictor\.cls_score\.(.*)', r'head.score.\1'),
    (r'roi_heads\.box_predictor\.bbox_pred\.(.*)', r'head.cls_loc.\1'),
]


def coco_categories(weights=FasterRCNN_ResNet50_FPN_Weights.COCO_V1):
    """COCO's 80 class names and their category ids (1 to 90, with gaps),
    from torchvision's list of its 91 outputs ('N/A' at the unused ids)."""
    names = weights.meta['categories']
    ids = [i for i, name in enumerate(names)
           if i > 0 and name != 'N/A']
    return [names[i] for i in ids], ids


def convert(state_dict, arch):
    """torchvision's state dict of ``arch`` as a checkpoint of this
    library's.

    Args:
        state_dict (dict): e.g. ``fasterrcnn_resnet50_fpn(...).state_dict()``
            or the published file's contents.
        arch (str): One of :data:`ARCHS`.

    Returns:
        dict: ``{'model', 'detector', 'label_names', 'category_ids'}``, as
        ``train.py`` writes them (without a training config).

    Raises:
        ValueError: naming ``arch`` and the first key that does not fit.
    """
    weights, name, settings = ARCHS[arch]
    label_names, category_ids = coco_categories(weights)
    arguments = dict(TORCHVISION_SETTINGS, **settings)
    detector = build_detector(dict(name=name, arguments=arguments),
                              n_fg_class=len(label_names))
    own = detector.state_dict()
    classes = [0] + category_ids  # the head's rows kept: background first
    state = {'_extra_state': own['_extra_state']}
    for key, value in state_dict.items():
        if key.endswith('num_batches_tracked'):
            continue
        ours = _our_key(key)
        if ours is None or ours not in own:
            raise ValueError(_misfit(arch, key, 'has no place in it'))
        if ours.startswith('rpn.loc.'):
            value = _yx_rows(value, len(value) // 4)
        elif ours.startswith('head.score.'):
            value = value[classes] if len(value) == 91 else value
        elif ours.startswith('head.cls_loc.'):
            value = _yx_rows(value.view(-1, 4, *value.shape[1:])[classes]
                             .flatten(0, 1), len(classes)) \
                if len(value) == 91 * 4 else value
        if value.shape != own[ours].shape:
            raise ValueError(_misfit(arch, key, 'has shape {}, not {}'.format(
                tuple(value.shape), tuple(own[ours].shape))))
        state[ours] = value
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(
            'the state dict does not fit --arch={}: it lacks {} (and {} more '
            'of its {} tensors)'.format(arch, missing[0], len(missing) - 1,
                                        len(own)))
    detector.load_state_dict(state)
    return dict(model=detector.state_dict(),
                detector=detector_record(detector), label_names=label_names,
                category_ids=category_ids, config={})


def _our_key(key):
    for pattern, replacement in KEYS:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


def _yx_rows(value, n):
    """Rows of n boxes' offsets (dx, dy, dw, dh) as (dy, dx, dh, dw)."""
    order = torch.tensor([1, 0, 3, 2]) + 4 * torch.arange(n)[:, None]
    return value[order.flatten()]


def _misfit(arch, key, what):
    return ('the state dict does not fit --arch={}: its key {} {}'.format(
        arch, key, what))


def convert_torchvision(arch, src=None, dst=None):
    """Converts torchvision's weights of ``arch`` (the file ``src``, or
    the published weights from torchvision's cache, downloaded when
    online) and writes the checkpoint ``dst``.

    Returns:
        str: ``dst``.

    Raises:
        UsageError: for an unknown ``arch``, a missing or unreadable
            ``src``, or weights of another architecture.
        WeightsNotFound: offline, with no published file in the cache.
    """
    if arch not in ARCHS:
        raise UsageError('--arch={} is not one of {}'.format(
            arch, ', '.join(ARCHS)))
    if dst is None:
        dst = arch + '.pth'
    try:
        if src is None:
            state_dict = torchvision_state_dict(
                ARCHS[arch][0], "COCO-trained " + arch)
        else:
            state_dict = read_checkpoint(src)
        checkpoint = convert(state_dict, arch)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError('{}{}'.format(
            '' if src is None or str(err).startswith(
                ('checkpoint', src)) else src + ': ', err)) from None
    out_dir = os.path.dirname(dst)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    torch.save(checkpoint, dst)
    return dst


def main(argv=None):
    parser = ArgumentParser(
        prog='python -m model.utils.convert_torchvision',
        description="Convert torchvision's COCO-trained Faster R-CNN to "
        'this library\'s checkpoint (load_detector, predict.py, train.py '
        '--load-path read it).')
    parser.add_argument('--arch', required=True,
                        help='one of ' + ', '.join(ARCHS))
    parser.add_argument('--src', default=None,
                        help="torchvision's state dict of that architecture "
                        "(default: the published weights, from torchvision's "
                        'cache or downloaded)')
    parser.add_argument('--dst', default=None,
                        help='the checkpoint to write (default: ARCH.pth)')
    with parser.one_line_errors():
        args = parser.parse_args(argv)
        try:
            dst = convert_torchvision(args.arch, args.src, args.dst)
        except WeightsNotFound as err:
            raise UsageError(err.advice('give it with --src')) from None
    print('wrote {}'.format(dst))


if __name__ == '__main__':
    main(sys.argv[1:])
