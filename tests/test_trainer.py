"""trainer.py: FasterRCNNTrainer and its losses.

The losses by gradcheck, by hand and against torch's smooth L1; the
trainer's defaults and creators; one step, on images with and without
objects; a seeded regression of one training forward against an
independent computation from the original design's creators (the default
sampler='numpy'), and its sampler='torch' variant; batches of N images
against one-image steps; bad input named; a non-finite loss that changes
nothing and a resume that continues the same run; and what a step waits
for on the host (the confusion matrices count on the device, a step with
sampler='torch' has no numpy in it and reads its losses once; on the CPU
the explicit reads stand in for the synchronisations, see
conftest.host_reads).
"""
import random
import sys

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck
from torch.nn import functional as F

from conftest import (TINY_RATIOS, TINY_SCALES, build_tiny_faster_rcnn,
                      host_reads, normal_image, regression_batch,
                      spread_tiny_faster_rcnn, tiny_batch)
from reference import original as ref
from model import FasterRCNNToy
from model.faster_rcnn import check_head_output, check_stride
from model.utils.creator_tool import AnchorTargetCreator, ProposalTargetCreator
from trainer import (FasterRCNNTrainer, LossTuple, _fast_rcnn_loc_loss,
                     _smooth_l1_loss, loss_values)


# ------------------------------------------------------------ the losses

def away_from_kink(shape, sigma, generator, low=-3., high=3.):
    """Differences in [low, high] at least 0.05 away from +-1 / sigma^2."""
    d = torch.rand(shape, generator=generator, dtype=torch.float64)
    d = low + (high - low) * d
    kink = 1. / sigma ** 2
    near = (d.abs() - kink).abs() < 0.05
    d[near] += 0.1 * torch.sign(d[near])
    return d


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


def test_loss_tuple():
    assert LossTuple._fields == ('rpn_loc_loss', 'rpn_cls_loss',
                                 'roi_loc_loss', 'roi_cls_loss', 'total_loss')


# ------------------------------------------------- defaults and creators

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


def test_trainer_builds_its_creators_with_the_sampler(make_tiny_faster_rcnn):
    model = make_tiny_faster_rcnn()
    trainer = FasterRCNNTrainer(model)
    assert trainer.anchor_target_creator.sampler == 'numpy'
    assert trainer.proposal_target_creator.sampler == 'numpy'
    trainer = FasterRCNNTrainer(model, sampler='torch')
    assert trainer.anchor_target_creator.sampler == 'torch'
    assert trainer.proposal_target_creator.sampler == 'torch'
    # creators handed in keep their own
    trainer = FasterRCNNTrainer(
        model, sampler='torch', anchor_target_creator=AnchorTargetCreator())
    assert trainer.anchor_target_creator.sampler == 'numpy'
    assert trainer.proposal_target_creator.sampler == 'torch'
    with pytest.raises(ValueError, match="sampler must be one of"):
        FasterRCNNTrainer(model, sampler='cupy')


# ---------------------------------------------------------------- a step

def training_batch(device, rng=None):
    rng = rng or np.random.RandomState(0)
    img = torch.from_numpy(rng.normal(size=(1, 3, 128, 160)).astype(
        np.float32)).to(device)
    bbox = torch.tensor([[[10., 12., 60., 70.], [30., 50., 100., 150.],
                          [5., 80., 40., 125.]]], device=device)
    label = torch.tensor([[0, 2, 1]], dtype=torch.int32, device=device)
    return img, bbox, label


def test_trainer_forward_and_train_step(make_tiny_faster_rcnn, device):
    model = make_tiny_faster_rcnn().to(device)
    trainer = FasterRCNNTrainer(model)
    img, bbox, label = training_batch(device)
    np.random.seed(0)
    losses = trainer.forward(img, bbox, label, 1.)
    assert isinstance(losses, LossTuple)
    for value in losses:
        assert value.ndim == 0 and torch.isfinite(value)
        assert value.device == device
    assert losses.total_loss.item() == pytest.approx(
        sum(v.item() for v in losses[:4]), rel=1e-5)

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train_step(img, bbox, label, 1.)
    for name in ('extractor.0.weight', 'rpn.conv1.weight', 'rpn.loc.weight',
                 'rpn.score.weight', 'head.fc.weight', 'head.cls_loc.weight',
                 'head.score.weight'):
        after = dict(model.named_parameters())[name]
        assert not torch.equal(after, before[name]), name


def test_trainer_on_an_image_without_objects(make_tiny_faster_rcnn):
    model = make_tiny_faster_rcnn()
    trainer = FasterRCNNTrainer(model)
    img, _, _ = training_batch('cpu')
    np.random.seed(0)
    losses = trainer.forward(img, torch.zeros(1, 0, 4),
                             torch.zeros(1, 0, dtype=torch.int32), 1.)
    assert all(torch.isfinite(v) for v in losses)
    # no positives: no location loss
    assert losses.rpn_loc_loss.item() == 0
    assert losses.roi_loc_loss.item() == 0
    trainer.train_step(img, torch.zeros(1, 0, 4),
                       torch.zeros(1, 0, dtype=torch.int32), 1.)


def test_an_image_without_objects_trains_with_a_raised_negative_band():
    """With neg_iou_thresh_lo > 0 an image without objects has no RoI in
    either band: the head gets no sample and no loss, the RPN its
    negatives."""
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


def test_an_image_smaller_than_every_anchor_trains_with_finite_losses(
        make_tiny_faster_rcnn, device):
    """No anchor lies inside a 16x32 image (the tiny model's smallest is
    23 px high): no labelled anchor, so the RPN's losses are 0, not nan,
    and the step goes on."""
    model = make_tiny_faster_rcnn().to(device)
    trainer = FasterRCNNTrainer(model)
    img = torch.randn(1, 3, 16, 32, device=device)
    bbox = torch.tensor([[[2., 3., 12., 20.]]])
    label = torch.tensor([[1]])
    losses = trainer.forward(img, bbox, label, 1.)
    assert losses.rpn_cls_loss.item() == losses.rpn_loc_loss.item() == 0.
    assert torch.isfinite(losses.total_loss)
    losses.total_loss.backward()
    for p in model.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()
    trainer.train_step(img, bbox, label, 1.)


def test_meters_hold_the_steps_losses(make_tiny_faster_rcnn):
    # the losses reach the meters (and the non-finite check) in one
    # transfer: the same numbers as the step's tensors
    trainer = FasterRCNNTrainer(make_tiny_faster_rcnn())
    img = torch.rand(1, 3, 64, 96) * 255
    bbox = torch.tensor([[[8., 8., 40., 50.]]])
    np.random.seed(0)
    losses = trainer.train_step(img, bbox, torch.tensor([[1]]), 1.)
    means = trainer.get_meter_data()
    for name, value in losses._asdict().items():
        assert means[name] == pytest.approx(value.item(), rel=1e-6)
    floats = LossTuple(1., 2., 3., 4., 10.)
    assert loss_values(floats) is floats


# --------------------------------------------------------- seeded losses

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


def test_seeded_losses_equal_an_independent_computation():
    model = spread_tiny_faster_rcnn()
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


def test_seeded_losses_on_the_device(device):
    # The device variant: the same numbers up to float error where the
    # proposals agree; at least finite losses on the input's device.
    model = spread_tiny_faster_rcnn()
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


def test_a_torch_sampled_step_on_the_device(device):
    """The regression batch with sampler='torch': the same number of
    anchors and RoIs sampled, finite losses on the device, repeatable under
    a torch seed, and numpy's RNG left alone."""
    model = spread_tiny_faster_rcnn().to(device)
    img, bbox, label = regression_batch()
    args = (img.to(device), torch.from_numpy(bbox)[None].to(device),
            torch.from_numpy(label)[None].to(device), 0.8)
    trainer = FasterRCNNTrainer(model, sampler='torch')
    np.random.seed(7)
    numpy_state = np.random.get_state()[1].copy()
    runs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        trainer.reset_meters()
        losses = trainer.forward(*args)
        for value in losses:
            assert value.device == device and torch.isfinite(value)
        assert trainer.rpn_cm.value().sum() == 256
        assert trainer.roi_cm.value().sum() == 128
        runs.append([v.item() for v in losses])
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


# --------------------------------------------------- batches of N images

BBOX_A = torch.tensor([[10., 12., 60., 70.], [30., 50., 100., 150.],
                       [5., 80., 40., 125.]])


LABEL_A = torch.tensor([0, 2, 1], dtype=torch.int32)


BBOX_B = torch.tensor([[20., 20., 110., 90.], [60., 100., 120., 155.]])


LABEL_B = torch.tensor([1, 1], dtype=torch.int32)


def grads(model):
    return {k: p.grad.clone() for k, p in model.named_parameters()
            if p.grad is not None}


def todays_forward(trainer, imgs, bboxes, labels, scale):
    """The one-image training forward as it was before batches, line for
    line (the bit-for-bit reference of the batch-of-one path)."""
    faster_rcnn = trainer.faster_rcnn
    img_size = tuple(imgs.shape[2:])
    scale = float(scale)
    features = faster_rcnn.extractor(imgs)
    check_stride(features, img_size, faster_rcnn.rpn.feat_stride)
    rpn_locs, rpn_scores, rois, roi_indices, anchor = \
        faster_rcnn.rpn(features, img_size, scale)
    bbox, label = bboxes[0], labels[0]
    rpn_score, rpn_loc = rpn_scores[0], rpn_locs[0]
    sample_roi, gt_roi_loc, gt_roi_label = trainer.proposal_target_creator(
        rois, bbox, label, trainer.loc_normalize_mean,
        trainer.loc_normalize_std)
    sample_roi_index = torch.zeros(len(sample_roi), device=imgs.device)
    roi_cls_loc, roi_score = faster_rcnn.head(features, sample_roi,
                                              sample_roi_index)
    check_head_output(faster_rcnn.head, roi_cls_loc, roi_score,
                      len(sample_roi))
    gt_rpn_loc, gt_rpn_label = trainer.anchor_target_creator(
        bbox, anchor, img_size)
    gt_rpn_label = gt_rpn_label.long()
    rpn_loc_loss = _fast_rcnn_loc_loss(rpn_loc, gt_rpn_loc, gt_rpn_label,
                                       trainer.rpn_sigma)
    rpn_cls_loss = F.cross_entropy(rpn_score, gt_rpn_label, ignore_index=-1)
    n_sample = roi_cls_loc.shape[0]
    gt_roi_label = gt_roi_label.long()
    roi_cls_loc = roi_cls_loc.view(n_sample, -1, 4)
    roi_loc = roi_cls_loc[torch.arange(n_sample), gt_roi_label]
    roi_loc_loss = _fast_rcnn_loc_loss(roi_loc.contiguous(), gt_roi_loc,
                                       gt_roi_label, trainer.roi_sigma)
    roi_cls_loss = F.cross_entropy(roi_score, gt_roi_label)
    losses = [rpn_loc_loss, rpn_cls_loss, roi_loc_loss, roi_cls_loss]
    return LossTuple(*losses, sum(losses))


def rng_state():
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return name, keys.tolist(), pos, has_gauss, cached


def test_a_batch_of_one_is_todays_step_bit_for_bit():
    img = normal_image(0)[None]
    for bboxes, labels in ((BBOX_A[None], LABEL_A[None]),
                           ([BBOX_A], [LABEL_A])):
        trainer = FasterRCNNTrainer(spread_tiny_faster_rcnn())
        np.random.seed(3)
        want = todays_forward(trainer, img, BBOX_A[None], LABEL_A[None], 0.8)
        want.total_loss.backward()
        want_grads, want_rng = grads(trainer.faster_rcnn), rng_state()
        trainer.faster_rcnn.zero_grad(set_to_none=True)

        np.random.seed(3)
        got = trainer(img, bboxes, labels, 0.8)
        got.total_loss.backward()
        assert [v.item() for v in got] == [v.item() for v in want]
        got_grads = grads(trainer.faster_rcnn)
        assert got_grads.keys() == want_grads.keys()
        for key in want_grads:
            assert torch.equal(got_grads[key], want_grads[key]), key
        assert rng_state() == want_rng


def test_a_batch_of_two_is_the_mean_of_two_one_image_steps():
    imgs = torch.stack([normal_image(0), normal_image(1)])
    bboxes, labels = [BBOX_A, BBOX_B], [LABEL_A, LABEL_B]
    trainer = FasterRCNNTrainer(spread_tiny_faster_rcnn())
    model = trainer.faster_rcnn

    np.random.seed(5)
    singles, single_grads = [], []
    for i in range(2):
        model.zero_grad(set_to_none=True)
        losses = trainer(imgs[i:i + 1], bboxes[i:i + 1], labels[i:i + 1],
                         [0.8, 1.2][i])
        losses.total_loss.backward()
        singles.append([v.item() for v in losses])
        single_grads.append(grads(model))
    after_two_steps = rng_state()

    model.zero_grad(set_to_none=True)
    np.random.seed(5)
    losses = trainer(imgs, bboxes, labels, [0.8, 1.2])
    losses.total_loss.backward()
    # the same draws, in the same order
    assert rng_state() == after_two_steps
    np.testing.assert_allclose([v.item() for v in losses],
                               np.mean(singles, axis=0), rtol=1e-5)
    got = grads(model)
    for key, value in got.items():
        torch.testing.assert_close(
            value, (single_grads[0][key] + single_grads[1][key]) / 2,
            rtol=1e-4, atol=1e-6)


def test_a_tensor_of_boxes_and_a_list_give_the_same_losses():
    imgs = torch.stack([normal_image(0), normal_image(1)])
    bbox = BBOX_A[:2]
    trainer = FasterRCNNTrainer(spread_tiny_faster_rcnn())
    np.random.seed(1)
    a = trainer(imgs, torch.stack([bbox, bbox + 5]),
                torch.stack([LABEL_A[:2], LABEL_A[:2]]), 1.)
    np.random.seed(1)
    b = trainer(imgs, [bbox, bbox + 5], [LABEL_A[:2], LABEL_A[:2]], [1., 1.])
    assert [v.item() for v in a] == [v.item() for v in b]


class RecordingAnchorTargetCreator(AnchorTargetCreator):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = []

    def __call__(self, bbox, anchor, img_size):
        loc, label = super().__call__(bbox, anchor, img_size)
        self.calls.append((anchor, label))
        return loc, label


def test_a_padded_image_labels_its_anchors_as_alone():
    # 128x160 and 96x112 padded to 128x160 (sizes on the stride of 16, so
    # that each image's own feature map is a corner of the padded one)
    small = normal_image(1, 96, 112)
    imgs = torch.zeros(2, 3, 128, 160)
    imgs[0] = normal_image(0)
    imgs[1, :, :96, :112] = small
    bbox_b = torch.tensor([[20., 20., 90., 80.], [40., 60., 95., 110.]])
    recorder = RecordingAnchorTargetCreator()
    trainer = FasterRCNNTrainer(spread_tiny_faster_rcnn(),
                                anchor_target_creator=recorder)
    np.random.seed(2)
    trainer(imgs, [BBOX_A, bbox_b], [LABEL_A, LABEL_B], [1., 1.],
            img_sizes=[(128, 160), (96, 112)])
    (anchor, label_a), (_, label_b) = recorder.calls
    recorder.calls.clear()

    # the small image alone, with the draws its batch made before it
    np.random.seed(2)
    trainer(imgs[:1], [BBOX_A], [LABEL_A], 1.)
    trainer(small[None], [bbox_b], [LABEL_B], 1.)
    (_, want_a), (own_anchor, want_b) = recorder.calls

    assert torch.equal(label_a, want_a)
    # anchor k of the 6x7 map is anchor (y, x, a) of the 8x10 one
    n_base = 9
    grid = torch.arange(8 * 10 * n_base).view(8, 10, n_base)
    corner = grid[:6, :7].reshape(-1)
    assert torch.equal(anchor[corner], own_anchor)
    assert torch.equal(label_b[corner], want_b)
    outside = torch.ones(len(anchor), dtype=torch.bool)
    outside[corner] = False
    assert (label_b[outside] == -1).all()
    assert (want_b == 1).any() and (want_b == 0).any()


def test_an_image_without_boxes_inside_a_batch():
    imgs = torch.stack([normal_image(0), normal_image(1)])
    trainer = FasterRCNNTrainer(spread_tiny_faster_rcnn())
    np.random.seed(0)
    empty_box = torch.zeros(0, 4)
    empty_label = torch.zeros(0, dtype=torch.int32)
    losses = trainer(imgs, [empty_box, BBOX_B], [empty_label, LABEL_B], 1.)
    assert all(torch.isfinite(v) for v in losses)
    # the empty image has no positives: its loc losses are 0, so the
    # batch's are half the other image's
    np.random.seed(0)
    alone = trainer(imgs[:1], [empty_box], [empty_label], 1.)
    assert alone.rpn_loc_loss.item() == alone.roi_loc_loss.item() == 0
    other = trainer(imgs[1:], [BBOX_B], [LABEL_B], 1.)
    assert losses.roi_loc_loss.item() == pytest.approx(
        other.roi_loc_loss.item() / 2, rel=1e-5)
    trainer.train_step(imgs, [empty_box, BBOX_B], [empty_label, LABEL_B], 1.)


# ------------------------------------------------------------- bad input

@pytest.fixture
def trainer():
    return FasterRCNNTrainer(build_tiny_faster_rcnn(n_fg_class=3))


def test_boxes_without_the_batch_axis_are_named(trainer):
    img, bbox, label = tiny_batch()
    with pytest.raises(ValueError) as info:
        trainer(img, bbox[0], label, 1.)
    assert str(info.value) == (
        'FasterRCNNTrainer takes a batch of one image: bboxes must have '
        'shape (1, R, 4), got (2, 4) (length 2)')


def test_an_image_without_the_batch_axis_is_named(trainer):
    img, bbox, label = tiny_batch()
    with pytest.raises(ValueError, match=r'imgs must have shape \(1, 3, H, '
                                         r'W\), got \(3, 64, 96\) \(length '
                                         r'3\)'):
        trainer(img[0], bbox, label, 1.)


def test_labels_of_the_wrong_length_are_named(trainer):
    img, bbox, label = tiny_batch()
    with pytest.raises(ValueError, match='got 2 boxes and 1 labels'):
        trainer(img, bbox, label[:, :1], 1.)


def test_a_label_beyond_the_classes_is_named(trainer):
    img, bbox, _ = tiny_batch()
    with pytest.raises(ValueError) as info:
        trainer(img, bbox, torch.tensor([[1, 6]]), 1.)
    assert str(info.value) == ('gt label 6 is out of range: the model has 3 '
                               'foreground classes (labels 0..2)')


def test_trainer_rejects_boxes_for_another_number_of_images(
        make_tiny_faster_rcnn):
    # a batch of two is a batch (see "batches of N images" above), but its
    # boxes and labels must come for both images
    model = make_tiny_faster_rcnn()
    trainer = FasterRCNNTrainer(model)
    img, bbox, label = training_batch('cpu')
    with pytest.raises(ValueError, match='batch of 2 images: bboxes must '
                                         r'have shape \(2, R, 4\)'):
        trainer.forward(img.repeat(2, 1, 1, 1), bbox, label.repeat(2, 1), 1.)


def test_a_per_image_box_array_of_the_wrong_shape_is_named():
    imgs = torch.stack([normal_image(0), normal_image(1)])
    trainer = FasterRCNNTrainer(spread_tiny_faster_rcnn())
    with pytest.raises(ValueError) as info:
        trainer(imgs, [BBOX_A, BBOX_B[:, :3]], [LABEL_A, LABEL_B], 1.)
    assert str(info.value) == (
        'bboxes[1] must have shape (R, 4), each (y_min, x_min, y_max, '
        'x_max), got (2, 3)')
    with pytest.raises(ValueError, match='got 2 boxes and 1 labels '
                                         r'\(image 1 of the batch\)'):
        trainer(imgs, [BBOX_A, BBOX_B], [LABEL_A, LABEL_B[:1]], 1.)
    with pytest.raises(ValueError, match='gt label 5 is out of range.*'
                                         r'\(image 0 of the batch\)'):
        trainer(imgs, [BBOX_A, BBOX_B], [LABEL_A + 5, LABEL_B], 1.)
    with pytest.raises(ValueError, match='batch of 2 images: bboxes must '
                                         'hold one array per image, got 1'):
        trainer(imgs, [BBOX_A], [LABEL_A, LABEL_B], 1.)
    with pytest.raises(ValueError, match=r'img_sizes\[1\] is 130x100, '
                                         'larger than the batch'):
        trainer(imgs, [BBOX_A, BBOX_B], [LABEL_A, LABEL_B], 1.,
                img_sizes=[(128, 160), (130, 100)])
    with pytest.raises(ValueError, match='a scale for each of the 2 images'):
        trainer(imgs, [BBOX_A, BBOX_B], [LABEL_A, LABEL_B], [1., 1., 1.])


# ----------------------------------------------------- a non-finite loss

def make_batch():
    g = torch.Generator().manual_seed(0)
    imgs = torch.randn(1, 3, 64, 96, generator=g)
    bboxes = torch.tensor([[[10., 20., 50., 70.]]])
    labels = torch.tensor([[1]], dtype=torch.int32)
    return imgs, bboxes, labels, 1.


def make_trainer(seed=0):
    return FasterRCNNTrainer(build_tiny_faster_rcnn(seed=seed))


def snapshot(trainer):
    """Copies of every parameter and of the optimizer's state."""
    params = {k: v.detach().clone()
              for k, v in trainer.faster_rcnn.state_dict().items()
              if isinstance(v, torch.Tensor)}
    state = {i: {k: v.clone() if isinstance(v, torch.Tensor) else v
                 for k, v in s.items()}
             for i, s in trainer.optimizer.state_dict()['state'].items()}
    return params, state


def assert_same_tensors(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_nan_loss_raises_with_the_step_and_changes_nothing():
    np.random.seed(0)
    trainer = make_trainer()
    batch = make_batch()
    trainer.train_step(*batch)  # a good step: momentum buffers exist
    params, state = snapshot(trainer)
    assert state, 'the good step left no momentum buffers'
    forward = trainer.forward

    def nan_forward(*args):
        losses = forward(*args)
        return LossTuple(*losses[:4], losses.total_loss * float('nan'))

    trainer.forward = nan_forward
    with pytest.raises(FloatingPointError, match=r'\bstep 2\b'):
        trainer.train_step(*batch)
    params_after, state_after = snapshot(trainer)
    assert_same_tensors(params_after, params)
    assert state_after.keys() == state.keys()
    for i in state:
        assert_same_tensors(state_after[i], state[i])


def test_inf_loss_raises_too():
    np.random.seed(0)
    trainer = make_trainer()
    params, _ = snapshot(trainer)
    forward = trainer.forward

    def inf_forward(*args):
        losses = forward(*args)
        return LossTuple(*losses[:4], losses.total_loss + float('inf'))

    trainer.forward = inf_forward
    with pytest.raises(FloatingPointError, match=r'\bstep 1\b'):
        trainer.train_step(*make_batch())
    assert_same_tensors(snapshot(trainer)[0], params)
    assert trainer.optimizer.state_dict()['state'] == {}


# ---------------------------------------------------------------- resume

@pytest.fixture
def resumable(tmp_path):
    """A checkpoint after two steps, and the random numbers that followed
    its saving."""
    np.random.seed(0)
    random.seed(0)
    torch.manual_seed(0)
    trainer = make_trainer()
    batch = make_batch()
    for _ in range(2):
        trainer.train_step(*batch)
    path = trainer.save(save_optimizer=True,
                        save_path=str(tmp_path / 'last.pth'), epoch=1,
                        best_map=0.)
    expected = dict(numpy=np.random.rand(5), python=[random.random()
                                                       for _ in range(5)],
                    torch=torch.rand(5))
    return trainer, path, expected


def test_resume_restores_step_count_momentum_and_rngs(resumable):
    trainer, path, expected = resumable
    # a fresh model (other weights) and a disturbed RNG
    np.random.seed(123)
    random.seed(123)
    resumed = make_trainer(seed=1)
    info = resumed.load(path, resume=True)

    assert info == dict(epoch=1, best_map=0.)
    assert resumed.n_step == trainer.n_step == 2
    assert_same_tensors(snapshot(resumed)[0], snapshot(trainer)[0])
    want = trainer.optimizer.state_dict()['state']
    got = resumed.optimizer.state_dict()['state']
    assert want and got.keys() == want.keys()
    for i in want:
        assert torch.equal(got[i]['momentum_buffer'],
                           want[i]['momentum_buffer']), i
    np.testing.assert_array_equal(np.random.rand(5), expected['numpy'])
    assert [random.random() for _ in range(5)] == expected['python']
    assert torch.equal(torch.rand(5), expected['torch'])


def test_resume_of_a_bare_state_dict_says_what_it_lacks(tmp_path):
    trainer = make_trainer()
    path = str(tmp_path / 'weights.pth')
    torch.save(trainer.faster_rcnn.state_dict(), path)
    with pytest.raises(ValueError) as err:
        make_trainer().load(path, resume=True)
    message = str(err.value)
    assert path in message and 'not a resumable checkpoint' in message
    assert 'lacks' in message and 'optimizer' in message


def test_resume_of_a_checkpoint_without_optimizer_says_so(tmp_path):
    np.random.seed(0)
    trainer = make_trainer()
    trainer.train_step(*make_batch())
    path = trainer.save(save_optimizer=False,
                        save_path=str(tmp_path / 'best.pth'), epoch=1,
                        best_map=0.)
    fresh = make_trainer(seed=1)
    before, _ = snapshot(fresh)
    with pytest.raises(ValueError) as err:
        fresh.load(path, resume=True)
    message = str(err.value)
    assert path in message and 'it lacks optimizer (' in message
    # refused before anything was loaded
    assert_same_tensors(snapshot(fresh)[0], before)
    assert fresh.n_step == 0


# ------------------------------------- what a step waits for on the host

class NoNumpy:
    """Stands for a module's ``numpy``: any use fails the test."""

    def __getattr__(self, name):
        raise AssertionError('numpy.{} used in a step'.format(name))


def test_a_torch_sampled_step_has_no_numpy_and_reads_its_losses_once(
        device, monkeypatch):
    model = spread_tiny_faster_rcnn().to(device)
    trainer = FasterRCNNTrainer(model, sampler='torch')
    img, bbox, label = regression_batch()
    # the gt on the host, as train.py hands it over
    args = (img.to(device), [torch.from_numpy(bbox)],
            [torch.from_numpy(label)], 0.8)
    trainer.train_step(*args)  # warm-up: the meters allocate
    for name, module in list(sys.modules.items()):
        if (name == 'trainer' or name.split('.')[0] in ('model', 'utils')) \
                and getattr(module, 'np', None) is np:
            monkeypatch.setattr(module, 'np', NoNumpy())
    with host_reads(device) as reads:
        losses = trainer.train_step(*args)
    monkeypatch.undo()
    assert all(torch.isfinite(v) for v in losses)
    if device.type == 'cpu':
        # the losses' one transfer and the RoI samples' one read of their
        # candidate counts; the rest read host data: the gt's checks and
        # the image sizes
        assert reads.count('loss_values') == 1
        assert reads.count('_sample_rois') == 1
        assert set(reads) <= {'loss_values', '_sample_rois', '_check_batch',
                              'per_image'}
    else:
        # what must wait: the proposals (their size filter and nms, with
        # its copy back), the RoI samples' candidate counts, the losses
        assert len(reads) <= 5, reads
        assert not any('meters.py' in r for r in reads), reads
        assert sum('trainer.py' in r for r in reads) == 1, reads  # losses
