"""model/export.py: the recorded inference path gives predict's detections.

The toy detector with random weights (seeded) scores every class near
1/4; its class scores are spread (a wider init of the score layer) and
the threshold set just above 1/4, so that dozens of detections of every
class are kept. Each comparison is against
``FasterRCNN.predict`` with the same thresholds: the same labels in the
same order (grouped by class, each class by descending score), boxes and
scores to float rounding.
"""
import json

import numpy as np
import pytest
import torch

from conftest import random_image
from model import FasterRCNNToy
from model.export import (ExportableFasterRCNN, example_inputs,
                          export_onnx, export_program, main, to_onnx)
from model.utils.preprocess import preprocess
from model.utils.suppression import suppress

SCORE_THRESH = 0.3
NAMES = ('a', 'b', 'c')
# Two original sizes, landscape and portrait; neither is the recorded
# example's (256 x 264).
SIZES = [(200, 300), (310, 190)]


def _toy(roi_op='pool'):
    torch.manual_seed(0)
    faster_rcnn = FasterRCNNToy(n_fg_class=3, roi_op=roi_op)
    torch.nn.init.normal_(faster_rcnn.head.score.weight, 0, 0.1)
    return faster_rcnn.eval()


@pytest.fixture(scope='module')
def faster_rcnn():
    return _toy()


def _inputs(faster_rcnn, img):
    x = preprocess(img, faster_rcnn.min_size, faster_rcnn.max_size)
    return x, np.array(img.shape[1:], dtype=np.int64)


def _predict(faster_rcnn, x, size, score_thresh=SCORE_THRESH):
    """predict() at a chosen threshold (it restores its preset after each
    call, so the threshold is set for each)."""
    faster_rcnn.use_preset('evaluate')
    faster_rcnn.score_thresh = score_thresh
    try:
        bboxes, labels, scores = faster_rcnn.predict([x], [tuple(size)])
    finally:
        faster_rcnn.use_preset('evaluate')
    return bboxes[0], labels[0], scores[0]


def _assert_same(expected, got):
    bbox, label, score = expected
    got_bbox, got_label, got_score = (np.asarray(a) for a in got)
    assert got_label.dtype == np.int64
    np.testing.assert_array_equal(got_label, label)
    np.testing.assert_allclose(got_bbox, bbox, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(got_score, score, rtol=1e-5, atol=1e-6)


def _run_torch(module, x, size):
    with torch.no_grad():
        return [t.numpy() for t in module(torch.from_numpy(x)[None],
                                          torch.from_numpy(size))]


@pytest.mark.parametrize('size', SIZES)
def test_module_equals_predict(faster_rcnn, size):
    module = ExportableFasterRCNN(faster_rcnn, score_thresh=SCORE_THRESH)
    x, size = _inputs(faster_rcnn, random_image(*size, seed=1))
    expected = _predict(faster_rcnn, x, size)
    assert len(expected[1]) >= 20
    assert set(expected[1]) == {0, 1, 2}  # the class grouping is exercised
    _assert_same(expected, _run_torch(module, x, size))


def test_module_takes_the_model_preset(faster_rcnn):
    module = ExportableFasterRCNN(faster_rcnn)
    assert (module.score_thresh, module.nms_thresh) == (0.05, 0.3)
    faster_rcnn.use_preset('visualize')
    try:
        assert ExportableFasterRCNN(faster_rcnn).score_thresh == 0.7
    finally:
        faster_rcnn.use_preset('evaluate')


def test_module_checks_its_model(faster_rcnn):
    with pytest.raises(ValueError, match='score_thresh must be in'):
        ExportableFasterRCNN(faster_rcnn, score_thresh=1.5)
    module = ExportableFasterRCNN(faster_rcnn)
    x, size = example_inputs(faster_rcnn)
    faster_rcnn.train()
    try:
        with pytest.raises(ValueError, match='eval mode'):
            module(x, size)
    finally:
        faster_rcnn.eval()


def _tied_case(seed, n_roi=40, n_class=6, n_level=5):
    """Integer boxes in clusters (so that nms suppresses, with no IoU
    within float rounding of a threshold) and probabilities quantised to
    a few values (so that many tie, within and across classes)."""
    rng = np.random.RandomState(seed)
    center = rng.randint(20, 200, size=(4, 2))
    c = (center[rng.randint(0, 4, size=(n_roi, n_class))]
         + rng.randint(-5, 6, size=(n_roi, n_class, 2)))
    hw = rng.randint(10, 40, size=(n_roi, n_class, 2))
    bbox = np.concatenate((c - hw // 2, c + hw // 2), axis=2)
    prob = rng.randint(0, n_level, size=(n_roi, n_class)) / (n_level - 1)
    return (torch.from_numpy(bbox.reshape(n_roi, -1).astype(np.float32)),
            torch.from_numpy(prob.astype(np.float32)))


class _Suppress(torch.nn.Module):
    def forward(self, cls_bbox, prob):
        return suppress(cls_bbox, prob, 0.05, 0.3)


def _numpy(detections):
    bbox, label, score = (t.numpy() for t in detections)
    return bbox, label.astype(np.int32), score


@pytest.mark.slow  # exports (torch.export and ONNX)
def test_recorded_suppress_keeps_the_order_of_ties(tmp_path):
    """The recorded suppression (one nms over boxes offset by class) keeps
    what the per-class default keeps on integer boxes (no IoU within float
    rounding of the threshold), and ties in score keep RoI order through
    torch.export and onnxruntime (ONNX's TopK is stable)."""
    ort = pytest.importorskip('onnxruntime')
    dim = torch.export.Dim.DYNAMIC
    program = torch.export.export(_Suppress(), _tied_case(0),
                                  dynamic_shapes=({0: dim}, {0: dim}))
    path = str(tmp_path / 'suppress.onnx')
    to_onnx(program, ['cls_bbox', 'prob'], ['bbox', 'label', 'score']).save(
        path)
    session = ort.InferenceSession(path,
                                   providers=['CPUExecutionProvider'])
    n_kept = 0
    for seed, n_roi in ((1, 30), (2, 50), (3, 40)):
        cls_bbox, prob = _tied_case(seed, n_roi)
        expected = _numpy(suppress(cls_bbox, prob, 0.05, 0.3))
        n_kept += len(expected[1])
        _assert_same(expected, [t.numpy() for t in program.module()(
            cls_bbox, prob)])
        _assert_same(expected, session.run(None, {
            'cls_bbox': cls_bbox.numpy(), 'prob': prob.numpy()}))
    assert n_kept > 50


@pytest.fixture(scope='module')
def program(faster_rcnn):
    return export_program(faster_rcnn, score_thresh=SCORE_THRESH)


@pytest.mark.slow  # exports (torch.export)
@pytest.mark.parametrize('size', SIZES)
def test_torch_export_equals_predict(faster_rcnn, program, size):
    x, size = _inputs(faster_rcnn, random_image(*size, seed=2))
    _assert_same(_predict(faster_rcnn, x, size),
                 _run_torch(program.module(), x, size))


@pytest.mark.slow  # exports (torch.export)
def test_torch_export_of_twenty_classes(make_tiny_faster_rcnn):
    """Up to 300 RoIs x 20 classes: more candidates than batched_nms's size
    threshold, which a recording cannot decide."""
    model = make_tiny_faster_rcnn(n_fg_class=20).eval()
    program = export_program(model)
    for seed, size in enumerate([(60, 100), (130, 70)]):
        x, size = _inputs(model, random_image(*size, seed=7 + seed))
        expected = _predict(model, x, size, model.score_thresh)
        assert len(expected[1]) >= 20
        _assert_same(expected, _run_torch(program.module(), x, size))


@pytest.mark.slow  # exports (torch.export)
def test_export_restores_mode(faster_rcnn):
    faster_rcnn.train()
    try:
        export_program(faster_rcnn, score_thresh=1.)
        assert faster_rcnn.training
    finally:
        faster_rcnn.eval()


def _candidate_scores(faster_rcnn, x, size):
    """Every (RoI, foreground class) score that the threshold sees."""
    with torch.no_grad():
        x = torch.from_numpy(x)[None]
        _, roi_score, _, _ = faster_rcnn(x, scale=x.shape[3] / size[1])
    return torch.softmax(roi_score, dim=1)[:, 1:].reshape(-1).numpy()


@pytest.mark.slow  # exports (torch.export)
@pytest.mark.parametrize('n_above', [0, 1])
def test_torch_export_keeps_zero_or_one_detection(faster_rcnn, n_above):
    """torchvision's shape rule for nms promises two boxes kept; the
    recorded program still runs with none or one above the threshold. The
    threshold is a candidate's own score, which is not kept (> only)."""
    x, size = _inputs(faster_rcnn, random_image(*SIZES[0], seed=3))
    scores = np.sort(_candidate_scores(faster_rcnn, x, size))[::-1]
    assert scores[n_above] < scores[max(n_above - 1, 0)] or n_above == 0
    score_thresh = float(scores[n_above])
    expected = _predict(faster_rcnn, x, size, score_thresh)
    assert len(expected[1]) == n_above
    program = export_program(faster_rcnn, score_thresh=score_thresh)
    _assert_same(expected, _run_torch(program.module(), x, size))


@pytest.mark.slow  # exports (ONNX)
@pytest.mark.parametrize('roi_op', ['pool', 'align'])
def test_onnx_equals_predict(roi_op, tmp_path):
    """One ONNX file, two image sizes, onnxruntime against predict; RoI
    pooling as ONNX's MaxRoiPool, RoIAlign as its RoiAlign."""
    ort = pytest.importorskip('onnxruntime')
    faster_rcnn = _toy(roi_op)
    path = export_onnx(faster_rcnn, str(tmp_path / 'toy.onnx'),
                       score_thresh=SCORE_THRESH, label_names=NAMES)
    session = ort.InferenceSession(path,
                                   providers=['CPUExecutionProvider'])
    assert session.get_modelmeta().custom_metadata_map == {
        'min_size': '256', 'max_size': '256', 'caffe_pretrain': 'false',
        'resize': '"skimage"', 'size_divisible': '1',
        'score_thresh': '0.3', 'nms_thresh': '0.3',
        'label_names': '["a", "b", "c"]'}
    assert [i.name for i in session.get_inputs()] == ['image', 'size']
    assert ([o.name for o in session.get_outputs()]
            == ['bbox', 'label', 'score'])
    for seed, size in enumerate(SIZES):
        x, size = _inputs(faster_rcnn, random_image(*size, seed=4 + seed))
        expected = _predict(faster_rcnn, x, size)
        assert len(expected[1]) >= 20
        _assert_same(expected, session.run(None, {'image': x[None],
                                                  'size': size}))


@pytest.mark.slow  # exports (torch.export)
def test_command_writes_a_program(faster_rcnn, tmp_path, capsys):
    from trainer import FasterRCNNTrainer
    checkpoint = FasterRCNNTrainer(
        faster_rcnn, config=dict(data='toy', min_size=256, max_size=256),
        label_names=NAMES).save(save_path=str(tmp_path / 'toy.pth'))
    out = str(tmp_path / 'toy.pt2')
    main(['--checkpoint={}'.format(checkpoint), '--out={}'.format(out),
          '--score-thresh={}'.format(SCORE_THRESH)])
    assert capsys.readouterr().out == 'wrote {}\n'.format(out)
    extra = {'detector.json': ''}
    program = torch.export.load(out, extra_files=extra)
    assert json.loads(extra['detector.json']) == {
        'min_size': '256', 'max_size': '256', 'caffe_pretrain': 'false',
        'resize': '"skimage"', 'size_divisible': '1',
        'score_thresh': '0.3', 'nms_thresh': '0.3',
        'label_names': '["a", "b", "c"]'}
    x, size = _inputs(faster_rcnn, random_image(*SIZES[1], seed=6))
    _assert_same(_predict(faster_rcnn, x, size),
                 _run_torch(program.module(), x, size))


@pytest.mark.parametrize('args, message', [
    (['--checkpoint=nowhere.pth', '--out=m.onnx'],
     'checkpoint nowhere.pth does not exist'),
    (['--checkpoint=nowhere.pth', '--out=m.txt'],
     '--out=m.txt must end in .onnx (ONNX) or .pt2 (torch.export)'),
    (['--out=m.onnx'], 'the following arguments are required: '
     '--checkpoint'),
])
def test_command_mistakes_are_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == 'python -m model.export: error: {}\n'.format(message)
