"""predict.py: pictures and COCO JSON for a folder of images, bad images
named and skipped, command-line mistakes in one line (the way of
model/utils/command_line.py, which export and train.py share: see
test_export.py and test_train.py).

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
import train
from conftest import coco_ann, pycocotools_eval, write_coco
from model import FasterRCNNToy
from model.faster_rcnn import PRESETS
from trainer import FasterRCNNTrainer
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




# ------------------------------------------------- --coco-ann: COCO's ids

def coco_case(root):
    """A COCO file of three images (one without objects) with category ids
    3, 7, 11, areas unlike the boxes', a crowd region; the images are
    generated toy pictures, so that a detector finds something."""
    from data.synthetic import generate_voc
    voc = generate_voc(str(root / 'voc'), n_images=3, seed=5)
    images = [{'id': 40 + i, 'file_name': name, 'height': 256,
               'width': 256} for i, name in enumerate(
                   sorted(os.listdir(os.path.join(voc, 'JPEGImages'))))]
    annotations = [
        dict(coco_ann(1, 40, 3, [20, 30, 60, 50]), area=1500.),
        dict(coco_ann(2, 40, 11, [100, 100, 90, 120]), area=9000.),
        dict(coco_ann(3, 41, 7, [10, 10, 200, 200], iscrowd=1),
             area=30000.),
        dict(coco_ann(4, 41, 7, [50, 60, 40, 40]), area=1000.)]
    categories = [{'id': 11, 'name': 'ring'}, {'id': 3, 'name': 'circle'},
                  {'id': 7, 'name': 'square'}]
    ann_file, _ = write_coco(root, annotations, images, categories,
                             write_images=False)
    return ann_file, os.path.join(voc, 'JPEGImages')


@pytest.fixture
def coco_checkpoint(tmp_path):
    """An untrained toy detector of the file's classes (labels follow the
    sorted ids 3, 7, 11), saved with those ids as train.py saves a model
    trained on the file."""
    torch.manual_seed(0)
    model = FasterRCNNToy(n_fg_class=3, min_size=128, max_size=128)
    return FasterRCNNTrainer(model, label_names=('circle', 'square', 'ring'),
                             category_ids=(3, 7, 11)).save(
        save_path=str(tmp_path / 'coco.pth'))


def test_coco_ann_detections_score_as_train_py_evaluate(coco_checkpoint,
                                                        tmp_path):
    """pycocotools on the user's file and predict.py's detections.json
    gives exactly what `train.py evaluate --metric=coco` gives."""
    ann_file, img_dir = coco_case(tmp_path)
    out = tmp_path / 'out'
    n, skipped = predict.predict(coco_checkpoint, [img_dir], str(out),
                                 coco_ann=ann_file)
    assert (n, skipped) == (3, [])
    results = json.loads((out / 'detections.json').read_text())
    assert results and {r['image_id'] for r in results} <= {40, 41, 42}
    assert {r['category_id'] for r in results} <= {3, 7, 11}
    theirs = pycocotools_eval(ann_file, str(out / 'detections.json'))
    ours = train.evaluate_checkpoint(
        data='coco', coco_test_ann=ann_file, coco_test_img=img_dir,
        metric='coco', load_path=coco_checkpoint, num_workers=0,
        test_num_workers=0, device='cpu')
    assert ours['stats'].tolist() == theirs.stats.tolist()
    assert theirs.stats[0] > 0  # the toy model finds something


def test_coco_ann_names_the_first_missing_image(coco_checkpoint, tmp_path,
                                                capsys):
    ann_file, img_dir = coco_case(tmp_path)
    first = sorted(os.listdir(img_dir))[0]
    os.remove(os.path.join(img_dir, first))
    with pytest.raises(SystemExit) as info:
        predict.main(['--checkpoint=' + coco_checkpoint, '--coco-ann=' +
                      ann_file, img_dir, '--out-dir=' + str(tmp_path / 'o')])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('predict.py: error: image file {} does not '
                          'exist'.format(os.path.join(img_dir, first)))
    assert err.count('\n') == 1


@pytest.mark.parametrize('content', [b'\x80\x03\x99 random bytes',
                                     b'a text file\n'])
def test_a_checkpoint_that_is_no_checkpoint_is_one_line(content, tmp_path,
                                                        capsys):
    path = tmp_path / 'not.pth'
    path.write_bytes(content)
    Image.new('RGB', (40, 30)).save(tmp_path / 'a.png')
    with pytest.raises(SystemExit) as info:
        predict.main(['--checkpoint=' + str(path), str(tmp_path / 'a.png')])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        'predict.py: error: {} is not a checkpoint: torch.load cannot read '
        "it (expected a file torch.save writes, as train.py's checkpoints)\n"
        .format(path))
