"""Batches of N images: the trainer's losses, targets and draws against
one-image steps, padded batches, and batched predict against one-image
calls."""
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import build_tiny_faster_rcnn
from model import faster_rcnn as faster_rcnn_module
from model.faster_rcnn import check_head_output, check_stride
from model.utils.creator_tool import AnchorTargetCreator
from trainer import (FasterRCNNTrainer, LossTuple, _fast_rcnn_loc_loss)


def tiny_model(seed=0):
    model = build_tiny_faster_rcnn(seed=seed)
    with torch.no_grad():
        # spread the RPN's scores so that proposals do not hang on ties
        g = torch.Generator().manual_seed(seed)
        model.rpn.conv1.weight.mul_(30)
        model.rpn.score.weight.copy_(
            torch.randn(model.rpn.score.weight.shape, generator=g) * 10)
    return model


def image(seed, h=128, w=160):
    rng = np.random.RandomState(seed)
    return torch.from_numpy(rng.normal(size=(3, h, w)).astype(np.float32))


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


# -------------------------------------------------------- the trainer

def test_a_batch_of_one_is_todays_step_bit_for_bit():
    img = image(0)[None]
    for bboxes, labels in ((BBOX_A[None], LABEL_A[None]),
                           ([BBOX_A], [LABEL_A])):
        trainer = FasterRCNNTrainer(tiny_model())
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
    imgs = torch.stack([image(0), image(1)])
    bboxes, labels = [BBOX_A, BBOX_B], [LABEL_A, LABEL_B]
    trainer = FasterRCNNTrainer(tiny_model())
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
    imgs = torch.stack([image(0), image(1)])
    bbox = BBOX_A[:2]
    trainer = FasterRCNNTrainer(tiny_model())
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
    small = image(1, 96, 112)
    imgs = torch.zeros(2, 3, 128, 160)
    imgs[0] = image(0)
    imgs[1, :, :96, :112] = small
    bbox_b = torch.tensor([[20., 20., 90., 80.], [40., 60., 95., 110.]])
    recorder = RecordingAnchorTargetCreator()
    trainer = FasterRCNNTrainer(tiny_model(),
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
    imgs = torch.stack([image(0), image(1)])
    trainer = FasterRCNNTrainer(tiny_model())
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


def test_a_per_image_box_array_of_the_wrong_shape_is_named():
    imgs = torch.stack([image(0), image(1)])
    trainer = FasterRCNNTrainer(tiny_model())
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


# ------------------------------------------------------------- predict

def preprocessed(model, seed, h, w):
    rng = np.random.RandomState(seed)
    raw = rng.uniform(0, 255, (3, h, w)).astype(np.float32)
    return model._prepare(raw, 0), (h, w)


def test_batched_predict_equals_one_image_calls():
    model = tiny_model(seed=1)
    model.min_size, model.max_size = 96, 160
    model.score_thresh = 0.  # keep many boxes, so that the test bites
    # three sizes, two images of one of them, and one scaled differently
    pairs = [preprocessed(model, 0, 60, 80), preprocessed(model, 1, 90, 70),
             preprocessed(model, 2, 60, 80), preprocessed(model, 3, 120, 160),
             preprocessed(model, 4, 96, 96)]
    imgs, sizes = zip(*pairs)
    assert imgs[0].shape == imgs[2].shape == imgs[3].shape
    batched = model.predict(list(imgs), list(sizes))
    n_found = 0
    for i, (img, size) in enumerate(zip(imgs, sizes)):
        alone = model.predict([img], [size])
        for got, want in zip(batched, alone):
            assert got[i].dtype == want[0].dtype
            np.testing.assert_allclose(got[i], want[0], rtol=1e-5, atol=1e-4)
        n_found += len(alone[0][0])
    assert n_found > 10


def test_batched_predict_of_raw_images_equals_one_image_calls(monkeypatch):
    # an untrained model scores nothing above the preset's 0.7
    monkeypatch.setitem(faster_rcnn_module.PRESETS, 'visualize',
                        dict(nms_thresh=0.3, score_thresh=0.))
    model = tiny_model(seed=2)
    rng = np.random.RandomState(0)
    raws = [rng.uniform(0, 255, (3, h, w)).astype(np.float32)
            for h, w in ((70, 90), (90, 70), (70, 90))]
    batched = model.predict(raws, visualize=True)
    for i, raw in enumerate(raws):
        alone = model.predict([raw], visualize=True)
        assert len(alone[0][0]) > 10
        for got, want in zip(batched, alone):
            np.testing.assert_allclose(got[i], want[0], rtol=1e-5, atol=1e-4)


def test_forward_proposes_within_each_images_own_size():
    model = tiny_model()
    model.eval()
    imgs = torch.zeros(2, 3, 128, 160)
    imgs[0] = image(0)
    imgs[1, :, :64, :96] = image(1, 64, 96)
    with torch.no_grad():
        _, _, rois, roi_indices = model(imgs, scale=[1., 2.],
                                        img_sizes=[(128, 160), (64, 96)])
    small = rois[roi_indices == 1]
    assert len(small) and (small[:, 2] <= 64).all() and (
        small[:, 3] <= 96).all()
    # min_size (16) times the image's own scale (2)
    assert ((small[:, 2] - small[:, 0]) >= 32).all()
    assert ((small[:, 3] - small[:, 1]) >= 32).all()
    assert (rois[roi_indices == 0][:, 2] > 64).any()
