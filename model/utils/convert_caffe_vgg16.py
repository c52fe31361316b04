"""Caffe-trained VGG16 weights in torchvision's layout, as ``--caffe-pretrain``
wants them.

    python -m model.utils.convert_caffe_vgg16 [--src=vgg16-00b39a1b.pth]
        [--dst=checkpoints/vgg16_caffe.pth]

The original design's caffe-pretrained runs are its best (VOC07 mAP
0.700-0.712). Their weights are the caffe VGG16 converted to a torch state
dict by Justin Johnson (``vgg16-00b39a1b.pth``): torchvision's keys, except
that the classifier's linear layers sit at indices 1 and 4 (after dropout)
where torchvision's sit at 0 and 3. This moves them, as the original's
``misc/convert_caffe_pretrain.py`` does. Such weights want caffe's input:
BGR, 0-255, minus the caffe mean (``caffe_pretrain=True``).
"""
import os

import torch

URL = 'https://s3-us-west-2.amazonaws.com/jcjohns-models/vgg16-00b39a1b.pth'
FILE_NAME = os.path.basename(URL)
# caffe converter's index -> torchvision's index of the classifier's layers
MOVES = {'classifier.1.': 'classifier.0.', 'classifier.4.': 'classifier.3.'}


def to_torchvision_layout(state_dict):
    """The state dict with the classifier's keys moved from 1 and 4 to 0
    and 3; the tensors are not copied."""
    moved = {}
    for key, value in state_dict.items():
        for old, new in MOVES.items():
            if key.startswith(old):
                key = new + key[len(old):]
        moved[key] = value
    return moved


def _cached_path():
    return os.path.join(torch.hub.get_dir(), 'checkpoints', FILE_NAME)


def _download():
    """The caffe VGG16 state dict, from torch's hub cache or downloaded."""
    try:
        return torch.hub.load_state_dict_from_url(URL, map_location='cpu',
                                                  progress=True)
    except OSError as err:  # URLError is an OSError
        raise RuntimeError(
            'could not download the caffe VGG16 weights ({}): fetch {} and '
            'run python -m model.utils.convert_caffe_vgg16 --src=<that file> '
            '(or put it at {})'.format(err, URL, _cached_path())) from None


def convert_caffe_vgg16(src=None, dst='checkpoints/vgg16_caffe.pth'):
    """Writes the caffe VGG16 weights in torchvision's layout to ``dst``.

    Args:
        src (str): ``vgg16-00b39a1b.pth`` on disk; None: from torch's hub
            cache, downloaded there when it is not yet (and when online).
        dst (str): Where to write; ``caffe_pretrain_path`` reads it.

    Returns:
        str: ``dst``.
    """
    if src is None:
        state_dict = _download()
    elif not os.path.isfile(src):
        raise FileNotFoundError('{} does not exist; expected the caffe VGG16 '
                                'weights {} ({})'.format(src, FILE_NAME, URL))
    else:
        state_dict = torch.load(src, map_location='cpu', weights_only=True)
    if not any(key.startswith('classifier.1.') for key in state_dict):
        raise ValueError('{} has no classifier.1.* weights: it is not the '
                         'caffe VGG16 {} (already converted?)'.format(
                             src or _cached_path(), FILE_NAME))
    out_dir = os.path.dirname(dst)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    torch.save(to_torchvision_layout(state_dict), dst)
    return dst


if __name__ == '__main__':
    import sys

    import fire
    try:
        fire.Fire(convert_caffe_vgg16)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print('convert_caffe_vgg16: error: {}'.format(err), file=sys.stderr)
        sys.exit(2)
