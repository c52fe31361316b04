"""Checkpoints: reading them, and rebuilding the detector one holds.

Three kinds of file hold a detector's weights:

* a checkpoint written by ``train.py`` (:meth:`trainer.FasterRCNNTrainer.save`):
  ``{'model': state_dict, 'config': {...}, 'label_names': [...], ...}``, its
  preprocessing inside the state dict;
* a checkpoint written by the original design's trainer: the same
  ``'model'`` and ``'config'`` keys, but the preprocessing (``min_size``,
  ``max_size``, ``caffe_pretrain``) only in ``'config'``;
* a bare state dict (the original's published chainer-converted weights
  are one): weights only; the model keeps the settings it was built with.
"""
import os

import torch

# The settings of a config that say how the model's input was preprocessed.
PREPROCESSING_KEYS = ('min_size', 'max_size', 'caffe_pretrain')


class WeightsNotFound(RuntimeError):
    """Starting weights neither on disk nor downloadable.

    Attributes:
        name (str): What they are, e.g. 'ImageNet VGG16'.
        path (str): Where the file is looked for: put it there.
        missing (str): Why it is not there, for a command line to say,
            e.g. 'and could not be downloaded'.
    """

    def __init__(self, name, path, reason,
                 missing='and could not be downloaded'):
        self.name, self.path, self.missing = name, path, missing
        super().__init__(
            '{} weights are not at {} ({}): put the file there, or start '
            'from random init (pretrained_model=None)'.format(name, path,
                                                              reason))

    def advice(self, otherwise):
        """The one line a command prints: where to put the file, or what
        else to do (``otherwise``, e.g. 'give it with --src')."""
        return '{} weights are not on this machine {}: put the file {} in ' \
            '{}, or {}'.format(self.name, self.missing,
                               os.path.basename(self.path),
                               os.path.dirname(self.path) or '.', otherwise)


def torchvision_state_dict(weights, name):
    """torchvision's pretrained weights, from its cache or downloaded.

    The cache is ``<torch.hub.get_dir()>/checkpoints/<file of the URL>``,
    where torchvision itself keeps them (``TORCH_HOME`` moves it).

    Args:
        weights (torchvision.models.WeightsEnum): e.g.
            ``VGG16_Weights.IMAGENET1K_V1``.
        name (str): What to call them in the error, e.g. 'ImageNet VGG16'.

    Raises:
        WeightsNotFound: if the file is not cached and cannot be downloaded.
    """
    path = os.path.join(torch.hub.get_dir(), 'checkpoints',
                        os.path.basename(weights.url))
    if os.path.exists(path):
        return torch.load(path, map_location='cpu', weights_only=True)
    try:
        return weights.get_state_dict(progress=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        raise WeightsNotFound("torchvision's " + name, path,
                              'and downloading failed: {}'.format(
                                  err)) from None


def read_checkpoint(path):
    """Loads a checkpoint or state dict onto the CPU.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` holds no dict of weights.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError('checkpoint {} does not exist'.format(path))
    try:
        # Never weights_only=False: unpickling arbitrary objects runs code.
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:
        raise ValueError('{} is not a checkpoint: {}'.format(path, (
            'it holds Python objects besides weights, which this library '
            'does not load (save a state_dict instead)'
            if 'Unsupported global' in str(err) else
            'torch.load cannot read it (expected a file torch.save writes, '
            "as train.py's checkpoints)"))) from None
    if not isinstance(state, dict):
        raise ValueError('checkpoint {} holds a {}, not the dict of weights '
                         'that torch.save(model.state_dict()) or train.py '
                         'writes'.format(path, type(state).__name__))
    return state


def model_state_dict(checkpoint):
    """The model's state dict in a checkpoint, with its preprocessing.

    Args:
        checkpoint (dict): What :func:`read_checkpoint` returns.

    Returns:
        dict: A state dict for :meth:`FasterRCNN.load_state_dict`. For an
        original design's checkpoint, its config's ``min_size``,
        ``max_size`` and ``caffe_pretrain`` become the model's
        preprocessing; a bare state dict comes back as it is.
    """
    if 'model' not in checkpoint:
        return checkpoint
    state = dict(checkpoint['model'])
    config = checkpoint.get('config') or {}
    if '_extra_state' not in state:
        settings = {k: config[k] for k in PREPROCESSING_KEYS if k in config}
        if settings:
            state['_extra_state'] = settings
    return state
