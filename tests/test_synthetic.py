"""data/synthetic.py: the generated toy dataset in VOC layout: the same
bytes for the same seed, read back by VOCBboxDataset, VOC's annotation
schema, the splits, varied and learnable scenes, empty scenes, own classes
and size, the command line."""
import itertools
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from data.synthetic import TOY_LABEL_NAMES, generate_scenes, generate_voc, main
from data.voc_dataset import VOCBboxDataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _files(root):
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def _split(root, split):
    with open(os.path.join(root, 'ImageSets', 'Main', split + '.txt')) as f:
        return f.read().split()


def test_same_seed_same_bytes(tmp_path):
    first = _files(generate_voc(str(tmp_path / 'a'), n_images=6, seed=7))
    second = _files(generate_voc(str(tmp_path / 'b'), n_images=6, seed=7))
    other = _files(generate_voc(str(tmp_path / 'c'), n_images=6, seed=8))
    assert len(first) == 6 * 2 + 4
    assert first == second
    assert first['JPEGImages/000001.jpg'] != other['JPEGImages/000001.jpg']


def test_loader_reads_back_what_was_generated(tmp_path):
    root = generate_voc(str(tmp_path), n_images=8, seed=1)
    scenes = list(generate_scenes(8, seed=1))
    ids = _split(root, 'trainval') + _split(root, 'test')
    examples = itertools.chain(
        VOCBboxDataset(root, 'trainval', use_difficult=True,
                       label_names=TOY_LABEL_NAMES),
        VOCBboxDataset(root, 'test', use_difficult=True,
                       label_names=TOY_LABEL_NAMES))
    for id_, (img, bbox, label, difficult) in zip(ids, examples):
        scene_img, scene_bbox, scene_label, scene_difficult = \
            scenes[int(id_) - 1]
        np.testing.assert_array_equal(bbox, scene_bbox)
        np.testing.assert_array_equal(label, scene_label)
        np.testing.assert_array_equal(difficult, scene_difficult)
        # JPEG (quality 95, chroma subsampled) is close to the drawn pixels.
        assert img.shape == (3, 256, 256)
        assert np.abs(img - scene_img.transpose(2, 0, 1)).mean() < 6


def test_annotation_schema_is_voc(tmp_path):
    root = generate_voc(str(tmp_path), n_images=3, seed=2)
    _, bbox, label, difficult = next(generate_scenes(1, seed=2))
    anno = ET.parse(os.path.join(root, 'Annotations', '000001.xml'))
    assert anno.findtext('filename') == '000001.jpg'
    assert anno.findtext('folder')
    assert [anno.findtext('size/' + tag) for tag in
            ('width', 'height', 'depth')] == ['256', '256', '3']
    objects = anno.findall('object')
    assert len(objects) == len(bbox) > 0
    for obj, box, l, is_difficult in zip(objects, bbox, label, difficult):
        assert obj.findtext('name') == TOY_LABEL_NAMES[l]
        assert obj.findtext('pose') == 'Unspecified'
        assert obj.findtext('truncated') == '0'
        assert obj.findtext('difficult') == str(int(is_difficult))
        # 1-based pixels
        assert [int(obj.findtext('bndbox/' + tag)) for tag in
                ('ymin', 'xmin', 'ymax', 'xmax')] == [int(v) + 1 for v in box]


def test_splits(tmp_path):
    root = generate_voc(str(tmp_path), n_images=10, seed=0)
    train, val = _split(root, 'train'), _split(root, 'val')
    trainval, test = _split(root, 'trainval'), _split(root, 'test')
    assert len(test) == 2 and len(trainval) == 8
    assert sorted(train + val) == trainval
    assert not set(trainval) & set(test)
    assert sorted(trainval + test) == ['{:06d}'.format(i) for i in
                                       range(1, 11)]


def test_scenes_are_varied_and_learnable():
    scenes = list(generate_scenes(100, seed=0))
    n_obj = [len(bbox) for _, bbox, _, _ in scenes]
    assert 0 in n_obj and max(n_obj) == 4
    bbox = np.concatenate([bbox for _, bbox, _, _ in scenes])
    label = np.concatenate([label for _, _, label, _ in scenes])
    difficult = np.concatenate([d for _, _, _, d in scenes])
    assert set(label) == set(range(len(TOY_LABEL_NAMES)))
    assert 0 < difficult.sum() < 0.2 * len(difficult)
    side = bbox[:, 2:] - bbox[:, :2] + 1
    assert side.min() >= 20 and side.max() <= 90
    assert bbox.min() >= 0 and bbox.max() <= 255
    assert any(_overlap(b) for _, b, _, _ in scenes)
    # Backgrounds differ from scene to scene.
    means = [img.mean(axis=(0, 1)) for img, _, _, _ in scenes]
    assert np.std(means, axis=0).min() > 10


def _overlap(bbox):
    for a, b in itertools.combinations(bbox, 2):
        if (min(a[2], b[2]) >= max(a[0], b[0])
                and min(a[3], b[3]) >= max(a[1], b[1])):
            return True
    return False


def test_empty_scenes_are_written_as_valid_examples(tmp_path):
    root = generate_voc(str(tmp_path), n_images=2, p_empty=1.0)
    for img, bbox, label, difficult in VOCBboxDataset(
            root, label_names=TOY_LABEL_NAMES):
        assert img.shape == (3, 256, 256)
        assert bbox.shape == (0, 4) and label.shape == (0,)


def test_own_classes_and_size(tmp_path):
    main(['--out-dir', str(tmp_path), '--n-images', '4', '--img-size', '128',
          '--classes', 'ring,cross', '--seed', '3'])
    dataset = VOCBboxDataset(str(tmp_path), split='trainval',
                             use_difficult=True, label_names=('ring', 'cross'))
    assert len(dataset) == 3
    img, bbox, label, _ = dataset[0]
    assert img.shape == (3, 128, 128)
    assert set(label) <= {0, 1}


def test_command_line(tmp_path):
    subprocess.run(
        [sys.executable, '-m', 'data.synthetic', '--out-dir', str(tmp_path),
         '--n-images', '2', '--seed', '5'], cwd=ROOT, check=True,
        capture_output=True)
    assert sorted(os.listdir(tmp_path / 'JPEGImages')) == [
        '000001.jpg', '000002.jpg']


def test_unknown_class_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match='circle, square'):
        generate_voc(str(tmp_path / 'out'), n_images=1,
                     label_names=('hexagon',))
    assert not (tmp_path / 'out').exists()
