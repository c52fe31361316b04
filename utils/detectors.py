"""The detector train.py trains: built from its options, or rebuilt from the
checkpoint a run starts from (``--load-path``, ``--resume``)."""
from model import (FasterRCNNFPNMobileNetV3Large, FasterRCNNFPNResNet50,
                   FasterRCNNFPNResNet101, FasterRCNNResNet50,
                   FasterRCNNResNet101, FasterRCNNToy, FasterRCNNVGG16)
from model.build import checkpoint_record
from model.roi_head import roi_pooler
from model.utils.checkpoint import model_state_dict, read_checkpoint
from trainer import check_resumable
from utils.config import UsageError

BACKBONES = {
    'vgg16': FasterRCNNVGG16,
    'resnet50': FasterRCNNResNet50,
    'resnet101': FasterRCNNResNet101,
    'toy': FasterRCNNToy,
    'resnet50_fpn': FasterRCNNFPNResNet50,
    'resnet101_fpn': FasterRCNNFPNResNet101,
    'mobilenet_v3_large_fpn': FasterRCNNFPNMobileNetV3Large,
}

# Options that describe the detector; with --load-path or --resume the
# checkpoint's detector is used, and a conflicting option is a mistake.
PREPROCESSING = ('min_size', 'max_size', 'caffe_pretrain', 'resize')
MODEL_OPTIONS = ('backbone', 'roi_op', 'roi_sampling_ratio', 'roi_aligned',
                 'use_drop') + PREPROCESSING

# The head's class-dependent layers: class scores and class boxes.
CLASS_LAYERS = ('head.score.', 'head.cls_loc.')


def detector_arguments(config):
    """The detector class and constructor arguments train.py's options
    describe: the one mapping from options to a model.

    Args:
        config (dict): Options as ``opt._state_dict()`` gives them.

    Returns:
        (type, dict): a class of :data:`BACKBONES`, and its arguments
        without ``n_fg_class``.

    Raises:
        UsageError: for an unknown backbone, or weights that do not fit
            it (caffe weights or another backbone's for a ResNet).
    """
    backbone = config['backbone']
    if backbone not in BACKBONES:
        raise UsageError('--backbone must be one of {}, got {!r}'.format(
            ', '.join(BACKBONES), backbone))
    pretrained = config['pretrained_model']
    if pretrained in BACKBONES and pretrained not in (
            backbone, backbone.replace('_fpn', ''), 'vgg16'):
        raise UsageError(
            '--pretrained-model={} holds a {} backbone\'s weights, but the '
            'backbone is {!r}: give --backbone={}'.format(
                pretrained, pretrained, backbone, pretrained))
    if config['caffe_pretrain'] and backbone != 'vgg16':
        raise UsageError('--caffe-pretrain applies to the VGG16 backbone '
                         'only; --backbone={} starts from torchvision\'s '
                         'ImageNet weights'.format(backbone))
    if config['resize'] != 'skimage' and not backbone.endswith('_fpn'):
        raise UsageError("--resize={} applies to the FPN backbones; the "
                         "others resize as the original ('skimage')".format(
                             config['resize']))
    roi_op = config['roi_op']
    if roi_op == 'align':
        roi_op = dict(roi_op='align',
                      sampling_ratio=config['roi_sampling_ratio'],
                      aligned=config['roi_aligned'])
    arguments = dict(min_size=config['min_size'],
                     max_size=config['max_size'], roi_op=roi_op)
    # pretrained_model (default 'vgg16') names the backbone's own ImageNet
    # weights; the toy model has none.
    if backbone == 'vgg16':
        arguments.update(
            use_drop=config['use_drop'],
            caffe_pretrain=config['caffe_pretrain'],
            caffe_pretrain_path=config['caffe_pretrain_path'],
            pretrained_model=('caffe' if config['caffe_pretrain'] else
                              'vgg16' if pretrained else None))
    elif backbone != 'toy':
        arch = backbone.replace('_fpn', '')  # its ImageNet weights
        arguments['pretrained_model'] = arch if pretrained else None
    if backbone.endswith('_fpn'):
        arguments['resize'] = config['resize']
        if config['roi_op'] == 'pool':  # the default: FPN's own RoIAlign
            del arguments['roi_op']
    return BACKBONES[backbone], arguments


def build_from_options(config, n_fg_class):
    """The detector of train.py's options, with its starting weights."""
    cls, arguments = detector_arguments(config)
    try:
        return cls(n_fg_class=n_fg_class, **arguments)
    except ValueError as err:
        raise UsageError(str(err)) from None


def read_start(path, resume=False):
    """The checkpoint a run starts from (``--resume`` if ``resume``, else
    ``--load-path``) and the record of its detector.

    Raises:
        UsageError: if ``path`` is missing or not a checkpoint (with
            ``resume``: one a run can continue from).
    """
    try:
        checkpoint = read_checkpoint(path)
        if resume:
            check_resumable(checkpoint, path)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from None
    if 'model' not in checkpoint:
        raise UsageError(
            '{} is a bare state dict, without a record of which detector it '
            'is; give a checkpoint that train.py or '
            'model.utils.convert_torchvision wrote'.format(path))
    return checkpoint, checkpoint_record(checkpoint)


def check_given_options(config, given, record, preprocessing, path):
    """Raises UsageError if an option given on the command line describes
    another detector than the checkpoint's (``record``, whose input is
    prepared as ``preprocessing`` says)."""
    cls, arguments = detector_arguments(config)
    if 'backbone' in given and cls.__name__ != record['name']:
        raise UsageError(
            '--backbone={} differs from the detector in {} ({}): leave it '
            'out to start from that checkpoint'.format(
                config['backbone'], path, record['name']))
    theirs = dict(record['arguments'], **preprocessing)
    for option in sorted(given & set(MODEL_OPTIONS[1:])):
        key = 'roi_op' if option.startswith('roi_') else option
        if key not in theirs:
            continue
        mine = config[key] if key in PREPROCESSING else arguments.get(key)
        if key == 'roi_op':
            same = _roi_settings(mine) == _roi_settings(theirs[key])
        else:
            same = mine == theirs[key]
        if not same:
            raise UsageError(
                '--{}={} differs from the checkpoint {}, whose model has '
                '{}={!r}: leave it out to use the checkpoint\'s'.format(
                    option.replace('_', '-'), config[option], path, key,
                    theirs[key]))


def _roi_settings(roi_op):
    """A detector's ``roi_op`` argument as its pooler's settings."""
    return roi_pooler(roi_op or 'pool', 7, 1.).settings


def start_preprocessing(checkpoint, record):
    """How the checkpoint's detector prepares its input: its state dict's
    record, else its constructor arguments'."""
    saved = model_state_dict(checkpoint).get('_extra_state', {})
    arguments = record['arguments']
    return {key: saved.get(key, arguments.get(key, default)) for key, default
            in zip(PREPROCESSING, (600, 1000, False, 'skimage'))}


def checkpoint_classes(checkpoint):
    """The number of foreground classes a checkpoint's head predicts, and
    their names (None where it records none)."""
    n_fg_class = model_state_dict(checkpoint)['head.score.weight'].shape[0]
    return n_fg_class - 1, checkpoint.get('label_names')


def detects_classes(checkpoint, label_names):
    """Whether the checkpoint's head predicts the classes ``label_names``
    (their number, and their names where it records them)."""
    n_theirs, theirs = checkpoint_classes(checkpoint)
    return n_theirs == len(label_names) and (
        theirs is None or list(theirs) == list(label_names))


def load_weights(faster_rcnn, checkpoint, label_names):
    """Loads a checkpoint's weights to start training on other data.

    When the checkpoint's classes are not the data's, the head's
    class-dependent layers (class scores and class boxes) keep their fresh
    initialisation: every other layer is the checkpoint's.

    Returns:
        str or None: one line saying which layers were reset and why.
    """
    state = model_state_dict(checkpoint)
    if detects_classes(checkpoint, label_names):
        faster_rcnn.load_state_dict(state)
        return None
    n_theirs, theirs = checkpoint_classes(checkpoint)
    own = faster_rcnn.state_dict()
    reset = [k for k in own if k.startswith(CLASS_LAYERS)]
    faster_rcnn.load_state_dict(dict(state, **{k: own[k] for k in reset}))
    return ('reset {} (class scores and class boxes) to a fresh '
            'initialisation: the checkpoint\'s {} classes{} are not the '
            "data's {} ({})".format(
                ', '.join(sorted({k.rsplit('.', 1)[0] for k in reset})),
                n_theirs, _names(theirs), len(label_names),
                _names(label_names)[2:-1]))


def _names(names, n=3):
    if names is None:
        return ''
    names = list(names)
    return ' ({}{})'.format(', '.join(names[:n]),
                            ', ...' if len(names) > n else '')
