"""train.py on COCO-format data, the --metric choice and --label-names.

The COCO files are written from a small generated VOC-layout dataset, with
category ids that are neither contiguous nor in the file in id order, so
that the labels must come from sorting the ids. The detector is the toy
model (``--backbone=toy``).
"""
import json
import os
import socket

import numpy as np
import pytest
import torch

import train
from data.loaders import label_names_of
from data.synthetic import TOY_LABEL_NAMES, generate_voc
from data.voc_dataset import VOCBboxDataset
from utils import evaluation
from utils.evaluation import score_detections

def free_port():
    """A localhost port nobody listens on (right now): no visdom server."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


# Category ids of the toy classes, in TOY_LABEL_NAMES order; the file lists
# them in this order, the labels follow the sorted ids.
CATEGORY_IDS = (30, 7, 12, 90, 1)


def _write_coco(voc_dir, split, path):
    """The split of a VOC-layout dataset as a COCO JSON file; difficult
    objects become crowd regions."""
    db = VOCBboxDataset(voc_dir, split=split, use_difficult=True,
                        return_difficult=True, label_names=TOY_LABEL_NAMES)
    images, annotations = [], []
    for i in range(len(db)):
        img, bbox, label, difficult = db.get_example(i)
        img_id = 100 + i
        images.append({'id': img_id, 'file_name': db.ids[i] + '.jpg',
                       'height': img.shape[1], 'width': img.shape[2]})
        for (y_min, x_min, y_max, x_max), l, d in zip(bbox, label,
                                                      difficult):
            w, h = float(x_max - x_min), float(y_max - y_min)
            annotations.append({
                'id': len(annotations) + 1, 'image_id': img_id,
                'category_id': CATEGORY_IDS[l], 'iscrowd': int(d),
                'bbox': [float(x_min), float(y_min), w, h], 'area': w * h})
    categories = [{'id': cat_id, 'name': name}
                  for cat_id, name in zip(CATEGORY_IDS, TOY_LABEL_NAMES)]
    with open(path, 'w') as f:
        json.dump({'images': images, 'annotations': annotations,
                   'categories': categories}, f)
    return str(path)


@pytest.fixture(scope='module')
def coco_data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('coco')
    voc_dir = generate_voc(str(tmp / 'voc'), n_images=12, seed=2)
    return dict(
        img_dir=os.path.join(voc_dir, 'JPEGImages'),
        train_ann=_write_coco(voc_dir, 'trainval', tmp / 'train.json'),
        test_ann=_write_coco(voc_dir, 'test', tmp / 'test.json'))


# The labels follow the sorted category ids: 1, 7, 12, 30, 90.
SORTED_NAMES = tuple(name for _, name in sorted(zip(CATEGORY_IDS,
                                                    TOY_LABEL_NAMES)))


def _coco_options(coco_data, out_dir, **kwargs):
    options = dict(
        data='coco', coco_train_ann=coco_data['train_ann'],
        coco_train_img=coco_data['img_dir'],
        coco_test_ann=coco_data['test_ann'],
        coco_test_img=coco_data['img_dir'], min_size=192, max_size=192,
        backbone='toy', lr=5e-3, epoch=1, seed=0, num_workers=0,
        test_num_workers=0, port=free_port(), device='cpu',
        out_dir=str(out_dir))
    options.update(kwargs)
    return options


def test_coco_training_with_the_coco_metric(coco_data, tmp_path,
                                            monkeypatch):
    scored = []

    def spy(metric, *args):
        scored.append((metric, score_detections(metric, *args)))
        return scored[-1][1]

    monkeypatch.setattr(evaluation, 'score_detections', spy)
    best_map = train.train(**_coco_options(coco_data, tmp_path / 'ck',
                                           metric='coco'))

    # One epoch, scored once by COCOeval; its AP at 0.50:0.95 is the 'map'
    # that picked best.pth.
    [(metric, result)] = scored
    assert metric == 'coco'
    assert {'map', 'ap50', 'ap75', 'ap_small', 'ap_medium',
            'ap_large'} <= set(result)
    assert best_map == pytest.approx(result['map'])
    assert -1 <= best_map <= 1

    for name in ('best.pth', 'last.pth'):
        checkpoint = torch.load(str(tmp_path / 'ck' / name))
        assert checkpoint['label_names'] == list(SORTED_NAMES)
        assert checkpoint['config']['data'] == 'coco'
        assert checkpoint['config']['metric'] == 'coco'
    assert os.path.getsize(tmp_path / 'ck' / 'predictions.png') > 0


def test_score_detections_by_metric():
    """One image, two objects of one class; a false positive ranked first,
    then one object found exactly, the other missed: precision 0 then 1/2,
    recall 0 then 1/2."""
    gt_bbox = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=np.float32)
    pred_bbox = np.array([[50, 50, 60, 60], [0, 0, 10, 10]], np.float32)
    arrays = ([pred_bbox], [np.array([0, 0])], [np.array([0.9, 0.8])],
              [gt_bbox], [np.array([0, 0])], [np.array([False, False])])
    # VOC07: 11 recall points 0, 0.1, ..., 1; precision 1/2 up to 0.5.
    assert score_detections('voc07', *arrays)['map'] == pytest.approx(
        6 * 0.5 / 11)
    # VOC area: recall 1/2 at precision 1/2.
    assert score_detections('voc', *arrays)['map'] == pytest.approx(
        0.25)
    # COCO: 101 recall points 0, 0.01, ..., 1, the same at every IoU
    # threshold (the found box is exact).
    result = score_detections('coco', *arrays)
    assert result['map'] == pytest.approx(51 * 0.5 / 101)
    assert result['ap50'] == result['ap75'] == pytest.approx(result['map'])


def _main_error(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(['train'] + ['--{}={}'.format(k, v)
                                for k, v in args.items()])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith('train.py: error: ')
    return err[0][len('train.py: error: '):]


def test_coco_options_are_required(tmp_path, capsys):
    message = _main_error(dict(data='coco', out_dir=tmp_path / 'ck'),
                          capsys)
    assert message == (
        "--data=coco needs --coco-train-ann (the train set's annotations "
        'JSON) and --coco-train-img (the directory its file names are '
        'relative to)')


def test_bad_metric_and_label_names_with_coco(coco_data, tmp_path, capsys):
    options = _coco_options(coco_data, tmp_path / 'ck')
    assert _main_error(dict(options, metric='map'), capsys) == (
        "--metric must be 'voc07', 'voc' or 'coco', got 'map'")
    assert _main_error(dict(options, label_names='a,b'), capsys) == (
        '--label-names is for VOC-layout data; with --data=coco the '
        'categories of the annotation files name the classes')


def test_test_file_with_other_categories(coco_data, tmp_path, capsys):
    with open(coco_data['test_ann']) as f:
        data = json.load(f)
    data['categories'][0]['name'] = 'box'  # the first in the file: id 30
    other = tmp_path / 'other.json'
    other.write_text(json.dumps(data))
    message = _main_error(_coco_options(
        coco_data, tmp_path / 'ck', coco_test_ann=other), capsys)
    assert message == (
        'the training annotations {} and the test annotations {} declare '
        "different categories ((id, name) [(30, {!r})] only in the "
        "first, [(30, 'box')] only in the second); expected the same".format(
            coco_data['train_ann'], other, TOY_LABEL_NAMES[0]))


def test_missing_image_is_found_before_training(coco_data, tmp_path,
                                                capsys):
    with open(coco_data['train_ann']) as f:
        data = json.load(f)
    data['images'][1]['file_name'] = 'gone.jpg'
    other = tmp_path / 'train.json'
    other.write_text(json.dumps(data))
    message = _main_error(_coco_options(
        coco_data, tmp_path / 'ck', coco_train_ann=other), capsys)
    assert message == (
        'image file {} does not exist (missing from {}: 1 of the 9 images '
        'listed in {})'.format(os.path.join(coco_data['img_dir'], 'gone.jpg'),
                               coco_data['img_dir'], other))
    assert not (tmp_path / 'ck').exists()


def test_label_names_option(tmp_path):
    path = tmp_path / 'labels.txt'
    path.write_text('apple\n\npear \n')
    assert label_names_of('voc', str(path)) == ('apple', 'pear')
    assert label_names_of('voc', ('apple', 'pear')) == ('apple', 'pear')
    assert label_names_of('toy') == TOY_LABEL_NAMES
    with pytest.raises(train.UsageError, match='is not a file; expected a '
                       'text file with one class name per line'):
        label_names_of('voc', str(tmp_path / 'nope.txt'))
    with pytest.raises(train.UsageError, match='name each class once'):
        label_names_of('voc', ('apple', 'apple'))


def test_voc_layout_with_own_class_names(tmp_path):
    """A VOC-layout folder of two classes, named by --label-names: one
    epoch, the names recorded in the checkpoint."""
    names = ('cross', 'circle')
    voc_dir = generate_voc(str(tmp_path / 'two'), n_images=6, seed=3,
                           label_names=names)
    (tmp_path / 'labels.txt').write_text('cross\ncircle\n')
    train.train(data='voc', voc_data_dir=voc_dir,
                label_names=str(tmp_path / 'labels.txt'), min_size=192,
                max_size=192, backbone='toy', epoch=1, seed=0,
                num_workers=0, test_num_workers=0, port=free_port(),
                device='cpu', metric='voc', out_dir=str(tmp_path / 'ck'))
    checkpoint = torch.load(str(tmp_path / 'ck' / 'best.pth'))
    assert checkpoint['label_names'] == list(names)


def test_voc_class_not_in_label_names(tmp_path, capsys):
    """Checked in every XML file of both splits before training."""
    voc_dir = generate_voc(str(tmp_path / 'two'), n_images=6, seed=3,
                           label_names=('cross', 'circle'))
    message = _main_error(dict(
        data='voc', voc_data_dir=voc_dir, label_names='cross,ring',
        pretrained_model=None, device='cpu', num_workers=0,
        test_num_workers=0, out_dir=tmp_path / 'ck'), capsys)
    assert message.startswith(os.path.join(voc_dir, 'Annotations', ''))
    assert message.endswith(".xml has an object of class 'circle', not one "
                            'of --label-names (cross, ring)')
    assert not (tmp_path / 'ck').exists()


def test_datasets_take_a_ready_db(coco_data):
    """Dataset and TestDataset wrap any db with get_example and len (here
    a COCO one, without opt.data saying so)."""
    from types import SimpleNamespace
    from data.coco_dataset import COCOBboxDataset
    from data.dataset import Dataset, TestDataset
    opt = SimpleNamespace(voc_data_dir='nowhere', min_size=128,
                          max_size=128, caffe_pretrain=False)
    db = COCOBboxDataset(coco_data['test_ann'], coco_data['img_dir'])
    img, bbox, label, scale = Dataset(opt, db=db)[0]
    assert img.shape == (3, 128, 128) and scale == 0.5  # 256 px images
    assert Dataset(opt, db=db).db is db and len(Dataset(opt, db=db)) == 3
    img, size, bbox, label, difficult = TestDataset(opt, db=db)[0]
    assert img.shape == (3, 128, 128) and tuple(size) == (256, 256)
    np.testing.assert_array_equal(bbox, db.get_example(0)[1])
