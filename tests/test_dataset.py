"""data/dataset.py: Dataset (the training transform: resize, normalize,
flip the image and its boxes) and TestDataset (boxes kept in the image's
pixels), on generated VOC-layout data and on any ready db (a COCO one),
through a DataLoader with workers."""
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import random_image
from data.coco_dataset import COCOBboxDataset
from data.dataset import TestDataset as VOCTestDataset  # not a test class
from data.dataset import Dataset, Transform, preprocess
from data.synthetic import TOY_LABEL_NAMES, generate_voc
from data.util import flip_bbox
from data.voc_dataset import VOCBboxDataset


@pytest.fixture(scope='module')
def voc_dir(tmp_path_factory):
    return generate_voc(str(tmp_path_factory.mktemp('voc')), n_images=12,
                        seed=3)


def _opt(voc_dir, min_size=256, max_size=512, caffe_pretrain=False):
    return SimpleNamespace(voc_data_dir=voc_dir, min_size=min_size,
                           max_size=max_size, caffe_pretrain=caffe_pretrain)


# ------------------------------------------------------------- Transform

@pytest.mark.parametrize('caffe_pretrain', [False, True])
def test_transform_resizes_and_flips_boxes_with_the_image(caffe_pretrain):
    img = random_image(50, 100)
    bbox = np.array([[10, 20, 30, 60], [0, 0, 50, 100]], dtype=np.float32)
    label = np.array([1, 3], dtype=np.int32)
    transform = Transform(100, 400, caffe_pretrain=caffe_pretrain)
    resized = preprocess(img, 100, 400, caffe_pretrain=caffe_pretrain)
    resized_bbox = bbox * 2
    random.seed(0)
    flips = set()
    for _ in range(10):
        out_img, out_bbox, out_label, scale = transform((img, bbox, label))
        assert scale == 2.0
        np.testing.assert_array_equal(out_label, label)
        x_flip = bool(np.array_equal(out_img, resized[:, :, ::-1]))
        if not x_flip:
            np.testing.assert_array_equal(out_img, resized)
        np.testing.assert_allclose(
            out_bbox, flip_bbox(resized_bbox, (100, 200), x_flip=x_flip))
        flips.add(x_flip)
    assert flips == {False, True}


def test_transform_scale_is_the_height_ratio():
    # 37 x 53 to min_size 20: o_H = 20, o_W = round(28.65) = 29, so the
    # height ratio 20 / 37 differs from the width ratio 29 / 53
    H, W = 37, 53
    img = np.random.RandomState(0).uniform(0, 255, (3, H, W))
    bbox = np.array([[1., 2., 30., 40.]], dtype=np.float32)
    label = np.array([0], dtype=np.int32)
    np.random.seed(0)
    out_img, _, _, scale = Transform(20, 1000)((img.astype(np.float32),
                                                bbox, label))
    _, o_H, o_W = out_img.shape
    assert (o_H, o_W) == (20, 29)
    assert o_H / H != o_W / W
    assert scale == o_H / H


# ----------------------------------------------- Dataset and TestDataset

def test_dataset_items(voc_dir):
    dataset = Dataset(_opt(voc_dir), label_names=TOY_LABEL_NAMES)
    db = VOCBboxDataset(voc_dir, label_names=TOY_LABEL_NAMES)
    assert len(dataset) == len(db) == 9
    for i in range(len(dataset)):
        img, bbox, label, scale = dataset[i]
        _, db_bbox, db_label, _ = db[i]
        assert img.shape == (3, 256, 256) and img.dtype == np.float32
        assert img.flags['C_CONTIGUOUS'] and bbox.flags['C_CONTIGUOUS']
        assert scale == 1.0
        np.testing.assert_array_equal(label, db_label)
        assert (np.allclose(bbox, db_bbox) or np.allclose(
            bbox, flip_bbox(db_bbox, (256, 256), x_flip=True)))


def test_test_dataset_items_keep_boxes_in_image_pixels(voc_dir):
    dataset = VOCTestDataset(_opt(voc_dir, min_size=128),
                             label_names=TOY_LABEL_NAMES)
    db = VOCBboxDataset(voc_dir, split='test', use_difficult=True,
                        label_names=TOY_LABEL_NAMES)
    assert len(dataset) == len(db) == 3
    for i in range(len(dataset)):
        img, size, bbox, label, difficult = dataset[i]
        ori_img, db_bbox, db_label, db_difficult = db[i]
        assert img.shape == (3, 128, 128)
        assert tuple(size) == (256, 256)
        np.testing.assert_allclose(img, preprocess(ori_img, 128, 1000))
        np.testing.assert_array_equal(bbox, db_bbox)
        np.testing.assert_array_equal(label, db_label)
        np.testing.assert_array_equal(difficult, db_difficult)


def test_test_dataset_caffe(voc_dir):
    dataset = VOCTestDataset(_opt(voc_dir, caffe_pretrain=True),
                          label_names=TOY_LABEL_NAMES)
    ori_img = VOCBboxDataset(voc_dir, split='test',
                             label_names=TOY_LABEL_NAMES)[0][0]
    np.testing.assert_allclose(
        dataset[0][0], preprocess(ori_img, 256, 512, caffe_pretrain=True))


def test_dataloader_with_two_workers(voc_dir):
    dataset = Dataset(_opt(voc_dir), label_names=TOY_LABEL_NAMES)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False,
                                         num_workers=2)
    n_batch = 0
    for i, (img, bbox, label, scale) in enumerate(loader):
        _, db_bbox, db_label, _ = dataset.db[i]
        assert img.shape == (1, 3, 256, 256) and img.dtype == torch.float32
        assert bbox.shape == (1, len(db_bbox), 4)
        np.testing.assert_array_equal(label[0].numpy(), db_label)
        assert float(scale) == 1.0
        n_batch += 1
    assert n_batch == len(dataset)


def test_datasets_on_images_without_objects(tmp_path):
    voc_dir = generate_voc(str(tmp_path), n_images=4, p_empty=1.0)
    img, bbox, label, scale = Dataset(
        _opt(voc_dir), label_names=TOY_LABEL_NAMES)[0]
    assert img.shape == (3, 256, 256)
    assert bbox.shape == (0, 4) and label.shape == (0,)
    _, _, bbox, label, difficult = VOCTestDataset(
        _opt(voc_dir), label_names=TOY_LABEL_NAMES)[0]
    assert bbox.shape == (0, 4) and label.shape == (0,)
    assert difficult.shape == (0,)


def test_datasets_take_a_ready_db(coco_data):
    """Dataset and TestDataset wrap any db with get_example and len (here
    a COCO one, without opt.data saying so)."""
    opt = SimpleNamespace(voc_data_dir='nowhere', min_size=128,
                          max_size=128, caffe_pretrain=False)
    db = COCOBboxDataset(coco_data['test_ann'], coco_data['img_dir'])
    img, bbox, label, scale = Dataset(opt, db=db)[0]
    assert img.shape == (3, 128, 128) and scale == 0.5  # 256 px images
    assert Dataset(opt, db=db).db is db and len(Dataset(opt, db=db)) == 3
    img, size, bbox, label, difficult = VOCTestDataset(opt, db=db)[0]
    assert img.shape == (3, 128, 128) and tuple(size) == (256, 256)
    np.testing.assert_array_equal(bbox, db.get_example(0)[1])
