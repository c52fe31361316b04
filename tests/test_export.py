"""model.export: the recorded inference path gives predict's detections.

The toy detector with random weights (seeded) scores every class near
1/4; its class scores are spread (a wider init of the score layer) and
the threshold set just above 1/4, so that dozens of detections of every
class are kept. Each comparison is against
``FasterRCNN.predict`` with the same thresholds: the same labels in the
same order (grouped by class, each class by descending score), boxes and
scores to float rounding.
"""
import numpy as np
import pytest
import torch

from model import FasterRCNNToy
from model.export import (ExportableFasterRCNN, example_inputs,
                          export_onnx, export_program, main)
from model.utils.preprocess import preprocess

SCORE_THRESH = 0.3
# Two original sizes, landscape and portrait; neither is the recorded
# example's (256 x 264).
SIZES = [(200, 300), (310, 190)]


@pytest.fixture(scope='module')
def faster_rcnn():
    torch.manual_seed(0)
    faster_rcnn = FasterRCNNToy(n_fg_class=3)
    torch.nn.init.normal_(faster_rcnn.head.score.weight, 0, 0.1)
    return faster_rcnn.eval()


def _image(size, seed):
    rng = np.random.RandomState(seed)
    return rng.uniform(0, 255, (3,) + size).astype(np.float32)


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
    x, size = _inputs(faster_rcnn, _image(size, 1))
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


def test_module_checks_its_model(faster_rcnn, make_tiny_faster_rcnn):
    with pytest.raises(ValueError, match='score_thresh must be in'):
        ExportableFasterRCNN(faster_rcnn, score_thresh=1.5)
    tiny = make_tiny_faster_rcnn()
    del tiny.rpn.proposal_layer
    with pytest.raises(ValueError, match='lacks proposal_layer'):
        ExportableFasterRCNN(tiny)
    module = ExportableFasterRCNN(faster_rcnn)
    x, size = example_inputs(faster_rcnn)
    faster_rcnn.train()
    try:
        with pytest.raises(ValueError, match='eval mode'):
            module(x, size)
    finally:
        faster_rcnn.eval()


@pytest.fixture(scope='module')
def program(faster_rcnn):
    return export_program(faster_rcnn, score_thresh=SCORE_THRESH)


@pytest.mark.parametrize('size', SIZES)
def test_torch_export_equals_predict(faster_rcnn, program, size):
    x, size = _inputs(faster_rcnn, _image(size, 2))
    _assert_same(_predict(faster_rcnn, x, size),
                 _run_torch(program.module(), x, size))


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


@pytest.mark.parametrize('n_above', [0, 1])
def test_torch_export_keeps_zero_or_one_detection(faster_rcnn, n_above):
    """torchvision's shape rule for nms promises two boxes kept; the
    recorded program still runs with none or one above the threshold. The
    threshold is a candidate's own score, which is not kept (> only)."""
    x, size = _inputs(faster_rcnn, _image(SIZES[0], 3))
    scores = np.sort(_candidate_scores(faster_rcnn, x, size))[::-1]
    assert scores[n_above] < scores[max(n_above - 1, 0)] or n_above == 0
    score_thresh = float(scores[n_above])
    expected = _predict(faster_rcnn, x, size, score_thresh)
    assert len(expected[1]) == n_above
    program = export_program(faster_rcnn, score_thresh=score_thresh)
    _assert_same(expected, _run_torch(program.module(), x, size))


def test_onnx_equals_predict(faster_rcnn, tmp_path):
    """One ONNX file, two image sizes, onnxruntime against predict."""
    ort = pytest.importorskip('onnxruntime')
    path = export_onnx(faster_rcnn, str(tmp_path / 'toy.onnx'),
                       score_thresh=SCORE_THRESH)
    session = ort.InferenceSession(path,
                                   providers=['CPUExecutionProvider'])
    assert [i.name for i in session.get_inputs()] == ['image', 'size']
    assert ([o.name for o in session.get_outputs()]
            == ['bbox', 'label', 'score'])
    for seed, size in enumerate(SIZES):
        x, size = _inputs(faster_rcnn, _image(size, 4 + seed))
        expected = _predict(faster_rcnn, x, size)
        assert len(expected[1]) >= 20
        _assert_same(expected, session.run(None, {'image': x[None],
                                                  'size': size}))


def test_command_writes_a_program(faster_rcnn, tmp_path, capsys):
    from trainer import FasterRCNNTrainer
    checkpoint = FasterRCNNTrainer(
        faster_rcnn, config=dict(data='toy', min_size=256, max_size=256),
        label_names=('a', 'b', 'c')).save(
            save_path=str(tmp_path / 'toy.pth'))
    out = str(tmp_path / 'toy.pt2')
    main(['--checkpoint={}'.format(checkpoint), '--out={}'.format(out),
          '--score-thresh={}'.format(SCORE_THRESH)])
    assert capsys.readouterr().out == 'wrote {}\n'.format(out)
    program = torch.export.load(out)
    x, size = _inputs(faster_rcnn, _image(SIZES[1], 6))
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
