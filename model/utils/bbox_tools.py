"""Box arithmetic: encode and decode offsets, IoU, and the anchor table.

Boxes are ``(y_min, x_min, y_max, x_max)`` in pixels; height is
``y_max - y_min`` and width ``x_max - x_min`` (no +1).

Every function takes numpy arrays or torch tensors. A tensor is worked on in
place on its own device; a numpy array is wrapped without a copy, worked on
with the same code and handed back as numpy, so both paths give the same
numbers.
"""
import numpy as np
import torch
from torch.fx.experimental.symbolic_shapes import guard_or_false


def as_tensors(*arrays):
    """Wraps numpy arrays as CPU tensors (no copy); tensors pass through.

    Returns:
        (bool, tuple of tensors): whether the first input was numpy, so that
        :func:`as_output` hands numpy back, and the tensors.
    """
    is_numpy = not isinstance(arrays[0], torch.Tensor)
    return is_numpy, tuple(
        a if isinstance(a, torch.Tensor)
        else torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)


def as_output(is_numpy, *tensors):
    """Hands tensors back as numpy arrays when the inputs were numpy."""
    if is_numpy:
        tensors = tuple(t.cpu().numpy() for t in tensors)
    return tensors if len(tensors) > 1 else tensors[0]


def _check_rows(a, b, function, name_a, name_b):
    """Raises ValueError unless ``a`` and ``b`` have one row per box each."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(
            '{} needs {} and {} with the same number of rows (one per box), '
            'got shapes {} and {}'.format(function, name_a, name_b,
                                          tuple(a.shape), tuple(b.shape)))


def loc2bbox(src_bbox, loc):
    """Decodes bounding boxes from bounding box offsets and scales.

    Given offsets :math:`t_y, t_x, t_h, t_w` and a source box with centre
    :math:`p_y, p_x` and size :math:`p_h, p_w`, the decoded box has centre
    :math:`\\hat{g}_y = p_h t_y + p_y`, :math:`\\hat{g}_x = p_w t_x + p_x`
    and size :math:`\\hat{g}_h = p_h \\exp(t_h)`,
    :math:`\\hat{g}_w = p_w \\exp(t_w)`.

    Args:
        src_bbox (array): Source boxes, shape :math:`(R, 4)`, each
            ``(y_min, x_min, y_max, x_max)``.
        loc (array): Offsets and scales, shape :math:`(R, 4K)`; columns
            ``4k .. 4k+3`` hold :math:`(t_y, t_x, t_h, t_w)` of the k-th
            decoded box of each source box.

    Returns:
        array: Decoded boxes, shape :math:`(R, 4K)`, dtype of ``loc``.
    """
    is_numpy, (src_bbox, loc) = as_tensors(src_bbox, loc)
    _check_rows(src_bbox, loc, 'loc2bbox', 'src_bbox', 'loc')
    # (guard_or_false: a recording that cannot tell decodes the general way)
    if guard_or_false(src_bbox.shape[0] == 0):
        return as_output(is_numpy, loc.new_zeros((0, 4)))
    src_bbox = src_bbox.to(loc.dtype)

    src_height = src_bbox[:, 2] - src_bbox[:, 0]
    src_width = src_bbox[:, 3] - src_bbox[:, 1]
    src_ctr_y = src_bbox[:, 0] + 0.5 * src_height
    src_ctr_x = src_bbox[:, 1] + 0.5 * src_width

    dy, dx, dh, dw = loc[:, 0::4], loc[:, 1::4], loc[:, 2::4], loc[:, 3::4]
    ctr_y = dy * src_height[:, None] + src_ctr_y[:, None]
    ctr_x = dx * src_width[:, None] + src_ctr_x[:, None]
    h = torch.exp(dh) * src_height[:, None]
    w = torch.exp(dw) * src_width[:, None]

    dst_bbox = torch.empty_like(loc)
    dst_bbox[:, 0::4] = ctr_y - 0.5 * h
    dst_bbox[:, 1::4] = ctr_x - 0.5 * w
    dst_bbox[:, 2::4] = ctr_y + 0.5 * h
    dst_bbox[:, 3::4] = ctr_x + 0.5 * w
    return as_output(is_numpy, dst_bbox)


def bbox2loc(src_bbox, dst_bbox):
    """Encodes the offsets and scales that carry source boxes onto targets.

    The inverse of :func:`loc2bbox`: :math:`t_y = (g_y - p_y) / p_h`,
    :math:`t_x = (g_x - p_x) / p_w`, :math:`t_h = \\log(g_h / p_h)`,
    :math:`t_w = \\log(g_w / p_w)`. Source sizes are floored at the dtype's
    machine epsilon so that a degenerate source box does not divide by zero.

    Args:
        src_bbox (array): Source boxes, shape :math:`(R, 4)`, each
            ``(y_min, x_min, y_max, x_max)``.
        dst_bbox (array): Target boxes, shape :math:`(R, 4)`, same order.

    Returns:
        array: Offsets and scales :math:`(t_y, t_x, t_h, t_w)`, shape
        :math:`(R, 4)`, dtype of ``src_bbox``.
    """
    is_numpy, (src_bbox, dst_bbox) = as_tensors(src_bbox, dst_bbox)
    _check_rows(src_bbox, dst_bbox, 'bbox2loc', 'src_bbox', 'dst_bbox')
    height = src_bbox[:, 2] - src_bbox[:, 0]
    width = src_bbox[:, 3] - src_bbox[:, 1]
    ctr_y = src_bbox[:, 0] + 0.5 * height
    ctr_x = src_bbox[:, 1] + 0.5 * width

    base_height = dst_bbox[:, 2] - dst_bbox[:, 0]
    base_width = dst_bbox[:, 3] - dst_bbox[:, 1]
    base_ctr_y = dst_bbox[:, 0] + 0.5 * base_height
    base_ctr_x = dst_bbox[:, 1] + 0.5 * base_width

    eps = torch.finfo(height.dtype).eps
    height = height.clamp(min=eps)
    width = width.clamp(min=eps)

    dy = (base_ctr_y - ctr_y) / height
    dx = (base_ctr_x - ctr_x) / width
    dh = torch.log(base_height / height)
    dw = torch.log(base_width / width)
    return as_output(is_numpy, torch.stack((dy, dx, dh, dw), dim=1))


def bbox_iou(bbox_a, bbox_b):
    """Intersection over union of every pair of boxes from two sets.

    Args:
        bbox_a (array): Shape :math:`(N, 4)`, each
            ``(y_min, x_min, y_max, x_max)``.
        bbox_b (array): Shape :math:`(K, 4)`, same order.

    Returns:
        array: Shape :math:`(N, K)`; element ``(n, k)`` is the IoU of
        ``bbox_a[n]`` and ``bbox_b[k]``.

    Raises:
        IndexError: if the second dimension of either input is not 4.
    """
    if bbox_a.shape[1] != 4 or bbox_b.shape[1] != 4:
        raise IndexError(
            'bbox_iou expects boxes of shape (N, 4) and (K, 4), '
            'got {} and {}'.format(tuple(bbox_a.shape), tuple(bbox_b.shape)))
    is_numpy, (bbox_a, bbox_b) = as_tensors(bbox_a, bbox_b)
    tl = torch.maximum(bbox_a[:, None, :2], bbox_b[:, :2])
    br = torch.minimum(bbox_a[:, None, 2:], bbox_b[:, 2:])
    area_i = torch.prod(br - tl, dim=2) * (tl < br).all(dim=2)
    area_a = torch.prod(bbox_a[:, 2:] - bbox_a[:, :2], dim=1)
    area_b = torch.prod(bbox_b[:, 2:] - bbox_b[:, :2], dim=1)
    return as_output(is_numpy, area_i / (area_a[:, None] + area_b - area_i))


def generate_anchor_base(base_size=16, ratios=[0.5, 1, 2],
                         anchor_scales=[8, 16, 32]):
    """The anchor windows of one feature-map location.

    The window of side ``base_size`` is centred at
    ``(base_size / 2, base_size / 2)``; for each ratio :math:`r` (outer loop)
    and scale :math:`s` (inner loop) an anchor of height
    :math:`base\\_size \\cdot s \\sqrt{r}` and width
    :math:`base\\_size \\cdot s \\sqrt{1/r}` is centred there.

    Args:
        base_size (number): The side of the reference window (the feature
            stride).
        ratios (list of floats): Height-to-width ratios.
        anchor_scales (list of numbers): Multiples of ``base_size``.

    Returns:
        numpy.ndarray: Shape :math:`(A, 4)` with
        ``A = len(ratios) * len(anchor_scales)``, float32, each row
        ``(y_min, x_min, y_max, x_max)``.
    """
    py = base_size / 2.
    px = base_size / 2.
    anchor_base = np.zeros((len(ratios) * len(anchor_scales), 4),
                           dtype=np.float32)
    for i, ratio in enumerate(ratios):
        for j, scale in enumerate(anchor_scales):
            h = base_size * scale * np.sqrt(ratio)
            w = base_size * scale * np.sqrt(1. / ratio)
            index = i * len(anchor_scales) + j
            anchor_base[index] = (py - h / 2., px - w / 2.,
                                  py + h / 2., px + w / 2.)
    return anchor_base
