"""model/utils/creator_tool.py: AnchorTargetCreator, ProposalTargetCreator
and ProposalCreator.

Invariants over many random cases; each rule pinned at its boundary by hand
(an IoU of exactly 0.7, 0.5, 0.3, a box exactly ``min_size * scale``) and by
exact counts under non-default settings; the same samples as the original
design's numpy code for the same numpy seed; py-faster-rcnn's target rules
(``clobber_positives``, ``allowed_border``, ``neg_iou_thresh_lo``) against a
numpy transcription of them; ``sampler='torch'`` (torch's RNG on the device
of the inputs: other samples than the original's, the same counts,
candidates and offsets, nothing read on the host); bad input.

Each boundary test fails when its rule is written the nearly-right way
(``>`` for ``>=``, an argument ignored, the boxes' axes swapped).
"""
import numpy as np
import pytest
import torch
from torch import nn

from conftest import host_reads
from reference import original as ref
from model.utils import creator_tool
from model.utils.bbox_tools import bbox2loc, bbox_iou
from model.utils.creator_tool import (AnchorTargetCreator, ProposalCreator,
                                      ProposalTargetCreator)

SEEDS = range(50)
PFR_SEEDS = range(20)
TORCH_SEEDS = range(20)
COUNT_SEEDS = range(30)
FEAT_STRIDE = 16


# ------------------------------------------------------------------ cases

def make_anchor(img_size, anchor_scales=(8, 16, 32)):
    """The anchors of a stride-16 feature map of an image of img_size."""
    anchor_base = ref.generate_anchor_base(anchor_scales=list(anchor_scales))
    return ref._enumerate_shifted_anchor(
        anchor_base, FEAT_STRIDE, img_size[0] // FEAT_STRIDE,
        img_size[1] // FEAT_STRIDE)


def make_gt(rng, img_size, n_bbox):
    """n_bbox boxes inside the image, some on integer pixels, some tiny."""
    H, W = img_size
    ymin = rng.uniform(0, H - 10, n_bbox)
    xmin = rng.uniform(0, W - 10, n_bbox)
    ymax = ymin + rng.uniform(4, H - ymin)
    xmax = xmin + rng.uniform(4, W - xmin)
    bbox = np.stack((ymin, xmin, np.minimum(ymax, H), np.minimum(xmax, W)),
                    axis=1)
    if rng.rand() < 0.5:  # VOC-like integer coordinates give IoU ties
        bbox = np.floor(bbox)
    return bbox.astype(np.float32)


def make_case(seed):
    """A random image size, its anchors and 0 to 8 gt boxes (0 for one case
    in ten)."""
    rng = np.random.RandomState(seed)
    img_size = (int(rng.randint(96, 600)), int(rng.randint(96, 1000)))
    n_bbox = 0 if seed % 10 == 3 else int(rng.randint(1, 9))
    bbox = make_gt(rng, img_size, n_bbox)
    label = rng.randint(0, 20, size=n_bbox).astype(np.int32)
    anchor = make_anchor(img_size)
    return rng, img_size, anchor, bbox, label


def make_case_with_tiny_boxes(seed):
    """An image size, its anchors and 1 to 8 gt boxes, some of them tiny so
    that their best anchor's IoU is below 0.3, some on integer pixels."""
    rng = np.random.RandomState(seed)
    H, W = int(rng.randint(200, 600)), int(rng.randint(200, 800))
    n_bbox = int(rng.randint(1, 9))
    size = np.where(rng.rand(n_bbox, 2) < 0.3,
                    rng.uniform(4, 20, (n_bbox, 2)),
                    rng.uniform(20, 300, (n_bbox, 2)))
    ymin = rng.uniform(0, H - size[:, 0])
    xmin = rng.uniform(0, W - size[:, 1])
    bbox = np.stack((ymin, xmin, ymin + size[:, 0], xmin + size[:, 1]), 1)
    if seed % 2:
        bbox = np.floor(bbox)
    label = rng.randint(0, 20, n_bbox).astype(np.int32)
    return rng, (H, W), make_anchor((H, W)), bbox.astype(np.float32), label


def make_rois(rng, img_size, bbox, n_random=200, max_side=1.,
              n_jitter=None, jitter=4.):
    """Proposals: random boxes (sides up to ``max_side`` times the image's),
    plus ``n_jitter`` (by default 0 to 11, drawn) copies of the gt boxes
    moved by normal noise of std ``jitter`` (so that there are positives);
    each at least 1 px high and wide."""
    H, W = img_size
    ymin = rng.uniform(0, H - 2, n_random)
    xmin = rng.uniform(0, W - 2, n_random)
    ymax = np.minimum(ymin + rng.uniform(2, H * max_side, n_random), H)
    xmax = np.minimum(xmin + rng.uniform(2, W * max_side, n_random), W)
    rois = [np.stack((ymin, xmin, ymax, xmax), axis=1)]
    if n_jitter is None:
        n_jitter = int(rng.randint(0, 12))
    for _ in range(n_jitter):
        rois.append(bbox + rng.normal(scale=jitter, size=bbox.shape))
    roi = np.concatenate(rois, axis=0)
    roi[:, 2:] = np.maximum(roi[:, 2:], roi[:, :2] + 1)
    return roi.astype(np.float32)


def anchor_ious(anchor, bbox, img_size):
    """Inside mask and IoUs of the inside anchors, as the original computes
    them (float32)."""
    H, W = img_size
    inside = ((anchor[:, 0] >= 0) & (anchor[:, 1] >= 0) &
              (anchor[:, 2] <= H) & (anchor[:, 3] <= W))
    return inside, ref.bbox_iou(anchor[inside], bbox)


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


def to_numpy(x):
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else x


class Parent(nn.Module):
    """A stand-in for the RPN that owns a ProposalCreator."""


def seeded(seed, call):
    """``call()`` after seeding numpy, and numpy's RNG state after it."""
    np.random.seed(seed)
    out = call()
    return out, np.random.get_state()[1].copy()


# A 10 x 10 gt box; the boxes below share its top-left corner, so that each
# IoU is (area of the box) / 100, exact in float32.
GT = [0., 0., 10., 10.]


def box_with_iou(iou_percent):
    """A 10-high box inside GT whose IoU with GT is iou_percent / 100."""
    return [0., 0., 10., iou_percent / 10.]


def tensor(rows, device):
    return torch.tensor(rows, dtype=torch.float32, device=device)


# ------------------------------------------------------ AnchorTargetCreator

@pytest.mark.parametrize('seed', SEEDS)
def test_anchor_target_invariants(seed):
    _, img_size, anchor, bbox, _ = make_case(seed)
    creator = AnchorTargetCreator()
    loc, label = creator(bbox, anchor, img_size)

    assert isinstance(loc, np.ndarray) and isinstance(label, np.ndarray)
    assert loc.shape == (len(anchor), 4)
    assert label.shape == (len(anchor),)
    assert label.dtype == np.int32
    assert set(np.unique(label)) <= {-1, 0, 1}

    inside, iou = anchor_ious(anchor, bbox, img_size)
    # outside anchors: label -1, loc 0
    assert (label[~inside] == -1).all()
    assert (loc[~inside] == 0).all()

    in_label = label[inside]
    if len(bbox) and inside.any():
        max_iou = iou.max(axis=1)
        tied = (iou == iou.max(axis=0)).any(axis=1)
    else:
        max_iou = np.zeros(inside.sum(), dtype=np.float32)
        tied = np.zeros(inside.sum(), dtype=bool)
    pos_cand = (max_iou >= 0.7) | tied
    neg_cand = (max_iou < 0.3) & ~pos_cand

    pos = in_label == 1
    neg = in_label == 0
    assert (pos_cand[pos]).all(), 'a positive is neither >= 0.7 nor a tied max'
    assert (neg_cand[neg]).all(), 'a negative has IoU >= 0.3 or is positive'

    n_pos = min(int(pos_cand.sum()), 128)
    n_neg = min(int(neg_cand.sum()), 256 - n_pos)
    assert pos.sum() == n_pos
    assert neg.sum() == n_neg
    assert (label >= 0).sum() <= 256
    if neg_cand.sum() >= 256 - n_pos:
        assert (label >= 0).sum() == 256

    # every inside anchor gets the loc to its best gt box
    if len(bbox) and inside.any():
        best = bbox[iou.argmax(axis=1)]
        np.testing.assert_allclose(loc[inside],
                                   ref.bbox2loc(anchor[inside], best),
                                   rtol=1e-5, atol=1e-5)
    else:
        assert (loc == 0).all()


def test_anchor_target_with_no_gt_is_all_negative():
    img_size = (300, 400)
    anchor = make_anchor(img_size)
    loc, label = AnchorTargetCreator()(np.zeros((0, 4), np.float32), anchor,
                                       img_size)
    inside, _ = anchor_ious(anchor, np.zeros((0, 4), np.float32), img_size)
    assert set(np.unique(label)) <= {-1, 0}
    assert (label == 0).sum() == min(256, inside.sum())
    assert (label[~inside] == -1).all()
    assert (loc == 0).all()


def test_anchor_target_counts_follow_the_constructor():
    rng, img_size, anchor, bbox, _ = make_case(1)
    creator = AnchorTargetCreator(n_sample=64, pos_iou_thresh=0.5,
                                  neg_iou_thresh=0.1, pos_ratio=0.25)
    _, label = creator(bbox, anchor, img_size)
    inside, iou = anchor_ious(anchor, bbox, img_size)
    max_iou = iou.max(axis=1)
    assert (label == 1).sum() <= 16
    assert (label >= 0).sum() <= 64
    assert (max_iou[label[inside] == 0] < 0.1).all()


def test_anchor_target_positive_by_tie():
    # A small gt box lies inside four anchors of the same size: each of them
    # has the same (highest) IoU, below 0.7, and all four are positive.
    anchor = np.array([[0, 0, 40, 40], [0, 10, 40, 50], [10, 0, 50, 40],
                       [10, 10, 50, 50], [60, 60, 100, 100]], np.float32)
    bbox = np.array([[20, 20, 30, 30]], np.float32)
    _, label = AnchorTargetCreator()(bbox, anchor, (100, 100))
    np.testing.assert_array_equal(label, [1, 1, 1, 1, 0])


def test_anchor_target_thresholds_by_hand():
    bbox = np.array([[0, 0, 100, 100]], np.float32)
    anchor = np.array([
        [0, 0, 100, 100],    # IoU 1: positive (the gt's max)
        [0, 0, 100, 75],     # IoU 0.75: positive by threshold
        [0, 0, 100, 50],     # IoU 0.5: neither
        [0, 0, 100, 29],     # IoU 0.29: negative
        [0, 0, 100, 120],    # outside the 100 x 110 image: ignored
    ], np.float32)
    loc, label = AnchorTargetCreator()(bbox, anchor, (100, 110))
    np.testing.assert_array_equal(label, [1, 1, -1, 0, -1])
    np.testing.assert_allclose(
        loc[:4], ref.bbox2loc(anchor[:4], bbox[[0] * 4]), atol=1e-6)
    assert (loc[4] == 0).all()


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


@pytest.mark.parametrize('seed', COUNT_SEEDS)
def test_anchor_target_exact_counts(seed):
    rng = np.random.RandomState(seed)
    img_size = (int(rng.randint(96, 500)), int(rng.randint(96, 700)))
    anchor_scales = [[2, 4, 8], [8, 16, 32]][seed % 2]
    anchor = make_anchor(img_size, anchor_scales)
    bbox = make_gt(rng, img_size, 0 if seed % 10 == 3 else
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


# ---------------------------------------------------- ProposalTargetCreator

@pytest.mark.parametrize('seed', SEEDS)
def test_proposal_target_invariants(seed):
    rng, img_size, _, bbox, label = make_case(seed)
    roi = make_rois(rng, img_size, bbox)
    mean, std = (0.01, -0.02, 0.03, 0.), (0.1, 0.1, 0.2, 0.2)
    sample_roi, gt_roi_loc, gt_roi_label = ProposalTargetCreator()(
        roi, bbox, label, mean, std)

    S = len(sample_roi)
    assert sample_roi.shape == (S, 4) and gt_roi_loc.shape == (S, 4)
    assert gt_roi_label.shape == (S,)
    assert gt_roi_label.dtype == label.dtype
    assert S <= 128

    all_roi = np.concatenate((roi, bbox), axis=0)
    if len(bbox) == 0:
        assert S == min(128, len(all_roi))
        assert (gt_roi_label == 0).all()
        return
    iou = ref.bbox_iou(all_roi, bbox).max(axis=1)
    n_pos_cand = (iou >= 0.5).sum()
    n_neg_cand = ((iou < 0.5) & (iou >= 0.)).sum()
    n_pos = min(n_pos_cand, 32)  # round(128 * 0.25)
    assert S == n_pos + min(n_neg_cand, 128 - n_pos)

    # positives first: IoU >= 0.5, label + 1; then negatives: IoU < 0.5, 0
    sample_iou = ref.bbox_iou(sample_roi, bbox)
    assign = sample_iou.argmax(axis=1)
    max_iou = sample_iou.max(axis=1)
    assert (max_iou[:n_pos] >= 0.5).all()
    np.testing.assert_array_equal(gt_roi_label[:n_pos],
                                  label[assign[:n_pos]] + 1)
    assert ((max_iou[n_pos:] < 0.5) & (max_iou[n_pos:] >= 0.)).all()
    assert (gt_roi_label[n_pos:] == 0).all()

    # every sample is a proposal or a gt box
    match = (sample_roi[:, None] == all_roi[None]).all(axis=2).any(axis=1)
    assert match.all()

    want = ((ref.bbox2loc(sample_roi, bbox[assign]) - np.array(mean)) /
            np.array(std))
    np.testing.assert_allclose(gt_roi_loc, want, rtol=1e-4, atol=1e-4)


def test_proposal_target_with_no_gt_is_background_only():
    rng = np.random.RandomState(0)
    roi = make_rois(rng, (200, 300), np.zeros((0, 4), np.float32),
                    n_random=300)
    sample_roi, gt_roi_loc, gt_roi_label = ProposalTargetCreator()(
        roi, np.zeros((0, 4), np.float32), np.zeros((0,), np.int32))
    assert sample_roi.shape == (128, 4)
    assert gt_roi_loc.shape == (128, 4)
    assert np.isfinite(gt_roi_loc).all()
    assert (gt_roi_label == 0).all()
    # the samples are distinct proposals
    assert len({tuple(r) for r in sample_roi}) == 128


def test_proposal_target_gt_boxes_are_candidates():
    # No proposal overlaps the gt box; the gt box itself is the positive.
    roi = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    bbox = np.array([[20, 20, 40, 40]], np.float32)
    sample_roi, gt_roi_loc, gt_roi_label = ProposalTargetCreator()(
        roi, bbox, np.array([4], np.int32))
    np.testing.assert_array_equal(sample_roi[0], bbox[0])
    assert gt_roi_label[0] == 5
    np.testing.assert_allclose(gt_roi_loc[0], 0., atol=1e-6)
    assert sorted(gt_roi_label[1:].tolist()) == [0, 0]


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


@pytest.mark.parametrize('seed', COUNT_SEEDS)
def test_proposal_target_exact_counts(seed):
    rng = np.random.RandomState(seed)
    img_size = (int(rng.randint(96, 500)), int(rng.randint(96, 700)))
    H, W = img_size
    bbox = make_gt(rng, img_size, 0 if seed % 10 == 3 else
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


# ---------------------------------------------------------- ProposalCreator

def random_rpn_output(rng, n_anchor, loc_scale=0.2):
    loc = rng.normal(scale=loc_scale, size=(n_anchor, 4)).astype(np.float32)
    # distinct scores, so that the order does not depend on the sort
    score = ((rng.permutation(n_anchor) + 1.) / (n_anchor + 1.)).astype(
        np.float32)
    return loc, score


def pairwise_iou_max(roi):
    iou = ref.bbox_iou(roi, roi)
    np.fill_diagonal(iou, 0)
    return iou.max() if len(roi) > 1 else 0.


@pytest.mark.parametrize('seed', range(12))
def test_proposal_invariants(seed):
    rng = np.random.RandomState(seed)
    img_size = (int(rng.randint(96, 600)), int(rng.randint(96, 1000)))
    scale = [1., 0.5, 1.6][seed % 3]
    anchor = make_anchor(img_size)
    loc, score = random_rpn_output(rng, len(anchor))
    parent = Parent()
    creator = ProposalCreator(parent)
    for training, n_post in ((True, 2000), (False, 300)):
        parent.train(training)
        roi = creator(loc, score, anchor, img_size, scale=scale)
        assert isinstance(roi, np.ndarray) and roi.shape[1] == 4
        assert 0 < len(roi) <= n_post
        assert (roi[:, 0::2] >= 0).all()
        assert (roi[:, 0::2] <= img_size[0]).all()
        assert (roi[:, 1::2] >= 0).all()
        assert (roi[:, 1::2] <= img_size[1]).all()
        min_size = 16 * scale
        assert (roi[:, 2] - roi[:, 0] >= min_size - 1e-4).all()
        assert (roi[:, 3] - roi[:, 1] >= min_size - 1e-4).all()
        assert pairwise_iou_max(roi) <= 0.7 + 1e-6


def test_proposal_counts_follow_the_parents_mode():
    rng = np.random.RandomState(0)
    img_size = (400, 600)
    anchor = make_anchor(img_size, anchor_scales=(2, 4))
    loc, score = random_rpn_output(rng, len(anchor), loc_scale=0.05)
    parent = Parent()
    # nms_thresh 1 suppresses nothing, so the counts are exact
    creator = ProposalCreator(parent, nms_thresh=1., n_train_pre_nms=50,
                              n_train_post_nms=20, n_test_pre_nms=30,
                              n_test_post_nms=10, min_size=1)
    parent.train()
    assert len(creator(loc, score, anchor, img_size)) == 20
    parent.eval()
    assert len(creator(loc, score, anchor, img_size)) == 10
    few = ProposalCreator(parent, nms_thresh=1., n_test_pre_nms=7,
                          n_test_post_nms=10, min_size=1)
    roi = few(loc, score, anchor, img_size)
    assert len(roi) == 7
    # the 7 best boxes, best first
    order = np.argsort(-score)[:7]
    want = ref.loc2bbox(anchor[order], loc[order])
    want = want.clip(0, None).clip(None, [400, 600, 400, 600])
    np.testing.assert_allclose(roi, want, atol=1e-3)


def test_proposal_creator_defaults():
    parent = Parent()
    creator = ProposalCreator(parent)
    assert creator.parent_model is parent
    assert (creator.nms_thresh, creator.n_train_pre_nms,
            creator.n_train_post_nms, creator.n_test_pre_nms,
            creator.n_test_post_nms, creator.min_size) == \
        (0.7, 12000, 2000, 6000, 300, 16)


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


# --------------------------------------- defaults; same seed, same draw

def test_default_constructor_settings():
    a = AnchorTargetCreator()
    assert (a.n_sample, a.pos_iou_thresh, a.neg_iou_thresh, a.pos_ratio) == \
        (256, 0.7, 0.3, 0.5)
    p = ProposalTargetCreator()
    assert (p.n_sample, p.pos_ratio, p.pos_iou_thresh, p.neg_iou_thresh_hi,
            p.neg_iou_thresh_lo) == (128, 0.25, 0.5, 0.5, 0.0)


def test_defaults_are_this_designs_rules():
    a = AnchorTargetCreator()
    assert a.clobber_positives is False and a.allowed_border == 0
    assert ProposalTargetCreator().neg_iou_thresh_lo == 0.0


def test_default_is_numpy():
    assert AnchorTargetCreator().sampler == 'numpy'
    assert ProposalTargetCreator().sampler == 'numpy'


def test_same_seed_gives_identical_targets():
    for seed in range(10):
        rng, img_size, anchor, bbox, label = make_case(seed)
        roi = make_rois(rng, img_size, bbox)
        outs = []
        for _ in range(2):
            np.random.seed(1234 + seed)
            outs.append(ProposalTargetCreator()(roi, bbox, label) +
                        AnchorTargetCreator()(bbox, anchor, img_size))
        for a, b in zip(*outs):
            np.testing.assert_array_equal(a, b)


def test_different_seeds_draw_different_samples():
    rng, img_size, anchor, bbox, label = make_case(0)
    labels = []
    for seed in (1, 2):
        np.random.seed(seed)
        labels.append(AnchorTargetCreator()(bbox, anchor, img_size)[1])
    assert not np.array_equal(*labels)


# ---------------------------------------------- the original design, seeded

def as_input(arrays, kind, device):
    if kind == 'numpy':
        return arrays
    return [torch.from_numpy(a).to(device) for a in arrays]


def check_output(got, kind, device):
    if kind == 'numpy':
        assert isinstance(got, np.ndarray)
    else:
        assert isinstance(got, torch.Tensor)
        assert got.device == device
    return to_numpy(got)


KINDS = ['numpy', 'tensor']


@pytest.mark.parametrize('kind', KINDS)
def test_anchor_target_equals_the_original(kind, device):
    if kind == 'numpy' and device.type != 'cpu':
        pytest.skip('numpy inputs live on the CPU')
    n_compared = 0
    for seed in SEEDS:
        _, img_size, anchor, bbox, _ = make_case(seed)
        inside, _ = anchor_ious(anchor, bbox, img_size)
        if len(bbox) == 0 or not inside.any():  # the original crashes there
            continue
        np.random.seed(seed)
        want_loc, want_label = ref.AnchorTargetCreator()(bbox, anchor,
                                                         img_size)
        want_next = np.random.rand()

        np.random.seed(seed)
        loc, label = AnchorTargetCreator()(
            *as_input([bbox, anchor], kind, device), img_size)
        got_next = np.random.rand()
        np.testing.assert_array_equal(check_output(label, kind, device),
                                      want_label, err_msg='seed %d' % seed)
        np.testing.assert_allclose(check_output(loc, kind, device), want_loc,
                                   rtol=1e-5, atol=1e-6)
        assert got_next == want_next, 'not the same number of draws'
        n_compared += 1
    assert n_compared >= 35


@pytest.mark.parametrize('kind', KINDS)
def test_proposal_target_equals_the_original(kind, device):
    if kind == 'numpy' and device.type != 'cpu':
        pytest.skip('numpy inputs live on the CPU')
    mean, std = (0., 0., 0., 0.), (0.1, 0.1, 0.2, 0.2)
    n_compared = 0
    for seed in SEEDS:
        rng, img_size, _, bbox, label = make_case(seed)
        if len(bbox) == 0:  # the original crashes there
            continue
        roi = make_rois(rng, img_size, bbox)
        np.random.seed(seed)
        want = ref.ProposalTargetCreator()(roi, bbox, label, mean, std)
        want_next = np.random.rand()

        np.random.seed(seed)
        got = ProposalTargetCreator()(
            *as_input([roi, bbox, label], kind, device), mean, std)
        got_next = np.random.rand()
        sample_roi, gt_roi_loc, gt_roi_label = (
            check_output(g, kind, device) for g in got)
        np.testing.assert_array_equal(sample_roi, want[0],
                                      err_msg='seed %d' % seed)
        np.testing.assert_allclose(gt_roi_loc, want[1], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(gt_roi_label, want[2])
        assert got_next == want_next, 'not the same number of draws'
        n_compared += 1
    assert n_compared >= 40


@pytest.mark.parametrize('kind', KINDS)
def test_proposals_equal_the_original(kind, device):
    if kind == 'numpy' and device.type != 'cpu':
        pytest.skip('numpy inputs live on the CPU')
    parent = Parent()
    for seed in range(10):
        rng = np.random.RandomState(seed)
        img_size = (int(rng.randint(96, 600)), int(rng.randint(96, 1000)))
        scale = [1., 0.5, 1.6][seed % 3]
        anchor = make_anchor(img_size)
        loc, score = random_rpn_output(rng, len(anchor))
        for training in (True, False):
            parent.train(training)
            want = ref.ProposalCreator(training)(loc, score, anchor, img_size,
                                                 scale=scale)
            got = ProposalCreator(parent)(
                *as_input([loc, score, anchor], kind, device), img_size,
                scale=scale)
            got = check_output(got, kind, device)
            assert got.shape == want.shape, 'seed %d' % seed
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


def test_random_choice_draws_as_choice_on_the_index_array():
    # the draw the original makes, np.random.choice(index_array, ...), and
    # the positions of the same draw give the same picks
    index = np.array([3, 8, 9, 15, 20, 21, 40])
    np.random.seed(7)
    want = np.random.choice(index, size=4, replace=False)
    np.random.seed(7)
    from model.utils.creator_tool import _random_choice
    got = _random_choice(torch.from_numpy(index), 4)
    np.testing.assert_array_equal(got.numpy(), want)


# ------------------------------------------- py-faster-rcnn, transcribed
#
# From rbgirshick/py-faster-rcnn lib/rpn/anchor_target_layer.py and
# lib/rpn/proposal_target_layer.py (_sample_rois), in this library's box
# order and convention: boxes (y_min, x_min, y_max, x_max) without the +1
# widths, IoU by this library's bbox_iou. py-faster-rcnn's inside test
# ``x2 < W + border`` on inclusive pixel coordinates (x2 = x_max - 1) reads
# ``x_max <= W + border`` here; test_border_agrees_with_pfrs_inclusive_form
# shows the two agree on integer boxes.

def pfr_anchor_target(anchor, gt_boxes, img_size, allowed_border=0,
                      clobber_positives=False, batch_size=256,
                      fg_fraction=0.5, positive_overlap=0.7,
                      negative_overlap=0.3):
    """Labels and offsets of every anchor (-1 / 0 outside), drawing from
    numpy's global RNG as py-faster-rcnn does."""
    H, W = img_size
    if allowed_border is None:
        inds_inside = np.arange(len(anchor))
    else:
        b = allowed_border
        inds_inside = np.where((anchor[:, 0] >= -b) & (anchor[:, 1] >= -b) &
                               (anchor[:, 2] <= H + b) &
                               (anchor[:, 3] <= W + b))[0]
    anchors = anchor[inds_inside]
    labels = np.full(len(inds_inside), -1, dtype=np.int32)

    overlaps = bbox_iou(anchors, gt_boxes)
    argmax_overlaps = overlaps.argmax(axis=1)
    max_overlaps = overlaps[np.arange(len(inds_inside)), argmax_overlaps]
    gt_argmax_overlaps = overlaps.argmax(axis=0)
    gt_max_overlaps = overlaps[gt_argmax_overlaps,
                               np.arange(overlaps.shape[1])]
    gt_argmax_overlaps = np.where(overlaps == gt_max_overlaps)[0]

    if not clobber_positives:
        labels[max_overlaps < negative_overlap] = 0
    labels[gt_argmax_overlaps] = 1
    labels[max_overlaps >= positive_overlap] = 1
    if clobber_positives:
        labels[max_overlaps < negative_overlap] = 0

    num_fg = int(fg_fraction * batch_size)
    fg_inds = np.where(labels == 1)[0]
    if len(fg_inds) > num_fg:
        disable = np.random.choice(fg_inds, size=len(fg_inds) - num_fg,
                                   replace=False)
        labels[disable] = -1
    num_bg = batch_size - np.sum(labels == 1)
    bg_inds = np.where(labels == 0)[0]
    if len(bg_inds) > num_bg:
        disable = np.random.choice(bg_inds, size=len(bg_inds) - num_bg,
                                   replace=False)
        labels[disable] = -1

    targets = bbox2loc(anchors, gt_boxes[argmax_overlaps])
    all_labels = np.full(len(anchor), -1, dtype=np.int32)
    all_labels[inds_inside] = labels
    all_targets = np.zeros((len(anchor), 4), dtype=np.float32)
    all_targets[inds_inside] = targets
    return all_targets, all_labels


def pfr_sample_rois(all_rois, gt_boxes, gt_labels, rois_per_image=128,
                    fg_fraction=0.25, fg_thresh=0.5, bg_thresh_hi=0.5,
                    bg_thresh_lo=0.1, means=(0., 0., 0., 0.),
                    stds=(0.1, 0.1, 0.2, 0.2)):
    """py-faster-rcnn's RoI sampling with its gt boxes appended and its
    labels shifted by one (0 = background), as this library's creator."""
    all_rois = np.concatenate((all_rois, gt_boxes), axis=0)
    labels = gt_labels + 1
    fg_rois_per_image = np.round(fg_fraction * rois_per_image)

    overlaps = bbox_iou(all_rois, gt_boxes)
    gt_assignment = overlaps.argmax(axis=1)
    max_overlaps = overlaps.max(axis=1)
    labels = labels[gt_assignment]

    fg_inds = np.where(max_overlaps >= fg_thresh)[0]
    fg_rois_per_this_image = int(min(fg_rois_per_image, fg_inds.size))
    if fg_inds.size > 0:
        fg_inds = np.random.choice(fg_inds, size=fg_rois_per_this_image,
                                   replace=False)
    bg_inds = np.where((max_overlaps < bg_thresh_hi) &
                       (max_overlaps >= bg_thresh_lo))[0]
    bg_rois_per_this_image = min(rois_per_image - fg_rois_per_this_image,
                                 bg_inds.size)
    if bg_inds.size > 0:
        bg_inds = np.random.choice(bg_inds, size=bg_rois_per_this_image,
                                   replace=False)

    keep_inds = np.append(fg_inds, bg_inds).astype(np.int64)
    labels = labels[keep_inds]
    labels[fg_rois_per_this_image:] = 0
    rois = all_rois[keep_inds]
    targets = bbox2loc(rois, gt_boxes[gt_assignment[keep_inds]])
    targets = (targets - np.array(means, np.float32)) / \
        np.array(stds, np.float32)
    return rois, targets, labels


# ------------------------------------------ py-faster-rcnn: clobber_positives

@pytest.mark.parametrize('seed', PFR_SEEDS)
def test_defaults_equal_pfr_with_border_0_and_no_clobbering(seed):
    _, img_size, anchor, bbox, _ = make_case_with_tiny_boxes(seed)
    (loc, label), state = seeded(seed, lambda: AnchorTargetCreator()(
        bbox, anchor, img_size))
    (want_loc, want_label), want_state = seeded(seed, lambda: pfr_anchor_target(
        anchor, bbox, img_size))
    np.testing.assert_array_equal(label, want_label)
    np.testing.assert_allclose(loc, want_loc, atol=1e-6)
    np.testing.assert_array_equal(state, want_state)  # the same draws


@pytest.mark.parametrize('seed', PFR_SEEDS)
def test_clobber_positives_equals_pfr(seed):
    _, img_size, anchor, bbox, _ = make_case_with_tiny_boxes(seed)
    creator = AnchorTargetCreator(clobber_positives=True)
    (loc, label), state = seeded(seed, lambda: creator(bbox, anchor,
                                                       img_size))
    (want_loc, want_label), want_state = seeded(seed, lambda: pfr_anchor_target(
        anchor, bbox, img_size, clobber_positives=True))
    np.testing.assert_array_equal(label, want_label)
    np.testing.assert_allclose(loc, want_loc, atol=1e-6)
    np.testing.assert_array_equal(state, want_state)


def test_clobbering_changes_the_labels_of_the_random_cases():
    """The cases above exercise the rule: with tiny gt boxes, some best
    anchors below 0.3 end negative instead of positive."""
    changed = 0
    for seed in PFR_SEEDS:
        _, img_size, anchor, bbox, _ = make_case_with_tiny_boxes(seed)
        iou = bbox_iou(anchor, bbox)
        inside = ((anchor[:, :2] >= 0).all(1) & (anchor[:, 2] <= img_size[0])
                  & (anchor[:, 3] <= img_size[1]))
        changed += int((iou[inside].max(axis=0) < 0.3).sum())
    assert changed >= 10


def test_clobber_positives_at_the_threshold_by_hand():
    """A gt box's best anchor at IoU exactly 0.3 stays positive; one at 0.1
    becomes negative only with clobber_positives."""
    bbox = np.array([[0, 0, 3, 10],        # best: anchor 0, IoU 30/100
                     [60, 60, 62, 70]],    # best: anchor 1, IoU 20/200
                    dtype=np.float32)
    anchor = np.array([[0, 0, 10, 10],
                       [60, 60, 80, 70],
                       [30, 30, 50, 50],   # touches no gt box: negative
                       [0, 0, 4, 10]],     # IoU 0.75 with gt 0: positive
                       dtype=np.float32)
    # anchor 3 is gt 0's best (0.75), so gt 0's tie set is anchor 3 only;
    # anchor 0 (0.3) is then neither positive nor negative
    _, label = AnchorTargetCreator()(bbox, anchor, (100, 100))
    np.testing.assert_array_equal(label, [-1, 1, 0, 1])
    _, label = AnchorTargetCreator(clobber_positives=True)(bbox, anchor,
                                                           (100, 100))
    np.testing.assert_array_equal(label, [-1, 0, 0, 1])
    # without anchor 3, anchor 0 is gt 0's best at exactly 0.3: positive
    # either way, since 0.3 is not below the negative threshold
    for clobber in (False, True):
        _, label = AnchorTargetCreator(clobber_positives=clobber)(
            bbox, anchor[:3], (100, 100))
        np.testing.assert_array_equal(label, [1, 0 if clobber else 1, 0])


# --------------------------------------------- py-faster-rcnn: allowed_border

@pytest.mark.parametrize('border', [0, 8, 16, 32.5, None])
@pytest.mark.parametrize('clobber', [False, True])
def test_allowed_border_equals_pfr(border, clobber):
    for seed in PFR_SEEDS[:6]:
        _, img_size, anchor, bbox, _ = make_case_with_tiny_boxes(seed)
        creator = AnchorTargetCreator(allowed_border=border,
                                      clobber_positives=clobber)
        (loc, label), state = seeded(seed, lambda: creator(bbox, anchor,
                                                           img_size))
        (want_loc, want_label), want_state = seeded(
            seed, lambda: pfr_anchor_target(anchor, bbox, img_size, border,
                                            clobber))
        np.testing.assert_array_equal(label, want_label, 'seed %d' % seed)
        np.testing.assert_allclose(loc, want_loc, atol=1e-6)
        np.testing.assert_array_equal(state, want_state)


def test_allowed_border_widens_the_labelled_set():
    _, img_size, anchor, bbox, _ = make_case_with_tiny_boxes(0)
    n_labelled = []
    for border in (0, 16, 64, None):
        _, label = AnchorTargetCreator(n_sample=10 ** 6,
                                       allowed_border=border)(
            bbox, anchor, img_size)
        n_labelled.append(int((label >= 0).sum()))
    assert n_labelled[0] < n_labelled[1] < n_labelled[2] < n_labelled[3]
    # None: no filter; anchors far outside the image are labelled too
    far = ((anchor[:, :2] < -64).any(1) | (anchor[:, 2] > img_size[0] + 64) |
           (anchor[:, 3] > img_size[1] + 64))
    assert far.sum() > 0 and (label[far] >= 0).sum() > 0


def test_allowed_border_at_the_boundary_by_hand():
    """Anchors reaching exactly b pixels out are labelled; a half pixel more
    is not."""
    H, W, b = 100, 120, 10
    bbox = np.array([[40, 40, 60, 60]], dtype=np.float32)
    anchor = np.array([[-b, 0, 50, 50], [0, -b, 50, 50],
                       [50, 50, H + b, 100], [50, 50, 90, W + b],
                       [-b - .5, 0, 50, 50], [0, -b - .5, 50, 50],
                       [50, 50, H + b + .5, 100], [50, 50, 90, W + b + .5]],
                      dtype=np.float32)
    _, label = AnchorTargetCreator(allowed_border=b)(bbox, anchor, (H, W))
    assert (label[:4] >= 0).all() and (label[4:] == -1).all()
    _, label = AnchorTargetCreator()(bbox, anchor, (H, W))
    assert (label == -1).all()
    _, label = AnchorTargetCreator(allowed_border=None)(bbox, anchor, (H, W))
    assert (label >= 0).all()


def test_border_agrees_with_pfrs_inclusive_form():
    """py-faster-rcnn's literal test on inclusive pixel coordinates,
    ``x1 >= -b and x2 < W + b`` with x2 = x_max - 1, selects the same
    integer anchors as this library's ``x_max <= W + b``."""
    rng = np.random.RandomState(0)
    H, W = 200, 300
    ymin, xmin = rng.randint(-60, 200, 2000), rng.randint(-60, 300, 2000)
    anchor = np.stack((ymin, xmin, ymin + rng.randint(1, 120, 2000),
                       xmin + rng.randint(1, 120, 2000)), 1).astype(np.float32)
    # a gt box so small that every labelled anchor is negative or its best
    bbox = np.array([[100, 100, 101, 101]], dtype=np.float32)
    for b in (0, 5, 16):
        y1, x1, y2, x2 = anchor.T[0], anchor.T[1], anchor.T[2] - 1, \
            anchor.T[3] - 1
        want = (x1 >= -b) & (y1 >= -b) & (x2 < W + b) & (y2 < H + b)
        _, label = AnchorTargetCreator(n_sample=10 ** 6, allowed_border=b)(
            bbox, anchor, (H, W))
        np.testing.assert_array_equal(label >= 0, want)


@pytest.mark.parametrize('kwargs', [dict(allowed_border='0'),
                                    dict(allowed_border=float('inf')),
                                    dict(allowed_border=True),
                                    dict(clobber_positives='yes'),
                                    dict(clobber_positives=1)])
def test_bad_rule_settings_are_value_errors(kwargs):
    with pytest.raises(ValueError, match=list(kwargs)[0]):
        AnchorTargetCreator(**kwargs)


# ------------------------------------------ py-faster-rcnn: neg_iou_thresh_lo

@pytest.mark.parametrize('seed', PFR_SEEDS)
def test_neg_iou_thresh_lo_equals_pfr(seed):
    rng, img_size, _, bbox, label = make_case_with_tiny_boxes(seed)
    roi = make_rois(rng, img_size, bbox, n_random=300,
                    max_side=0.5, n_jitter=6, jitter=6.)
    creator = ProposalTargetCreator(neg_iou_thresh_lo=0.1)
    (sample_roi, gt_roi_loc, gt_roi_label), state = seeded(
        seed, lambda: creator(roi, bbox, label))
    (want_roi, want_loc, want_label), want_state = seeded(
        seed, lambda: pfr_sample_rois(roi, bbox, label))
    np.testing.assert_array_equal(sample_roi, want_roi)
    np.testing.assert_array_equal(gt_roi_label, want_label)
    np.testing.assert_allclose(gt_roi_loc, want_loc, atol=1e-5)
    np.testing.assert_array_equal(state, want_state)
    # no negative below the band
    iou = bbox_iou(sample_roi, bbox).max(axis=1)
    assert (iou[gt_roi_label == 0] >= 0.1).all()


def test_neg_iou_thresh_lo_at_the_threshold_by_hand():
    """IoU exactly 0.1 is in the negative band [0.1, 0.5); 1/12 and 0 are
    not (they are with this design's 0.0)."""
    bbox = np.array([[0, 0, 10, 10]], dtype=np.float32)
    roi = np.array([[0, 0, 10, 100],     # IoU 100 / 1000 = 0.1
                    [0, 0, 10, 120],     # IoU 1 / 12
                    [50, 50, 60, 60]],   # IoU 0
                   dtype=np.float32)
    label = np.array([2], dtype=np.int32)
    sample_roi, _, gt_label = ProposalTargetCreator(neg_iou_thresh_lo=0.1)(
        roi, bbox, label)
    np.testing.assert_array_equal(sample_roi, [[0, 0, 10, 10],
                                               [0, 0, 10, 100]])
    np.testing.assert_array_equal(gt_label, [3, 0])
    sample_roi, _, gt_label = ProposalTargetCreator()(roi, bbox, label)
    assert len(sample_roi) == 4 and (gt_label == 0).sum() == 3


# ------------------------------------------------------- sampler='torch'

def anchor_case(seed, device):
    _, img_size, anchor, bbox, _ = make_case(seed)
    return (torch.from_numpy(bbox).to(device),
            torch.from_numpy(anchor).to(device), img_size)


def proposal_case(seed, device):
    rng, img_size, _, bbox, label = make_case(seed)
    roi = make_rois(rng, img_size, bbox)
    return [torch.from_numpy(a).to(device) for a in (roi, bbox, label)]


@pytest.mark.parametrize('seed', TORCH_SEEDS)
def test_anchor_target_counts_and_candidates(seed, device):
    bbox, anchor, img_size = anchor_case(seed, device)
    np_loc, np_label = AnchorTargetCreator()(bbox, anchor, img_size)
    loc, label = AnchorTargetCreator(sampler='torch')(bbox, anchor, img_size)
    assert label.device == device and label.dtype == torch.int32
    assert int((label == 1).sum()) == int((np_label == 1).sum())
    assert int((label == 0).sum()) == int((np_label == 0).sum())
    # the candidates: every label before any is dropped
    everything = AnchorTargetCreator(n_sample=10 ** 7)(bbox, anchor, img_size)[1]
    assert ((label == 1) <= (everything == 1)).all()
    assert ((label == 0) <= (everything == 0)).all()
    torch.testing.assert_close(loc, np_loc, rtol=0, atol=0)


@pytest.mark.parametrize('value', [1, 0])
def test_torch_subsample_keeps_n_of_the_candidates(value, device):
    """sampler='torch' drops all but n_keep of the labels equal to value,
    only among them, and n_keep may be a tensor on the device (nothing is
    read on the host)."""
    generator = np.random.RandomState(value)
    start = torch.from_numpy(generator.randint(-1, 2, 500).astype(np.int32))
    start = start.to(device)
    n_candidates = int((start == value).sum())
    for n_keep in (0, 1, 17, n_candidates - 1, n_candidates, 10 ** 6,
                   torch.tensor(40, device=device)):
        label = start.clone()
        creator_tool._subsample(label, value, n_keep, 'torch')
        assert int((label == value).sum()) == min(int(n_keep), n_candidates)
        # only candidates dropped, to -1; every other label untouched
        changed = label != start
        assert (start[changed] == value).all() and (label[changed] == -1).all()
    # every candidate can be kept: the draw is not biased to one end
    kept = torch.zeros(len(start), dtype=torch.bool, device=device)
    for seed in range(30):
        torch.manual_seed(seed)
        label = start.clone()
        creator_tool._subsample(label, value, 20, 'torch')
        kept |= label == value
    assert int(kept.sum()) > n_candidates // 2


@pytest.mark.parametrize('seed', TORCH_SEEDS)
def test_proposal_target_counts_and_candidates(seed, device):
    roi, bbox, label = proposal_case(seed, device)
    creator = ProposalTargetCreator(sampler='torch')
    _, _, np_roi_label = ProposalTargetCreator()(roi, bbox, label)
    sample_roi, gt_roi_loc, gt_roi_label = creator(roi, bbox, label)
    assert sample_roi.device == device and gt_roi_label.device == device
    assert len(gt_roi_label) == len(np_roi_label)
    assert int((gt_roi_label > 0).sum()) == int((np_roi_label > 0).sum())
    assert int((gt_roi_label == 0).sum()) == int((np_roi_label == 0).sum())
    # positives first, as with numpy
    n_pos = int((gt_roi_label > 0).sum())
    assert (gt_roi_label[:n_pos] > 0).all()
    # every sample a proposal or a gt box, none twice (the RoIs are
    # distinct), each from its own candidates
    all_roi = torch.cat((roi, bbox))
    assert len(torch.unique(all_roi, dim=0)) == len(all_roi)
    assert (sample_roi[:, None] == all_roi[None]).all(dim=2).any(dim=1).all()
    assert len(torch.unique(sample_roi, dim=0)) == len(sample_roi)
    if len(bbox):
        max_iou = bbox_iou(sample_roi, bbox).max(dim=1)[0]
        assert (max_iou[:n_pos] >= creator.pos_iou_thresh).all()
        assert (max_iou[n_pos:] < creator.neg_iou_thresh_hi).all()


@pytest.mark.parametrize('n', [0, 1, 7, 300])
def test_random_ranking_puts_the_candidates_first_in_any_order(n, device):
    generator = np.random.RandomState(n)
    candidate = torch.from_numpy(generator.rand(n) < 0.3).to(device)
    n_candidate = int(candidate.sum())
    first = set()
    for seed in range(40):
        torch.manual_seed(seed)
        ranking = creator_tool._random_ranking(candidate)
        assert ranking.device == device
        assert sorted(ranking.tolist()) == list(range(n))  # a permutation
        assert candidate[ranking[:n_candidate]].all()
        assert not candidate[ranking[n_candidate:]].any()
        if n_candidate:
            first.add(int(ranking[0]))
    # many candidates come first in some draw: no end is favoured
    assert len(first) >= min(n_candidate, 10)


def test_candidates_by_hand(device):
    """Three positives and five negatives, two and one of them kept: the
    torch draws pick among exactly those."""
    creator = ProposalTargetCreator(n_sample=3, pos_ratio=0.5,
                                    sampler='torch')
    bbox = torch.tensor([[0., 0., 10., 10.]], device=device)
    near = torch.tensor([[0., 0., 10., 9.], [0., 0., 9., 10.]], device=device)
    far = torch.tensor([[20., 20., 30., 30.]], device=device) \
        + torch.arange(5., device=device)[:, None]
    roi = torch.cat((near, far))
    label = torch.tensor([4], device=device)
    for seed in range(10):
        torch.manual_seed(seed)
        sample_roi, _, gt_roi_label = creator(roi, bbox, label)
        assert gt_roi_label.tolist() == [5, 5, 0]
        candidates = torch.cat((near, bbox))
        assert (sample_roi[:2, None] == candidates[None]).all(2).any(1).all()
        assert not torch.equal(sample_roi[0], sample_roi[1])
        assert (sample_roi[2:, None] == far[None]).all(2).any(1).all()


def test_same_torch_seed_gives_the_same_samples(device):
    bbox, anchor, img_size = anchor_case(0, device)
    roi, gt_bbox, gt_label = proposal_case(0, device)
    anchor_creator = AnchorTargetCreator(sampler='torch')
    proposal_creator = ProposalTargetCreator(sampler='torch')
    outputs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outputs.append((anchor_creator(bbox, anchor, img_size)[1],
                        proposal_creator(roi, gt_bbox, gt_label)[0]))
    (label_a, roi_a), (label_b, roi_b), (label_c, roi_c) = outputs
    assert torch.equal(label_a, label_b) and torch.equal(roi_a, roi_b)
    assert not torch.equal(label_a, label_c)
    assert not torch.equal(roi_a, roi_c)


def test_torch_draw_leaves_numpys_rng_alone(device):
    bbox, anchor, img_size = anchor_case(0, device)
    roi, gt_bbox, gt_label = proposal_case(0, device)
    np.random.seed(3)
    before = np.random.get_state()
    AnchorTargetCreator(sampler='torch')(bbox, anchor, img_size)
    ProposalTargetCreator(sampler='torch')(roi, gt_bbox, gt_label)
    after = np.random.get_state()
    assert before[0] == after[0] and before[2:] == after[2:]
    np.testing.assert_array_equal(before[1], after[1])
    # while a numpy draw does move it
    AnchorTargetCreator()(bbox, anchor, img_size)
    assert not np.array_equal(np.random.get_state()[1], before[1])


def test_torch_sampled_anchor_targets_read_nothing_on_the_host(device):
    """The gt on the host, as the data loader gives it: checked there and
    moved without waiting; labelling and sampling stay on the device."""
    bbox, anchor, img_size = anchor_case(0, device)
    creator = AnchorTargetCreator(sampler='torch')
    creator(bbox.cpu(), anchor, img_size)  # warm-up
    with host_reads(device) as reads:
        loc, label = creator(bbox.cpu(), anchor, img_size)
    assert reads == []
    assert loc.device == label.device == device
    assert int((label >= 0).sum()) == 256


# --------------------------------------------------------------- bad input

@pytest.mark.parametrize('call', ['anchor', 'proposal'])
def test_wrong_box_shape_is_a_value_error(call):
    bbox = np.zeros((2, 3), np.float32)
    anchor = make_anchor((100, 100))
    with pytest.raises(ValueError, match=r'shape.*\(R, 4\)|\(R, 4\).*shape'):
        if call == 'anchor':
            AnchorTargetCreator()(bbox, anchor, (100, 100))
        else:
            ProposalTargetCreator()(anchor[:5], bbox, np.zeros(2, np.int32))


@pytest.mark.parametrize('call', ['anchor', 'proposal'])
@pytest.mark.parametrize('box', [[50, 0, 10, 10], [0, 50, 10, 10]])
def test_min_above_max_is_a_value_error(call, box):
    bbox = np.array([[0, 0, 10, 10], box], np.float32)
    anchor = make_anchor((100, 100))
    message = 'y_min > y_max|x_min > x_max'
    with pytest.raises(ValueError, match=message) as info:
        if call == 'anchor':
            AnchorTargetCreator()(bbox, anchor, (100, 100))
        else:
            ProposalTargetCreator()(anchor[:5], bbox, np.zeros(2, np.int32))
    assert 'row 1' in str(info.value)


@pytest.mark.parametrize('make, name', [
    (lambda: AnchorTargetCreator(pos_iou_thresh=1.5), 'pos_iou_thresh'),
    (lambda: AnchorTargetCreator(neg_iou_thresh=-0.1), 'neg_iou_thresh'),
    (lambda: AnchorTargetCreator(pos_ratio=2.), 'pos_ratio'),
    (lambda: AnchorTargetCreator(pos_iou_thresh=0.3, neg_iou_thresh=0.5),
     'neg_iou_thresh'),
    (lambda: AnchorTargetCreator(n_sample=0), 'n_sample'),
    (lambda: ProposalTargetCreator(pos_ratio=1.5), 'pos_ratio'),
    (lambda: ProposalTargetCreator(pos_iou_thresh=-1), 'pos_iou_thresh'),
    (lambda: ProposalTargetCreator(neg_iou_thresh_lo=0.6),
     'neg_iou_thresh_lo'),
    (lambda: ProposalTargetCreator(neg_iou_thresh_hi=1.2),
     'neg_iou_thresh_hi'),
    (lambda: ProposalTargetCreator(n_sample=0), 'n_sample'),
    (lambda: ProposalCreator(Parent(), nms_thresh=1.5), 'nms_thresh'),
])
def test_bad_constructor_settings_are_value_errors(make, name):
    with pytest.raises(ValueError, match=name):
        make()


@pytest.mark.parametrize('make', [AnchorTargetCreator, ProposalTargetCreator])
@pytest.mark.parametrize('sampler', ['Torch', 'np', 'cuda', None, 0])
def test_bad_sampler_is_a_value_error(make, sampler):
    with pytest.raises(ValueError, match="sampler must be one of 'numpy', "
                                         "'torch', got"):
        make(sampler=sampler)
