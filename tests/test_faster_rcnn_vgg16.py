"""model/faster_rcnn_vgg16.py: FasterRCNNVGG16's structure, initialisation,
forward and predict at a small size, the optimizer, and every source of
starting weights (torchvision's cache, a caffe file, offline failures, a
trained checkpoint) with weight files the tests write themselves. Nothing
is downloaded."""
import inspect
import os

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import model.faster_rcnn as faster_rcnn_module
from conftest import use_hub
from model import FasterRCNNVGG16
from model.faster_rcnn_vgg16 import decom_vgg16
from model.utils.checkpoint import WeightsNotFound
from model.roi_head import RoIHead, RoIPooler
from model.utils.bbox_tools import generate_anchor_base
from trainer import FasterRCNNTrainer

N_FG_CLASS = 3
SMALL = dict(min_size=96, max_size=160)
TORCHVISION_FILE = 'vgg16-397923af.pth'  # torchvision's IMAGENET1K_V1 name
# VGG16 features: conv at these indices, max-pool at 4, 9, 16, 23 (and 30,
# which the extractor leaves out); every conv is followed by a ReLU.
CONV = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128),
        10: (128, 256), 12: (256, 256), 14: (256, 256),
        17: (256, 512), 19: (512, 512), 21: (512, 512),
        24: (512, 512), 26: (512, 512), 28: (512, 512)}
POOL = (4, 9, 16, 23)


@pytest.fixture(scope='module')
def vgg_model():
    """A randomly initialised model for small images, built once."""
    torch.manual_seed(0)
    return FasterRCNNVGG16(n_fg_class=N_FG_CLASS, pretrained_model=None,
                           **SMALL)


@pytest.fixture(scope='session')
def vgg16_file(tmp_path_factory):
    """A VGG16 state dict (random, offset so that it is no fresh init),
    written once: at <TORCH_HOME>/hub/checkpoints/ under torchvision's name,
    and linked as a caffe-converted file."""
    home = tmp_path_factory.mktemp('torch_home')
    checkpoints = home / 'hub' / 'checkpoints'
    checkpoints.mkdir(parents=True)
    torch.manual_seed(1234)
    vgg = torchvision.models.vgg16()
    with torch.no_grad():
        for p in vgg.parameters():
            p.add_(0.1)
    path = checkpoints / TORCHVISION_FILE
    torch.save(vgg.state_dict(), path)
    del vgg
    caffe_path = home / 'vgg16_caffe.pth'
    os.link(path, caffe_path)
    yield dict(home=home, hub=home / 'hub', path=path, caffe_path=caffe_path)
    # pytest keeps the temporary folders of recent runs: not 500 MB each
    os.remove(caffe_path)
    os.remove(path)


def assert_vgg_weights(model, state):
    """The extractor and classifier hold the VGG16 state dict's weights."""
    for i in CONV:
        for name in ('weight', 'bias'):
            want = state['features.%d.%s' % (i, name)]
            assert torch.equal(getattr(model.extractor[i], name), want), i
    linears = [m for m in model.head.classifier if isinstance(m, nn.Linear)]
    for layer, i in zip(linears, (0, 3)):  # fc6, fc7
        assert torch.equal(layer.weight, state['classifier.%d.weight' % i])
        assert torch.equal(layer.bias, state['classifier.%d.bias' % i])


# --------------------------------------------------------------- structure

def test_constructor_defaults():
    params = inspect.signature(FasterRCNNVGG16).parameters
    assert params['n_fg_class'].default == 20
    assert params['ratios'].default == [0.5, 1, 2]
    assert params['anchor_scales'].default == [8, 16, 32]


def test_extractor_is_vgg16_features_30_with_the_first_10_layers_frozen(
        vgg_model):
    extractor = vgg_model.extractor
    assert len(extractor) == 30
    assert isinstance(extractor[29], nn.ReLU)  # relu of conv5_3
    for i, layer in enumerate(extractor):
        if i in CONV:
            assert isinstance(layer, nn.Conv2d), i
            assert (layer.in_channels, layer.out_channels) == CONV[i]
            assert layer.kernel_size == (3, 3) and layer.padding == (1, 1)
        elif i in POOL:
            assert isinstance(layer, nn.MaxPool2d), i
        else:
            assert isinstance(layer, nn.ReLU), i
            assert i - 1 in CONV
        for p in layer.parameters():
            assert p.requires_grad == (i >= 10), i
    assert vgg_model.rpn.feat_stride == 16


def test_classifier_has_no_dropout_unless_use_drop(vgg_model):
    classifier = vgg_model.head.classifier
    assert [type(m) for m in classifier] == [nn.Linear, nn.ReLU, nn.Linear,
                                             nn.ReLU]
    assert (classifier[0].in_features, classifier[0].out_features) == \
        (512 * 7 * 7, 4096)
    assert (classifier[2].in_features, classifier[2].out_features) == \
        (4096, 4096)
    _, with_drop = decom_vgg16(pretrained_model=None, use_drop=True)
    assert [type(m) for m in with_drop] == [nn.Linear, nn.ReLU, nn.Dropout,
                                            nn.Linear, nn.ReLU, nn.Dropout]


def test_head_and_rpn_initialisation(vgg_model):
    head = vgg_model.head
    assert isinstance(head, RoIHead) and isinstance(head.roi, RoIPooler)
    assert head.roi.settings == dict(roi_op='pool')
    assert vgg_model.n_class == head.n_class == N_FG_CLASS + 1
    assert head.cls_loc.out_features == 4 * (N_FG_CLASS + 1)
    assert head.score.out_features == N_FG_CLASS + 1
    assert head.roi.size == 7
    assert head.roi.spatial_scale == pytest.approx(1. / 16)
    # 16384 and 65536 weights: the sample std is within 3% of the target
    assert head.cls_loc.weight.std().item() == pytest.approx(0.001, rel=0.03)
    assert head.score.weight.std().item() == pytest.approx(0.01, rel=0.03)
    assert (head.cls_loc.bias == 0).all() and (head.score.bias == 0).all()
    rpn = vgg_model.rpn
    assert rpn.conv1.in_channels == 512 and rpn.conv1.out_channels == 512
    assert rpn.conv1.weight.std().item() == pytest.approx(0.01, rel=0.03)
    np.testing.assert_array_equal(torch.as_tensor(rpn.anchor_base).numpy(),
                                  generate_anchor_base())
    assert (vgg_model.min_size, vgg_model.max_size) == (96, 160)
    assert vgg_model.caffe_pretrain is False


def test_bad_n_fg_class():
    with pytest.raises(ValueError, match='n_fg_class'):
        FasterRCNNVGG16(n_fg_class=0, pretrained_model=None)


def test_caffe_pretrain_argument_without_caffe_weights():
    model = FasterRCNNVGG16(n_fg_class=2, pretrained_model=None,
                            caffe_pretrain=True)
    assert model.caffe_pretrain is True
    assert model.state_dict()['_extra_state']['caffe_pretrain'] is True


# ------------------------------------------------------- forward, predict

def test_forward_at_a_small_size(vgg_model):
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        roi_cls_locs, roi_scores, rois, roi_indices = vgg_model(x, scale=1.)
    R = len(rois)
    assert R > 0
    assert tuple(roi_cls_locs.shape) == (R, 4 * (N_FG_CLASS + 1))
    assert tuple(roi_scores.shape) == (R, N_FG_CLASS + 1)
    assert tuple(rois.shape) == (R, 4) and tuple(roi_indices.shape) == (R,)
    assert torch.isfinite(roi_cls_locs).all()
    assert torch.isfinite(roi_scores).all()


def test_predict_at_a_small_size(vgg_model):
    rng = np.random.RandomState(0)
    imgs = [rng.uniform(0, 255, (3, 80, 100)).astype(np.float32),
            rng.uniform(0, 255, (3, 120, 90)).astype(np.float32)]
    was_training = vgg_model.training
    with torch.no_grad():  # detections above 0.7 for class 1 everywhere
        bias = vgg_model.head.score.bias.clone()
        vgg_model.head.score.bias.copy_(torch.tensor([0., 10., 0., 0.]))
    try:
        bboxes, labels, scores = vgg_model.predict(imgs, visualize=True)
    finally:
        with torch.no_grad():
            vgg_model.head.score.bias.copy_(bias)
    assert vgg_model.training == was_training
    for bbox, label, score, img in zip(bboxes, labels, scores, imgs):
        H, W = img.shape[1:]
        assert bbox.dtype == np.float32 and bbox.shape == (len(label), 4)
        assert label.dtype == np.int32 and score.dtype == np.float32
        assert len(label) > 0 and (label == 0).all() and (score > 0.7).all()
        assert (bbox[:, 0::2] >= 0).all() and (bbox[:, 0::2] <= H).all()
        assert (bbox[:, 1::2] >= 0).all() and (bbox[:, 1::2] <= W).all()


# --------------------------------------------------------- starting weights

@pytest.mark.slow  # writes a VGG16-size file (528 MB)
def test_torchvision_weights_from_the_hub_cache(vgg16_file, monkeypatch):
    use_hub(monkeypatch, vgg16_file['home'])
    model = FasterRCNNVGG16(n_fg_class=N_FG_CLASS, pretrained_model='vgg16',
                            **SMALL)
    assert_vgg_weights(model, torch.load(vgg16_file['path'], mmap=True))
    assert model.caffe_pretrain is False
    # the frozen layers stay frozen with loaded weights
    assert not model.extractor[0].weight.requires_grad
    assert model.extractor[10].weight.requires_grad


@pytest.mark.slow  # seconds, not minutes, but the quick suite leaves it out
def test_caffe_weights_and_a_trained_checkpoint(vgg16_file, monkeypatch,
                                                tmp_path):
    model = FasterRCNNVGG16(n_fg_class=N_FG_CLASS, pretrained_model='caffe',
                            caffe_pretrain_path=str(vgg16_file['caffe_path']),
                            **SMALL)
    assert_vgg_weights(model, torch.load(vgg16_file['caffe_path'], mmap=True))
    assert model.caffe_pretrain is True
    assert model.state_dict()['_extra_state']['caffe_pretrain'] is True

    # predict feeds it caffe-normalized input
    real = faster_rcnn_module.preprocess
    seen = []

    def spy(img, *args, **kwargs):
        bound = inspect.signature(real).bind(img, *args, **kwargs)
        bound.apply_defaults()
        seen.append(bound.arguments)
        return real(img, *args, **kwargs)

    monkeypatch.setattr(faster_rcnn_module, 'preprocess', spy)
    img = np.random.RandomState(0).uniform(0, 255, (3, 70, 90)).astype(
        np.float32)
    model.predict([img], visualize=True)
    assert seen[0]['caffe_pretrain'] is True
    assert (seen[0]['min_size'], seen[0]['max_size']) == (96, 160)

    # a trained checkpoint written by the trainer, then as a bare state dict
    with torch.no_grad():
        model.head.score.bias.add_(0.5)  # "trained"
    path = FasterRCNNTrainer(model).save(save_path=str(tmp_path / 'ckpt.pth'))
    restored = FasterRCNNVGG16(n_fg_class=N_FG_CLASS, pretrained_model=path)
    want = model.state_dict()
    got = restored.state_dict()
    assert set(got) == set(want)
    for key, value in want.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(got[key], value), key
    # the settings come with it: caffe input, small images
    assert restored.caffe_pretrain is True
    assert (restored.min_size, restored.max_size) == (96, 160)
    del restored

    with pytest.raises(ValueError, match='classes'):
        FasterRCNNVGG16(n_fg_class=N_FG_CLASS + 2, pretrained_model=path)
    os.remove(path)


def test_offline_without_weights_names_the_path(tmp_path, monkeypatch):
    use_hub(monkeypatch, tmp_path)
    with pytest.raises(WeightsNotFound) as info:
        FasterRCNNVGG16(n_fg_class=N_FG_CLASS, pretrained_model='vgg16')
    message = str(info.value)
    want_path = os.path.join(str(tmp_path / 'hub'), 'checkpoints',
                             TORCHVISION_FILE)
    assert want_path in message
    assert 'pretrained_model=None' in message
    assert not os.path.exists(want_path)


def test_missing_caffe_file_names_the_path(tmp_path):
    path = str(tmp_path / 'nowhere' / 'vgg16_caffe.pth')
    with pytest.raises(WeightsNotFound) as info:
        FasterRCNNVGG16(n_fg_class=N_FG_CLASS, pretrained_model='caffe',
                        caffe_pretrain_path=path)
    assert info.value.path == path and path in str(info.value)
