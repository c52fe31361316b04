"""model/utils/checkpoint.py and model/build.py: checkpoints in every
format the original design wrote, read by the constructor
(``pretrained_model=path``), the trainer and the library's loader,
``load_detector``, which rebuilds the detector a checkpoint records. Files
are written by the tests in the original's format: its parameter names and
only its config fields. Nothing is downloaded."""
import os

import numpy as np
import pytest
import torch

from model import FasterRCNNToy, FasterRCNNVGG16, load_detector
from trainer import FasterRCNNTrainer


# The original design's Config fields (utils/config.py of
# chenyuntc/simple-faster-rcnn-pytorch), as its checkpoints hold them.
ORIGINAL_CONFIG = dict(
    voc_data_dir='/dataset/PASCAL2007/VOC2007/', min_size=600, max_size=1000,
    num_workers=8, test_num_workers=8, rpn_sigma=3., roi_sigma=1.,
    weight_decay=0.0005, lr_decay=0.1, lr=1e-3, env='faster-rcnn',
    port=8097, plot_every=40, data='voc', pretrained_model='vgg16',
    epoch=14, use_adam=False, use_chainer=False, use_drop=False,
    debug_file='/tmp/debugf', test_num=10000, load_path=None,
    caffe_pretrain=False, caffe_pretrain_path='checkpoints/vgg16_caffe.pth')


# The original FasterRCNNVGG16's parameter names.
VGG_CONV = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


ORIGINAL_KEYS = (
    ['extractor.%d.%s' % (i, p) for i in VGG_CONV for p in ('weight', 'bias')]
    + ['rpn.%s.%s' % (m, p) for m in ('conv1', 'score', 'loc')
       for p in ('weight', 'bias')]
    + ['head.classifier.%d.%s' % (i, p) for i in (0, 2)
       for p in ('weight', 'bias')]
    + ['head.%s.%s' % (m, p) for m in ('cls_loc', 'score')
       for p in ('weight', 'bias')])


def original_state_dict(model):
    """The model's weights under the original's names, without the
    preprocessing settings the original never saved."""
    state = {k: v for k, v in model.state_dict().items()
             if k != '_extra_state'}
    assert sorted(state) == sorted(ORIGINAL_KEYS)
    return state


@pytest.fixture(scope='module')
def original_checkpoint(tmp_path_factory):
    """A VGG16 checkpoint as the original trainer saved it after training
    from caffe weights at 480/800 px: {'model', 'config', 'other_info',
    'vis_info'} and no '_extra_state'."""
    torch.manual_seed(3)
    model = FasterRCNNVGG16(n_fg_class=20, pretrained_model=None)
    state = original_state_dict(model)
    config = dict(ORIGINAL_CONFIG, caffe_pretrain=True, min_size=480,
                  max_size=800)
    path = str(tmp_path_factory.mktemp('original') / 'fasterrcnn_0.71')
    torch.save(dict(model=state, config=config,
                    other_info=dict(best_map=0.71), vis_info={}), path)
    yield dict(path=path, state=state)
    os.remove(path)  # pytest keeps recent temporary folders: not 550 MB


def assert_weights(model, state):
    got = model.state_dict()
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(got[key], value), key


@pytest.mark.slow  # seconds, not minutes, but the quick suite leaves it out
def test_original_checkpoint_brings_its_preprocessing(original_checkpoint):
    # Three ways in: the constructor, the trainer, the library's loader.
    path = original_checkpoint['path']
    built = FasterRCNNVGG16(n_fg_class=20, pretrained_model=path)
    trainer = FasterRCNNTrainer(
        FasterRCNNVGG16(n_fg_class=20, pretrained_model=None))
    info = trainer.load(path)
    loaded, label_names, saved = load_detector(path)

    assert info == dict(best_map=0.71)
    assert label_names is None  # the original records none
    assert saved['config']['caffe_pretrain'] is True
    assert saved['category_ids'] is None
    for model in (built, trainer.faster_rcnn, loaded):
        assert model.caffe_pretrain is True
        assert (model.min_size, model.max_size) == (480, 800)
        assert_weights(model, original_checkpoint['state'])
    assert isinstance(loaded, FasterRCNNVGG16) and not loaded.training


@pytest.mark.slow  # seconds, not minutes, but the quick suite leaves it out
def test_predict_of_an_original_caffe_checkpoint_feeds_caffe_input(
        original_checkpoint, monkeypatch):
    import model.faster_rcnn as faster_rcnn_module
    seen = []
    real = faster_rcnn_module.preprocess

    def spy(img, *args):
        seen.append(args)
        return real(img, *args)

    monkeypatch.setattr(faster_rcnn_module, 'preprocess', spy)
    model, _, _ = load_detector(original_checkpoint['path'])
    model.predict([np.zeros((3, 40, 50), np.float32)], visualize=True)
    assert seen == [(480, 800, True, 'skimage')]


@pytest.mark.slow  # seconds, not minutes, but the quick suite leaves it out
def test_bare_state_dict_keeps_the_constructors_settings(
        original_checkpoint, tmp_path):
    # The original's published chainer-converted weights are a bare state
    # dict: the constructor says how they want their input.
    path = str(tmp_path / 'chainer_best_model_converted_to_pytorch.pth')
    torch.save(original_checkpoint['state'], path)
    caffe = FasterRCNNVGG16(n_fg_class=20, pretrained_model=path,
                            caffe_pretrain=True)
    default = FasterRCNNVGG16(n_fg_class=20, pretrained_model=path)
    assert caffe.caffe_pretrain is True and default.caffe_pretrain is False
    assert (caffe.min_size, caffe.max_size) == (600, 1000)
    assert_weights(caffe, original_checkpoint['state'])

    with pytest.raises(ValueError, match='bare state dict.*FasterRCNNVGG16'):
        load_detector(path)
    os.remove(path)


def test_load_detector_rebuilds_a_toy_checkpoint_with_its_class_names(
        tmp_path):
    torch.manual_seed(0)
    model = FasterRCNNToy(n_fg_class=3, min_size=128, max_size=200)
    config = dict(ORIGINAL_CONFIG, data='toy', min_size=128, max_size=200)
    path = FasterRCNNTrainer(model, config=config,
                             label_names=('a', 'b', 'c')).save(
        save_path=str(tmp_path / 'toy.pth'))
    loaded, label_names, _ = load_detector(path)
    assert isinstance(loaded, FasterRCNNToy)
    assert label_names == ('a', 'b', 'c')
    assert (loaded.min_size, loaded.max_size) == (128, 200)
    assert_weights(loaded, model.state_dict())
    # names given by the caller win
    assert load_detector(path, label_names=['x', 'y', 'z'])[1] == (
        'x', 'y', 'z')


def test_load_detector_names_a_missing_file(tmp_path):
    path = str(tmp_path / 'nothing.pth')
    with pytest.raises(FileNotFoundError, match='checkpoint .*nothing.pth'):
        load_detector(path)


@pytest.mark.parametrize('content', [b'\x80\x03\x99 random bytes',
                                     b'a text file\n', b''])
def test_a_file_torch_cannot_read_is_one_sentence(content, tmp_path):
    path = tmp_path / 'not.pth'
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        load_detector(str(path))
    assert str(info.value) == (
        '{} is not a checkpoint: torch.load cannot read it (expected a file '
        "torch.save writes, as train.py's checkpoints)".format(path))


class _Pickled:
    """An object torch.save pickles, which weights_only loading refuses."""


def test_a_checkpoint_of_python_objects_is_refused_without_running_them(
        tmp_path):
    path = tmp_path / 'objects.pth'
    torch.save({'model': {}, 'extra': _Pickled()}, str(path))
    with pytest.raises(ValueError) as info:
        load_detector(str(path))
    assert str(info.value) == (
        '{} is not a checkpoint: it holds Python objects besides weights, '
        'which this library does not load (save a state_dict instead)'
        .format(path))


def test_a_file_of_something_else_than_a_dict_is_named(tmp_path):
    path = tmp_path / 'tensor.pth'
    torch.save(torch.zeros(3), str(path))
    with pytest.raises(ValueError, match='holds a Tensor, not the dict'):
        load_detector(str(path))
