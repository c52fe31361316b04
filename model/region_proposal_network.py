"""The Region Proposal Network of Faster R-CNN.

Shape shorthand: N batch, C channels, H W feature size, A anchors per
location, R' proposals of the whole batch.
"""
import numbers

import torch
from torch import nn
from torch.nn import functional as F

from model.utils.bbox_tools import generate_anchor_base
from model.utils.creator_tool import ProposalCreator
from model.utils.layers import full_precision, normal_init


class RegionProposalNetwork(nn.Module):
    """Predicts objectness and box offsets for anchors, and proposes RoIs.

    A 3x3 convolution with ReLU, then two 1x1 convolutions: one gives two
    scores (background, foreground) per anchor, the other four offsets.

    Args:
        in_channels (int): Channels of the input feature map.
        mid_channels (int): Channels of the 3x3 convolution.
        ratios (list of floats): Height-to-width ratios of the anchors.
        anchor_scales (list of numbers): Anchor sizes, in multiples of the
            16-pixel base window.
        feat_stride (int): The extractor's stride, in input pixels.
        proposal_creator_params (dict): Keyword arguments of
            :class:`model.utils.creator_tool.ProposalCreator`.
    """

    def __init__(self, in_channels=512, mid_channels=512,
                 ratios=[0.5, 1, 2], anchor_scales=[8, 16, 32],
                 feat_stride=16, proposal_creator_params=dict()):
        super().__init__()
        anchor_base = generate_anchor_base(anchor_scales=anchor_scales,
                                           ratios=ratios)
        self.register_buffer('anchor_base', torch.from_numpy(anchor_base),
                             persistent=False)
        self.feat_stride = feat_stride
        self.proposal_layer = ProposalCreator(self, **proposal_creator_params)
        n_anchor = anchor_base.shape[0]
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 3, 1, 1)
        self.score = nn.Conv2d(mid_channels, n_anchor * 2, 1, 1, 0)
        self.loc = nn.Conv2d(mid_channels, n_anchor * 4, 1, 1, 0)
        normal_init(self.conv1, 0, 0.01)
        normal_init(self.score, 0, 0.01)
        normal_init(self.loc, 0, 0.01)

    def forward(self, x, img_size, scale=1.):
        """Forward the RPN over a batch of feature maps.

        Each image's proposals are clipped to its own size and drop boxes
        smaller than ``min_size`` times its own scale, so that an image
        padded into a batch is proposed for as it would be alone (anchors
        over the padding may still reach into the image).

        Args:
            x (torch.Tensor): Features, shape :math:`(N, C, H, W)`.
            img_size (tuple of ints or sequence of them): ``(height,
                width)`` of the scaled input images, or one such pair per
                image: each image's unpadded size in a padded batch.
            scale (float or sequence of floats): The scaling applied to the
                original images, or one scale per image.

        Returns:
            (torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor):
            * **rpn_locs**: :math:`(N, HWA, 4)` predicted offsets.
            * **rpn_scores**: :math:`(N, HWA, 2)` background and foreground
              scores (before softmax).
            * **rois**: :math:`(R', 4)` proposals of all images, each
              ``(y_min, x_min, y_max, x_max)``, on the device of ``x``.
            * **roi_indices**: :math:`(R',)` int32, the image each RoI
              belongs to.
            * **anchor**: :math:`(HWA, 4)` anchors, ordered (y, x, anchor) so
              that row k of ``rpn_locs[n]`` belongs to anchor k.
        """
        n, _, hh, ww = x.shape
        anchor = _enumerate_shifted_anchor(self.anchor_base, self.feat_stride,
                                           hh, ww)
        n_anchor = self.anchor_base.shape[0]
        h = F.relu(self.conv1(x))

        # float32 from here on, under autocast too: box decoding and the
        # proposals' order need full precision.
        rpn_locs, rpn_scores = full_precision(self.loc(h), self.score(h))
        rpn_locs = rpn_locs.permute(0, 2, 3, 1).contiguous().view(n, -1, 4)
        rpn_scores = rpn_scores.permute(0, 2, 3, 1).contiguous()
        rpn_softmax_scores = F.softmax(
            rpn_scores.view(n, hh, ww, n_anchor, 2), dim=4)
        rpn_fg_scores = rpn_softmax_scores[..., 1].contiguous().view(n, -1)
        rpn_scores = rpn_scores.view(n, -1, 2)

        img_sizes, scales = per_image(img_size, scale, n)
        rois = []
        roi_indices = []
        for i in range(n):
            roi = self.proposal_layer(
                rpn_locs[i].detach(), rpn_fg_scores[i].detach(), anchor,
                img_sizes[i], scale=scales[i])
            rois.append(roi)
            roi_indices.append(torch.full_like(roi[:, 0], i,
                                               dtype=torch.int32))
        rois = torch.cat(rois, dim=0)
        roi_indices = torch.cat(roi_indices, dim=0)
        return rpn_locs, rpn_scores, rois, roi_indices, anchor


def per_image(img_size, scale, n):
    """Each image's ``(H, W)`` and scale, from shared or per-image values.

    Args:
        img_size: ``(H, W)`` shared by the N images, or N such pairs
            (a sequence, or a tensor of shape :math:`(N, 2)`).
        scale: A number (or 0-d tensor) shared by the N images, or N
            numbers.
        n (int): The number of images (N).

    Returns:
        (list, list): N ``(H, W)`` tuples and N scales.

    Raises:
        ValueError: if per-image values are not N of them.
    """
    if torch.is_tensor(img_size):
        img_size = img_size.tolist()
    shared = not hasattr(img_size[0], '__len__')
    sizes = [tuple(img_size)] * n if shared else [tuple(s) for s in img_size]
    if isinstance(scale, numbers.Number) or (torch.is_tensor(scale)
                                              and scale.ndim == 0):
        scales = [scale] * n
    else:
        scales = torch.as_tensor(scale, dtype=torch.float64).reshape(
            -1).tolist()
    if len(sizes) != n or len(scales) != n or any(
            len(size) != 2 for size in sizes):
        raise ValueError(
            'expected an (H, W) and a scale for each of the {} images (or '
            'one shared by all), got sizes {} and scales {}'.format(
                n, sizes, scales))
    return sizes, scales


def roi_counts(roi_indices, n):
    """How many RoIs each of N images has, from the RPN's ``roi_indices``
    (:math:`(R',)`, each RoI's image).

    Returns:
        list of N ints: one host read, none for a single image.
    """
    if n == 1:
        return [roi_indices.shape[0]]
    index = roi_indices.long()
    # (torch.bincount would read the largest index on the host first)
    counts = index.new_zeros(n).index_add_(0, index, torch.ones_like(index))
    return counts.tolist()


def _enumerate_shifted_anchor(anchor_base, feat_stride, height, width):
    """Shifts the anchor base over every location of an H x W feature map.

    Args:
        anchor_base (torch.Tensor): :math:`(A, 4)`, each
            ``(y_min, x_min, y_max, x_max)``.
        feat_stride (int): Distance between locations, in input pixels.
        height, width (int): Feature map size.

    Returns:
        torch.Tensor: :math:`(HWA, 4)`, ordered (y, x, anchor) row-major, on
        the device of ``anchor_base``.
    """
    kw = dict(dtype=anchor_base.dtype, device=anchor_base.device)
    shift_y = torch.arange(0, height * feat_stride, feat_stride, **kw)
    shift_x = torch.arange(0, width * feat_stride, feat_stride, **kw)
    shift_y, shift_x = torch.meshgrid(shift_y, shift_x, indexing='ij')
    shift = torch.stack((shift_y.ravel(), shift_x.ravel(),
                         shift_y.ravel(), shift_x.ravel()), dim=1)
    anchor = anchor_base[None, :, :] + shift[:, None, :]
    return anchor.reshape(-1, 4)

