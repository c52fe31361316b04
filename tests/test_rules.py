"""Rules pinned at their boundaries: IoU exactly at a threshold, a box
exactly ``min_size * scale``, a score exactly ``score_thresh``, RoIs that
are not square, a resize at a scale other than 1; and the creators' exact
counts under non-default settings.

Each test here fails when its rule is written the nearly-right way (``>``
for ``>=``, an argument ignored, the boxes' axes swapped).
"""
import numpy as np
import pytest
import torch
from skimage import transform as sktsf
from torch import nn
from torch.nn import functional as F
from torchvision.ops import roi_pool

from data import dataset as data_dataset
from data.dataset import Transform
from model.roi_head import RoIHead, RoIPooler
from model.utils import preprocess as model_preprocess
from model.utils.bbox_tools import generate_anchor_base
from model.utils.creator_tool import (AnchorTargetCreator, ProposalCreator,
                                      ProposalTargetCreator)
from trainer import _fast_rcnn_loc_loss, _smooth_l1_loss

# A 10 x 10 gt box; the boxes below share its top-left corner, so that each
# IoU is (area of the box) / 100, exact in float32.
GT = [0., 0., 10., 10.]


def box_with_iou(iou_percent):
    """A 10-high box inside GT whose IoU with GT is iou_percent / 100."""
    return [0., 0., 10., iou_percent / 10.]


def tensor(rows, device):
    return torch.tensor(rows, dtype=torch.float32, device=device)


def np_iou(a, b):
    """IoU of every pair of (y_min, x_min, y_max, x_max) boxes, float32,
    in the same order of operations as the library (so bitwise equal)."""
    a = a.astype(np.float32)
    b = b.astype(np.float32)
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    hw = br - tl
    area_i = hw[..., 0] * hw[..., 1] * (tl < br).all(axis=2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return area_i / (area_a[:, None] + area_b[None, :] - area_i)


# ------------------------------------------------------ AnchorTargetCreator

def test_anchor_target_iou_exactly_at_the_thresholds(device):
    anchor = tensor([
        GT,                 # IoU 1: the gt's best, positive by the tie rule
        box_with_iou(70),   # IoU exactly 0.7: positive by the threshold
        box_with_iou(50),   # between the thresholds: ignored
        box_with_iou(30),   # IoU exactly 0.3: not below 0.3, ignored
        box_with_iou(29),   # below 0.3: negative
        [20., 20., 30., 30.],  # IoU 0: negative
        [35., 35., 45., 45.],  # outside the 40 x 40 image: ignored
    ], device)
    bbox = tensor([GT], device)
    _, label = AnchorTargetCreator()(bbox, anchor, (40, 40))
    assert label.cpu().tolist() == [1, 1, -1, -1, 0, 0, -1]


def test_anchor_target_iou_just_below_pos_thresh_is_not_positive(device):
    anchor = tensor([GT, box_with_iou(69)], device)
    _, label = AnchorTargetCreator()(tensor([GT], device), anchor, (40, 40))
    assert label.cpu().tolist() == [1, -1]


# ---------------------------------------------------- ProposalTargetCreator

# RoIs against GT, with their IoUs; the gt box (IoU 1) is appended by the
# creator.
PT_ROIS = {
    0.7: box_with_iou(70),
    0.5: box_with_iou(50),
    0.4: box_with_iou(40),
    0.1: box_with_iou(10),
    0.05: box_with_iou(5),
    0.0: [20., 20., 30., 30.],
}


def iou_of_rows(sample_roi):
    """The IoU key of PT_ROIS (1.0 for the gt box) of each sampled RoI."""
    by_row = {tuple(v): k for k, v in PT_ROIS.items()}
    by_row[tuple(GT)] = 1.0
    return [by_row[tuple(r)] for r in sample_roi.cpu().tolist()]


def run_proposal_target(creator, device):
    roi = tensor(list(PT_ROIS.values()), device)
    bbox = tensor([GT], device)
    label = torch.tensor([2], dtype=torch.int32, device=device)
    sample_roi, _, gt_roi_label = creator(roi, bbox, label)
    gt_roi_label = gt_roi_label.cpu()
    n_pos = int((gt_roi_label > 0).sum())
    assert (gt_roi_label[:n_pos] == 3).all()  # positives first, label + 1
    assert (gt_roi_label[n_pos:] == 0).all()
    iou = iou_of_rows(sample_roi)
    return sorted(iou[:n_pos]), sorted(iou[n_pos:])


def test_proposal_target_iou_exactly_pos_thresh_is_positive(device):
    pos, neg = run_proposal_target(ProposalTargetCreator(), device)
    # IoU exactly 0.5: positive, and never also a negative
    assert pos == [0.5, 0.7, 1.0]
    assert neg == [0.0, 0.05, 0.1, 0.4]


def test_proposal_target_iou_exactly_neg_thresh_lo_is_negative(device):
    creator = ProposalTargetCreator(neg_iou_thresh_lo=0.1)
    pos, neg = run_proposal_target(creator, device)
    assert pos == [0.5, 0.7, 1.0]
    # IoU exactly 0.1 is in [0.1, 0.5); 0.05 and 0 are below the band
    assert neg == [0.1, 0.4]


def test_proposal_target_negative_band_is_half_open(device):
    # pos_iou_thresh above 0.5 leaves IoU 0.5 neither positive nor negative
    creator = ProposalTargetCreator(pos_iou_thresh=0.6)
    pos, neg = run_proposal_target(creator, device)
    assert pos == [0.7, 1.0]
    assert neg == [0.0, 0.05, 0.1, 0.4]


@pytest.mark.parametrize('n_sample, pos_ratio, n_pos', [
    (10, 0.3, 3),
    (10, 0.25, 2),  # round(2.5) is 2, numpy's round-half-to-even
    (7, 0.5, 4),    # round(3.5) is 4
    (10, 0.0, 0),
])
def test_proposal_target_follows_pos_ratio(device, n_sample, pos_ratio,
                                           n_pos):
    np.random.seed(0)
    # 7 positive candidates (6 RoIs and the gt box), 20 negatives
    pos_roi = [box_with_iou(p) for p in (50, 60, 70, 80, 90, 100)]
    neg_roi = [[20. + i, 20., 30. + i, 30.] for i in range(20)]
    roi = tensor(pos_roi + neg_roi, device)
    label = torch.tensor([0], dtype=torch.int32, device=device)
    creator = ProposalTargetCreator(n_sample=n_sample, pos_ratio=pos_ratio)
    _, _, gt_roi_label = creator(roi, tensor([GT], device), label)
    assert len(gt_roi_label) == n_sample
    assert int((gt_roi_label > 0).sum()) == n_pos
    assert int((gt_roi_label == 0).sum()) == n_sample - n_pos


# ---------------------------------------------------------- ProposalCreator

@pytest.mark.parametrize('scale', [0.5, 1., 2.])
def test_proposal_creator_keeps_boxes_exactly_min_size(device, scale):
    s = 16 * scale  # the smallest side kept, in pixels of the scaled image
    anchor = tensor([
        [0., 0., s, s],                        # exactly s x s: kept
        [4 * s, 0., 5 * s, 4 * s],             # exactly s tall: kept
        [8 * s, 0., 12 * s, s],                # exactly s wide: kept
        [0., 8 * s, s - 0.5, 12 * s],          # just under s tall: dropped
        [8 * s, 8 * s, 12 * s, 9 * s - 0.5],   # just under s wide: dropped
        [14 * s, 14 * s, 16 * s, 16 * s],      # 2s x 2s: kept
    ], device)
    score = tensor([0.9, 0.8, 0.7, 0.95, 0.85, 0.6], device)
    loc = torch.zeros_like(anchor)  # the boxes are the anchors
    parent = nn.Module()
    for training in (True, False):
        parent.train(training)
        creator = ProposalCreator(parent, min_size=16)
        roi = creator(loc, score, anchor, (16 * s, 16 * s), scale=scale)
        assert roi.cpu().tolist() == anchor[[0, 1, 2, 5]].cpu().tolist()


# ----------------------------------------------------------------- RoIPool

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
    got = RoIPooler('pool', 2, 1.)(x, tensor(FEAT_ROIS_YX, device),
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
    rois = tensor(FEAT_ROIS_YX, device) * 16  # in input pixels
    head(x, rois, torch.tensor(ROI_INDICES, device=device))
    size = (roi_size, roi_size)
    want = torchvision_pool(x, rois.tolist(), ROI_INDICES, size, 1. / 16)
    assert not torch.equal(
        want, swapped_pool(x, rois.tolist(), ROI_INDICES, size, 1. / 16))
    assert torch.equal(head.classifier.seen, want.flatten(1))


# --------------------------------------------------------------- preprocess

def reference_preprocess(img, min_size, max_size, caffe_pretrain):
    """skimage's resize (reflect, no anti-aliasing) and the normalization,
    written out."""
    C, H, W = img.shape
    scale = min(min_size / min(H, W), max_size / max(H, W))
    out = sktsf.resize(img / 255., (C, H * scale, W * scale), mode='reflect',
                       anti_aliasing=False)
    if caffe_pretrain:
        out = out[[2, 1, 0]] * 255
        out = out - np.array([122.7717, 115.9465, 102.9801])[:, None, None]
    else:
        mean = np.array([0.485, 0.456, 0.406])[:, None, None]
        std = np.array([0.229, 0.224, 0.225])[:, None, None]
        out = (out - mean) / std
    return out.astype(np.float32)


@pytest.mark.parametrize('preprocess', [model_preprocess.preprocess,
                                        data_dataset.preprocess])
@pytest.mark.parametrize('caffe_pretrain', [False, True])
@pytest.mark.parametrize('in_size, min_size, out_size', [
    ((37, 53), 20, (20, 29)),  # down: anti-aliasing would blur
    ((11, 17), 30, (30, 46)),  # up: the border mode shows at the edges
])
def test_preprocess_is_reflect_resize_without_anti_aliasing(
        preprocess, caffe_pretrain, in_size, min_size, out_size):
    rng = np.random.RandomState(0)
    img = rng.uniform(0, 255, (3,) + in_size).astype(np.float32)
    got = preprocess(img, min_size=min_size, max_size=1000,
                     caffe_pretrain=caffe_pretrain)
    want = reference_preprocess(img, min_size, 1000, caffe_pretrain)
    assert got.dtype == np.float32
    assert got.shape == (3,) + out_size
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- Transform

def test_transform_scale_is_the_height_ratio():
    # 37 x 53 to min_size 20: o_H = 20, o_W = round(28.65) = 29, so the
    # height ratio 20 / 37 differs from the width ratio 29 / 53
    H, W = 37, 53
    img = np.random.RandomState(0).uniform(0, 255, (3, H, W))
    bbox = np.array([[1., 2., 30., 40.]], dtype=np.float32)
    label = np.array([0], dtype=np.int32)
    np.random.seed(0)
    out_img, _, _, scale = Transform(20, 1000)((img.astype(np.float32),
                                                bbox, label))
    _, o_H, o_W = out_img.shape
    assert (o_H, o_W) == (20, 29)
    assert o_H / H != o_W / W
    assert scale == o_H / H


# ------------------------------------------------------------------ predict

def test_predict_keeps_scores_strictly_above_score_thresh(
        make_tiny_faster_rcnn):
    model = make_tiny_faster_rcnn()
    img = torch.rand(3, 64, 96, generator=torch.Generator().manual_seed(0))
    img = (img - 0.5) / 0.25

    def predict(score_thresh):
        model.score_thresh = score_thresh  # predict resets it afterwards
        bboxes, labels, scores = model.predict([img], sizes=[(64, 96)])
        return bboxes[0], labels[0], scores[0]

    bbox, label, score = predict(0.)
    assert len(score) >= 3
    s = np.sort(score)[len(score) // 2]  # a middle score, float32
    bbox2, label2, score2 = predict(float(s))
    # a detection scoring exactly score_thresh is dropped, higher ones stay
    above = score > s
    assert (score == s).any() and not (score2 == s).any()
    np.testing.assert_array_equal(score2, score[above])
    np.testing.assert_array_equal(label2, label[above])
    np.testing.assert_array_equal(bbox2, bbox[above])


# ------------------------------------------- creators: exact counts, random

SEEDS = range(30)


def enumerate_anchor(img_size, anchor_scales):
    """Stride-16 anchors of an image of img_size, (y, x, anchor) order."""
    base = np.asarray(generate_anchor_base(anchor_scales=anchor_scales))
    sy, sx = np.meshgrid(np.arange(img_size[0] // 16) * 16,
                         np.arange(img_size[1] // 16) * 16, indexing='ij')
    shift = np.stack((sy.ravel(), sx.ravel(), sy.ravel(), sx.ravel()), 1)
    return (base[None] + shift[:, None]).reshape(-1, 4).astype(np.float32)


def random_gt(rng, img_size, n_bbox):
    H, W = img_size
    ymin = rng.uniform(0, H - 10, n_bbox)
    xmin = rng.uniform(0, W - 10, n_bbox)
    ymax = np.minimum(ymin + rng.uniform(4, H, n_bbox), H)
    xmax = np.minimum(xmin + rng.uniform(4, W, n_bbox), W)
    bbox = np.stack((ymin, xmin, ymax, xmax), axis=1)
    if rng.rand() < 0.5:  # integer coordinates give IoU ties
        bbox = np.floor(bbox)
    return bbox.astype(np.float32)


@pytest.mark.parametrize('seed', SEEDS)
def test_anchor_target_exact_counts(seed):
    rng = np.random.RandomState(seed)
    img_size = (int(rng.randint(96, 500)), int(rng.randint(96, 700)))
    anchor_scales = [[2, 4, 8], [8, 16, 32]][seed % 2]
    anchor = enumerate_anchor(img_size, anchor_scales)
    bbox = random_gt(rng, img_size, 0 if seed % 10 == 3 else
                     int(rng.randint(1, 8)))
    n_sample = int(rng.choice([16, 64, 256]))
    pos_ratio = float(rng.choice([0.25, 0.5, 0.7]))
    pos_iou_thresh = float(rng.choice([0.5, 0.7]))
    neg_iou_thresh = float(rng.choice([0.3, 0.4]))
    np.random.seed(seed)
    _, label = AnchorTargetCreator(n_sample, pos_iou_thresh, neg_iou_thresh,
                                   pos_ratio)(bbox, anchor, img_size)

    H, W = img_size
    inside = ((anchor[:, 0] >= 0) & (anchor[:, 1] >= 0) &
              (anchor[:, 2] <= H) & (anchor[:, 3] <= W))
    if len(bbox) and inside.any():
        iou = np_iou(anchor[inside], bbox)
        max_iou = iou.max(axis=1)
        tied = (iou == iou.max(axis=0)).any(axis=1)
    else:
        max_iou = np.zeros(inside.sum(), dtype=np.float32)
        tied = np.zeros(inside.sum(), dtype=bool)
    pos_cand = (max_iou >= pos_iou_thresh) | tied
    neg_cand = (max_iou < neg_iou_thresh) & ~pos_cand

    assert (label[~inside] == -1).all()
    pos = label[inside] == 1
    neg = label[inside] == 0
    assert pos_cand[pos].all() and neg_cand[neg].all()
    n_pos = min(int(pos_cand.sum()), int(n_sample * pos_ratio))
    assert pos.sum() == n_pos
    assert neg.sum() == min(int(neg_cand.sum()), n_sample - n_pos)


@pytest.mark.parametrize('seed', SEEDS)
def test_proposal_target_exact_counts(seed):
    rng = np.random.RandomState(seed)
    img_size = (int(rng.randint(96, 500)), int(rng.randint(96, 700)))
    H, W = img_size
    bbox = random_gt(rng, img_size, 0 if seed % 10 == 3 else
                     int(rng.randint(1, 8)))
    label = rng.randint(0, 20, len(bbox)).astype(np.int32)
    ymin = rng.uniform(0, H - 2, 150)
    xmin = rng.uniform(0, W - 2, 150)
    roi = [np.stack((ymin, xmin, np.minimum(ymin + rng.uniform(2, H, 150), H),
                     np.minimum(xmin + rng.uniform(2, W, 150), W)), 1)]
    for _ in range(int(rng.randint(0, 10))):
        roi.append(bbox + rng.normal(scale=4., size=bbox.shape))
    roi = np.concatenate(roi).astype(np.float32)
    roi[:, 2:] = np.maximum(roi[:, 2:], roi[:, :2] + 1)
    n_sample = int(rng.choice([10, 64, 128]))
    pos_ratio = float(rng.choice([0.25, 0.3, 0.5]))
    pos_iou_thresh = float(rng.choice([0.5, 0.6]))
    neg_iou_thresh_hi = float(rng.choice([0.4, 0.5]))
    neg_iou_thresh_lo = float(rng.choice([0.0, 0.1]))
    creator = ProposalTargetCreator(n_sample, pos_ratio, pos_iou_thresh,
                                    neg_iou_thresh_hi, neg_iou_thresh_lo)
    np.random.seed(seed)
    sample_roi, _, gt_roi_label = creator(roi, bbox, label)

    all_roi = np.concatenate((roi, bbox))
    max_iou = (np_iou(all_roi, bbox).max(axis=1) if len(bbox)
               else np.zeros(len(all_roi), dtype=np.float32))
    n_pos_cand = int((max_iou >= pos_iou_thresh).sum())
    n_neg_cand = int(((max_iou < neg_iou_thresh_hi) &
                      (max_iou >= neg_iou_thresh_lo)).sum())
    n_pos = min(int(np.round(n_sample * pos_ratio)), n_pos_cand)
    n_neg = min(n_sample - n_pos, n_neg_cand)
    assert (gt_roi_label > 0).sum() == n_pos
    assert (gt_roi_label == 0).sum() == n_neg
    assert len(sample_roi) == n_pos + n_neg
    # the samples are what they claim: positives first, then the band
    sample_iou = (np_iou(sample_roi, bbox).max(axis=1) if len(bbox)
                  else np.zeros(len(sample_roi), dtype=np.float32))
    assert (sample_iou[:n_pos] >= pos_iou_thresh).all()
    assert (sample_iou[n_pos:] < neg_iou_thresh_hi).all()
    assert (sample_iou[n_pos:] >= neg_iou_thresh_lo).all()


# ----------------------------------------------------------------- smooth L1

@pytest.mark.parametrize('sigma', [1., 3.])
@pytest.mark.parametrize('masked', [False, True])
def test_smooth_l1_is_torchs_with_beta_one_over_sigma_squared(sigma, masked):
    g = torch.Generator().manual_seed(int(sigma) + 10 * masked)
    x = torch.randn(200, 4, generator=g, dtype=torch.float64)
    t = torch.randn(200, 4, generator=g, dtype=torch.float64)
    in_weight = torch.ones_like(x)
    if masked:
        in_weight = (torch.rand(200, 4, generator=g) > 0.4).double()
    beta = 1. / sigma ** 2
    d = (in_weight * (x - t)).abs()
    assert (d[d > 0] < beta).any() and (d > beta).any()  # both branches
    want = F.smooth_l1_loss(in_weight * x, in_weight * t, beta=beta,
                            reduction='sum')
    torch.testing.assert_close(_smooth_l1_loss(x, t, in_weight, sigma), want,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('sigma', [1., 3.])
def test_loc_loss_is_positives_smooth_l1_over_labels_ge_0(sigma):
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(50, 4, generator=g, dtype=torch.float64)
    gt = torch.randn(50, 4, generator=g, dtype=torch.float64)
    label = torch.randint(-1, 4, (50,), generator=g)
    w = (label > 0).double()[:, None]
    want = F.smooth_l1_loss(w * pred, w * gt, beta=1. / sigma ** 2,
                            reduction='sum') / (label >= 0).sum()
    torch.testing.assert_close(_fast_rcnn_loc_loss(pred, gt, label, sigma),
                               want, rtol=1e-12, atol=1e-12)
