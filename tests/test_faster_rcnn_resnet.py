"""model/faster_rcnn_resnet.py: FasterRCNNResNet50 and FasterRCNNResNet101 in
C4 form: structure (frozen conv1, layer1 and BatchNorm, stride 16, 1024
channels, layer4 in the head), a forward and predict at a small size, a
training step, starting weights from a file the test writes into a
temporary torch hub cache, the offline error, checkpoints. Nothing is
downloaded."""
import os

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

import model as model_package
from conftest import options, use_hub
from model import FasterRCNNResNet50, FasterRCNNResNet101, load_detector
from model.roi_head import RoIHead
from utils.detectors import build_from_options
from model.utils.checkpoint import WeightsNotFound
from model.utils.creator_tool import ProposalTargetCreator
from trainer import FasterRCNNTrainer

N_FG_CLASS = 3
SMALL = dict(min_size=64, max_size=96)
FILES = dict(resnet50='resnet50-0676ba61.pth',     # torchvision's
             resnet101='resnet101-63fe2227.pth')   # IMAGENET1K_V1 names


@pytest.fixture(scope='module')
def resnet_model():
    """A randomly initialised ResNet-50 model for small images."""
    torch.manual_seed(0)
    return FasterRCNNResNet50(n_fg_class=N_FG_CLASS, pretrained_model=None,
                              **SMALL)


@pytest.fixture(scope='module')
def resnet50_file(tmp_path_factory):
    """A torchvision ResNet-50 state dict (random, BatchNorm statistics and
    weights offset so that they are no fresh init), at
    <home>/hub/checkpoints/ under torchvision's file name."""
    home = tmp_path_factory.mktemp('torch_home')
    checkpoints = home / 'hub' / 'checkpoints'
    checkpoints.mkdir(parents=True)
    torch.manual_seed(1234)
    resnet = torchvision.models.resnet50()
    with torch.no_grad():
        for value in resnet.state_dict().values():
            if value.is_floating_point():
                value.add_(0.1)
    path = checkpoints / FILES['resnet50']
    torch.save(resnet.state_dict(), path)
    yield dict(home=home, path=path)
    os.remove(path)


def norm_layers(module):
    return [m for m in module.modules()
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]


# --------------------------------------------------------------- structure

def test_exported_from_model():
    assert model_package.FasterRCNNResNet50 is FasterRCNNResNet50
    assert model_package.FasterRCNNResNet101 is FasterRCNNResNet101
    assert {'FasterRCNNResNet50', 'FasterRCNNResNet101'} <= set(
        model_package.__all__)


def test_extractor_is_conv1_to_layer3_stride_16_1024_channels(resnet_model):
    extractor = resnet_model.extractor
    assert [type(m) for m in extractor] == [
        nn.Conv2d, FrozenBatchNorm2d, nn.ReLU, nn.MaxPool2d] + \
        [nn.Sequential] * 3
    assert [len(extractor[i]) for i in (4, 5, 6)] == [3, 4, 6]  # ResNet-50
    assert resnet_model.feat_stride == resnet_model.rpn.feat_stride == 16
    with torch.no_grad():
        h = extractor(torch.zeros(1, 3, 64, 96))
    assert tuple(h.shape) == (1, 1024, 4, 6)
    assert resnet_model.rpn.conv1.in_channels == 1024


def test_conv1_layer1_and_every_batchnorm_are_frozen(resnet_model):
    extractor = resnet_model.extractor
    for i, layer in enumerate(extractor):
        for p in layer.parameters():
            assert p.requires_grad == (i >= 5), i  # layer2 on trains
    norms = norm_layers(resnet_model)
    assert len(norms) == 53  # 1 + 16 blocks x 3 + 4 downsamples
    assert all(isinstance(m, FrozenBatchNorm2d) for m in norms)
    # statistics and affine are buffers: nothing of a norm layer trains
    norm_names = {n for n, m in resnet_model.named_modules()
                  if isinstance(m, FrozenBatchNorm2d)}
    for name, p in resnet_model.named_parameters():
        assert name.rsplit('.', 1)[0] not in norm_names, name
    assert all(p.requires_grad for p in resnet_model.head.parameters())


def test_head_is_layer4_and_average_pool(resnet_model):
    head = resnet_model.head
    assert isinstance(head, RoIHead)
    assert head.roi.size == 14 and head.roi.spatial_scale == 1. / 16
    assert head.n_class == N_FG_CLASS + 1
    layer4 = head.classifier[1]
    assert len(layer4) == 3 and layer4[0].conv2.stride == (2, 2)
    with torch.no_grad():
        h = head.classifier(torch.zeros(2, 1024 * 14 * 14))
        assert tuple(layer4(torch.zeros(2, 1024, 14, 14)).shape) == \
            (2, 2048, 7, 7)
    assert tuple(h.shape) == (2, 2048)
    assert head.cls_loc.in_features == head.score.in_features == 2048
    assert head.cls_loc.out_features == 4 * (N_FG_CLASS + 1)
    # 16384 and 8192 weights: the sample std is within 5% of the target
    assert head.cls_loc.weight.std().item() == pytest.approx(0.001, rel=0.05)
    assert head.score.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert (head.cls_loc.bias == 0).all() and (head.score.bias == 0).all()


def test_resnet101_structure_and_roi_options():
    torch.manual_seed(0)
    model = FasterRCNNResNet101(n_fg_class=2, pretrained_model=None,
                                roi_op='align', roi_size=7, **SMALL)
    assert [len(model.extractor[i]) for i in (4, 5, 6)] == [3, 4, 23]
    assert len(model.head.classifier[1]) == 3
    assert all(isinstance(m, FrozenBatchNorm2d) for m in norm_layers(model))
    assert model.head.roi.roi_op == 'align'
    assert model.head.roi.size == 7
    with torch.no_grad():
        _, roi_scores, rois, _ = model(torch.zeros(1, 3, 64, 96))
    assert roi_scores.shape == (len(rois), 3)
    assert model.state_dict()['_extra_state']['roi_op'] == 'align'


# ------------------------------------------------ forward, predict, a step

def test_forward_and_predict_at_a_small_size(resnet_model):
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        roi_cls_locs, roi_scores, rois, roi_indices = resnet_model(x)
    R = len(rois)
    assert R > 0
    assert tuple(roi_cls_locs.shape) == (R, 4 * (N_FG_CLASS + 1))
    assert tuple(roi_scores.shape) == (R, N_FG_CLASS + 1)
    assert torch.isfinite(roi_cls_locs).all()

    img = np.random.RandomState(0).uniform(0, 255, (3, 80, 120)).astype(
        np.float32)
    with torch.no_grad():
        bias = resnet_model.head.score.bias.clone()
        resnet_model.head.score.bias.copy_(torch.tensor([0., 10., 0., 0.]))
    try:
        bboxes, labels, scores = resnet_model.predict([img], visualize=True)
    finally:
        with torch.no_grad():
            resnet_model.head.score.bias.copy_(bias)
    assert len(labels[0]) > 0 and (labels[0] == 0).all()
    assert (scores[0] > 0.7).all()
    assert (bboxes[0][:, 0::2] <= 80).all() and (bboxes[0][:, 1::2] <= 120).all()


@pytest.mark.slow  # trains: a step of ResNet-50
def test_one_training_step_leaves_frozen_parts_alone(resnet_model):
    torch.manual_seed(0)
    np.random.seed(0)
    resnet_model.train()
    # 32 RoIs through layer4 rather than 128: the same step, faster
    trainer = FasterRCNNTrainer(
        resnet_model,
        proposal_target_creator=ProposalTargetCreator(n_sample=32))
    buffers = {k: v.clone() for k, v in resnet_model.named_buffers()}
    params = {k: v.clone() for k, v in resnet_model.named_parameters()}
    # large enough that some 128 px anchors lie inside: labelled anchors
    img = torch.randn(1, 3, 160, 192)
    bbox = torch.tensor([[[10., 20., 110., 150.]]])
    label = torch.tensor([[1]])
    losses = trainer.train_step(img, bbox, label, 1.)
    assert torch.isfinite(losses.total_loss)
    for name, value in resnet_model.named_buffers():  # BN statistics too
        assert torch.equal(value, buffers[name]), name
    for name, value in resnet_model.named_parameters():
        frozen = name.startswith(('extractor.0.', 'extractor.4.'))
        assert torch.equal(value, params[name]) == frozen, name


# --------------------------------------------------------- starting weights

def test_imagenet_weights_from_the_hub_cache(resnet50_file, monkeypatch):
    use_hub(monkeypatch, resnet50_file['home'])
    state = torch.load(resnet50_file['path'])
    for model in (FasterRCNNResNet50(n_fg_class=N_FG_CLASS, **SMALL),
                  build_from_options(options(backbone='resnet50', **SMALL),
                                     N_FG_CLASS)):
        assert isinstance(model, FasterRCNNResNet50)
        got = {'conv1.weight': model.extractor[0].weight,
               'bn1.running_mean': model.extractor[1].running_mean,
               'bn1.weight': model.extractor[1].weight,
               'layer1.0.conv1.weight': model.extractor[4][0].conv1.weight,
               'layer3.5.bn3.running_var':
                   model.extractor[6][5].bn3.running_var,
               'layer4.2.conv3.weight': model.head.classifier[1][2].conv3.weight,
               'layer4.0.downsample.1.bias':
                   model.head.classifier[1][0].downsample[1].bias}
        for key, value in got.items():
            assert torch.equal(value, state[key]), key
        assert model.caffe_pretrain is False
        assert not model.extractor[0].weight.requires_grad


@pytest.mark.parametrize('cls, arch', [(FasterRCNNResNet50, 'resnet50'),
                                       (FasterRCNNResNet101, 'resnet101')])
def test_offline_without_weights_names_the_path(cls, arch, tmp_path,
                                                monkeypatch):
    use_hub(monkeypatch, tmp_path)
    with pytest.raises(WeightsNotFound) as info:
        cls(n_fg_class=N_FG_CLASS)
    message = str(info.value)
    want_path = os.path.join(str(tmp_path / 'hub'), 'checkpoints',
                             FILES[arch])
    assert info.value.path == want_path
    assert want_path in message and 'offline' in message
    assert 'pretrained_model=None' in message
    assert not os.path.exists(want_path)


def test_a_checkpoint_rebuilds_itself(tmp_path):
    config = options(backbone='resnet50', roi_op='align',
                     pretrained_model=None, **SMALL)
    model = build_from_options(config, N_FG_CLASS)
    with torch.no_grad():
        model.head.score.bias.add_(0.5)  # "trained"
    path = FasterRCNNTrainer(model, config=config).save(
        save_path=str(tmp_path / 'resnet.pth'))
    restored, _, info = load_detector(path)
    assert isinstance(restored, FasterRCNNResNet50)
    assert info['config']['backbone'] == 'resnet50'
    assert restored.head.roi.settings == dict(roi_op='align',
                                              sampling_ratio=0, aligned=True)
    assert (restored.min_size, restored.max_size) == (64, 96)
    for key, value in model.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(restored.state_dict()[key], value), key
    again = FasterRCNNResNet50(n_fg_class=N_FG_CLASS, pretrained_model=path,
                               roi_op='align')
    assert torch.equal(again.head.score.bias, model.head.score.bias)
    with pytest.raises(ValueError, match="roi_op={'roi_op': 'align'"):
        FasterRCNNResNet50(n_fg_class=N_FG_CLASS, pretrained_model=path)


# --------------------------------------------------------- bad choices

@pytest.mark.parametrize('make, message', [
    (lambda: FasterRCNNResNet50(pretrained_model='vgg16'), "'resnet50'"),
    (lambda: FasterRCNNResNet50(pretrained_model='resnet101'), "'resnet50'"),
    (lambda: FasterRCNNResNet101(pretrained_model='caffe'), "'resnet101'"),
    (lambda: FasterRCNNResNet50(pretrained_model=True), 'pretrained_model'),
    (lambda: FasterRCNNResNet50(n_fg_class=0), 'n_fg_class'),
])
def test_bad_choices_are_value_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_checkpoint_of_another_backbone_is_a_value_error(tmp_path):
    torch.manual_seed(0)
    resnet = FasterRCNNResNet50(n_fg_class=N_FG_CLASS, pretrained_model=None,
                                **SMALL)
    path = FasterRCNNTrainer(resnet).save(save_path=str(tmp_path / 'r.pth'))
    with pytest.raises(ValueError, match='another backbone') as info:
        build_from_options(options(pretrained_model=None),
                           N_FG_CLASS).load_state_dict(
                        torch.load(path)['model'])
    assert 'FasterRCNNVGG16' in str(info.value)
    with pytest.raises(ValueError, match='another backbone'):
        FasterRCNNResNet101(n_fg_class=N_FG_CLASS, pretrained_model=path)
