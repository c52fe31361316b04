"""Feature Pyramid Networks (Lin et al., CVPR 2017): the pyramid of
features and the region proposal network over it, in chainercv's design
(``chainercv/links/model/fpn``) with torchvision's ops and numbers, so that
torchvision's trained detectors load (see
:mod:`model.utils.convert_torchvision`).

Shape shorthand: N batch, C channels, l a pyramid level, H_l W_l its
feature size, A anchors per location, K the anchors of all levels, R'
proposals of the batch.
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

from model.region_proposal_network import per_image
from model.utils.bbox_tools import loc2bbox
from model.utils.layers import full_precision
from model.utils.suppression import batched_nms

# The largest size offset of a box: a box grows at most 1000 / 16 times
# (torchvision's and detectron2's clamp).
LOC_CLIP = math.log(1000. / 16)


class FeaturePyramid(nn.Module):
    """A backbone's maps made a pyramid of equal width, finest first.

    Each map of the backbone gets a lateral 1x1 convolution; from the
    coarsest down, each level adds the one above, upsampled to its size
    (nearest), and a 3x3 convolution gives its output. ``n_pool`` more
    levels come from max pooling the coarsest with stride 2 (FPN's P6).

    Args:
        body (nn.Module): ``(N, 3, H, W) -> list of maps``, finest first.
        in_channels (sequence of ints): The channels of each map.
        out_channels (int): C, the pyramid's channels.
        n_pool (int): Levels added by pooling.
    """

    def __init__(self, body, in_channels, out_channels=256, n_pool=1):
        super().__init__()
        self.body = body
        self.lateral = nn.ModuleList(
            nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.output = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, padding=1)
            for _ in in_channels)
        self.n_pool = n_pool
        for conv in (*self.lateral, *self.output):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)

    def forward(self, x):
        """Args: x (torch.Tensor): :math:`(N, 3, H, W)`.

        Returns:
            list of torch.Tensor: :math:`(N, C, H_l, W_l)`, finest first.
        """
        maps = self.body(x)
        top = self.lateral[-1](maps[-1])
        pyramid = [self.output[-1](top)]
        for h, lateral, output in zip(maps[-2::-1], self.lateral[-2::-1],
                                      self.output[-2::-1]):
            top = lateral(h) + F.interpolate(top, size=h.shape[-2:],
                                             mode='nearest')
            pyramid.insert(0, output(top))
        for _ in range(self.n_pool):
            pyramid.append(F.max_pool2d(pyramid[-1], 1, 2))
        return pyramid


def anchor_base(sizes, ratios):
    """One level's anchors around a location at (0, 0), as torchvision
    makes them: for each ratio r (outer loop) and size s (inner loop), an
    anchor of height ``s sqrt(r)`` and width ``s / sqrt(r)``, its corners
    rounded.

    Returns:
        torch.Tensor: :math:`(A, 4)` float32, each
        ``(y_min, x_min, y_max, x_max)``.
    """
    sizes = torch.as_tensor(sizes, dtype=torch.float32)
    h_ratio = torch.sqrt(torch.as_tensor(ratios, dtype=torch.float32))
    h = (h_ratio[:, None] * sizes[None, :]).reshape(-1)
    w = ((1 / h_ratio)[:, None] * sizes[None, :]).reshape(-1)
    return (torch.stack((-h, -w, h, w), dim=1) / 2).round()


class PyramidRPN(nn.Module):
    """The region proposal network of FPN: one head shared by all levels,
    one objectness logit per anchor.

    A 3x3 convolution with ReLU, then two 1x1 convolutions: A logits and 4A
    offsets per location. Level l's anchors (``anchor_sizes[l]`` with each
    ratio) lie on its grid, a stride apart; the strides are the input's
    (padded) size over each grid's, as torchvision takes them.

    Proposals of one image: on each level the ``n_pre_nms`` anchors of
    highest objectness are decoded, clipped to the image, and those
    smaller than ``min_size`` (input pixels) or scoring below
    ``score_thresh`` dropped; NMS at ``nms_thresh`` within each level; the
    ``n_post_nms`` best of all levels stay. The train or test counts follow
    ``self.training``.

    Args:
        in_channels (int): The pyramid's channels (C).
        feat_stride (sequence of ints): Each level's nominal stride.
        anchor_sizes (sequence of sequences): Each level's anchor sizes, in
            input pixels; every level has as many.
        ratios (sequence of floats): Height-to-width ratios.
        nms_thresh (float): IoU threshold of the NMS.
        n_train_pre_nms (int): Anchors kept per level before NMS, training.
        n_train_post_nms (int): Proposals kept after NMS, training.
        n_test_pre_nms (int): Anchors kept per level before NMS, testing.
        n_test_post_nms (int): Proposals kept after NMS, testing.
        min_size (float): Smallest proposal height and width.
        score_thresh (float): Smallest objectness probability.
    """

    def __init__(self, in_channels=256, feat_stride=(4, 8, 16, 32, 64),
                 anchor_sizes=((32,), (64,), (128,), (256,), (512,)),
                 ratios=(0.5, 1., 2.), nms_thresh=0.7, n_train_pre_nms=2000,
                 n_train_post_nms=2000, n_test_pre_nms=1000,
                 n_test_post_nms=1000, min_size=1e-3, score_thresh=0.):
        super().__init__()
        if len(anchor_sizes) != len(feat_stride) or len(
                {len(sizes) for sizes in anchor_sizes}) != 1:
            raise ValueError(
                'anchor_sizes must give each of the {} levels as many sizes, '
                'got {}'.format(len(feat_stride), anchor_sizes))
        self.feat_stride = tuple(feat_stride)
        for l, sizes in enumerate(anchor_sizes):
            self.register_buffer('anchor_base_{}'.format(l),
                                 anchor_base(sizes, ratios), persistent=False)
        n_anchor = len(anchor_sizes[0]) * len(ratios)
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.score = nn.Conv2d(in_channels, n_anchor, 1)
        self.loc = nn.Conv2d(in_channels, n_anchor * 4, 1)
        for conv in (self.conv, self.score, self.loc):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        self.nms_thresh = nms_thresh
        self.n_pre_nms = dict(train=n_train_pre_nms, test=n_test_pre_nms)
        self.n_post_nms = dict(train=n_train_post_nms, test=n_test_post_nms)
        self.min_size = min_size
        self.score_thresh = score_thresh

    def forward(self, xs, img_size, scale=1.):
        """Forward the RPN over a batch of pyramids.

        Args:
            xs (list of torch.Tensor): Each level's :math:`(N, C, H_l,
                W_l)`, finest first.
            img_size (tuple of ints or sequence of them): ``(H, W)`` of the
                images, or each image's unpadded size.
            scale (float or sequence of floats): Not used (``min_size`` is
                in input pixels); the RPN's interface.

        Returns:
            (torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor):
            * **rpn_locs**: :math:`(N, K, 4)` offsets.
            * **rpn_scores**: :math:`(N, K, 1)` objectness logits.
            * **rois**: :math:`(R', 4)` proposals, each
              ``(y_min, x_min, y_max, x_max)``.
            * **roi_indices**: :math:`(R',)` int32, each RoI's image.
            * **anchor**: :math:`(K, 4)`, level by level, each level's
              ordered (y, x, anchor).
        """
        n = xs[0].shape[0]
        locs, scores, anchors = [], [], []
        for l, x in enumerate(xs):
            h = F.relu(self.conv(x))
            loc, score = full_precision(self.loc(h), self.score(h))
            locs.append(loc.permute(0, 2, 3, 1).reshape(n, -1, 4))
            scores.append(score.permute(0, 2, 3, 1).reshape(n, -1, 1))
            anchors.append(self._anchors(l, xs))
        img_sizes, _ = per_image(img_size, scale, n)
        rois, roi_indices = [], []
        for i in range(n):
            roi = self._propose([loc[i].detach() for loc in locs],
                                [score[i, :, 0].detach() for score in scores],
                                anchors, img_sizes[i])
            rois.append(roi)
            roi_indices.append(torch.full_like(roi[:, 0], i,
                                               dtype=torch.int32))
        return (torch.cat(locs, dim=1), torch.cat(scores, dim=1),
                torch.cat(rois), torch.cat(roi_indices), torch.cat(anchors))

    def _anchors(self, l, xs):
        """Level ``l``'s anchors, :math:`(H_l W_l A, 4)`: its base shifted
        by its stride, the input's size (level 0's grid times its stride)
        over its grid's, on each axis."""
        base = getattr(self, 'anchor_base_{}'.format(l))
        height, width = xs[l].shape[2:]
        stride_y = xs[0].shape[2] * self.feat_stride[0] // height
        stride_x = xs[0].shape[3] * self.feat_stride[0] // width
        kw = dict(dtype=base.dtype, device=base.device)
        shift_y = torch.arange(height, **kw) * stride_y
        shift_x = torch.arange(width, **kw) * stride_x
        shift_y, shift_x = torch.meshgrid(shift_y, shift_x, indexing='ij')
        shift = torch.stack((shift_y, shift_x, shift_y, shift_x),
                            dim=2).reshape(-1, 1, 4)
        return (shift + base[None]).reshape(-1, 4)

    @torch.no_grad()
    def _propose(self, locs, scores, anchors, img_size):
        """One image's proposals from each level's offsets (K_l, 4),
        logits (K_l,) and anchors (K_l, 4)."""
        mode = 'train' if self.training else 'test'
        rois, logits, levels = [], [], []
        for l, (loc, score, anchor) in enumerate(zip(locs, scores, anchors)):
            top = score.topk(torch.sym_min(self.n_pre_nms[mode],
                                           score.shape[0]))[1]
            loc = torch.cat((loc[top, :2], loc[top, 2:].clamp(max=LOC_CLIP)),
                            dim=1)
            rois.append(loc2bbox(anchor[top], loc))
            logits.append(score[top])
            levels.append(torch.full_like(top, l))
        roi, prob, level = torch.cat(rois), torch.cat(logits).sigmoid(), \
            torch.cat(levels)
        roi[:, 0::2] = roi[:, 0::2].clamp(0, img_size[0])
        roi[:, 1::2] = roi[:, 1::2].clamp(0, img_size[1])
        size = torch.minimum(roi[:, 2] - roi[:, 0], roi[:, 3] - roi[:, 1])
        keep = torch.where((size >= self.min_size)
                           & (prob >= self.score_thresh))[0]
        roi, prob, level = roi[keep], prob[keep], level[keep]
        keep = batched_nms(roi, prob, level, self.nms_thresh)
        return roi[keep[:self.n_post_nms[mode]]]
