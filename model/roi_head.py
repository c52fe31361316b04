"""The RoI head of Faster R-CNN and its RoI op: pool each RoI, classify it,
refine its box.

Shape shorthand: N batch, C channels, R' RoIs of the batch, S the pooled
size, L foreground classes (the head predicts L + 1 with 0 = background).
"""
import math

import torch
from torch import nn
from torchvision.ops import roi_align, roi_pool

from model.utils.layers import full_precision, normal_init

ROI_OPS = ('pool', 'align')

# FPN's rule for a RoI's pyramid level (Lin et al. 2017, eq. 1): a RoI of
# 224 x 224 pixels goes to level 4, half the side one level down.
CANONICAL_SIZE = 224
CANONICAL_LEVEL = 4
LEVEL_EPS = 1e-6  # as torchvision's LevelMapper: log2 of an exact power of 2


class RoIPooler(nn.Module):
    """torchvision's RoIPool or RoIAlign on ``(y_min, x_min, y_max, x_max)``
    RoIs, on one feature map or on a feature pyramid.

    With several spatial scales (one per level, finest first, powers of
    two) each RoI is pooled on the level FPN's rule gives it:
    ``floor(4 + log2(sqrt(h w) / 224))``, clamped to the levels there are.

    Args:
        roi_op ({'pool', 'align'}): RoIPool (the max of each bin) or
            RoIAlign (the mean of bilinear samples in each bin).
        size (int): S, the pooled height and width.
        spatial_scale (float or sequence of floats): Feature size over
            image size, of the map or of each level.
        sampling_ratio (int): RoIAlign's samples per bin side; 0: adaptive.
        aligned (bool): RoIAlign's half-cell shift (detectron2's
            ROIAlignV2; torchvision's Faster R-CNN uses False).
    """

    def __init__(self, roi_op='pool', size=7, spatial_scale=1. / 16,
                 sampling_ratio=0, aligned=True):
        super().__init__()
        if roi_op not in ROI_OPS:
            raise ValueError("roi_op must be 'pool' (RoIPool) or 'align' "
                             '(RoIAlign), got {!r}'.format(roi_op))
        if isinstance(sampling_ratio, bool) or not isinstance(
                sampling_ratio, int):
            raise ValueError('sampling_ratio must be an int (0: adaptive), '
                             'got {!r}'.format(sampling_ratio))
        if not isinstance(aligned, bool):
            raise ValueError('aligned must be True or False, got {!r}'.format(
                aligned))
        self.roi_op = roi_op
        self.size = size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    @property
    def settings(self):
        """dict: ``roi_op``, and for RoIAlign ``sampling_ratio`` and
        ``aligned``: what a checkpoint records of the op."""
        if self.roi_op == 'pool':
            return dict(roi_op='pool')
        return dict(roi_op='align', sampling_ratio=self.sampling_ratio,
                    aligned=self.aligned)

    def forward(self, x, rois, roi_indices):
        """Pools each RoI.

        Under autocast the pooling runs in float32, features and RoIs
        alike: half precision would round the RoIs' coordinates.

        Args:
            x (torch.Tensor or list of them): Features :math:`(N, C, H, W)`,
                or one such map per level, finest first (maps beyond the
                levels of ``spatial_scale`` are not used).
            rois (torch.Tensor): :math:`(R', 4)`, each
                ``(y_min, x_min, y_max, x_max)`` in input pixels.
            roi_indices (torch.Tensor): :math:`(R',)`, each RoI's image.

        Returns:
            torch.Tensor: :math:`(R', C, S, S)`.
        """
        maps = [x] if isinstance(x, torch.Tensor) else list(x)
        if torch.is_autocast_enabled(maps[0].device.type):
            maps = [full_precision(m) for m in maps]
        dtype, device = maps[0].dtype, maps[0].device
        rois = torch.as_tensor(rois, dtype=dtype, device=device)
        index = torch.as_tensor(roi_indices, device=device).to(dtype)
        # torchvision's ops want (index, x_min, y_min, x_max, y_max)
        boxes = torch.stack((index, rois[:, 1], rois[:, 0], rois[:, 3],
                             rois[:, 2]), dim=1)
        scales = self.spatial_scale
        if not isinstance(scales, (tuple, list)):
            return self._pool(maps[0], boxes, scales)
        out = maps[0].new_zeros((rois.shape[0], maps[0].shape[1], self.size,
                                 self.size))
        level = fpn_level(rois, scales)
        for l, scale in enumerate(scales):
            index = torch.where(level == l)[0]
            out[index] = self._pool(maps[l], boxes[index], scale)
        return out

    def _pool(self, x, boxes, scale):
        size = (self.size, self.size)
        if self.roi_op == 'pool':
            return roi_pool(x, boxes, size, scale)
        return roi_align(x, boxes, size, scale, self.sampling_ratio,
                         self.aligned)


def fpn_level(rois, spatial_scales):
    """The pyramid level of each RoI, as an index into ``spatial_scales``.

    Args:
        rois (torch.Tensor): :math:`(R', 4)`, each
            ``(y_min, x_min, y_max, x_max)`` in input pixels.
        spatial_scales (sequence of floats): Each level's feature size over
            image size, finest first: 1/4, 1/8, ... for levels 2, 3, ...

    Returns:
        torch.Tensor: :math:`(R',)` int64, ``k - k_min`` where
        ``k = floor(4 + log2(sqrt(h w) / 224) + 1e-6)`` clamped to the
        levels ``k_min .. k_max`` of the scales.
    """
    k_min = round(-math.log2(spatial_scales[0]))
    k_max = round(-math.log2(spatial_scales[-1]))
    size = torch.sqrt((rois[:, 2] - rois[:, 0]) * (rois[:, 3] - rois[:, 1]))
    k = torch.floor(CANONICAL_LEVEL + torch.log2(size / CANONICAL_SIZE)
                    + torch.tensor(LEVEL_EPS, dtype=size.dtype))
    return k.clamp(min=k_min, max=k_max).to(torch.int64) - k_min


def roi_pooler(roi_op, size, spatial_scale):
    """The :class:`RoIPooler` a detector's ``roi_op`` argument describes.

    Args:
        roi_op (str or dict): ``'pool'``, ``'align'`` (RoIAlign with
            ``sampling_ratio=0, aligned=True``) or a dict of
            :class:`RoIPooler`'s settings, e.g. ``dict(roi_op='align',
            sampling_ratio=2, aligned=False)``.
        size (int): The pooled height and width.
        spatial_scale (float or sequence of floats): See :class:`RoIPooler`.

    Returns:
        RoIPooler
    """
    settings = dict(roi_op=roi_op) if isinstance(roi_op, str) else roi_op
    if not isinstance(settings, dict):
        raise ValueError("roi_op must be 'pool', 'align' or a dict such as "
                         "dict(roi_op='align', sampling_ratio=2), got "
                         '{!r}'.format(roi_op))
    return RoIPooler(size=size, spatial_scale=spatial_scale, **settings)


class RoIHead(nn.Module):
    """RoI pooling, a classifier, and the class and box predictors.

    Any extractor's head: ``roi`` pools each RoI to :math:`(C, S, S)`,
    ``classifier`` turns the flattened pooled features into ``n_feature``
    values per RoI (VGG16's fc6 and fc7, ResNet's layer4, two small layers
    in the toy model).

    Args:
        n_class (int): The number of classes, background included (L + 1).
        roi (nn.Module): ``roi(x, rois, roi_indices) -> (R', C, S, S)``, as
            :class:`RoIPooler`.
        classifier (nn.Module): ``(R', C S S) -> (R', n_feature)``.
        n_feature (int): Width of the classifier's output.
    """

    def __init__(self, n_class, roi, classifier, n_feature=4096):
        super().__init__()
        self.n_class = n_class
        self.roi = roi
        self.classifier = classifier
        self.cls_loc = nn.Linear(n_feature, n_class * 4)
        self.score = nn.Linear(n_feature, n_class)
        normal_init(self.cls_loc, 0, 0.001)
        normal_init(self.score, 0, 0.01)

    def forward(self, x, rois, roi_indices):
        """Class scores and box offsets of each RoI.

        Args:
            x (torch.Tensor or list of them): Features, :math:`(N, C, H, W)`
                (a list for a pyramid).
            rois (torch.Tensor): :math:`(R', 4)`, each
                ``(y_min, x_min, y_max, x_max)`` in input pixels.
            roi_indices (torch.Tensor): :math:`(R',)`, the image of each RoI.

        Returns:
            (torch.Tensor, torch.Tensor): roi_cls_locs
            :math:`(R', (L + 1) \\times 4)` and roi_scores
            :math:`(R', L + 1)`, in this order.
        """
        h = self.classifier(self.roi(x, rois, roi_indices).flatten(1))
        return self.cls_loc(h), self.score(h)
