"""data/util.py: read_image (RGB, grayscale, RGBA, 16-bit, dtypes, the file
named when it cannot be read), resize_bbox, flip_bbox and random_flip."""
import random

import numpy as np
import pytest
from PIL import Image

from data.util import flip_bbox, random_flip, read_image, resize_bbox


def _save(tmp_path, name, array, mode):
    path = str(tmp_path / name)
    Image.fromarray(array, mode=mode).save(path)
    return path


def test_read_image_rgb_is_chw_float32(tmp_path):
    rgb = np.random.RandomState(0).randint(0, 256, (5, 7, 3)).astype(np.uint8)
    img = read_image(_save(tmp_path, 'a.png', rgb, 'RGB'))
    assert img.shape == (3, 5, 7)
    assert img.dtype == np.float32
    np.testing.assert_array_equal(img, rgb.transpose(2, 0, 1))


def test_read_image_grayscale_as_rgb(tmp_path):
    gray = np.arange(35, dtype=np.uint8).reshape(5, 7)
    img = read_image(_save(tmp_path, 'g.png', gray, 'L'))
    assert img.shape == (3, 5, 7)
    for channel in img:
        np.testing.assert_array_equal(channel, gray)


def test_read_image_rgba_drops_alpha(tmp_path):
    rgba = np.random.RandomState(1).randint(0, 256, (4, 6, 4)).astype(np.uint8)
    img = read_image(_save(tmp_path, 'a.png', rgba, 'RGBA'))
    np.testing.assert_array_equal(img, rgba[..., :3].transpose(2, 0, 1))


def test_read_image_without_color_is_one_channel(tmp_path):
    gray = np.arange(35, dtype=np.uint8).reshape(5, 7)
    img = read_image(_save(tmp_path, 'g.png', gray, 'L'), color=False)
    assert img.shape == (1, 5, 7)
    np.testing.assert_array_equal(img[0], gray)


def test_read_image_dtype(tmp_path):
    gray = np.zeros((2, 3), dtype=np.uint8)
    assert read_image(_save(tmp_path, 'g.png', gray, 'L'),
                      dtype=np.uint8).dtype == np.uint8


def test_16_bit_png_is_scaled_not_saturated(tmp_path):
    pixels = (np.arange(12 * 10).reshape(12, 10) * 500).astype(np.uint16)
    path = str(tmp_path / 'deep.png')
    Image.fromarray(pixels).save(path)
    img = read_image(path)
    assert img.shape == (3, 12, 10)
    np.testing.assert_allclose(img[1], pixels / 257., rtol=1e-6)
    assert 0 < img.max() < 255


def test_uint8_image_is_writable(tmp_path):
    path = str(tmp_path / 'x.jpg')
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(path)
    img = read_image(path, dtype=np.uint8)
    img[0, 0, 0] = 7
    assert img[0, 0, 0] == 7


def test_read_image_unreadable_names_the_file(tmp_path):
    path = tmp_path / 'broken.jpg'
    path.write_bytes(b'this is not a jpeg')
    with pytest.raises(OSError, match='broken.jpg'):
        read_image(str(path))


def test_read_image_missing_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere.jpg'):
        read_image(str(tmp_path / 'nowhere.jpg'))


def test_resize_bbox_scales_y_and_x_separately():
    bbox = np.array([[10, 20, 30, 40], [0, 0, 100, 200]], dtype=np.float32)
    out = resize_bbox(bbox, in_size=(100, 200), out_size=(50, 600))
    np.testing.assert_allclose(
        out, [[5, 60, 15, 120], [0, 0, 50, 600]])
    # the input is not modified
    assert bbox[0, 1] == 20


def test_flip_bbox():
    bbox = np.array([[10, 20, 30, 60]], dtype=np.float32)
    np.testing.assert_allclose(
        flip_bbox(bbox, (100, 200), x_flip=True), [[10, 140, 30, 180]])
    np.testing.assert_allclose(
        flip_bbox(bbox, (100, 200), y_flip=True), [[70, 20, 90, 60]])
    np.testing.assert_allclose(
        flip_bbox(bbox, (100, 200), y_flip=True, x_flip=True),
        [[70, 140, 90, 180]])
    np.testing.assert_allclose(flip_bbox(bbox, (100, 200)), bbox)


def test_flip_bbox_follows_flipped_pixels():
    img = np.zeros((1, 10, 12), dtype=np.float32)
    img[0, 2:5, 3:9] = 1  # pixels of box (2, 3, 5, 9)
    bbox = np.array([[2, 3, 5, 9]], dtype=np.float32)
    flipped = img[:, ::-1, ::-1]
    y_min, x_min, y_max, x_max = flip_bbox(
        bbox, (10, 12), y_flip=True, x_flip=True)[0].astype(int)
    assert flipped[0, y_min:y_max, x_min:x_max].all()
    assert flipped.sum() == (y_max - y_min) * (x_max - x_min)


def test_random_flip_reports_what_it_did():
    img = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    random.seed(0)
    seen = set()
    for _ in range(20):
        out, param = random_flip(img, y_random=True, x_random=True,
                                 return_param=True)
        expected = img
        if param['y_flip']:
            expected = expected[:, ::-1, :]
        if param['x_flip']:
            expected = expected[:, :, ::-1]
        np.testing.assert_array_equal(out, expected)
        seen.add((param['y_flip'], param['x_flip']))
    assert len(seen) == 4


def test_random_flip_off_by_default_and_copy():
    img = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert random_flip(img) is img
    out = random_flip(img, x_random=True, copy=True)
    assert out.flags['C_CONTIGUOUS']
    assert not np.shares_memory(out, img)
