"""model/region_proposal_network.py: RegionProposalNetwork's shapes, the
anchor order, initialisation, and the proposals of its own outputs."""
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from reference import original as ref
from model.region_proposal_network import (RegionProposalNetwork,
                                           _enumerate_shifted_anchor)
from model.utils.bbox_tools import generate_anchor_base

RATIOS = [0.5, 1, 2]
SCALES = [2, 4, 8]


def small_rpn(**proposal_creator_params):
    torch.manual_seed(0)
    return RegionProposalNetwork(
        8, 16, ratios=RATIOS, anchor_scales=SCALES,
        proposal_creator_params=proposal_creator_params)


def heads_by_hand(rpn, x):
    """The three convolutions, written out: (N, 4A, H, W), (N, 2A, H, W)."""
    h = F.relu(F.conv2d(x, rpn.conv1.weight, rpn.conv1.bias, padding=1))
    return (F.conv2d(h, rpn.loc.weight, rpn.loc.bias),
            F.conv2d(h, rpn.score.weight, rpn.score.bias))


def test_output_shapes(device):
    rpn = small_rpn().to(device)
    n, hh, ww, A = 2, 5, 7, 9
    x = torch.randn(n, 8, hh, ww, device=device)
    img_size = (hh * 16, ww * 16)
    rpn_locs, rpn_scores, rois, roi_indices, anchor = rpn(x, img_size)
    assert tuple(rpn_locs.shape) == (n, hh * ww * A, 4)
    assert tuple(rpn_scores.shape) == (n, hh * ww * A, 2)
    assert rois.ndim == 2 and rois.shape[1] == 4 and len(rois) > 0
    assert tuple(roi_indices.shape) == (len(rois),)
    assert tuple(anchor.shape) == (hh * ww * A, 4)
    # the rois of image 0 come first, then those of image 1
    indices = torch.as_tensor(roi_indices).cpu().numpy()
    assert set(indices.tolist()) == {0, 1}
    assert (np.diff(indices) >= 0).all()
    assert indices.dtype == np.int32
    for out in (rpn_locs, rpn_scores):
        assert out.device == x.device
    for out in (rois, roi_indices, anchor):
        if isinstance(out, torch.Tensor):
            assert out.device == x.device
    # the predictions keep their graph; the proposals are constants
    assert rpn_locs.requires_grad and rpn_scores.requires_grad
    assert not getattr(rois, 'requires_grad', False)


def test_row_k_of_the_predictions_belongs_to_anchor_k():
    rpn = small_rpn()
    n, hh, ww, A = 2, 4, 6, 9
    x = torch.randn(n, 8, hh, ww)
    rpn_locs, rpn_scores, _, _, anchor = rpn(x, (hh * 16, ww * 16))
    anchor = torch.as_tensor(anchor).numpy()
    locs, scores = heads_by_hand(rpn, x)
    anchor_base = generate_anchor_base(ratios=RATIOS, anchor_scales=SCALES)
    for y in range(hh):
        for x_ in range(ww):
            for a in range(A):
                k = (y * ww + x_) * A + a
                shift = np.array([y, x_, y, x_], np.float32) * 16
                np.testing.assert_allclose(anchor[k], anchor_base[a] + shift,
                                           atol=1e-4)
                for i in range(n):
                    torch.testing.assert_close(
                        rpn_locs[i, k], locs[i, 4 * a:4 * a + 4, y, x_])
                    torch.testing.assert_close(
                        rpn_scores[i, k], scores[i, 2 * a:2 * a + 2, y, x_])


@pytest.mark.parametrize('feat_stride, hh, ww', [(16, 3, 5), (16, 37, 50),
                                                  (8, 4, 4), (32, 1, 9)])
def test_enumerate_shifted_anchor_equals_the_original(feat_stride, hh, ww):
    anchor_base = generate_anchor_base(base_size=feat_stride)
    got = _enumerate_shifted_anchor(torch.from_numpy(anchor_base),
                                    feat_stride, hh, ww)
    want = ref._enumerate_shifted_anchor(anchor_base, feat_stride, hh, ww)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), want)


def test_enumerate_shifted_anchor_stays_on_the_device(device):
    anchor_base = torch.from_numpy(generate_anchor_base()).to(device)
    anchor = _enumerate_shifted_anchor(anchor_base, 16, 3, 4)
    assert anchor.device == device
    np.testing.assert_array_equal(
        anchor.cpu().numpy(),
        ref._enumerate_shifted_anchor(generate_anchor_base(), 16, 3, 4))


def test_initialisation():
    torch.manual_seed(0)
    rpn = RegionProposalNetwork()
    assert rpn.conv1.in_channels == 512 and rpn.conv1.out_channels == 512
    assert rpn.conv1.kernel_size == (3, 3) and rpn.conv1.padding == (1, 1)
    assert rpn.score.out_channels == 18 and rpn.score.kernel_size == (1, 1)
    assert rpn.loc.out_channels == 36 and rpn.loc.kernel_size == (1, 1)
    for conv in (rpn.conv1, rpn.score, rpn.loc):
        w = conv.weight.detach().double()
        # std within a few standard errors of 0.01 (n >= 9216 weights)
        assert abs(w.std().item() - 0.01) < 0.0005
        assert abs(w.mean().item()) < 0.0005
        assert (conv.bias == 0).all()
    assert rpn.feat_stride == 16
    np.testing.assert_array_equal(
        torch.as_tensor(rpn.anchor_base).cpu().numpy(), generate_anchor_base())
    assert rpn.proposal_layer.parent_model is rpn


def test_proposal_creator_params_are_passed_on():
    rpn = small_rpn(nms_thresh=0.5, n_test_post_nms=7, min_size=4)
    layer = rpn.proposal_layer
    assert (layer.nms_thresh, layer.n_test_post_nms, layer.min_size) == \
        (0.5, 7, 4)
    assert layer.n_train_pre_nms == 12000


@pytest.mark.parametrize('training', [True, False])
def test_rois_are_the_proposals_of_the_foreground_scores(training):
    # The proposals equal the original ProposalCreator run on the decoded
    # outputs with fg = softmax over each pair, index 1.
    rpn = small_rpn(n_test_post_nms=40, n_train_post_nms=80)
    rpn.train(training)
    n, hh, ww = 2, 9, 12
    torch.manual_seed(1)
    x = torch.randn(n, 8, hh, ww)
    img_size, scale = (hh * 16 - 5, ww * 16 - 3), 0.8
    with torch.no_grad():
        rpn.loc.weight.mul_(20)  # offsets large enough to matter
        _, _, rois, roi_indices, _ = rpn(x, img_size, scale)
    rois = torch.as_tensor(rois).numpy()
    roi_indices = torch.as_tensor(roi_indices).numpy()
    anchor_base = ref.generate_anchor_base(ratios=RATIOS, anchor_scales=SCALES)
    anchor = ref._enumerate_shifted_anchor(anchor_base, 16, hh, ww)
    locs, scores = heads_by_hand(rpn, x)
    for i in range(n):
        loc = locs[i].permute(1, 2, 0).reshape(-1, 4).detach().numpy()
        score = scores[i].permute(1, 2, 0).reshape(-1, 2)
        fg = F.softmax(score, dim=1)[:, 1].detach().numpy()
        want = ref.ProposalCreator(
            training, n_test_post_nms=40, n_train_post_nms=80)(
                loc, fg, anchor, img_size, scale=scale)
        got = rois[roi_indices == i]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


def test_foreground_is_index_1_of_each_pair():
    # Offsets zero, and the score conv prefers foreground (index 1) only for
    # anchor type 4 (ratio 1, scale 4): the best proposal is such an anchor.
    rpn = small_rpn(min_size=1, n_test_post_nms=5)
    rpn.eval()
    A, target = 9, 4
    with torch.no_grad():
        rpn.loc.weight.zero_()
        rpn.score.weight.zero_()
        bias = torch.tensor([5., -5.]).repeat(A)
        bias[2 * target:2 * target + 2] = torch.tensor([-5., 5.])
        rpn.score.bias.copy_(bias)
        hh, ww = 10, 10
        _, _, rois, _, anchor = rpn(torch.randn(1, 8, hh, ww), (160, 160))
    rois = torch.as_tensor(rois).numpy()
    anchor = torch.as_tensor(anchor).numpy()
    type4 = anchor[target::A].clip(0, 160)
    for roi in rois[:1]:
        assert (np.abs(type4 - roi).max(axis=1) < 1e-4).any()
    # and with the preference flipped, no type-4 anchor comes first
    with torch.no_grad():
        rpn.score.bias.copy_(-bias)
        _, _, rois, _, _ = rpn(torch.randn(1, 8, hh, ww), (160, 160))
    roi = torch.as_tensor(rois).numpy()[0]
    assert not (np.abs(type4 - roi).max(axis=1) < 1e-4).any()
