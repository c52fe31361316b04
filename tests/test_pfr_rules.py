"""py-faster-rcnn's target rules as options of the creators:
``clobber_positives`` and ``allowed_border`` (AnchorTargetCreator) and
``neg_iou_thresh_lo`` (ProposalTargetCreator), each checked against a numpy
transcription of py-faster-rcnn's rule on random cases with the same numpy
seed, and pinned at its boundary by hand."""
import numpy as np
import pytest

from model.utils.bbox_tools import bbox2loc, bbox_iou, generate_anchor_base
from model.utils.creator_tool import AnchorTargetCreator, ProposalTargetCreator

FEAT_STRIDE = 16
SEEDS = range(20)


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


# ------------------------------------------------------------------ cases

def make_anchor(img_size):
    """The anchors of a stride-16 feature map, (y, x, anchor) row-major."""
    base = generate_anchor_base()
    h, w = img_size[0] // FEAT_STRIDE, img_size[1] // FEAT_STRIDE
    shift_y, shift_x = np.meshgrid(np.arange(h) * FEAT_STRIDE,
                                   np.arange(w) * FEAT_STRIDE, indexing='ij')
    shift = np.stack((shift_y.ravel(), shift_x.ravel()) * 2, axis=1)
    anchor = base[None] + shift[:, None].astype(np.float32)
    return anchor.reshape(-1, 4).astype(np.float32)


def make_case(seed):
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


def make_rois(rng, img_size, bbox, n_random=300):
    """Random proposals plus jittered gt boxes, clipped to the image."""
    H, W = img_size
    ymin, xmin = rng.uniform(0, H - 2, n_random), rng.uniform(0, W - 2, n_random)
    roi = [np.stack((ymin, xmin, np.minimum(ymin + rng.uniform(2, H / 2,
                                                                 n_random), H),
                     np.minimum(xmin + rng.uniform(2, W / 2, n_random), W)), 1)]
    for _ in range(6):
        roi.append(bbox + rng.normal(scale=6., size=bbox.shape))
    roi = np.concatenate(roi)
    roi[:, 2:] = np.maximum(roi[:, 2:], roi[:, :2] + 1)
    return roi.astype(np.float32)


def seeded(seed, call):
    """``call()`` after seeding numpy, and numpy's RNG state after it."""
    np.random.seed(seed)
    out = call()
    return out, np.random.get_state()[1].copy()


# ---------------------------------------------------------- the defaults

def test_defaults_are_this_designs_rules():
    a = AnchorTargetCreator()
    assert a.clobber_positives is False and a.allowed_border == 0
    assert ProposalTargetCreator().neg_iou_thresh_lo == 0.0


@pytest.mark.parametrize('seed', SEEDS)
def test_defaults_equal_pfr_with_border_0_and_no_clobbering(seed):
    _, img_size, anchor, bbox, _ = make_case(seed)
    (loc, label), state = seeded(seed, lambda: AnchorTargetCreator()(
        bbox, anchor, img_size))
    (want_loc, want_label), want_state = seeded(seed, lambda: pfr_anchor_target(
        anchor, bbox, img_size))
    np.testing.assert_array_equal(label, want_label)
    np.testing.assert_allclose(loc, want_loc, atol=1e-6)
    np.testing.assert_array_equal(state, want_state)  # the same draws


# ---------------------------------------------------- clobber_positives

@pytest.mark.parametrize('seed', SEEDS)
def test_clobber_positives_equals_pfr(seed):
    _, img_size, anchor, bbox, _ = make_case(seed)
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
    for seed in SEEDS:
        _, img_size, anchor, bbox, _ = make_case(seed)
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


# -------------------------------------------------------- allowed_border

@pytest.mark.parametrize('border', [0, 8, 16, 32.5, None])
@pytest.mark.parametrize('clobber', [False, True])
def test_allowed_border_equals_pfr(border, clobber):
    for seed in SEEDS[:6]:
        _, img_size, anchor, bbox, _ = make_case(seed)
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
    _, img_size, anchor, bbox, _ = make_case(0)
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


# ----------------------------------------------------- neg_iou_thresh_lo

@pytest.mark.parametrize('seed', SEEDS)
def test_neg_iou_thresh_lo_equals_pfr(seed):
    rng, img_size, _, bbox, label = make_case(seed)
    roi = make_rois(rng, img_size, bbox)
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


# ------------------------------------------------------------ from train.py

def test_train_py_builds_the_creators_from_the_options():
    from utils.config import Config
    import train
    a, p = train.target_creators(Config()._state_dict())
    assert (a.clobber_positives, a.allowed_border, p.neg_iou_thresh_lo) == \
        (False, 0, 0.0)
    config = dict(Config()._state_dict(), clobber_positives=True,
                  allowed_border=None, neg_iou_thresh_lo=0.1)
    a, p = train.target_creators(config)
    assert (a.clobber_positives, a.allowed_border, p.neg_iou_thresh_lo) == \
        (True, None, 0.1)


@pytest.mark.parametrize('option', [dict(clobber_positives='yes'),
                                    dict(allowed_border='wide'),
                                    dict(neg_iou_thresh_lo='low'),
                                    dict(neg_iou_thresh_lo=0.7)])
def test_a_bad_rule_option_is_a_usage_error(option, tmp_path):
    import train
    from utils.config import UsageError
    with pytest.raises(UsageError, match=list(option)[0]):
        train.train(data='toy', voc_data_dir=str(tmp_path / 'none'),
                    **option)
    assert not (tmp_path / 'none').exists()  # refused before any work


def test_a_training_run_uses_the_rule_options(tmp_path, monkeypatch):
    import train
    from data.synthetic import generate_voc
    seen = []

    class Trainer(train.FasterRCNNTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append(self)

    monkeypatch.setattr(train, 'FasterRCNNTrainer', Trainer)
    data_dir = generate_voc(str(tmp_path / 'voc'), n_images=8, seed=2)
    train.train(data='toy', voc_data_dir=data_dir,
                out_dir=str(tmp_path / 'ck'), num_workers=0,
                test_num_workers=0, device='cpu', epoch=1, port=1,
                clobber_positives=True, allowed_border=16,
                neg_iou_thresh_lo=0.1)
    a = seen[0].anchor_target_creator
    p = seen[0].proposal_target_creator
    assert (a.clobber_positives, a.allowed_border, p.neg_iou_thresh_lo) == \
        (True, 16, 0.1)


def test_an_image_without_objects_trains_with_a_raised_negative_band():
    """With neg_iou_thresh_lo > 0 an image without objects has no RoI in
    either band: the head gets no sample and no loss, the RPN its
    negatives."""
    import torch
    from model import FasterRCNNToy
    from trainer import FasterRCNNTrainer
    torch.manual_seed(0)
    np.random.seed(0)
    trainer = FasterRCNNTrainer(
        FasterRCNNToy(n_fg_class=2),
        proposal_target_creator=ProposalTargetCreator(neg_iou_thresh_lo=0.1))
    img = torch.randn(1, 3, 128, 128)
    losses = trainer.train_step(img, torch.zeros((1, 0, 4)),
                                torch.zeros((1, 0), dtype=torch.int64), 1.)
    assert losses.roi_loc_loss.item() == 0 and losses.roi_cls_loss.item() == 0
    assert losses.rpn_cls_loss.item() > 0
    assert torch.isfinite(losses.total_loss)
