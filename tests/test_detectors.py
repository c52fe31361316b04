"""utils/detectors.py: the detector train.py's options build
(``build_from_options``): its backbone and RoI op, rebuilt by
``load_detector`` from the checkpoint; options that build nothing are
usage errors."""
import pytest
import torch

from conftest import options
from data.synthetic import TOY_LABEL_NAMES
from model import FasterRCNNToy, FasterRCNNVGG16, load_detector
from trainer import FasterRCNNTrainer
from utils.config import UsageError
from utils.detectors import (BACKBONES, build_from_options,
                             check_given_options, detector_arguments,
                             load_weights, read_start, start_preprocessing)


def test_options_and_load_detector_rebuild_the_roi_op(tmp_path):
    config = options(backbone='toy', min_size=128, max_size=128,
                     roi_op='align', roi_sampling_ratio=2, roi_aligned=False)
    model = build_from_options(config, 2)
    assert model.head.roi.settings == dict(roi_op='align', sampling_ratio=2,
                                           aligned=False)
    path = FasterRCNNTrainer(model, config=config).save(
        save_path=str(tmp_path / 'align.pth'))
    restored, _, _ = load_detector(path)
    assert restored.head.roi.settings == model.head.roi.settings
    vgg = build_from_options(options(roi_op='align', pretrained_model=None),
                             2)
    assert isinstance(vgg, FasterRCNNVGG16)
    assert vgg.head.roi.roi_op == 'align'


def test_every_backbone_option_builds_its_detector():
    """Each --backbone builds its class, from random init with
    --pretrained-model=None and from the backbone's own ImageNet weights
    (named by its arch) otherwise."""
    for name, cls in BACKBONES.items():
        built, arguments = detector_arguments(options(backbone=name))
        assert built is cls
        if name.endswith('_fpn'):
            assert arguments['pretrained_model'] == name[:-len('_fpn')]
        _, arguments = detector_arguments(options(backbone=name,
                                                  pretrained_model=None))
        assert arguments.get('pretrained_model') is None
    small = build_from_options(options(backbone='mobilenet_v3_large_fpn',
                                       pretrained_model=None, min_size=128,
                                       max_size=128), 2)
    assert small.n_class == 3 and small.min_size == 128


@pytest.mark.parametrize('config, message', [
    (options(backbone='resnet18'), 'backbone'),
    (options(backbone='resnet50', caffe_pretrain=True), 'caffe'),
    (options(backbone='vgg16', pretrained_model='resnet50'),
     '--backbone=resnet50'),
])
def test_bad_options_are_usage_errors(config, message):
    with pytest.raises(UsageError, match=message):
        build_from_options(config, 3)




# ---------------------------------------------- starting from a checkpoint

@pytest.fixture
def toy_start(tmp_path):
    """A toy detector (RoIAlign, 128/160 px) saved as train.py saves it,
    and what read_start and start_preprocessing read of it."""
    torch.manual_seed(0)
    model = FasterRCNNToy(n_fg_class=5, min_size=128, max_size=160,
                          roi_op='align')
    path = FasterRCNNTrainer(model, label_names=TOY_LABEL_NAMES).save(
        save_path=str(tmp_path / 'toy.pth'))
    checkpoint, record = read_start(path)
    return path, checkpoint, record, start_preprocessing(checkpoint, record)


def test_a_start_brings_its_detector_and_preprocessing(toy_start):
    path, checkpoint, record, preprocessing = toy_start
    assert record['name'] == 'FasterRCNNToy'
    assert record['arguments']['roi_op'] == 'align'
    assert preprocessing == dict(min_size=128, max_size=160,
                                 caffe_pretrain=False, resize='skimage')


def test_options_given_that_describe_another_detector_are_named(toy_start):
    path, _, record, preprocessing = toy_start
    agreeing = options(backbone='toy', min_size=128, roi_op='align')
    check_given_options(agreeing, {'backbone', 'min_size', 'roi_op'},
                        record, preprocessing, path)
    # options not given are the checkpoint's, whatever their defaults
    check_given_options(options(), set(), record, preprocessing, path)
    with pytest.raises(UsageError) as info:
        check_given_options(options(backbone='toy', min_size=600),
                            {'min_size'}, record, preprocessing, path)
    assert str(info.value) == (
        "--min-size=600 differs from the checkpoint {}, whose model has "
        "min_size=128: leave it out to use the checkpoint's".format(path))
    with pytest.raises(UsageError) as info:
        check_given_options(options(), {'backbone'}, record, preprocessing,
                            path)
    assert str(info.value) == (
        '--backbone=vgg16 differs from the detector in {} (FasterRCNNToy): '
        'leave it out to start from that checkpoint'.format(path))
    with pytest.raises(UsageError, match='--roi-op=pool differs'):
        check_given_options(options(backbone='toy'), {'roi_op'}, record,
                            preprocessing, path)


def test_load_weights_resets_the_class_layers_for_other_classes(toy_start):
    _, checkpoint, _, _ = toy_start
    saved = checkpoint['model']
    same = FasterRCNNToy(n_fg_class=5, min_size=128, max_size=160,
                         roi_op='align')
    assert load_weights(same, checkpoint, TOY_LABEL_NAMES) is None
    for key, value in same.state_dict().items():
        if torch.is_tensor(value):
            assert torch.equal(value, saved[key]), key

    torch.manual_seed(1)
    other = FasterRCNNToy(n_fg_class=2, min_size=128, max_size=160,
                          roi_op='align')
    fresh = {k: v.clone() for k, v in other.state_dict().items()
             if k.startswith(('head.score.', 'head.cls_loc.'))}
    message = load_weights(other, checkpoint, ('a', 'b'))
    assert message == (
        'reset head.cls_loc, head.score (class scores and class boxes) to a '
        "fresh initialisation: the checkpoint's 5 classes ({}, ...) are "
        "not the data's 2 (a, b)".format(', '.join(TOY_LABEL_NAMES[:3])))
    for key, value in other.state_dict().items():
        if key in fresh:
            assert torch.equal(value, fresh[key]), key
        elif torch.is_tensor(value):
            assert torch.equal(value, saved[key]), key

    # the same number of classes, other names: the class layers mean other
    # classes, so they are reset too
    renamed = FasterRCNNToy(n_fg_class=5, min_size=128, max_size=160,
                            roi_op='align')
    assert load_weights(renamed, checkpoint, tuple('abcde')).startswith(
        'reset head.cls_loc, head.score')
