"""Building the detector a training config describes, and rebuilding the
one a checkpoint holds (see :mod:`model.utils.checkpoint` for the kinds of
checkpoint).
"""
from model.faster_rcnn_resnet import FasterRCNNResNet50, FasterRCNNResNet101
from model.faster_rcnn_toy import FasterRCNNToy
from model.faster_rcnn_vgg16 import FasterRCNNVGG16
from model.utils.checkpoint import model_state_dict, read_checkpoint


BACKBONES = ('vgg16', 'resnet50', 'resnet101')
RESNETS = dict(resnet50=FasterRCNNResNet50, resnet101=FasterRCNNResNet101)


def build_model(config, n_fg_class, pretrained_model=None):
    """The detector a training config describes, with its preprocessing.

    Args:
        config (dict): Options as ``utils.config.Config._state_dict()``
            gives them (only the model's are read: ``data``, ``backbone``,
            ``min_size``, ``max_size``, ``caffe_pretrain``,
            ``caffe_pretrain_path``, ``use_drop``, ``roi_op``,
            ``roi_sampling_ratio``, ``roi_aligned``; a config that lacks
            one, as an older checkpoint's, gets its default).
        n_fg_class (int): The number of foreground classes (L).
        pretrained_model ({'vgg16', 'caffe', 'resnet50', 'resnet101',
            None}): Starting weights: torchvision's ImageNet weights of the
            backbone ('vgg16', the config's default, stands for a ResNet
            backbone's own), caffe's VGG16, or None (random init) when a
            checkpoint brings them.

    Returns:
        model.faster_rcnn.FasterRCNN

    Raises:
        ValueError: for an unknown backbone or RoI op, or a choice that does
            not fit the backbone (caffe weights for a ResNet; a ResNet for
            the toy preset, which has its own small extractor).
    """
    backbone = config.get('backbone', 'vgg16')
    if backbone not in BACKBONES:
        raise ValueError('backbone must be one of {}, got {!r}'.format(
            ', '.join(BACKBONES), backbone))
    roi = dict(roi_op=config.get('roi_op', 'pool'),
               sampling_ratio=config.get('roi_sampling_ratio', 0),
               aligned=config.get('roi_aligned', True))
    if config.get('data') == 'toy':
        if backbone != 'vgg16':
            raise ValueError(
                "backbone {!r} does not apply to data='toy': the toy model "
                'has its own small extractor'.format(backbone))
        return FasterRCNNToy(n_fg_class=n_fg_class,
                             min_size=config['min_size'],
                             max_size=config['max_size'], **roi)
    if backbone in RESNETS:
        if config.get('caffe_pretrain') or pretrained_model == 'caffe':
            raise ValueError(
                'caffe_pretrain applies to the VGG16 backbone only; a '
                '{} starts from torchvision\'s ImageNet weights'.format(
                    backbone))
        if pretrained_model == 'vgg16':  # the config's default
            pretrained_model = backbone
        return RESNETS[backbone](
            n_fg_class=n_fg_class, pretrained_model=pretrained_model,
            min_size=config.get('min_size', 600),
            max_size=config.get('max_size', 1000), **roi)
    if pretrained_model in RESNETS:
        raise ValueError(
            'pretrained_model {!r} holds a ResNet\'s weights, but the '
            "backbone is 'vgg16': choose backbone={!r}".format(
                pretrained_model, pretrained_model))
    return FasterRCNNVGG16(
        n_fg_class=n_fg_class, pretrained_model=pretrained_model,
        caffe_pretrain_path=config.get('caffe_pretrain_path',
                                       'checkpoints/vgg16_caffe.pth'),
        use_drop=config.get('use_drop', False),
        min_size=config.get('min_size', 600),
        max_size=config.get('max_size', 1000),
        caffe_pretrain=config.get('caffe_pretrain', False), **roi)


def load_detector(path, label_names=None, device='cpu'):
    """Rebuilds the trained detector a checkpoint holds, ready to predict.

    Works on checkpoints written by ``train.py`` (any of its models) and by
    the original design's trainer. For a bare state dict, build the model
    yourself and pass the path as ``pretrained_model`` (see README).

    Args:
        path (str): The checkpoint.
        label_names (sequence of str): The class names; default: those the
            checkpoint records (None if it records none, as the original's
            do: then pictures show label numbers).
        device (str or torch.device): Where the model goes.

    Returns:
        (FasterRCNN, tuple of str or None, dict): the model in eval mode,
        the class names, and the config it was trained with.
    """
    checkpoint = read_checkpoint(path)
    if 'model' not in checkpoint or 'config' not in checkpoint:
        raise ValueError(
            '{} is a bare state dict, without the config that says which '
            'detector it is: build the model (e.g. FasterRCNNVGG16('
            'pretrained_model={!r})) instead'.format(path, path))
    config = checkpoint['config']
    state = model_state_dict(checkpoint)
    if label_names is None:
        label_names = checkpoint.get('label_names')
    n_fg_class = (len(label_names) if label_names is not None
                  else state['head.score.weight'].shape[0] - 1)
    faster_rcnn = build_model(config, n_fg_class)
    faster_rcnn.load_state_dict(state)
    label_names = tuple(label_names) if label_names is not None else None
    return faster_rcnn.to(device).eval(), label_names, config
