"""Faster R-CNN with FPN (model/fpn.py, model/faster_rcnn_fpn.py): the
pyramid's strides, channels and frozen parts; each level's anchors against
a table written here and torchvision's AnchorGenerator; the level of
hand-picked RoIs against FPN's formula and torchvision's
MultiScaleRoIAlign; a forward and predict at a small size; a tiny case
whose training loss falls; a checkpoint round trip; bad input."""
import math

import numpy as np
import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

from conftest import losses_on_one_object
import model as model_package
from model import FasterRCNNFPNResNet50, FasterRCNNFPNResNet101, load_detector
from model.fpn import anchor_base
from model.roi_head import RoIPooler, fpn_level
from trainer import FasterRCNNTrainer

N_FG_CLASS = 3
SMALL = dict(min_size=128, max_size=192)


@pytest.fixture(scope='module')
def fpn_model():
    """A randomly initialised ResNet-50 FPN for small images."""
    torch.manual_seed(0)
    return FasterRCNNFPNResNet50(n_fg_class=N_FG_CLASS,
                                 pretrained_model=None, **SMALL)


def test_exported_from_model():
    assert model_package.FasterRCNNFPNResNet50 is FasterRCNNFPNResNet50
    assert {'FasterRCNNFPNResNet50', 'FasterRCNNFPNResNet101'} <= set(
        model_package.__all__)


# ----------------------------------------------------------- the pyramid

def test_pyramid_strides_channels_and_frozen_parts(fpn_model):
    with torch.no_grad():
        pyramid = fpn_model.extractor(torch.zeros(1, 3, 128, 192))
    assert [tuple(p.shape) for p in pyramid] == [
        (1, 256, 128 // s, 192 // s) for s in (4, 8, 16, 32, 64)]
    assert fpn_model.rpn.feat_stride == (4, 8, 16, 32, 64)
    body = fpn_model.extractor.body
    frozen = {name for name, p in body.named_parameters()
              if not p.requires_grad}
    assert frozen == {name for name, _ in body.named_parameters()
                      if name.startswith(('conv1.', 'layer1.'))}
    assert frozen  # conv1 and layer1 have weights, all frozen
    norms = [m for m in fpn_model.modules()
             if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d))]
    assert norms and all(isinstance(m, FrozenBatchNorm2d) for m in norms)
    assert [c.out_channels for c in fpn_model.extractor.lateral] == [256] * 4
    assert [c.in_channels for c in fpn_model.extractor.lateral] == [
        256, 512, 1024, 2048]


def test_p6_is_p5_subsampled(fpn_model):
    with torch.no_grad():
        pyramid = fpn_model.extractor(torch.randn(1, 3, 128, 192))
    assert torch.equal(pyramid[4], pyramid[3][:, :, ::2, ::2])


def test_resnet101_has_23_blocks_in_layer3():
    torch.manual_seed(0)
    model = FasterRCNNFPNResNet101(n_fg_class=2, pretrained_model=None)
    assert [len(getattr(model.extractor.body, name)) for name in (
        'layer1', 'layer2', 'layer3', 'layer4')] == [3, 4, 23, 3]


# ------------------------------------------------------------ the anchors

# Each level's base anchors (y_min, x_min, y_max, x_max) for ratios 0.5,
# 1, 2, worked out by hand: height s sqrt(r), width s / sqrt(r), halved
# and rounded (e.g. 32 sqrt(0.5) / 2 = 11.31 -> 11, 32 / sqrt(0.5) / 2 =
# 22.63 -> 23).
BASES = {
    32: [(-11, -23, 11, 23), (-16, -16, 16, 16), (-23, -11, 23, 11)],
    64: [(-23, -45, 23, 45), (-32, -32, 32, 32), (-45, -23, 45, 23)],
    128: [(-45, -91, 45, 91), (-64, -64, 64, 64), (-91, -45, 91, 45)],
    256: [(-91, -181, 91, 181), (-128, -128, 128, 128),
          (-181, -91, 181, 91)],
    512: [(-181, -362, 181, 362), (-256, -256, 256, 256),
          (-362, -181, 362, 181)],
}


@pytest.mark.parametrize('size', sorted(BASES))
def test_anchor_base_table(size):
    assert anchor_base((size,), (0.5, 1., 2.)).tolist() == [
        list(row) for row in BASES[size]]


def _levels(fpn_model, x):
    """The pyramid's levels and the RPN's anchors for input ``x``."""
    with torch.no_grad():
        pyramid = fpn_model.extractor(x)
        anchor = fpn_model.rpn(pyramid, tuple(x.shape[2:]))[4]
    return pyramid, anchor


def test_each_levels_anchors_lie_on_its_grid(fpn_model):
    pyramid, anchor = _levels(fpn_model, torch.zeros(1, 3, 128, 192))
    counts = [p.shape[2] * p.shape[3] * 3 for p in pyramid]
    assert len(anchor) == sum(counts)
    start = 0
    for (size, base), stride, level, count in zip(
            sorted(BASES.items()), (4, 8, 16, 32, 64), pyramid, counts):
        ours = anchor[start:start + count].view(level.shape[2],
                                                level.shape[3], 3, 4)
        start += count
        for i, j in ((0, 0), (1, 0), (0, 1), (level.shape[2] - 1,
                                               level.shape[3] - 1)):
            shift = torch.tensor([i, j, i, j], dtype=torch.float32) * stride
            assert ours[i, j].tolist() == (torch.tensor(
                base, dtype=torch.float32) + shift).tolist(), (size, i, j)


def test_anchors_equal_torchvisions(fpn_model):
    """torchvision's AnchorGenerator (x, y order) on the same grids, a
    height whose P6 stride is not 64 (320 // 5 = 64, 352 // 6 = 58)."""
    x = torch.zeros(1, 3, 352, 192)
    pyramid, anchor = _levels(fpn_model, x)
    generator = AnchorGenerator(((32,), (64,), (128,), (256,), (512,)),
                                ((0.5, 1., 2.),) * 5)
    want = generator(ImageList(x, [(352, 192)]), pyramid)[0]
    assert torch.equal(anchor, want[:, [1, 0, 3, 2]])


# ----------------------------------------------------------- the levels

@pytest.mark.parametrize('side, level', [
    (10., 2), (111.9, 2), (112., 3), (223., 3), (224., 4), (447., 4),
    (448., 5), (1000., 5)])
def test_a_rois_level_follows_the_formula(side, level):
    """k = floor(4 + log2(sqrt(w h) / 224)), clamped to [2, 5]; the index
    is k - 2. A square RoI of side s has sqrt(w h) = s."""
    want = min(max(math.floor(4 + math.log2(side / 224)), 2), 5)
    assert want == level
    rois = torch.tensor([[0., 0., side, side]])
    assert fpn_level(rois, (1 / 4, 1 / 8, 1 / 16, 1 / 32)).item() == level - 2


def test_pooler_equals_torchvisions_multiscale_roialign():
    torch.manual_seed(0)
    maps = [torch.randn(2, 4, 768 // s, 1024 // s) for s in (4, 8, 16, 32)]
    rng = np.random.RandomState(0)
    yx = rng.uniform(0, 60, (40, 2))
    hw = np.exp(rng.uniform(np.log(20), np.log(700), (40, 2)))
    hw[:3] = [[500., 600.], [700., 650.], [460., 460.]]  # level 5
    rois = torch.tensor(np.concatenate((yx, yx + hw), 1), dtype=torch.float32)
    indices = torch.tensor(np.arange(40) % 2)
    pooler = RoIPooler('align', 7, (1 / 4, 1 / 8, 1 / 16, 1 / 32),
                       sampling_ratio=2, aligned=False)
    got = pooler(maps, rois, indices)
    theirs = MultiScaleRoIAlign(['0', '1', '2', '3'], 7, 2)
    boxes = [rois[indices == i][:, [1, 0, 3, 2]] for i in range(2)]
    want = theirs(dict(zip('0123', maps)), boxes, [(768, 1024)] * 2)
    order = torch.cat([torch.where(indices == i)[0] for i in range(2)])
    assert torch.equal(got[order], want)
    assert set(fpn_level(rois, pooler.spatial_scale).tolist()) == {0, 1, 2, 3}


# ---------------------------------------------------- forward, predict

def test_forward_and_predict_at_a_small_size(fpn_model):
    fpn_model.eval()
    with torch.no_grad():
        roi_cls_locs, roi_scores, rois, roi_indices = fpn_model(
            torch.randn(2, 3, 128, 160))
    assert roi_cls_locs.shape == (len(rois), 4 * (N_FG_CLASS + 1))
    assert roi_scores.shape == (len(rois), N_FG_CLASS + 1)
    assert 0 < len(rois) <= 2 * 1000
    assert set(roi_indices.tolist()) == {0, 1}
    img = np.random.RandomState(0).uniform(0, 255, (3, 100, 150)).astype(
        np.float32)
    bboxes, labels, scores = fpn_model.predict([img], visualize=True)
    assert bboxes[0].shape[1] == 4 and labels[0].dtype == np.int32
    fpn_model.score_thresh = 0.
    try:
        detections = fpn_model.detect([img])[0]
    finally:
        fpn_model.use_preset('evaluate')
    boxes = detections['boxes']
    assert len(boxes) > 0 and (boxes[:, 0::2] <= 100).all()
    assert (boxes[:, 1::2] <= 150).all() and (boxes >= 0).all()


def test_an_image_smaller_than_the_coarsest_stride_is_one_sentence(
        fpn_model):
    with pytest.raises(ValueError) as info:
        fpn_model(torch.zeros(1, 3, 48, 128))
    assert str(info.value) == ('image of size 48x128 is smaller than one '
                               'feature stride (64 px) on a side')


# ------------------------------------------------------------- training

@pytest.mark.slow
def test_training_loss_falls_on_a_tiny_case():
    """Twenty steps on one 128 x 128 image with one object: the total
    loss of the last five steps is well below that of the first five."""
    torch.manual_seed(0)
    np.random.seed(0)
    model = FasterRCNNFPNResNet50(n_fg_class=2, pretrained_model=None,
                                  min_size=128, max_size=128)
    # (from random init the frozen BatchNorms normalize nothing: a higher
    # lr diverges)
    losses = losses_on_one_object(FasterRCNNTrainer(model, lr=1e-3))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


def test_a_checkpoint_round_trip_predicts_the_same(fpn_model, tmp_path):
    fpn_model.eval()
    path = FasterRCNNTrainer(fpn_model, label_names=('a', 'b', 'c')).save(
        save_path=str(tmp_path / 'fpn.pth'))
    restored, names, _ = load_detector(path)
    assert isinstance(restored, FasterRCNNFPNResNet50)
    assert names == ('a', 'b', 'c')
    assert (restored.min_size, restored.max_size,
            restored.size_divisible) == (128, 192, 32)
    assert restored.head.roi.settings == dict(roi_op='align',
                                              sampling_ratio=2,
                                              aligned=False)
    img = np.random.RandomState(1).uniform(0, 255, (3, 90, 120)).astype(
        np.float32)
    for model in (fpn_model, restored):
        model.score_thresh = 0.
    try:
        want = fpn_model.detect([img])[0]
        got = restored.detect([img])[0]
    finally:
        for model in (fpn_model, restored):
            model.use_preset('evaluate')
    assert len(want['boxes']) > 0
    for key in want:
        assert torch.equal(want[key], got[key]), key


@pytest.mark.slow  # records the model
def test_torch_export_equals_detect(fpn_model):
    """The recorded FPN detector (padding, pyramid, per-level proposals,
    per-level pooling) gives the eager detections on two image sizes."""
    from model.export import ExportableFasterRCNN, export_program
    from model.utils.preprocess import preprocess
    fpn_model.eval()
    program = export_program(fpn_model, score_thresh=0.)
    for seed, size in enumerate([(100, 150), (150, 100)]):
        img = np.random.RandomState(seed).uniform(0, 255, (3,) + size)
        x = torch.from_numpy(preprocess(img, 128, 192))[None]
        with torch.no_grad():
            want = ExportableFasterRCNN(fpn_model, score_thresh=0.)(
                x, torch.tensor(size))
            got = program.module()(x, torch.tensor(size))
        assert len(want[0]) > 0
        for a, b in zip(want, got):
            torch.testing.assert_close(a, b)
