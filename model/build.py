"""Rebuilding the detector a checkpoint holds, from the constructor
arguments it records (see :mod:`model.utils.checkpoint` for the kinds of
checkpoint)."""
from model.faster_rcnn import PREPROCESSING
from model.faster_rcnn_fpn import (FasterRCNNFPNMobileNetV3Large,
                                   FasterRCNNFPNResNet50,
                                   FasterRCNNFPNResNet101)
from model.faster_rcnn_resnet import FasterRCNNResNet50, FasterRCNNResNet101
from model.faster_rcnn_toy import FasterRCNNToy
from model.faster_rcnn_vgg16 import FasterRCNNVGG16
from model.utils.checkpoint import model_state_dict, read_checkpoint

DETECTORS = {cls.__name__: cls for cls in (
    FasterRCNNVGG16, FasterRCNNResNet50, FasterRCNNResNet101, FasterRCNNToy,
    FasterRCNNFPNResNet50, FasterRCNNFPNResNet101,
    FasterRCNNFPNMobileNetV3Large)}


def detector_record(faster_rcnn):
    """What a checkpoint records to rebuild ``faster_rcnn``: its class name
    and constructor arguments (with the preprocessing it has now), or None
    for a detector composed by hand."""
    arguments = getattr(faster_rcnn, 'arguments', None)
    if arguments is None or type(faster_rcnn).__name__ not in DETECTORS:
        return None
    arguments = dict(arguments)
    for key in arguments.keys() & set(PREPROCESSING):
        arguments[key] = getattr(faster_rcnn, key)
    return dict(name=type(faster_rcnn).__name__, arguments=arguments)


def build_detector(record, n_fg_class=None):
    """A detector with random weights from :func:`detector_record`'s
    record, for ``n_fg_class`` classes if given (else the record's)."""
    arguments = dict(record['arguments'])
    if n_fg_class is not None:
        arguments['n_fg_class'] = n_fg_class
    return DETECTORS[record['name']](pretrained_model=None, **arguments)


def load_detector(path, label_names=None, device='cpu'):
    """Rebuilds the trained detector a checkpoint holds, ready to predict.

    Works on checkpoints written by ``train.py`` (any of its models, this
    version's or an older one's), by the original design's trainer, and by
    ``model.utils.convert_torchvision``. For a bare state dict, build the
    model yourself and pass the path as ``pretrained_model`` (see README).

    Args:
        path (str): The checkpoint.
        label_names (sequence of str): The class names; default: those the
            checkpoint records (None if it records none, as the original's
            do: then pictures show label numbers).
        device (str or torch.device): Where the model goes.

    Returns:
        (FasterRCNN, tuple of str or None, dict): the model in eval mode,
        the class names, and what else the checkpoint records:
        ``category_ids`` (the COCO category id of each label, or None) and
        ``config`` (the options it was trained with, or {}).
    """
    checkpoint = read_checkpoint(path)
    if 'model' not in checkpoint:
        raise ValueError(
            '{} is a bare state dict, without a record of which detector it '
            'is: build the model (e.g. FasterRCNNVGG16(pretrained_model={!r}'
            ')) instead'.format(path, path))
    state = model_state_dict(checkpoint)
    record = checkpoint_record(checkpoint)
    if label_names is None:
        label_names = checkpoint.get('label_names')
    faster_rcnn = build_detector(
        record, len(label_names) if label_names is not None else None)
    faster_rcnn.load_state_dict(state)
    info = dict(category_ids=checkpoint.get('category_ids'),
                config=checkpoint.get('config') or {})
    label_names = tuple(label_names) if label_names is not None else None
    return faster_rcnn.to(device).eval(), label_names, info


def checkpoint_record(checkpoint):
    """The record of the detector a checkpoint (one that has a 'model')
    holds: the one it stores, or one read from an older checkpoint's
    tensors."""
    return (checkpoint.get('detector')
            or _legacy_record(model_state_dict(checkpoint)))


def _legacy_record(state):
    """The record of a checkpoint written before checkpoints recorded their
    detector, read from its tensors' names and shapes: VGG16 (the
    original's and this library's), the toy model, or a C4 ResNet."""
    if not {'head.score.weight', 'extractor.0.weight'} <= state.keys():
        raise ValueError(
            'the checkpoint records no detector of this library (a '
            'FasterRCNN composed of other parts?): build that model and '
            'load the checkpoint\'s "model" state dict into it')
    extra = state.get('_extra_state', {})
    arguments = dict(n_fg_class=state['head.score.weight'].shape[0] - 1)
    if extra.get('roi_op', 'pool') != 'pool':
        arguments['roi_op'] = {k: extra[k] for k in (
            'roi_op', 'sampling_ratio', 'aligned') if k in extra}
    first = state['extractor.0.weight'].shape
    if first[2] == 5:
        return dict(name='FasterRCNNToy', arguments=dict(
            arguments, width=first[0],
            n_feature=state['head.classifier.0.weight'].shape[0]))
    if first[2] == 7:
        blocks = {key.split('.')[2] for key in state
                  if key.startswith('extractor.6.')}
        return dict(name='FasterRCNNResNet101' if len(blocks) > 6
                    else 'FasterRCNNResNet50', arguments=arguments)
    return dict(name='FasterRCNNVGG16', arguments=arguments)
