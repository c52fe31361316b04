"""model/faster_rcnn.py: FasterRCNN composed from a tiny extractor, the
real RPN and a tiny head: forward, predict in both modes (one image and
batches), the score threshold at its boundary, settings in the state dict,
the optimizer, and bad input (a detector composed wrongly, images the
network cannot take) named in one sentence."""
import inspect

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import nms

import model.faster_rcnn as faster_rcnn_module
from conftest import (TinyExtractor, TinyHead, build_tiny_faster_rcnn,
                      normal_image, spread_tiny_faster_rcnn, tiny_batch)
from reference import original as ref
from data.dataset import preprocess
from model import FasterRCNN, RegionProposalNetwork
from trainer import FasterRCNNTrainer


N_FG_CLASS = 3


N_CLASS = N_FG_CLASS + 1


def raw_image(rng, h, w):
    """A raw CHW RGB image in [0, 255], float32."""
    return rng.uniform(0, 255, size=(3, h, w)).astype(np.float32)


def force_scores(model, bias):
    """Makes the head's class scores the given constants."""
    with torch.no_grad():
        model.head.score.weight.zero_()
        model.head.score.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))


def check_detections(bboxes, labels, scores, sizes, score_thresh=0.):
    assert isinstance(bboxes, list) and isinstance(labels, list)
    assert isinstance(scores, list)
    assert len(bboxes) == len(labels) == len(scores) == len(sizes)
    for bbox, label, score, (H, W) in zip(bboxes, labels, scores, sizes):
        assert isinstance(bbox, np.ndarray) and bbox.dtype == np.float32
        assert isinstance(label, np.ndarray) and label.dtype == np.int32
        assert isinstance(score, np.ndarray) and score.dtype == np.float32
        R = len(bbox)
        assert bbox.shape == (R, 4) and label.shape == (R,)
        assert score.shape == (R,)
        assert ((label >= 0) & (label < N_FG_CLASS)).all()
        assert (score > score_thresh).all()
        assert (bbox[:, 0::2] >= 0).all() and (bbox[:, 0::2] <= H).all()
        assert (bbox[:, 1::2] >= 0).all() and (bbox[:, 1::2] <= W).all()
        assert (bbox[:, 2:] >= bbox[:, :2]).all()


# --------------------------------------------------------------- forward

@pytest.mark.parametrize('n', [1, 2])
def test_forward_shapes(make_tiny_faster_rcnn, device, n):
    model = make_tiny_faster_rcnn().to(device)
    assert model.n_class == N_CLASS
    x = torch.randn(n, 3, 96, 128, device=device)
    roi_cls_locs, roi_scores, rois, roi_indices = model(x, scale=1.)
    R = len(rois)
    assert R > 0
    assert tuple(roi_cls_locs.shape) == (R, N_CLASS * 4)
    assert tuple(roi_scores.shape) == (R, N_CLASS)
    assert tuple(rois.shape) == (R, 4)
    assert tuple(roi_indices.shape) == (R,)
    assert roi_cls_locs.device == device and roi_scores.device == device
    for out in (rois, roi_indices):
        if isinstance(out, torch.Tensor):
            assert out.device == device
    assert set(torch.as_tensor(roi_indices).cpu().tolist()) == set(range(n))


def test_forward_rejects_an_image_smaller_than_one_stride(
        make_tiny_faster_rcnn):
    model = make_tiny_faster_rcnn()
    with pytest.raises(ValueError, match='stride'):
        model(torch.zeros(1, 3, 8, 64))


def test_forward_proposes_within_each_images_own_size():
    model = spread_tiny_faster_rcnn()
    model.eval()
    imgs = torch.zeros(2, 3, 128, 160)
    imgs[0] = normal_image(0)
    imgs[1, :, :64, :96] = normal_image(1, 64, 96)
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


# --------------------------------------------------------------- predict

def test_predict_visualize_takes_raw_images_of_different_sizes(
        make_tiny_faster_rcnn, device):
    model = make_tiny_faster_rcnn().to(device)
    force_scores(model, [0., 4., 3., 0.])  # classes 1 and 2 likely
    rng = np.random.RandomState(0)
    imgs = [raw_image(rng, 50, 80), raw_image(rng, 90, 60),
            raw_image(rng, 70, 70).astype(np.uint8)]
    sizes = [img.shape[1:] for img in imgs]
    bboxes, labels, scores = model.predict(imgs, visualize=True)
    check_detections(bboxes, labels, scores, sizes, score_thresh=0.7)
    # class 1 (label 0) has probability e^4 / (e^4 + e^3 + 2) ~ 0.70 > 0.7
    assert all(len(b) > 0 for b in bboxes)
    assert all((label == 0).all() for label in labels)


def test_predict_accepts_tensors(make_tiny_faster_rcnn, device):
    model = make_tiny_faster_rcnn().to(device)
    force_scores(model, [0., 5., 0., 0.])
    rng = np.random.RandomState(1)
    img = torch.from_numpy(raw_image(rng, 64, 96)).to(device)
    bboxes, labels, scores = model.predict([img], visualize=True)
    check_detections(bboxes, labels, scores, [(64, 96)], score_thresh=0.7)
    assert len(bboxes[0]) > 0


def test_predict_follows_the_spec_postprocessing(make_tiny_faster_rcnn):
    # visualize=False: preprocessed input plus original sizes. Compare with
    # the spec written out: de-normalize by std and mean, decode on the RoIs
    # scaled back, clip, softmax, per-class NMS at 0.3 with score > 0.05.
    mean, std = (0.05, -0.05, 0.1, 0.), (0.1, 0.1, 0.2, 0.2)
    model = make_tiny_faster_rcnn(loc_normalize_mean=mean,
                                  loc_normalize_std=std)
    with torch.no_grad():
        model.head.cls_loc.weight.mul_(5)
    rng = np.random.RandomState(2)
    imgs = [rng.normal(size=(3, 64, 96)).astype(np.float32),
            rng.normal(size=(3, 80, 64)).astype(np.float32)]
    sizes = [(40, 60), (100, 80)]
    bboxes, labels, scores = model.predict(imgs, sizes=sizes)
    check_detections(bboxes, labels, scores, sizes, score_thresh=0.05)

    model.eval()
    for img, size, bbox, label, score in zip(imgs, sizes, bboxes, labels,
                                             scores):
        scale = img.shape[2] / size[1]
        with torch.no_grad():
            roi_cls_loc, roi_score, rois, _ = model(
                torch.from_numpy(img)[None], scale=scale)
        roi = torch.as_tensor(rois).numpy() / scale
        loc = (roi_cls_loc.numpy().reshape(-1, N_CLASS, 4) * np.array(std) +
               np.array(mean)).astype(np.float32)
        cls_bbox = ref.loc2bbox(np.repeat(roi, N_CLASS, axis=0),
                                loc.reshape(-1, 4)).reshape(-1, N_CLASS, 4)
        cls_bbox[..., 0::2] = cls_bbox[..., 0::2].clip(0, size[0])
        cls_bbox[..., 1::2] = cls_bbox[..., 1::2].clip(0, size[1])
        prob = F.softmax(roi_score, dim=1).numpy()
        want_bbox, want_label, want_score = [], [], []
        for l in range(1, N_CLASS):
            mask = prob[:, l] > 0.05
            box_l = torch.from_numpy(cls_bbox[mask, l])
            prob_l = torch.from_numpy(prob[mask, l])
            keep = nms(box_l, prob_l, 0.3).numpy()
            want_bbox.append(box_l.numpy()[keep])
            want_label += [l - 1] * len(keep)
            want_score.append(prob_l.numpy()[keep])
        assert len(want_label) > 0
        np.testing.assert_allclose(bbox, np.concatenate(want_bbox), atol=1e-3)
        np.testing.assert_array_equal(label, want_label)
        np.testing.assert_allclose(score, np.concatenate(want_score),
                                   rtol=1e-5)


def test_predict_with_nothing_found_gives_empty_arrays(make_tiny_faster_rcnn):
    model = make_tiny_faster_rcnn()
    force_scores(model, [50., 0., 0., 0.])  # background everywhere
    rng = np.random.RandomState(3)
    for visualize in (True, False):
        img = raw_image(rng, 60, 90)
        if visualize:
            out = model.predict([img], visualize=True)
        else:
            out = model.predict([preprocess(img, 64, 128)], sizes=[(60, 90)])
        bboxes, labels, scores = out
        assert bboxes[0].shape == (0, 4) and bboxes[0].dtype == np.float32
        assert labels[0].shape == (0,) and labels[0].dtype == np.int32
        assert scores[0].shape == (0,) and scores[0].dtype == np.float32


@pytest.mark.parametrize('training', [True, False])
@pytest.mark.parametrize('preset', ['evaluate', 'visualize'])
@pytest.mark.parametrize('visualize', [True, False])
def test_predict_restores_mode_and_preset(make_tiny_faster_rcnn, monkeypatch,
                                          training, preset, visualize):
    model = make_tiny_faster_rcnn()
    model.train(training)
    model.use_preset(preset)
    seen = []
    head_forward = model.head.forward

    def spy(*args, **kwargs):
        seen.append((model.training, model.rpn.training, model.score_thresh,
                     model.nms_thresh))
        return head_forward(*args, **kwargs)

    monkeypatch.setattr(model.head, 'forward', spy)
    img = raw_image(np.random.RandomState(4), 64, 80)
    if visualize:
        model.predict([img], visualize=True)
    else:
        model.predict([preprocess(img, 64, 128)], sizes=[(64, 80)])

    # during the call: eval mode; visualize=True uses the visualize preset
    want_thresh = 0.7 if (visualize or preset == 'visualize') else 0.05
    assert seen == [(False, False, want_thresh, 0.3)]
    # after: as found
    assert model.training == training
    assert all(m.training == training for m in model.modules())
    assert model.preset == preset
    assert model.score_thresh == (0.7 if preset == 'visualize' else 0.05)
    assert model.nms_thresh == 0.3


def test_predict_restores_the_mode_after_an_error(make_tiny_faster_rcnn):
    model = make_tiny_faster_rcnn()
    model.train()
    model.use_preset('evaluate')
    with pytest.raises(ValueError, match='stride'):
        model.predict([np.zeros((3, 8, 40), np.float32)], sizes=[(8, 40)])
    assert model.training and model.rpn.training
    assert model.preset == 'evaluate'


def test_predict_uses_the_models_preprocessing(make_tiny_faster_rcnn,
                                               monkeypatch):
    real = faster_rcnn_module.preprocess
    calls = []

    def spy(*args, **kwargs):
        bound = inspect.signature(real).bind(*args, **kwargs)
        bound.apply_defaults()
        out = real(*args, **kwargs)
        calls.append((dict(bound.arguments), out.shape))
        return out

    monkeypatch.setattr(faster_rcnn_module, 'preprocess', spy)
    model = make_tiny_faster_rcnn(min_size=64, max_size=100)
    scales = []
    rpn_forward = model.rpn.forward

    def rpn_spy(x, img_size, scale=1.):
        scales.append((tuple(img_size), scale))
        return rpn_forward(x, img_size, scale)

    monkeypatch.setattr(model.rpn, 'forward', rpn_spy)
    rng = np.random.RandomState(5)
    img = raw_image(rng, 50, 80)
    model.predict([img], visualize=True)
    (arguments, shape), = calls
    assert arguments['min_size'] == 64 and arguments['max_size'] == 100
    assert arguments['caffe_pretrain'] is False
    # 50 x 80 scaled by min(64 / 50, 100 / 80) = 1.25 -> 62.5 x 100
    assert shape[0] == 3 and shape[2] == 100 and shape[1] in (62, 63)
    (img_size, scale), = scales
    assert img_size == tuple(shape[1:])
    assert scale == pytest.approx(1.25)

    calls.clear()
    model.caffe_pretrain = True
    model.min_size, model.max_size = 96, 1000
    model.predict([img], visualize=True)
    (arguments, shape), = calls
    assert arguments['caffe_pretrain'] is True
    assert arguments['min_size'] == 96 and arguments['max_size'] == 1000
    assert shape[1:] == (96, 154) or shape[1:] == (96, 153)

    # visualize=False does not preprocess
    calls.clear()
    model.predict([preprocess(img, 64, 100)], sizes=[(50, 80)])
    assert calls == []


def test_use_preset(make_tiny_faster_rcnn):
    model = make_tiny_faster_rcnn()
    assert model.preset == 'evaluate'
    assert (model.nms_thresh, model.score_thresh) == (0.3, 0.05)
    model.use_preset('visualize')
    assert (model.nms_thresh, model.score_thresh) == (0.3, 0.7)
    with pytest.raises(ValueError, match='bogus'):
        model.use_preset('bogus')
    assert model.preset == 'visualize'


def test_predict_keeps_thresholds_set_by_hand(make_tiny_faster_rcnn):
    model = make_tiny_faster_rcnn()
    model.score_thresh, model.nms_thresh = 0.2, 0.5
    img = np.zeros((3, 64, 64), np.float32)
    model.predict([img], sizes=[(64, 64)])
    model.predict([img * 255], visualize=True)
    assert (model.score_thresh, model.nms_thresh) == (0.2, 0.5)
    assert model.preset == 'evaluate'


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


# ------------------------------------------------------- batched predict

def preprocessed(model, seed, h, w):
    rng = np.random.RandomState(seed)
    raw = rng.uniform(0, 255, (3, h, w)).astype(np.float32)
    return model._prepare(raw, 0), (h, w)


def test_batched_predict_equals_one_image_calls():
    model = spread_tiny_faster_rcnn(seed=1)
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
    model = spread_tiny_faster_rcnn(seed=2)
    rng = np.random.RandomState(0)
    raws = [rng.uniform(0, 255, (3, h, w)).astype(np.float32)
            for h, w in ((70, 90), (90, 70), (70, 90))]
    batched = model.predict(raws, visualize=True)
    for i, raw in enumerate(raws):
        alone = model.predict([raw], visualize=True)
        assert len(alone[0][0]) > 10
        for got, want in zip(batched, alone):
            np.testing.assert_allclose(got[i], want[0], rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------- bad input

BAD_IMAGES = [
    (np.zeros((50, 60, 3), np.float32), r'\(3, H, W\)'),   # HWC
    (np.zeros((50, 60), np.float32), r'\(3, H, W\)'),      # 2-D
    (np.zeros((4, 50, 60), np.float32), r'\(3, H, W\)'),   # 4 channels
    (np.zeros((1, 3, 50, 60), np.float32), r'\(3, H, W\)'),  # a batch
    (np.zeros((3, 50, 60), bool), 'dtype'),
    (np.zeros((3, 50, 60), np.complex64), 'dtype'),
    (np.empty((3, 50, 60), object), 'dtype'),
    (torch.zeros((3, 50, 60), dtype=torch.bool), 'dtype'),
    (torch.zeros((50, 60, 3)), r'\(3, H, W\)'),
]


@pytest.mark.parametrize('img, message', BAD_IMAGES)
@pytest.mark.parametrize('visualize', [True, False])
def test_predict_rejects_bad_images(make_tiny_faster_rcnn, img, message,
                                    visualize):
    model = make_tiny_faster_rcnn()
    good = np.zeros((3, 64, 64), np.float32)
    with pytest.raises(ValueError, match=message) as info:
        model.predict([good, img], sizes=[(64, 64), (50, 60)],
                      visualize=visualize)
    assert 'image 1' in str(info.value)


def test_predict_without_sizes_is_a_value_error(make_tiny_faster_rcnn):
    model = make_tiny_faster_rcnn()
    img = np.zeros((3, 64, 64), np.float32)
    with pytest.raises(ValueError, match='sizes'):
        model.predict([img])
    with pytest.raises(ValueError, match='sizes'):
        model.predict([img, img], sizes=[(64, 64)])


def test_predict_warns_once_about_images_in_0_1(recwarn):
    model = build_tiny_faster_rcnn()
    img = np.random.RandomState(0).uniform(0, 1, (3, 70, 90)).astype(
        np.float32)
    model.predict([img, img], visualize=True)
    messages = [str(w.message) for w in recwarn.list]
    assert any('values in [0, 255]' in m and 'image 0' in m for m in messages)
    recwarn.clear()
    model.predict([img * 255], visualize=True)
    assert not [w for w in recwarn.list if '[0, 255]' in str(w.message)]


def test_predict_with_sizes_warns_once_about_raw_images(recwarn):
    """predict(imgs, sizes) takes preprocessed images; raw ones (all values
    >= 0, some far above 10) get one warning pointing to detect()."""
    model = build_tiny_faster_rcnn()
    rng = np.random.RandomState(0)
    raw = raw_image(rng, 64, 64)
    model.predict([raw, raw], sizes=[(64, 64), (64, 64)])
    messages = [str(w.message) for w in recwarn.list
                if 'look raw' in str(w.message)]
    assert len(messages) == 1
    assert 'detect(imgs)' in messages[0]
    recwarn.clear()
    normalized = (raw - 122.) / 60.  # has negative values
    model.predict([normalized], sizes=[(64, 64)])
    assert not [w for w in recwarn.list if 'look raw' in str(w.message)]


def test_too_small_image_message_gives_the_users_size():
    model = build_tiny_faster_rcnn(min_size=64, max_size=128)
    img = np.zeros((3, 5, 400), np.float32)  # resized to 2x128
    with pytest.raises(ValueError) as info:
        model.predict([img], visualize=True)
    message = str(info.value)
    assert 'image 0 of size 5x400 is 2x128 once resized' in message
    assert 'feature stride (16 px)' in message


# -------------------------------------------------- composing a detector

def test_head_without_n_class_is_named_at_construction():
    class NoClassHead(TinyHead):
        def __init__(self):
            super().__init__(3)
            del self.n_class

    rpn = RegionProposalNetwork(8, 8, anchor_scales=[2, 4, 8])
    with pytest.raises(ValueError, match=r"the head \(NoClassHead\) has no "
                                         r"attribute 'n_class'"):
        FasterRCNN(TinyExtractor(), rpn, NoClassHead())


def test_rpn_without_feat_stride_is_named_at_construction():
    with pytest.raises(ValueError, match=r"the rpn \(Conv2d\) has no "
                                         r"attribute 'feat_stride'"):
        FasterRCNN(TinyExtractor(), nn.Conv2d(8, 8, 1), TinyHead(3))


class SwappedHead(TinyHead):
    def forward(self, x, rois, roi_indices):
        roi_cls_locs, roi_scores = super().forward(x, rois, roi_indices)
        return roi_scores, roi_cls_locs


def test_head_returning_scores_first_is_named():
    torch.manual_seed(0)
    rpn = RegionProposalNetwork(8, 8, anchor_scales=[2, 4, 8])
    model = FasterRCNN(TinyExtractor(), rpn, SwappedHead(4))
    with pytest.raises(ValueError) as info:
        model(torch.rand(1, 3, 64, 96))
    message = str(info.value)
    assert 'the head (SwappedHead) returned outputs of shapes' in message
    assert 'roi_cls_locs (' in message and ', 16), roi_scores (' in message
    assert 'in this order' in message
    trainer = FasterRCNNTrainer(model)
    with pytest.raises(ValueError, match='SwappedHead'):
        trainer(*tiny_batch(), 1.)


def test_extractor_of_another_stride_is_named():
    # TinyExtractor has stride 16; an RPN told 8 would lay anchors wrong.
    torch.manual_seed(0)
    rpn = RegionProposalNetwork(8, 8, anchor_scales=[2, 4, 8], feat_stride=8)
    model = FasterRCNN(TinyExtractor(), rpn, TinyHead(4))
    with pytest.raises(ValueError) as info:
        model(torch.rand(1, 3, 64, 96))
    message = str(info.value)
    assert "features are 4x6 for a 64x96 image, a stride of about 16 px" in (
        message)
    assert "the RPN's feat_stride is 8" in message
    with pytest.raises(ValueError, match="feat_stride is 8"):
        FasterRCNNTrainer(model)(*tiny_batch(), 1.)


# -------------------------------------------- settings in the state dict

def test_preprocessing_settings_travel_in_the_state_dict(
        make_tiny_faster_rcnn, tmp_path):
    model = make_tiny_faster_rcnn(min_size=64, max_size=128,
                                  caffe_pretrain=True)
    state = model.state_dict()
    assert state['_extra_state'] == dict(
        min_size=64, max_size=128, caffe_pretrain=True, resize='skimage',
        size_divisible=1, roi_op='pool')
    path = tmp_path / 'model.pth'
    torch.save(state, path)

    other = make_tiny_faster_rcnn(min_size=600, max_size=1000, seed=1)
    assert other.caffe_pretrain is False
    other.load_state_dict(torch.load(path))
    assert (other.min_size, other.max_size, other.caffe_pretrain) == \
        (64, 128, True)
    for key, value in model.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(other.state_dict()[key], value), key


def test_a_state_dict_without_settings_keeps_the_models(make_tiny_faster_rcnn):
    model = make_tiny_faster_rcnn(min_size=64, max_size=128)
    state = {k: v for k, v in model.state_dict().items()
             if k != '_extra_state'}
    other = make_tiny_faster_rcnn(min_size=300, max_size=500, seed=1)
    other.load_state_dict(state)
    assert (other.min_size, other.max_size) == (300, 500)
    assert torch.equal(other.head.fc.weight, model.head.fc.weight)


def test_loading_another_number_of_classes_is_a_value_error(
        make_tiny_faster_rcnn):
    state = make_tiny_faster_rcnn(n_fg_class=3).state_dict()
    model = make_tiny_faster_rcnn(n_fg_class=5)
    with pytest.raises(ValueError, match='classes'):
        model.load_state_dict(state)


# ------------------------------------------------------------- optimizer

def test_get_optimizer_and_scale_lr(make_tiny_faster_rcnn):
    model = make_tiny_faster_rcnn()
    model.extractor[0].weight.requires_grad = False  # a frozen layer
    optimizer = model.get_optimizer()
    assert isinstance(optimizer, torch.optim.SGD)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = []
    for group in optimizer.param_groups:
        assert group['momentum'] == 0.9
        for p in group['params']:
            name = names[id(p)]
            seen.append(name)
            if name.endswith('bias'):
                assert group['lr'] == pytest.approx(2e-3)
                assert group['weight_decay'] == 0
            else:
                assert group['lr'] == pytest.approx(1e-3)
                assert group['weight_decay'] == pytest.approx(5e-4)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(seen) == sorted(trainable)
    assert 'extractor.0.weight' not in seen

    lrs = [g['lr'] for g in optimizer.param_groups]
    model.scale_lr(0.1)
    assert [g['lr'] for g in optimizer.param_groups] == \
        pytest.approx([lr * 0.1 for lr in lrs])
    model.scale_lr()
    assert [g['lr'] for g in optimizer.param_groups] == \
        pytest.approx([lr * 0.01 for lr in lrs])

    assert isinstance(model.get_optimizer(use_adam=True), torch.optim.Adam)
