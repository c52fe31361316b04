"""The trainer's losses: gradcheck, hand-computed smooth L1, normalisation,
and a seeded regression of one training forward against an independent
computation from the original design's creators."""
import numpy as np
import pytest
import torch
from torch.autograd import gradcheck
from torch.nn import functional as F

from reference import original as ref
from conftest import TINY_RATIOS, TINY_SCALES
from model.utils.creator_tool import AnchorTargetCreator, ProposalTargetCreator
from trainer import (FasterRCNNTrainer, LossTuple, _fast_rcnn_loc_loss,
                     _smooth_l1_loss)


def away_from_kink(shape, sigma, generator, low=-3., high=3.):
    """Differences in [low, high] at least 0.05 away from +-1 / sigma^2."""
    d = torch.rand(shape, generator=generator, dtype=torch.float64)
    d = low + (high - low) * d
    kink = 1. / sigma ** 2
    near = (d.abs() - kink).abs() < 0.05
    d[near] += 0.1 * torch.sign(d[near])
    return d


# ---------------------------------------------------------------- gradcheck

@pytest.mark.parametrize('sigma', [3., 1.])
def test_smooth_l1_gradcheck(sigma):
    g = torch.Generator().manual_seed(0)
    t = torch.randn(30, 4, generator=g, dtype=torch.float64)
    d = away_from_kink((30, 4), sigma, g, low=-2 / sigma ** 2,
                       high=2 / sigma ** 2)
    kink = 1. / sigma ** 2
    assert (d.abs() < kink).any() and (d.abs() > kink).any()  # both branches
    x = (t + d).requires_grad_()
    t.requires_grad_()
    in_weight = (torch.rand(30, 4, generator=g) > 0.3).double()
    assert gradcheck(lambda x, t: _smooth_l1_loss(x, t, in_weight, sigma),
                     (x, t))


@pytest.mark.parametrize('sigma', [3., 1.])
def test_fast_rcnn_loc_loss_gradcheck(sigma):
    g = torch.Generator().manual_seed(1)
    gt_loc = torch.randn(40, 4, generator=g, dtype=torch.float64)
    d = away_from_kink((40, 4), sigma, g, low=-2 / sigma ** 2,
                       high=2 / sigma ** 2)
    pred_loc = (gt_loc + d).requires_grad_()
    gt_label = torch.randint(-1, 3, (40,), generator=g)
    assert (gt_label > 0).any() and (gt_label == -1).any()
    assert gradcheck(
        lambda p: _fast_rcnn_loc_loss(p, gt_loc, gt_label, sigma), (pred_loc,))


# -------------------------------------------------------------- hand values

@pytest.mark.parametrize('sigma, diff, want', [
    # sigma 3: quadratic 9 / 2 d^2 below 1 / 9, linear |d| - 1 / 18 above
    (3., 0.1, 4.5 * 0.01),
    (3., -0.1, 4.5 * 0.01),
    (3., 0.5, 0.5 - 1 / 18.),
    (3., -2., 2. - 1 / 18.),
    (3., 0., 0.),
    # sigma 1: quadratic d^2 / 2 below 1, linear |d| - 1 / 2 above
    (1., 0.5, 0.125),
    (1., -0.9, 0.405),
    (1., 2., 1.5),
    (1., -3., 2.5),
    (1., 1., 0.5),  # both branches agree at the kink
])
def test_smooth_l1_by_hand(sigma, diff, want):
    x = torch.tensor([[diff + 1., 1., 1., 1.]], dtype=torch.float64)
    t = torch.ones(1, 4, dtype=torch.float64)
    loss = _smooth_l1_loss(x, t, torch.ones(1, 4, dtype=torch.float64), sigma)
    assert loss.item() == pytest.approx(want, abs=1e-12)
    # weight 0 masks it out
    loss = _smooth_l1_loss(x, t, torch.zeros(1, 4, dtype=torch.float64), sigma)
    assert loss.item() == 0


def test_loc_loss_counts_positives_and_normalises_by_labels_ge_0():
    gt_loc = torch.full((6, 4), 0.5, dtype=torch.float64)
    pred_loc = torch.zeros(6, 4, dtype=torch.float64)
    # sigma 1: each element 0.5^2 / 2 = 0.125, a row 0.5
    label = torch.tensor([1, 2, 0, 0, -1, -1])
    loss = _fast_rcnn_loc_loss(pred_loc, gt_loc, label, 1.)
    assert loss.item() == pytest.approx(2 * 0.5 / 4)  # 2 positives, 4 labels

    # negatives and ignored rows do not contribute, whatever they predict
    pred_loc[2:] = 100.
    assert _fast_rcnn_loc_loss(pred_loc, gt_loc, label, 1.).item() == \
        pytest.approx(0.25)
    # negatives count in the denominator, ignored ones do not
    label = torch.tensor([1, 2, 0, 0, 0, 0])
    assert _fast_rcnn_loc_loss(pred_loc, gt_loc, label, 1.).item() == \
        pytest.approx(1. / 6)
    label = torch.tensor([1, -1, -1, -1, -1, -1])
    assert _fast_rcnn_loc_loss(pred_loc, gt_loc, label, 1.).item() == \
        pytest.approx(0.5)
    # sigma 3: 0.5 is on the linear side, 0.5 - 1 / 18 per element
    label = torch.tensor([1, 0, -1, -1, -1, -1])
    assert _fast_rcnn_loc_loss(pred_loc, gt_loc, label, 3.).item() == \
        pytest.approx(4 * (0.5 - 1 / 18.) / 2)


def test_loss_tuple():
    assert LossTuple._fields == ('rpn_loc_loss', 'rpn_cls_loss',
                                 'roi_loc_loss', 'roi_cls_loss', 'total_loss')


def test_trainer_defaults(make_tiny_faster_rcnn):
    model = make_tiny_faster_rcnn()
    a, b = FasterRCNNTrainer(model), FasterRCNNTrainer(model)
    assert (a.rpn_sigma, a.roi_sigma) == (3., 1.)
    assert isinstance(a.anchor_target_creator, AnchorTargetCreator)
    assert isinstance(a.proposal_target_creator, ProposalTargetCreator)
    # built per trainer, never a shared default instance
    assert a.anchor_target_creator is not b.anchor_target_creator
    assert a.proposal_target_creator is not b.proposal_target_creator
    assert a.anchor_target_creator.n_sample == 256
    assert a.proposal_target_creator.n_sample == 128
    assert tuple(a.rpn_cm.value().shape) == (2, 2)
    assert tuple(a.roi_cm.value().shape) == (model.n_class, model.n_class)
    assert a.loc_normalize_std == model.loc_normalize_std


# --------------------------------------------------- seeded end to end loss

def smooth_l1(diff, sigma):
    sigma2 = sigma ** 2
    a = np.abs(diff)
    return np.where(a < 1. / sigma2, sigma2 / 2. * diff ** 2, a - 0.5 / sigma2)


def loc_loss(pred, gt, label, sigma):
    pos = label > 0
    return smooth_l1(pred[pos] - gt[pos], sigma).sum() / (label >= 0).sum()


def cross_entropy(score, label):
    """Mean over the labels >= 0 of -log softmax(score)[label]."""
    valid = label >= 0
    score, label = score[valid], label[valid]
    m = score.max(axis=1, keepdims=True)
    log_p = score - m - np.log(np.exp(score - m).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(label)), label].mean()


def expected_losses(model, img, bbox, label, scale, seed, ptc_first=True):
    """The losses of one training forward, from the original creators and
    the loss formulas written out; RPN outputs from the convolutions."""
    img_size = tuple(img.shape[2:])
    rpn = model.rpn
    with torch.no_grad():
        features = model.extractor(img)
        h = F.relu(F.conv2d(features, rpn.conv1.weight, rpn.conv1.bias,
                            padding=1))
        rpn_loc = F.conv2d(h, rpn.loc.weight, rpn.loc.bias)[0]
        rpn_score = F.conv2d(h, rpn.score.weight, rpn.score.bias)[0]
    rpn_loc = rpn_loc.permute(1, 2, 0).reshape(-1, 4).numpy().astype(
        np.float64)
    rpn_score = rpn_score.permute(1, 2, 0).reshape(-1, 2)
    fg = F.softmax(rpn_score, dim=1)[:, 1].numpy()
    rpn_score = rpn_score.numpy().astype(np.float64)
    # Tied scores would make the proposal order depend on numpy's unstable
    # argsort; the cases here have none.
    assert len(np.unique(fg)) == len(fg), 'tied foreground scores'
    hh, ww = features.shape[2:]
    anchor_base = ref.generate_anchor_base(ratios=TINY_RATIOS,
                                           anchor_scales=TINY_SCALES)
    anchor = ref._enumerate_shifted_anchor(anchor_base, 16, hh, ww)
    roi = ref.ProposalCreator(True)(rpn_loc.astype(np.float32), fg, anchor,
                                    img_size, scale=scale)

    np.random.seed(seed)
    if ptc_first:
        sample_roi, gt_roi_loc, gt_roi_label = ref.ProposalTargetCreator()(
            roi, bbox, label)
        gt_rpn_loc, gt_rpn_label = ref.AnchorTargetCreator()(
            bbox, anchor, img_size)
    else:
        gt_rpn_loc, gt_rpn_label = ref.AnchorTargetCreator()(
            bbox, anchor, img_size)
        sample_roi, gt_roi_loc, gt_roi_label = ref.ProposalTargetCreator()(
            roi, bbox, label)

    with torch.no_grad():
        roi_cls_loc, roi_score = model.head(
            features, torch.from_numpy(sample_roi),
            torch.zeros(len(sample_roi)))
    S = len(sample_roi)
    roi_cls_loc = roi_cls_loc.numpy().astype(np.float64).reshape(S, -1, 4)
    roi_loc = roi_cls_loc[np.arange(S), gt_roi_label]
    roi_score = roi_score.numpy().astype(np.float64)

    losses = [loc_loss(rpn_loc, gt_rpn_loc, gt_rpn_label, 3.),
              cross_entropy(rpn_score, gt_rpn_label),
              loc_loss(roi_loc, gt_roi_loc, gt_roi_label, 1.),
              cross_entropy(roi_score, gt_roi_label)]
    info = dict(roi=roi, gt_rpn_label=gt_rpn_label, gt_roi_label=gt_roi_label,
                n_inside=len(ref._get_inside_index(anchor, *img_size)))
    return losses + [sum(losses)], info


def regression_batch():
    rng = np.random.RandomState(2024)
    img = rng.normal(size=(1, 3, 192, 256)).astype(np.float32)
    img = torch.from_numpy(img)
    bbox = np.array([[10, 12, 90, 100], [40, 120, 150, 250],
                     [100, 20, 180, 70], [5, 150, 60, 200]], np.float32)
    label = np.array([0, 2, 1, 2], np.int32)
    return img, bbox, label


def tiny_model_for_regression(make_tiny_faster_rcnn):
    model = make_tiny_faster_rcnn(seed=0)
    with torch.no_grad():
        # At the N(0, 0.01) init nearly all foreground scores are 0.5 and
        # many tie in float32; spread them so that their order is defined.
        g = torch.Generator().manual_seed(0)
        model.rpn.conv1.weight.mul_(30)
        model.rpn.score.weight.copy_(
            torch.randn(model.rpn.score.weight.shape, generator=g) * 10)
    return model


def test_seeded_losses_equal_an_independent_computation(make_tiny_faster_rcnn):
    model = tiny_model_for_regression(make_tiny_faster_rcnn)
    model.train()
    img, bbox, label = regression_batch()
    scale, seed = 0.8, 7

    want, info = expected_losses(model, img, bbox, label, scale, seed)
    # the case exercises every random draw
    assert info['n_inside'] > 256
    assert (info['gt_rpn_label'] >= 0).sum() == 256
    assert (info['gt_rpn_label'] == 1).sum() > 0
    assert len(info['gt_roi_label']) == 128
    assert (info['gt_roi_label'] > 0).sum() > 0
    # and the order of the draws matters
    swapped, _ = expected_losses(model, img, bbox, label, scale, seed,
                                 ptc_first=False)
    assert not np.allclose(swapped, want, rtol=1e-4)

    # the model's own proposals are the original's
    with torch.no_grad():
        rois = model.rpn(model.extractor(img), tuple(img.shape[2:]), scale)[2]
    np.testing.assert_allclose(torch.as_tensor(rois).numpy(), info['roi'],
                               rtol=1e-5, atol=1e-3)

    trainer = FasterRCNNTrainer(model)
    np.random.seed(seed)
    losses = trainer.forward(img, torch.from_numpy(bbox)[None],
                             torch.from_numpy(label)[None], scale)
    got = [v.item() for v in losses]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert trainer.rpn_cm.value().sum() == 256
    assert trainer.roi_cm.value().sum() == 128

    # the same seed gives the same losses again
    np.random.seed(seed)
    again = [v.item() for v in trainer.forward(
        img, torch.from_numpy(bbox)[None], torch.from_numpy(label)[None],
        scale)]
    assert again == got


def test_seeded_losses_on_the_device(make_tiny_faster_rcnn, device):
    # The device variant: the same numbers up to float error where the
    # proposals agree; at least finite losses on the input's device.
    model = tiny_model_for_regression(make_tiny_faster_rcnn)
    img, bbox, label = regression_batch()
    want, _ = expected_losses(model, img, bbox, label, 0.8, 7)
    model.to(device)
    trainer = FasterRCNNTrainer(model)
    np.random.seed(7)
    losses = trainer.forward(img.to(device),
                             torch.from_numpy(bbox)[None].to(device),
                             torch.from_numpy(label)[None].to(device), 0.8)
    for value in losses:
        assert value.device == device and torch.isfinite(value)
    if device.type == 'cpu':
        np.testing.assert_allclose([v.item() for v in losses], want,
                                   rtol=1e-4, atol=1e-6)
