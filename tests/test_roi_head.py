"""model/roi_head.py: RoIHead and its RoI op, the RoIPooler.

RoIPool by hand and against torchvision's op given (x, y) boxes (the
pooler reorders the (y, x) boxes it is given); the RoIAlign option
(``roi_op='align'``) against a direct torchvision call and by hand (it
averages), its gradient; the choice saved with the model and refused when
it differs; a toy model that trains with it.
"""
import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import roi_pool

from conftest import losses_on_one_object
from model import FasterRCNNToy, FasterRCNNVGG16
from model.roi_head import RoIHead, RoIPooler, roi_pooler
from trainer import FasterRCNNTrainer


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


def random_rois(rng, n, img_size, device):
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


# --------------------------------------------------------------- RoIPool

def patterned_features(device, n=2, c=2, h=8, w=12):
    """Features whose value names its place: 1000 n + 100 row + col, and
    negated in channel 1."""
    n_, row, col = torch.meshgrid(torch.arange(n), torch.arange(h),
                                  torch.arange(w), indexing='ij')
    x = (1000 * n_ + 100 * row + col).float()
    x = torch.stack([x, -x], dim=1)[:, :c]
    return x.to(device)


# (y_min, x_min, y_max, x_max) in feature pixels; taller than wide and wider
# than tall, so that swapping the axes changes what is pooled.
FEAT_ROIS_YX = [[1., 2., 3., 9.], [0., 5., 7., 7.]]


ROI_INDICES = [0, 1]


def torchvision_pool(x, rois_yx, roi_indices, size, spatial_scale):
    """torchvision's roi_pool given (index, x_min, y_min, x_max, y_max)
    boxes built here."""
    boxes = [[float(i), r[1], r[0], r[3], r[2]]
             for i, r in zip(roi_indices, rois_yx)]
    boxes = torch.tensor(boxes, dtype=x.dtype, device=x.device)
    return roi_pool(x, boxes, size, spatial_scale)


def swapped_pool(x, rois_yx, roi_indices, size, spatial_scale):
    """What pooling gives when the (y, x) boxes reach the op unswapped."""
    boxes = [[float(i)] + list(r) for i, r in zip(roi_indices, rois_yx)]
    boxes = torch.tensor(boxes, dtype=x.dtype, device=x.device)
    return roi_pool(x, boxes, size, spatial_scale)


def test_roi_pooler_reorders_boxes_to_xy(device):
    x = patterned_features(device)
    want = torchvision_pool(x, FEAT_ROIS_YX, ROI_INDICES, (2, 2), 1.)
    assert not torch.equal(
        want, swapped_pool(x, FEAT_ROIS_YX, ROI_INDICES, (2, 2), 1.))
    got = RoIPooler('pool', 2, 1.)(
        x, torch.tensor(FEAT_ROIS_YX, device=device),
        torch.tensor(ROI_INDICES, device=device))
    assert torch.equal(got, want)
    # the first RoI spans rows 1-3 and columns 2-9 of image 0: each bin's
    # max is its bottom-right value, 100 row + col
    assert got[0, 0].tolist() == [[205., 209.], [305., 309.]]


class Recorder(nn.Module):
    """A classifier that keeps its input and returns ``n_feature`` zeros."""

    def __init__(self, n_feature):
        super().__init__()
        self.n_feature = n_feature
        self.seen = None

    def forward(self, x):
        self.seen = x
        return x.new_zeros((len(x), self.n_feature))


@pytest.mark.parametrize('make_head, roi_size', [
    (lambda c: RoIHead(3, RoIPooler('pool', 2, 1. / 16), Recorder(c * 4),
                       n_feature=c * 4), 2),
    (lambda c: RoIHead(3, RoIPooler('pool', 7, 1. / 16), Recorder(4096)), 7),
])
def test_head_pools_yx_rois_as_torchvision_pools_xy(device, make_head,
                                                    roi_size):
    x = patterned_features(device)
    head = make_head(x.shape[1]).to(device)
    rois = torch.tensor(FEAT_ROIS_YX, device=device) * 16  # in input pixels
    head(x, rois, torch.tensor(ROI_INDICES, device=device))
    size = (roi_size, roi_size)
    want = torchvision_pool(x, rois.tolist(), ROI_INDICES, size, 1. / 16)
    assert not torch.equal(
        want, swapped_pool(x, rois.tolist(), ROI_INDICES, size, 1. / 16))
    assert torch.equal(head.classifier.seen, want.flatten(1))


# -------------------------------------------------------------- RoIAlign

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
    rois, roi_indices = random_rois(rng, 10, (12 * STRIDE, 15 * STRIDE),
                                    device)
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
    rois, roi_indices = random_rois(rng, 20, (12 * STRIDE, 15 * STRIDE),
                                    device)
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
    rois, roi_indices = random_rois(rng, 4, (6 * STRIDE, 7 * STRIDE), 'cpu')
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


# ------------------------------------------------------------ the models

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


# -------------------------------------------------------------- training

@pytest.mark.slow  # trains: twenty steps
def test_toy_model_trains_with_roialign():
    """Twenty steps on one image: the total loss falls."""
    torch.manual_seed(0)
    np.random.seed(0)
    model = FasterRCNNToy(n_fg_class=2, roi_op='align')
    losses = losses_on_one_object(FasterRCNNTrainer(model, lr=5e-3))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
