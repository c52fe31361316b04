"""predict.py: pictures and COCO JSON for a folder of images, bad images
named and skipped, command-line mistakes in one line.

The checkpoint is the toy detector with random weights (seeded), its class
scores spread by a wider init of the score layer so that a threshold just
above 1/4 keeps detections of every class.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import predict
from model.faster_rcnn import PRESETS
from utils.coco_eval import to_coco_results

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABEL_NAMES = ('cat', 'dog', 'bird')
SCORE_THRESH = 0.3


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    from model import FasterRCNNToy
    from trainer import FasterRCNNTrainer
    torch.manual_seed(0)
    faster_rcnn = FasterRCNNToy(n_fg_class=3)
    torch.nn.init.normal_(faster_rcnn.head.score.weight, 0, 0.1)
    path = str(tmp_path_factory.mktemp('checkpoint') / 'toy.pth')
    return FasterRCNNTrainer(
        faster_rcnn, config=dict(data='toy', min_size=256, max_size=256),
        label_names=LABEL_NAMES).save(save_path=path)


@pytest.fixture
def images(tmp_path):
    """A folder: an RGB JPEG, a grayscale PNG, an unreadable '.jpg' and a
    text file (not an image extension, so not scanned)."""
    folder = tmp_path / 'images'
    folder.mkdir()
    rng = np.random.RandomState(0)
    Image.fromarray(rng.randint(0, 255, (200, 300, 3), dtype=np.uint8)).save(
        folder / 'a.jpg')
    Image.fromarray(rng.randint(0, 255, (310, 190), dtype=np.uint8)).save(
        folder / 'b.png')
    (folder / 'broken.jpg').write_text('not an image')
    (folder / 'notes.txt').write_text('not an image either')
    return folder


def _expected(checkpoint, path, score_thresh):
    """predict()'s detections of one image, by the library's own calls."""
    from data.util import read_image
    from model import load_detector
    from model.utils.preprocess import preprocess
    faster_rcnn, _, _ = load_detector(checkpoint)
    img = read_image(str(path))
    faster_rcnn.score_thresh = score_thresh
    x = preprocess(img, faster_rcnn.min_size, faster_rcnn.max_size)
    bboxes, labels, scores = faster_rcnn.predict([x], [img.shape[1:]])
    return img.shape[1:], bboxes[0], labels[0], scores[0]


def _skipped_lines(err):
    return [line for line in err.replace('\r', '\n').splitlines()
            if line.startswith('skipped')]


def test_folder_and_file(checkpoint, images, tmp_path, capsys):
    out_dir = tmp_path / 'out'
    with pytest.raises(SystemExit) as exit_info:
        predict.main(['--checkpoint={}'.format(checkpoint), str(images),
                      str(images / 'a.jpg'), '--out-dir={}'.format(out_dir),
                      '--score-thresh={}'.format(SCORE_THRESH),
                      '--device=cpu'])
    assert exit_info.value.code == 1  # an image was skipped
    captured = capsys.readouterr()
    broken = images / 'broken.jpg'
    assert _skipped_lines(captured.err) == [
        'skipped: cannot read image file {}: expected an image PIL can '
        'decode (JPEG, PNG, ...)'.format(broken)]
    assert captured.out.endswith('; 1 skipped\n')

    # Ids are positions in the run: a.jpg, b.png, broken.jpg (skipped),
    # then a.jpg named again, whose picture gets a suffix.
    with open(out_dir / 'images.json') as f:
        index = json.load(f)
    assert index['categories'] == [{'id': 1, 'name': 'cat'},
                                   {'id': 2, 'name': 'dog'},
                                   {'id': 3, 'name': 'bird'}]
    assert index['annotations'] == []
    assert [(i['id'], i['file_name'], i['picture'], i['height'],
             i['width']) for i in index['images']] == [
        (1, str(images / 'a.jpg'), 'a.png', 200, 300),
        (2, str(images / 'b.png'), 'b.png', 310, 190),
        (4, str(images / 'a.jpg'), 'a_2.png', 200, 300)]
    assert sorted(os.listdir(out_dir)) == [
        'a.png', 'a_2.png', 'b.png', 'detections.json', 'images.json']
    for name, size in (('a.png', (300, 200)), ('b.png', (190, 310))):
        with Image.open(out_dir / name) as picture:
            assert picture.size == size  # the image's own size

    with open(out_dir / 'detections.json') as f:
        results = json.load(f)
    expected = []
    for img_id, name in ((1, 'a.jpg'), (2, 'b.png'), (4, 'a.jpg')):
        _, bbox, label, score = _expected(checkpoint, images / name,
                                          SCORE_THRESH)
        expected += to_coco_results([bbox], [label], [score], [img_id],
                                    [1, 2, 3])
    assert len(results) == len(expected) > 20
    assert {r['category_id'] for r in results} == {1, 2, 3}
    for got, want in zip(results, expected):
        assert (got['image_id'], got['category_id']) == (
            want['image_id'], want['category_id'])
        np.testing.assert_allclose(got['bbox'], want['bbox'], rtol=1e-6)
        np.testing.assert_allclose(got['score'], want['score'], rtol=1e-6)

    # COCO's tools read the two files.
    from pycocotools.coco import COCO
    coco = COCO(str(out_dir / 'images.json'))
    assert len(coco.loadRes(str(out_dir / 'detections.json')).anns) == len(
        results)


def test_score_thresh_is_exclusive(checkpoint, images, tmp_path):
    """A detection scoring exactly --score-thresh is left out."""
    path = images / 'a.jpg'
    _, _, _, score = _expected(checkpoint, path, SCORE_THRESH)
    lowest = float(np.float32(score.min()))
    n, skipped = predict.predict(checkpoint, [str(path)],
                                 str(tmp_path / 'out'), score_thresh=lowest)
    assert (n, skipped) == (1, [])
    with open(tmp_path / 'out' / 'detections.json') as f:
        results = json.load(f)
    assert len(results) == int(np.sum(score > lowest)) == len(score) - 1


def test_default_score_thresh_is_the_visualize_preset():
    assert predict.DEFAULT_SCORE_THRESH == PRESETS['visualize'][
        'score_thresh'] == 0.7


def test_find_images(tmp_path):
    (tmp_path / 'notes.txt').write_text('x')
    assert predict.find_images([str(tmp_path / 'notes.txt')]) == [
        str(tmp_path / 'notes.txt')]
    with pytest.raises(predict.UsageError, match='no image found in'):
        predict.find_images([str(tmp_path)])


@pytest.mark.parametrize('args, message', [
    (['--checkpoint=nowhere.pth', '{images}'],
     'checkpoint nowhere.pth does not exist'),
    (['--checkpoint={checkpoint}', '{images}/missing.jpg'],
     '{images}/missing.jpg does not exist; expected an image file or a '
     'directory of images'),
    (['--checkpoint={checkpoint}', '{empty}'],
     'no image found in {empty}; expected files ending in .jpg, .jpeg, '
     '.png, .bmp, .gif, .tif, .tiff, .webp, .ppm, .pgm'),
    (['{images}'], 'the following arguments are required: --checkpoint'),
    (['--checkpoint={checkpoint}'],
     'the following arguments are required: IMAGE_OR_DIR'),
    (['--checkpoint={checkpoint}', '--device=gpu', '{images}'],
     '--device=gpu is not a torch device; expected e.g. cpu, cuda or '
     'cuda:1'),
    (['--checkpoint={checkpoint}', '--score-thresh=1.5', '{images}'],
     '--score-thresh=1.5 must be in [0, 1]'),
    (['--checkpoint={checkpoint}', '--scor-thresh=0.5', '{images}'],
     'unrecognized arguments: --scor-thresh=0.5'),
])
def test_mistakes_are_one_line(args, message, checkpoint, images, tmp_path,
                               capsys):
    empty = tmp_path / 'empty'
    empty.mkdir()
    names = dict(checkpoint=checkpoint, images=images, empty=empty)
    with pytest.raises(SystemExit) as exit_info:
        predict.main([a.format(**names) for a in args]
                     + ['--out-dir={}'.format(tmp_path / 'out')])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == 'predict.py: error: {}\n'.format(
        message.format(**names))
    assert not (tmp_path / 'out').exists()  # nothing written


def test_script_exit_status(tmp_path):
    """``python predict.py`` from anywhere: a mistake exits with 2."""
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT_DIR, 'predict.py'),
         '--checkpoint=nowhere.pth', str(tmp_path)],
        cwd=str(tmp_path), capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == ('predict.py: error: no image found in {}; '
                             'expected files ending in .jpg, .jpeg, .png, '
                             '.bmp, .gif, .tif, .tiff, .webp, .ppm, .pgm\n'
                             .format(tmp_path))


def test_image_too_small_for_the_network_is_skipped(checkpoint, tmp_path,
                                                     capsys):
    """A 2 x 600 strip is 1 x 256 once resized, under one feature stride;
    it is named and skipped, the other image processed."""
    folder = tmp_path / 'images'
    folder.mkdir()
    Image.new('RGB', (600, 2)).save(folder / 'strip.png')
    Image.new('RGB', (300, 200)).save(folder / 'plain.png')
    n, skipped = predict.predict(checkpoint, [str(folder)],
                                 str(tmp_path / 'out'))
    assert n == 1
    assert skipped == ['skipped {}: image 0 of size 2x600 is 1x256 once '
                       'resized for the model (shorter side to 256, longer '
                       'at most 256), smaller than one feature stride (8 px) '
                       'on a side'.format(folder / 'strip.png')]
    assert _skipped_lines(capsys.readouterr().err) == skipped
    assert sorted(os.listdir(tmp_path / 'out')) == [
        'detections.json', 'images.json', 'plain.png']
