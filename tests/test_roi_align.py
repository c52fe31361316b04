"""The heads' RoIAlign option (``roi_op='align'``): the op against a direct
torchvision call and by hand (it averages), its gradient, the choice saved
with the model and refused when it differs, the models and the toy preset
built and trained with it."""
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import train
from conftest import options
from data.synthetic import generate_voc
from model import FasterRCNNToy, FasterRCNNVGG16, load_detector
from model.roi_head import RoIHead, RoIPooler, roi_pooler
from trainer import FasterRCNNTrainer
from utils.detectors import build_from_options

STRIDE = 16
ROI_SIZE = 7


class Capture(nn.Module):
    """A classifier that keeps what it is given and passes it on."""

    def forward(self, x):
        self.seen = x
        return x


def make_head(channels=4, **kwargs):
    torch.manual_seed(0)
    return RoIHead(3, RoIPooler(size=ROI_SIZE, spatial_scale=1. / STRIDE,
                                **kwargs),
                   Capture(), n_feature=channels * ROI_SIZE ** 2)


def make_rois(rng, n, img_size, device):
    """n random RoIs (y_min, x_min, y_max, x_max) inside the image, spread
    over two images."""
    H, W = img_size
    ymin, xmin = rng.uniform(0, H - 20, n), rng.uniform(0, W - 20, n)
    ymax = ymin + rng.uniform(4, H - ymin)
    xmax = xmin + rng.uniform(4, W - xmin)
    rois = np.stack((ymin, xmin, ymax, xmax), 1).astype(np.float32)
    roi_indices = np.arange(n) % 2
    return (torch.tensor(rois, device=device),
            torch.tensor(roi_indices, device=device))


# ------------------------------------------------------------- the op

def test_default_is_roipool_and_align_is_roialign():
    head = make_head()
    assert head.roi.roi_op == 'pool'
    assert head.roi.settings == dict(roi_op='pool')
    head = make_head(roi_op='align')
    assert (head.roi.sampling_ratio, head.roi.aligned) == (0, True)
    assert head.roi.size == ROI_SIZE
    assert head.roi.spatial_scale == 1. / STRIDE
    assert head.roi.settings == dict(roi_op='align', sampling_ratio=0,
                                     aligned=True)


def test_roi_pooler_is_built_from_a_name_or_settings():
    assert roi_pooler('pool', 7, 0.5).settings == dict(roi_op='pool')
    assert roi_pooler('align', 7, 0.5).settings == dict(
        roi_op='align', sampling_ratio=0, aligned=True)
    pooler = roi_pooler(dict(roi_op='align', sampling_ratio=2,
                             aligned=False), 14, 0.25)
    assert (pooler.size, pooler.spatial_scale) == (14, 0.25)
    assert pooler.settings == dict(roi_op='align', sampling_ratio=2,
                                   aligned=False)
    with pytest.raises(ValueError, match='roi_op'):
        roi_pooler(3, 7, 0.5)


@pytest.mark.parametrize('sampling_ratio, aligned',
                         [(0, True), (2, False), (2, True), (0, False)])
def test_align_head_equals_torchvision_roi_align(device, sampling_ratio,
                                                 aligned):
    rng = np.random.RandomState(0)
    x = torch.randn(2, 4, 12, 15, device=device)
    rois, roi_indices = make_rois(rng, 10, (12 * STRIDE, 15 * STRIDE), device)
    head = make_head(roi_op='align', sampling_ratio=sampling_ratio,
                     aligned=aligned).to(device)
    roi_cls_loc, roi_score = head(x, rois, roi_indices)

    # torchvision's boxes: one (K, 4) tensor of (x_min, y_min, x_max, y_max)
    # per image
    boxes = [rois[roi_indices == i][:, [1, 0, 3, 2]] for i in range(2)]
    want = torchvision.ops.roi_align(
        x, boxes, output_size=ROI_SIZE, spatial_scale=1. / STRIDE,
        sampling_ratio=sampling_ratio, aligned=aligned)
    order = torch.cat([torch.where(roi_indices == i)[0] for i in range(2)])
    got = head.classifier.seen.view(-1, 4, ROI_SIZE, ROI_SIZE)[order]
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    flat = want.flatten(1)
    torch.testing.assert_close(roi_score[order], head.score(flat))
    torch.testing.assert_close(roi_cls_loc[order], head.cls_loc(flat))


@pytest.mark.parametrize('aligned', [True, False])
def test_constant_features_give_a_constant_output(device, aligned):
    rng = np.random.RandomState(1)
    x = torch.full((2, 4, 12, 15), 3.25, device=device)
    rois, roi_indices = make_rois(rng, 20, (12 * STRIDE, 15 * STRIDE), device)
    pool = make_head(roi_op='align', aligned=aligned).roi(x, rois,
                                                          roi_indices)
    assert pool.shape == (20, 4, ROI_SIZE, ROI_SIZE)
    torch.testing.assert_close(pool, torch.full_like(pool, 3.25))


def test_align_averages_its_samples():
    """On features that grow linearly along x (the value of cell (i, j) is
    j), bilinear sampling is exact, so a bin's average is the feature x of
    the bin's centre; with aligned=True a box's edge x_min in pixels sits at
    x_min / 16 - 0.5 in cells. A max would give the bin's last sample."""
    H, W = 20, 24
    x = torch.arange(W, dtype=torch.float32).repeat(1, 2, H, 1)
    rois = torch.tensor([[40., 70., 250., 300.], [20., 64., 200., 201.]])
    pool = make_head(roi_op='align', sampling_ratio=4).roi(x, rois,
                                                           torch.zeros(2))
    for roi, got in zip(rois, pool):
        x0 = roi[1] / STRIDE - 0.5
        bin_w = (roi[3] - roi[1]) / STRIDE / ROI_SIZE
        want = x0 + (torch.arange(ROI_SIZE) + 0.5) * bin_w
        torch.testing.assert_close(got, want.expand_as(got))


def test_align_gradcheck():
    rng = np.random.RandomState(2)
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    rois, roi_indices = make_rois(rng, 4, (6 * STRIDE, 7 * STRIDE), 'cpu')
    layer = make_head(roi_op='align', sampling_ratio=2).roi
    assert torch.autograd.gradcheck(
        lambda x: layer(x, rois.double(), roi_indices), (x,))


@pytest.mark.parametrize('kwargs, name', [
    (dict(roi_op='max'), 'roi_op'),
    (dict(roi_op='align', sampling_ratio=1.5), 'sampling_ratio'),
    (dict(roi_op='align', aligned='yes'), 'aligned')])
def test_bad_settings_are_value_errors(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_head(**kwargs)


# ------------------------------------------------------------- the models

ALIGN_2 = dict(roi_op='align', sampling_ratio=2, aligned=True)


def test_models_take_roi_op():
    toy = FasterRCNNToy(n_fg_class=2, roi_op=dict(
        roi_op='align', sampling_ratio=2, aligned=False))
    assert toy.head.roi.settings == dict(roi_op='align', sampling_ratio=2,
                                         aligned=False)
    assert FasterRCNNToy(n_fg_class=2).head.roi.roi_op == 'pool'
    vgg = FasterRCNNVGG16(n_fg_class=2, pretrained_model=None,
                          roi_op='align')
    assert vgg.head.roi.settings['roi_op'] == 'align'
    assert (vgg.head.roi.size, vgg.head.roi.spatial_scale) == (7, 1. / 16)


def test_the_choice_travels_with_the_model(tmp_path):
    model = FasterRCNNToy(n_fg_class=2, roi_op=ALIGN_2)
    state = model.state_dict()
    assert state['_extra_state']['roi_op'] == 'align'
    assert state['_extra_state']['sampling_ratio'] == 2
    assert state['_extra_state']['aligned'] is True
    same = FasterRCNNToy(n_fg_class=2, roi_op=ALIGN_2)
    same.load_state_dict(state)
    assert torch.equal(same.head.score.weight, model.head.score.weight)


@pytest.mark.parametrize('saved, own, want', [
    (dict(roi_op='align'), dict(), "'roi_op': 'align'"),
    (dict(), dict(roi_op='align'), "roi_op={'roi_op': 'pool'}"),
    (dict(roi_op=dict(roi_op='align', aligned=False)), dict(roi_op='align'),
     "'aligned': False"),
    (dict(roi_op=ALIGN_2), dict(roi_op='align'), "'sampling_ratio': 2")])
def test_a_checkpoint_of_another_roi_op_is_refused_untouched(saved, own,
                                                             want):
    torch.manual_seed(0)
    state = FasterRCNNToy(n_fg_class=2, **saved).state_dict()
    torch.manual_seed(1)
    model = FasterRCNNToy(n_fg_class=2, **own)
    before = {k: v.clone() for k, v in model.state_dict().items()
              if isinstance(v, torch.Tensor)}
    with pytest.raises(ValueError, match='load_detector') as info:
        model.load_state_dict(state)
    assert want in str(info.value)
    assert '--' not in str(info.value)  # the model names no train.py flag
    for key, value in model.state_dict().items():
        if key in before:
            assert torch.equal(value, before[key]), key


def test_a_state_dict_from_before_the_option_is_roipool():
    """An older model's settings name no RoI op: it pooled with RoIPool."""
    state = FasterRCNNToy(n_fg_class=2).state_dict()
    del state['_extra_state']['roi_op']
    FasterRCNNToy(n_fg_class=2).load_state_dict(state)
    with pytest.raises(ValueError, match='RoIPool'):
        FasterRCNNToy(n_fg_class=2, roi_op='align').load_state_dict(state)
    # a bare state dict (no settings at all) keeps the model's
    del state['_extra_state']
    FasterRCNNToy(n_fg_class=2, roi_op='align').load_state_dict(state)


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


# ---------------------------------------------------------------- training

def test_toy_model_trains_with_roialign():
    """Twenty steps on one image: the total loss falls."""
    rng = np.random.RandomState(0)
    torch.manual_seed(0)
    np.random.seed(0)
    model = FasterRCNNToy(n_fg_class=2, roi_op='align')
    trainer = FasterRCNNTrainer(model, lr=5e-3)
    img = torch.tensor(rng.uniform(-1, 1, (1, 3, 128, 128)),
                       dtype=torch.float32)
    img[:, :, 30:80, 40:100] += 2.
    bbox = torch.tensor([[[30., 40., 80., 100.]]])
    label = torch.tensor([[1]])
    losses = [trainer.train_step(img, bbox, label, 1.).total_loss.item()
              for _ in range(20)]
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


def test_toy_preset_trains_with_roialign(tmp_path):
    """train.py with --roi-op=align: one short epoch, and the checkpoint
    rebuilds with RoIAlign."""
    data_dir = generate_voc(str(tmp_path / 'voc'), n_images=8, seed=2)
    train.train(data='toy', voc_data_dir=data_dir,
                out_dir=str(tmp_path / 'ck'), seed=0, num_workers=0,
                test_num_workers=0, device='cpu', epoch=1, port=1,
                roi_op='align')
    model, _, info = load_detector(str(tmp_path / 'ck' / 'best.pth'))
    assert info['config']['roi_op'] == 'align'
    assert model.head.roi.roi_op == 'align'
