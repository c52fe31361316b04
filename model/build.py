"""Building the detector a training config describes, and rebuilding the
one a checkpoint holds (see :mod:`model.utils.checkpoint` for the kinds of
checkpoint).
"""
from model.faster_rcnn_toy import FasterRCNNToy
from model.faster_rcnn_vgg16 import FasterRCNNVGG16
from model.utils.checkpoint import model_state_dict, read_checkpoint


def build_model(config, n_fg_class, pretrained_model=None):
    """The detector a training config describes, with its preprocessing.

    Args:
        config (dict): Options as ``utils.config.Config._state_dict()``
            gives them (only the model's are read: ``data``, ``min_size``,
            ``max_size``, ``caffe_pretrain``, ``caffe_pretrain_path``,
            ``use_drop``).
        n_fg_class (int): The number of foreground classes (L).
        pretrained_model ({'vgg16', 'caffe', None}): Starting weights of a
            VGG16 model; None (random init) when a checkpoint brings them.

    Returns:
        model.faster_rcnn.FasterRCNN
    """
    if config.get('data') == 'toy':
        return FasterRCNNToy(n_fg_class=n_fg_class,
                             min_size=config['min_size'],
                             max_size=config['max_size'])
    return FasterRCNNVGG16(
        n_fg_class=n_fg_class, pretrained_model=pretrained_model,
        caffe_pretrain_path=config.get('caffe_pretrain_path',
                                       'checkpoints/vgg16_caffe.pth'),
        use_drop=config.get('use_drop', False),
        min_size=config.get('min_size', 600),
        max_size=config.get('max_size', 1000),
        caffe_pretrain=config.get('caffe_pretrain', False))


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
