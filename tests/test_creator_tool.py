"""Creators: invariants over many random cases, and the same samples as the
original design's numpy code for the same numpy seed."""
import numpy as np
import pytest
import torch
from torch import nn

from reference import original as ref
from model.utils.creator_tool import (AnchorTargetCreator, ProposalCreator,
                                      ProposalTargetCreator)

SEEDS = range(50)
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


def make_rois(rng, img_size, bbox, n_random=200):
    """Proposals: random boxes plus jittered copies of the gt boxes (so that
    there are positives)."""
    H, W = img_size
    ymin = rng.uniform(0, H - 2, n_random)
    xmin = rng.uniform(0, W - 2, n_random)
    ymax = np.minimum(ymin + rng.uniform(2, H, n_random), H)
    xmax = np.minimum(xmin + rng.uniform(2, W, n_random), W)
    rois = [np.stack((ymin, xmin, ymax, xmax), axis=1)]
    for _ in range(int(rng.randint(0, 12))):
        jitter = rng.normal(scale=4., size=bbox.shape)
        rois.append(bbox + jitter)
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


def to_numpy(x):
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else x


class Parent(nn.Module):
    """A stand-in for the RPN that owns a ProposalCreator."""


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


def test_default_constructor_settings():
    a = AnchorTargetCreator()
    assert (a.n_sample, a.pos_iou_thresh, a.neg_iou_thresh, a.pos_ratio) == \
        (256, 0.7, 0.3, 0.5)
    p = ProposalTargetCreator()
    assert (p.n_sample, p.pos_ratio, p.pos_iou_thresh, p.neg_iou_thresh_hi,
            p.neg_iou_thresh_lo) == (128, 0.25, 0.5, 0.5, 0.0)


# ------------------------------------------------------- same seed, same draw

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
