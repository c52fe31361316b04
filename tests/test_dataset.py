import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torchvision import transforms

from data.dataset import TestDataset as VOCTestDataset  # not a test class
from data.dataset import (Dataset, Transform, inverse_normalize,
                          preprocess)
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


def _random_image(H, W, seed=0):
    return np.random.RandomState(seed).uniform(
        0, 255, (3, H, W)).astype(np.float32)


@pytest.mark.parametrize('in_size, out_size', [
    ((375, 500), (600, 800)),     # VOC landscape: shorter side to 600
    ((500, 375), (800, 600)),     # portrait
    ((100, 100), (600, 600)),     # square, enlarged
    ((300, 1000), (300, 1000)),   # very wide: longer side capped at 1000
    ((1200, 400), (1000, 333)),   # very tall: longer side capped, rounded
    ((600, 1000), (600, 1000)),   # already at both limits
])
def test_preprocess_600_1000_rule(in_size, out_size):
    out = preprocess(_random_image(*in_size))
    assert out.shape == (3,) + out_size
    assert out.dtype == np.float32


def test_preprocess_own_limits():
    out = preprocess(_random_image(120, 200), min_size=240, max_size=300)
    assert out.shape == (3, 180, 300)


def test_torchvision_normalization_matches_torchvision():
    img = _random_image(60, 80)
    out = preprocess(img, min_size=60, max_size=80)  # scale 1
    normalize = transforms.Normalize(mean=[0.485, 0.456, 0.406],
                                     std=[0.229, 0.224, 0.225])
    expected = normalize(torch.from_numpy(img / 255.)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_caffe_normalization_is_bgr_0_255_minus_mean():
    img = np.empty((3, 60, 80), dtype=np.float32)
    img[0], img[1], img[2] = 200, 100, 50  # R, G, B
    out = preprocess(img, min_size=60, max_size=80, caffe_pretrain=True)
    np.testing.assert_allclose(out[0], 50 - 122.7717, atol=1e-3)
    np.testing.assert_allclose(out[1], 100 - 115.9465, atol=1e-3)
    np.testing.assert_allclose(out[2], 200 - 102.9801, atol=1e-3)


def test_inverse_normalize_caffe_is_exact():
    img = _random_image(60, 80)
    out = inverse_normalize(
        preprocess(img, min_size=60, max_size=80, caffe_pretrain=True),
        caffe_pretrain=True)
    np.testing.assert_allclose(out, img, atol=1e-3)


def test_inverse_normalize_torchvision_is_the_original_approximation():
    img = _random_image(60, 80)
    normalized = preprocess(img, min_size=60, max_size=80)
    out = inverse_normalize(normalized)
    np.testing.assert_allclose(
        out, (normalized * 0.225 + 0.45).clip(0, 1) * 255, rtol=1e-6)
    # One mean and std for all channels: off by at most ~0.044 * 255.
    np.testing.assert_allclose(out, img, atol=12)
    assert out.min() >= 0 and out.max() <= 255


@pytest.mark.parametrize('caffe_pretrain', [False, True])
def test_transform_resizes_and_flips_boxes_with_the_image(caffe_pretrain):
    img = _random_image(50, 100)
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
