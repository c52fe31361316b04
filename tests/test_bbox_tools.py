"""model/utils/bbox_tools.py: the anchor table, IoU, and the loc encoding,
by hand and against the original design's numpy code; bad shapes named."""
import numpy as np
import pytest
import torch

from reference import original as ref
from model.utils.bbox_tools import (bbox2loc, bbox_iou, generate_anchor_base,
                                     loc2bbox)


def random_bbox(rng, n, size=500., min_side=1., dtype=np.float32):
    """n boxes (y_min, x_min, y_max, x_max) with sides >= min_side."""
    tl = rng.uniform(0, size, size=(n, 2))
    hw = rng.uniform(min_side, size / 2, size=(n, 2))
    return np.concatenate((tl, tl + hw), axis=1).astype(dtype)


# ------------------------------------------------------------ anchor base

def test_default_anchor_base_is_the_original_table():
    # base 16 centred at (8, 8); ratio r (outer loop), scale s (inner loop);
    # h = 16 s sqrt(r), w = 16 s sqrt(1 / r).
    r2 = np.sqrt(2.)
    expected = []
    for ratio in (0.5, 1, 2):
        for scale in (8, 16, 32):
            h = 16 * scale * np.sqrt(ratio)
            w = 16 * scale * np.sqrt(1. / ratio)
            expected.append((8 - h / 2, 8 - w / 2, 8 + h / 2, 8 + w / 2))
    # The same table written out: half sides 64 s / 8 times sqrt(r) or
    # sqrt(1 / r), around the centre (8, 8).
    by_hand = np.array([
        [8 - 64 / r2, 8 - 64 * r2, 8 + 64 / r2, 8 + 64 * r2],
        [8 - 128 / r2, 8 - 128 * r2, 8 + 128 / r2, 8 + 128 * r2],
        [8 - 256 / r2, 8 - 256 * r2, 8 + 256 / r2, 8 + 256 * r2],
        [-56., -56., 72., 72.],
        [-120., -120., 136., 136.],
        [-248., -248., 264., 264.],
        [8 - 64 * r2, 8 - 64 / r2, 8 + 64 * r2, 8 + 64 / r2],
        [8 - 128 * r2, 8 - 128 / r2, 8 + 128 * r2, 8 + 128 / r2],
        [8 - 256 * r2, 8 - 256 / r2, 8 + 256 * r2, 8 + 256 / r2],
    ])
    np.testing.assert_allclose(np.array(expected), by_hand, atol=1e-9)
    # and in decimals, as the original README lists it
    np.testing.assert_allclose(by_hand[:3], [
        [-37.254834, -82.50967, 53.254834, 98.50967],
        [-82.50967, -173.01934, 98.50967, 189.01934],
        [-173.01934, -354.03867, 189.01934, 370.03867]], atol=1e-5)

    anchor_base = generate_anchor_base()
    assert anchor_base.shape == (9, 4)
    assert anchor_base.dtype == np.float32
    np.testing.assert_allclose(anchor_base, by_hand, atol=1e-4)


def test_anchor_base_with_other_settings_matches_the_original():
    for base_size, ratios, scales in [(16, [0.5, 1, 2], [8, 16, 32]),
                                      (8, [1], [1, 2]),
                                      (32, [0.25, 4.], [0.5, 3]),
                                      (16, [0.5, 1, 2], [2, 4])]:
        got = generate_anchor_base(base_size, ratios, scales)
        want = ref.generate_anchor_base(base_size, ratios, scales)
        assert got.shape == (len(ratios) * len(scales), 4)
        np.testing.assert_array_equal(got, want)


def test_anchor_base_index_is_ratio_major():
    anchor_base = generate_anchor_base(base_size=10, ratios=[1, 4],
                                       anchor_scales=[1, 2, 3])
    hw = anchor_base[:, 2:] - anchor_base[:, :2]
    # index = i_ratio * n_scale + i_scale
    np.testing.assert_allclose(hw[:3], [[10, 10], [20, 20], [30, 30]],
                               atol=1e-5)
    np.testing.assert_allclose(hw[3:], [[20, 5], [40, 10], [60, 15]],
                               atol=1e-5)
    centre = (anchor_base[:, :2] + anchor_base[:, 2:]) / 2
    np.testing.assert_allclose(centre, 5., atol=1e-5)


# -------------------------------------------------------------------- IoU

def test_iou_of_hand_made_boxes():
    a = np.array([[0, 0, 10, 10]], dtype=np.float32)
    b = np.array([
        [0, 0, 10, 10],     # identical -> 1
        [20, 20, 30, 30],   # disjoint -> 0
        [0, 0, 10, 5],      # the left half of a -> 50 / 100
        [0, 5, 10, 15],     # shifted by half -> 50 / 150
        [10, 0, 20, 10],    # touching the bottom edge -> 0
        [0, 10, 10, 20],    # touching the right edge -> 0
        [10, 10, 20, 20],   # touching a corner -> 0
        [2, 2, 4, 4],       # inside -> 4 / 100
        [-5, -5, 15, 15],   # around -> 100 / 400
    ], dtype=np.float32)
    iou = bbox_iou(a, b)
    assert isinstance(iou, np.ndarray)
    assert iou.shape == (1, len(b))
    np.testing.assert_allclose(
        iou[0], [1., 0., 0.5, 1 / 3., 0., 0., 0., 0.04, 0.25], rtol=1e-6)
    # symmetric
    np.testing.assert_allclose(bbox_iou(b, a)[:, 0], iou[0], rtol=1e-6)


def test_iou_matrix_shape_and_values_match_the_original():
    rng = np.random.RandomState(0)
    for n, k in [(1, 1), (7, 3), (50, 20), (0, 4), (5, 0)]:
        a = random_bbox(rng, n)
        b = random_bbox(rng, k)
        got = bbox_iou(a, b)
        assert got.shape == (n, k)
        want = ref.bbox_iou(a, b)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize('shapes', [((3, 3), (2, 4)), ((3, 4), (2, 5)),
                                    ((3, 2), (2, 2))])
def test_iou_raises_index_error_when_a_second_dim_is_not_4(shapes):
    a, b = (np.zeros(shape, dtype=np.float32) for shape in shapes)
    with pytest.raises(IndexError):
        bbox_iou(a, b)
    with pytest.raises(IndexError):
        bbox_iou(torch.from_numpy(a), torch.from_numpy(b))


# ------------------------------------------------------------ loc encoding

def test_bbox2loc_by_hand():
    src = np.array([[0, 0, 10, 20],     # h 10, w 20, centre (5, 10)
                    [10, 10, 20, 20]], dtype=np.float32)
    dst = np.array([[5, 0, 25, 40],     # h 20, w 40, centre (15, 20)
                    [10, 10, 20, 20]], dtype=np.float32)
    loc = bbox2loc(src, dst)
    assert loc.shape == (2, 4)
    assert loc.dtype == np.float32
    np.testing.assert_allclose(
        loc, [[1., 0.5, np.log(2.), np.log(2.)], [0., 0., 0., 0.]], atol=1e-6)
    np.testing.assert_allclose(loc2bbox(src, loc), dst, atol=1e-5)


def test_loc2bbox_by_hand():
    src = np.array([[0, 0, 10, 10]], dtype=np.float32)
    loc = np.array([[0.5, -1., np.log(3.), 0.]], dtype=np.float32)
    # centre (5 + 5, 5 - 10), size (30, 10)
    np.testing.assert_allclose(loc2bbox(src, loc), [[-5., -10., 25., 0.]],
                               atol=1e-5)


def test_loc2bbox_decodes_each_group_of_four_columns():
    rng = np.random.RandomState(1)
    src = random_bbox(rng, 6)
    locs = [rng.normal(scale=0.3, size=(6, 4)).astype(np.float32)
            for _ in range(3)]
    got = loc2bbox(src, np.concatenate(locs, axis=1))
    assert got.shape == (6, 12)
    for k, loc in enumerate(locs):
        np.testing.assert_allclose(got[:, 4 * k:4 * k + 4], loc2bbox(src, loc),
                                   rtol=1e-6)


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_loc_round_trip(dtype):
    rng = np.random.RandomState(2)
    atol = 1e-3 if dtype == np.float32 else 1e-9
    for _ in range(20):
        src = random_bbox(rng, 30, dtype=dtype)
        dst = random_bbox(rng, 30, dtype=dtype)
        loc = bbox2loc(src, dst)
        assert loc.dtype == dtype
        np.testing.assert_allclose(loc2bbox(src, loc), dst, atol=atol)


def test_loc_encoding_matches_the_original():
    rng = np.random.RandomState(3)
    for _ in range(10):
        src = random_bbox(rng, 40)
        dst = random_bbox(rng, 40)
        np.testing.assert_allclose(bbox2loc(src, dst), ref.bbox2loc(src, dst),
                                   rtol=1e-5, atol=1e-6)
        loc = rng.normal(scale=0.5, size=(40, 8)).astype(np.float32)
        np.testing.assert_allclose(loc2bbox(src, loc), ref.loc2bbox(src, loc),
                                   rtol=1e-5, atol=1e-3)


def test_bbox2loc_of_a_degenerate_source_is_finite():
    src = np.array([[5, 5, 5, 9]], dtype=np.float32)  # zero height
    dst = np.array([[4, 4, 8, 8]], dtype=np.float32)
    loc = bbox2loc(src, dst)
    assert np.isfinite(loc).all()
    np.testing.assert_allclose(loc, ref.bbox2loc(src, dst), rtol=1e-6)


def test_loc2bbox_of_empty_source():
    empty = np.zeros((0, 4), dtype=np.float32)
    got = loc2bbox(empty, empty)
    assert isinstance(got, np.ndarray)
    assert got.shape == (0, 4)
    assert got.dtype == np.float32
    got = loc2bbox(torch.from_numpy(empty), torch.from_numpy(empty))
    assert isinstance(got, torch.Tensor)
    assert tuple(got.shape) == (0, 4)


# ------------------------------------------------ numpy and tensor, devices

def test_numpy_in_gives_numpy_out():
    rng = np.random.RandomState(4)
    src, dst = random_bbox(rng, 5), random_bbox(rng, 5)
    loc = bbox2loc(src, dst)
    for out in (loc, loc2bbox(src, loc), bbox_iou(src, dst)):
        assert isinstance(out, np.ndarray)
        assert out.dtype == np.float32


def test_tensor_in_gives_tensor_out_with_the_same_numbers(device):
    rng = np.random.RandomState(5)
    src, dst = random_bbox(rng, 25), random_bbox(rng, 25)
    src0 = src.copy()
    loc = bbox2loc(src, dst)
    t_src = torch.from_numpy(src).to(device)
    t_dst = torch.from_numpy(dst).to(device)

    t_loc = bbox2loc(t_src, t_dst)
    t_box = loc2bbox(t_src, t_loc)
    t_iou = bbox_iou(t_src, t_dst)
    for out in (t_loc, t_box, t_iou):
        assert isinstance(out, torch.Tensor)
        assert out.device == device
        assert out.dtype == torch.float32
    np.testing.assert_allclose(t_loc.cpu().numpy(), loc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t_box.cpu().numpy(), loc2bbox(src, loc),
                               rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(t_iou.cpu().numpy(), bbox_iou(src, dst),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(src, src0)  # numpy input left alone


def test_tensor_functions_do_not_modify_their_inputs():
    rng = np.random.RandomState(6)
    src = torch.from_numpy(random_bbox(rng, 10))
    dst = torch.from_numpy(random_bbox(rng, 10))
    src0, dst0 = src.clone(), dst.clone()
    loc = bbox2loc(src, dst)
    loc0 = loc.clone()
    loc2bbox(src, loc)
    bbox_iou(src, dst)
    assert torch.equal(src, src0) and torch.equal(dst, dst0)
    assert torch.equal(loc, loc0)


# ------------------------------------------------------------- bad input

@pytest.mark.parametrize('function, names', [
    (loc2bbox, 'src_bbox and loc'), (bbox2loc, 'src_bbox and dst_bbox')])
def test_box_helpers_name_both_shapes(function, names):
    with pytest.raises(ValueError) as info:
        function(np.zeros((3, 4), np.float32), np.zeros((2, 4), np.float32))
    assert str(info.value) == (
        '{} needs {} with the same number of rows (one per box), got shapes '
        '(3, 4) and (2, 4)'.format(function.__name__, names))
