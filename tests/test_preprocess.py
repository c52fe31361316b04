"""model/utils/preprocess.py: the 600/1000 resize rule, skimage's resize
(reflect, without anti-aliasing) against a reference written out, the
torchvision and caffe normalizations, and their inverse. data/dataset.py
re-exports ``preprocess``: the reference test runs both names."""
import numpy as np
import pytest
import torch
from skimage import transform as sktsf
from torchvision import transforms

from conftest import random_image
from data import dataset as data_dataset
from model.utils import preprocess as model_preprocess
from model.utils.preprocess import inverse_normalize, preprocess


@pytest.mark.parametrize('in_size, out_size', [
    ((375, 500), (600, 800)),     # VOC landscape: shorter side to 600
    ((500, 375), (800, 600)),     # portrait
    ((100, 100), (600, 600)),     # square, enlarged
    ((300, 1000), (300, 1000)),   # very wide: longer side capped at 1000
    ((1200, 400), (1000, 333)),   # very tall: longer side capped, rounded
    ((600, 1000), (600, 1000)),   # already at both limits
])
def test_preprocess_600_1000_rule(in_size, out_size):
    out = preprocess(random_image(*in_size))
    assert out.shape == (3,) + out_size
    assert out.dtype == np.float32


def test_preprocess_own_limits():
    out = preprocess(random_image(120, 200), min_size=240, max_size=300)
    assert out.shape == (3, 180, 300)


def reference_preprocess(img, min_size, max_size, caffe_pretrain):
    """skimage's resize (reflect, no anti-aliasing) and the normalization,
    written out."""
    C, H, W = img.shape
    scale = min(min_size / min(H, W), max_size / max(H, W))
    out = sktsf.resize(img / 255., (C, H * scale, W * scale), mode='reflect',
                       anti_aliasing=False)
    if caffe_pretrain:
        out = out[[2, 1, 0]] * 255
        out = out - np.array([122.7717, 115.9465, 102.9801])[:, None, None]
    else:
        mean = np.array([0.485, 0.456, 0.406])[:, None, None]
        std = np.array([0.229, 0.224, 0.225])[:, None, None]
        out = (out - mean) / std
    return out.astype(np.float32)


@pytest.mark.parametrize('preprocess', [model_preprocess.preprocess,
                                        data_dataset.preprocess])
@pytest.mark.parametrize('caffe_pretrain', [False, True])
@pytest.mark.parametrize('in_size, min_size, out_size', [
    ((37, 53), 20, (20, 29)),  # down: anti-aliasing would blur
    ((11, 17), 30, (30, 46)),  # up: the border mode shows at the edges
])
def test_preprocess_is_reflect_resize_without_anti_aliasing(
        preprocess, caffe_pretrain, in_size, min_size, out_size):
    rng = np.random.RandomState(0)
    img = rng.uniform(0, 255, (3,) + in_size).astype(np.float32)
    got = preprocess(img, min_size=min_size, max_size=1000,
                     caffe_pretrain=caffe_pretrain)
    want = reference_preprocess(img, min_size, 1000, caffe_pretrain)
    assert got.dtype == np.float32
    assert got.shape == (3,) + out_size
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_torchvision_normalization_matches_torchvision():
    img = random_image(60, 80)
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
    img = random_image(60, 80)
    out = inverse_normalize(
        preprocess(img, min_size=60, max_size=80, caffe_pretrain=True),
        caffe_pretrain=True)
    np.testing.assert_allclose(out, img, atol=1e-3)


def test_inverse_normalize_torchvision_is_the_original_approximation():
    img = random_image(60, 80)
    normalized = preprocess(img, min_size=60, max_size=80)
    out = inverse_normalize(normalized)
    np.testing.assert_allclose(
        out, (normalized * 0.225 + 0.45).clip(0, 1) * 255, rtol=1e-6)
    # One mean and std for all channels: off by at most ~0.044 * 255.
    np.testing.assert_allclose(out, img, atol=12)
    assert out.min() >= 0 and out.max() <= 255
