"""Target and proposal creators of Faster R-CNN.

Shape shorthand:
    R: gt boxes of one image; S: sampled anchors or RoIs;
    HWA: anchors of one feature map (H x W locations, A anchors each).

Boxes are ``(y_min, x_min, y_max, x_max)``. The creators work in torch on the
device of their inputs; numpy inputs are served by the same code and get numpy
back. Random sampling draws from numpy's global RNG exactly as the original
design does (``np.random.choice(..., replace=False)``, positives first), so a
seed gives the same samples here as there; only the drawn positions cross to
numpy, never the arrays themselves. With ``sampler='torch'`` the target
creators draw from torch's RNG on the device of their inputs instead, and the
AnchorTargetCreator then reads nothing on the host.
"""
import numbers

import numpy as np
import torch
from torchvision.ops import nms

from model.utils.bbox_tools import (as_output, as_tensors, bbox2loc, bbox_iou,
                                     loc2bbox)


def check_bbox(bbox, name='bbox'):
    """Raises ValueError unless ``bbox`` is (R, 4) with min <= max.

    Args:
        bbox (tensor): Boxes, shape :math:`(R, 4)`, each
            ``(y_min, x_min, y_max, x_max)``.
        name (str): What to call the boxes in the message.
    """
    if bbox.ndim != 2 or bbox.shape[1] != 4:
        raise ValueError('{} must have shape (R, 4) as (y_min, x_min, y_max, '
                         'x_max), got shape {}'.format(name, tuple(bbox.shape)))
    bad = torch.where((bbox[:, 0] > bbox[:, 2]) | (bbox[:, 1] > bbox[:, 3]))[0]
    if len(bad):
        i = int(bad[0])
        raise ValueError('{} row {} has y_min > y_max or x_min > x_max: {} '
                         '(expected (y_min, x_min, y_max, x_max))'.format(
                             name, i, bbox[i].tolist()))


def _check_thresh(**threshes):
    for name, value in threshes.items():
        if not isinstance(value, numbers.Real) or not 0. <= value <= 1.:
            raise ValueError('{} must be a number in [0, 1], got {!r}'.format(
                name, value))


SAMPLERS = ('numpy', 'torch')


def check_sampler(sampler):
    """Raises ValueError unless ``sampler`` is one of :data:`SAMPLERS`."""
    if sampler not in SAMPLERS:
        raise ValueError('sampler must be one of {}, got {!r}'.format(
            ', '.join(repr(s) for s in SAMPLERS), sampler))


def _on_device(values, like):
    """``values`` as a tensor of ``like``'s dtype on its device, copied
    there without waiting (``like.new_tensor`` would wait for the copy)."""
    return torch.tensor(values, dtype=like.dtype).to(like.device,
                                                     non_blocking=True)


def _random_choice(index, size):
    """Picks ``size`` of ``index`` without replacement, as
    ``np.random.choice(index, size, replace=False)`` does: numpy's global
    RNG draws the positions (the same draws as choosing from the array
    itself) and the tensor is indexed on its own device."""
    position = np.random.choice(len(index), size=size, replace=False)
    return index[torch.as_tensor(position, device=index.device)]


def _random_ranking(candidate):
    """Indices of ``candidate``'s True entries first, in a uniformly random
    order (``torch.randperm`` on its device), then the others."""
    perm = torch.randperm(len(candidate), device=candidate.device)
    return perm[(~candidate[perm]).to(torch.uint8).argsort(stable=True)]


def _sample_rois(pos, neg, n_pos_max, n_sample, sampler):
    """Draws the positive and the negative RoIs.

    Args:
        pos (torch.Tensor): :math:`(R',)` bool, the positive candidates.
        neg (torch.Tensor): :math:`(R',)` bool, the negative candidates.
        n_pos_max (int): The most positives.
        n_sample (int): The most samples.
        sampler (str): ``'numpy'``: each set's indices are drawn by
            :func:`_random_choice`, as the original does. ``'torch'``: both
            from :func:`_random_ranking`, their sizes read on the host in
            one transfer.

    Returns:
        (torch.Tensor, torch.Tensor): The indices of the positives drawn
        and of the negatives drawn.
    """
    if sampler == 'torch':
        n_pos_all, n_neg_all = torch.stack((pos.sum(), neg.sum())).tolist()
        n_pos = min(n_pos_max, n_pos_all)
        n_neg = min(n_sample - n_pos, n_neg_all)
        return _random_ranking(pos)[:n_pos], _random_ranking(neg)[:n_neg]
    pos_index = torch.where(pos)[0]
    n_pos = int(min(n_pos_max, len(pos_index)))
    if len(pos_index):
        pos_index = _random_choice(pos_index, n_pos)
    neg_index = torch.where(neg)[0]
    n_neg = int(min(n_sample - n_pos, len(neg_index)))
    if len(neg_index):
        neg_index = _random_choice(neg_index, n_neg)
    return pos_index, neg_index


class ProposalTargetCreator:
    """Assigns ground truth boxes to sampled RoIs for the head's training.

    Samples ``n_sample`` RoIs from the proposals and the gt boxes: positives
    have IoU >= ``pos_iou_thresh`` with some gt box (at most
    ``round(n_sample * pos_ratio)`` of them), negatives have IoU in
    ``[neg_iou_thresh_lo, neg_iou_thresh_hi)``.

    Args:
        n_sample (int): The number of RoIs to sample.
        pos_ratio (float): The largest fraction of positives.
        pos_iou_thresh (float): IoU threshold for a positive.
        neg_iou_thresh_hi (float): A negative's IoU is below this.
        neg_iou_thresh_lo (float): A negative's IoU is at least this
            (py-faster-rcnn's ``BG_THRESH_LO`` is 0.1; this design's 0.0
            lets RoIs that touch no gt box be negatives too).
        sampler (str): What draws the samples. ``'numpy'`` (default):
            numpy's global RNG, the original design's samples under the
            same seed. ``'torch'``: ``torch.randperm`` on the device of the
            inputs, seeded by torch's RNG, with no host round trip but one
            read of the two candidate counts; the counts are the same and
            every sample comes from the same candidates, but the samples
            differ from the original's.
    """

    def __init__(self, n_sample=128, pos_ratio=0.25, pos_iou_thresh=0.5,
                 neg_iou_thresh_hi=0.5, neg_iou_thresh_lo=0.0,
                 sampler='numpy'):
        if n_sample < 1:
            raise ValueError('n_sample must be positive, got {}'.format(n_sample))
        check_sampler(sampler)
        _check_thresh(pos_ratio=pos_ratio, pos_iou_thresh=pos_iou_thresh,
                      neg_iou_thresh_hi=neg_iou_thresh_hi,
                      neg_iou_thresh_lo=neg_iou_thresh_lo)
        if neg_iou_thresh_lo > neg_iou_thresh_hi:
            raise ValueError('neg_iou_thresh_lo ({}) must not exceed '
                             'neg_iou_thresh_hi ({})'.format(
                                 neg_iou_thresh_lo, neg_iou_thresh_hi))
        self.n_sample = n_sample
        self.pos_ratio = pos_ratio
        self.pos_iou_thresh = pos_iou_thresh
        self.neg_iou_thresh_hi = neg_iou_thresh_hi
        self.neg_iou_thresh_lo = neg_iou_thresh_lo
        self.sampler = sampler

    @torch.no_grad()
    def __call__(self, roi, bbox, label,
                 loc_normalize_mean=(0., 0., 0., 0.),
                 loc_normalize_std=(0.1, 0.1, 0.2, 0.2)):
        """Samples RoIs and gives each its target class and offsets.

        The gt boxes are appended to the RoIs before sampling. An image
        without gt boxes gets background samples only.

        Args:
            roi (array): Proposals, shape :math:`(R', 4)`, each
                ``(y_min, x_min, y_max, x_max)``.
            bbox (array): Ground truth boxes, shape :math:`(R, 4)`, same
                order.
            label (array): Ground truth labels in :math:`[0, L - 1]`,
                shape :math:`(R,)`.
            loc_normalize_mean (tuple of four floats): Subtracted from the
                offsets.
            loc_normalize_std (tuple of four floats): Divides the offsets.

        Returns:
            (array, array, array):
            * **sample_roi**: :math:`(S, 4)`, ``(y_min, x_min, y_max, x_max)``.
            * **gt_roi_loc**: :math:`(S, 4)`, normalized offsets from each
              sample to its gt box.
            * **gt_roi_label**: :math:`(S,)` in :math:`[0, L]`, 0 for
              background, dtype of ``label``.
        """
        is_numpy, (roi, bbox, label) = as_tensors(roi, bbox, label)
        check_bbox(bbox)
        bbox = bbox.to(roi, non_blocking=True)
        label = label.to(roi.device, non_blocking=True)
        n_bbox = len(bbox)
        roi = torch.cat((roi, bbox), dim=0)

        if n_bbox:
            iou = bbox_iou(roi, bbox)
            gt_assignment = iou.argmax(dim=1)
            max_iou = iou.gather(1, gt_assignment[:, None])[:, 0]
        else:
            gt_assignment = roi.new_zeros(len(roi), dtype=torch.long)
            max_iou = roi.new_zeros(len(roi))

        pos_index, neg_index = _sample_rois(
            max_iou >= self.pos_iou_thresh,
            (max_iou < self.neg_iou_thresh_hi)
            & (max_iou >= self.neg_iou_thresh_lo),
            round(self.n_sample * self.pos_ratio), self.n_sample,
            self.sampler)
        n_pos = len(pos_index)
        keep_index = torch.cat((pos_index, neg_index))
        sample_roi = roi[keep_index]
        gt_roi_label = label.new_zeros(len(keep_index))
        if n_bbox:
            gt_roi_label[:n_pos] = label[gt_assignment[pos_index]] + 1
            gt_roi_loc = bbox2loc(sample_roi, bbox[gt_assignment[keep_index]])
        else:
            gt_roi_loc = roi.new_zeros((len(keep_index), 4))
        mean = _on_device(loc_normalize_mean, roi)
        std = _on_device(loc_normalize_std, roi)
        gt_roi_loc = (gt_roi_loc - mean) / std
        return as_output(is_numpy, sample_roi, gt_roi_loc, gt_roi_label)


class AnchorTargetCreator:
    """Assigns ground truth boxes to anchors for the RPN's training.

    Only anchors inside the image are labelled (by default fully inside;
    see ``allowed_border``). An anchor is positive when its IoU with some gt
    box is >= ``pos_iou_thresh`` or when it ties for a gt box's highest IoU;
    negative when its best IoU is below ``neg_iou_thresh``. Positives beyond
    ``n_sample * pos_ratio`` and negatives beyond ``n_sample`` minus the
    positives are dropped at random.

    The last two arguments are py-faster-rcnn's choices
    (``lib/rpn/anchor_target_layer.py``); their defaults are this design's.

    Args:
        n_sample (int): The number of anchors to sample.
        pos_iou_thresh (float): IoU threshold for a positive.
        neg_iou_thresh (float): A negative's best IoU is below this.
        pos_ratio (float): The largest fraction of positives.
        clobber_positives (bool): Assign the negatives after the positives
            (py-faster-rcnn's ``RPN_CLOBBER_POSITIVES``), so that a gt box's
            best anchor whose IoU is below ``neg_iou_thresh`` ends negative.
            Default False: negatives first, then positives override them.
        allowed_border (number or None): Label the anchors reaching at most
            this many pixels outside the image: ``y_min >= -b``,
            ``x_min >= -b``, ``y_max <= H + b``, ``x_max <= W + b``
            (py-faster-rcnn's ``allowed_border``, in this library's
            convention without its +1 widths). 0 (default): fully inside
            the image; None: every anchor, as torchvision does.
        sampler (str): What draws the anchors dropped. ``'numpy'``
            (default): numpy's global RNG, the original design's samples
            under the same seed. ``'torch'``: ``torch.randperm`` on the
            device of the inputs, seeded by torch's RNG, with nothing read
            on the host; the counts are the same and every sample comes
            from the same candidates, but the samples differ from the
            original's.
    """

    def __init__(self, n_sample=256, pos_iou_thresh=0.7, neg_iou_thresh=0.3,
                 pos_ratio=0.5, clobber_positives=False, allowed_border=0,
                 sampler='numpy'):
        if n_sample < 1:
            raise ValueError('n_sample must be positive, got {}'.format(n_sample))
        check_sampler(sampler)
        _check_thresh(pos_iou_thresh=pos_iou_thresh,
                      neg_iou_thresh=neg_iou_thresh, pos_ratio=pos_ratio)
        if neg_iou_thresh > pos_iou_thresh:
            raise ValueError('neg_iou_thresh ({}) must not exceed '
                             'pos_iou_thresh ({})'.format(neg_iou_thresh,
                                                          pos_iou_thresh))
        if not isinstance(clobber_positives, bool):
            raise ValueError('clobber_positives must be True or False, got '
                             '{!r}'.format(clobber_positives))
        if allowed_border is not None and (
                isinstance(allowed_border, bool) or
                not isinstance(allowed_border, (int, float)) or
                not np.isfinite(allowed_border)):
            raise ValueError('allowed_border must be a number of pixels or '
                             'None (no filter), got {!r}'.format(
                                 allowed_border))
        self.n_sample = n_sample
        self.pos_iou_thresh = pos_iou_thresh
        self.neg_iou_thresh = neg_iou_thresh
        self.pos_ratio = pos_ratio
        self.clobber_positives = clobber_positives
        self.allowed_border = allowed_border
        self.sampler = sampler

    @torch.no_grad()
    def __call__(self, bbox, anchor, img_size):
        """Labels the anchors and gives each its offsets to its best gt box.

        Args:
            bbox (array): Ground truth boxes, shape :math:`(R, 4)`, each
                ``(y_min, x_min, y_max, x_max)``; R may be 0.
            anchor (array): Anchors, shape :math:`(S, 4)`, same order.
            img_size (tuple of ints): ``(H, W)`` of the image.

        Returns:
            (array, array):
            * **loc**: :math:`(S, 4)` offsets from each anchor to its best gt
              box; 0 for the anchors left unlabelled as outside the image.
            * **label**: :math:`(S,)` int32, 1 positive, 0 negative, -1
              ignored.
        """
        is_numpy, (bbox, anchor) = as_tensors(bbox, anchor)
        check_bbox(bbox)
        bbox = bbox.to(anchor, non_blocking=True)
        img_H, img_W = img_size
        inside = _inside(anchor, img_H, img_W, self.allowed_border)
        argmax_ious, label = self._create_label(anchor, bbox, inside)

        if len(bbox):
            loc = bbox2loc(anchor, bbox[argmax_ious])
            loc = loc.masked_fill(~inside[:, None], 0)
        else:
            loc = anchor.new_zeros((len(anchor), 4))
        return as_output(is_numpy, loc, label)

    def _create_label(self, anchor, bbox, inside):
        """Labels the anchors (-1 outside the image), then drops positives
        and negatives beyond their numbers at random."""
        label = torch.full((len(anchor),), -1, dtype=torch.int32,
                           device=anchor.device)
        argmax_ious, max_ious, gt_best = _calc_ious(anchor, bbox, inside)
        negative = inside & (max_ious < self.neg_iou_thresh)

        if not self.clobber_positives:
            label.masked_fill_(negative, 0)
        label.masked_fill_(gt_best | (inside & (max_ious >=
                                                self.pos_iou_thresh)), 1)
        if self.clobber_positives:
            label.masked_fill_(negative, 0)

        n_pos = int(self.pos_ratio * self.n_sample)
        _subsample(label, 1, n_pos, self.sampler)
        n_neg = self.n_sample - (label == 1).sum()
        _subsample(label, 0, n_neg, self.sampler)
        return argmax_ious, label


def _subsample(label, value, n_keep, sampler='numpy'):
    """Sets to -1, in place, all but ``n_keep`` of the labels equal to
    ``value``, chosen at random.

    With ``sampler='numpy'`` the dropped ones are drawn as the original
    design does: ``np.random.choice`` over their indices in ascending order.
    With ``sampler='torch'`` those ranked beyond ``n_keep`` by
    :func:`_random_ranking` are dropped: ``n_keep`` may then be a tensor on
    the label's device, and nothing is read on the host.

    Args:
        label (torch.Tensor): :math:`(S,)` int32 anchor labels.
        value (int): The label to subsample (1 or 0).
        n_keep (int or torch.Tensor): How many to keep at most.
        sampler (str): ``'numpy'`` or ``'torch'``.
    """
    candidate = label == value
    if sampler == 'torch':
        order = _random_ranking(candidate)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order), device=order.device)
        label.masked_fill_(candidate & (rank >= n_keep), -1)
        return
    index = torch.where(candidate)[0]
    n_keep = int(n_keep)
    if len(index) > n_keep:
        label[_random_choice(index, len(index) - n_keep)] = -1


def _calc_ious(anchor, bbox, inside):
    """Best gt box of each anchor and its IoU, and which anchors inside the
    image tie for the best IoU of some gt box.

    Args:
        anchor (torch.Tensor): :math:`(S, 4)` anchors.
        bbox (torch.Tensor): :math:`(R, 4)` gt boxes.
        inside (torch.Tensor): :math:`(S,)` bool, the anchors to label;
            the others are left out of every gt box's best.

    Returns:
        (torch.Tensor, torch.Tensor, torch.Tensor): :math:`(S,)` each: the
        best gt box's index, its IoU (-1 outside) and the ties (bool).
    """
    if len(bbox) == 0 or len(anchor) == 0:
        argmax_ious = anchor.new_zeros(len(anchor), dtype=torch.long)
        max_ious = anchor.new_zeros(len(anchor))
        return argmax_ious, max_ious, torch.zeros_like(inside)
    ious = bbox_iou(anchor, bbox).masked_fill(~inside[:, None], -1.)
    argmax_ious = ious.argmax(dim=1)
    max_ious = ious.gather(1, argmax_ious[:, None])[:, 0]
    gt_max_ious = ious.max(dim=0).values
    gt_best = inside & (ious == gt_max_ious).any(dim=1)
    return argmax_ious, max_ious, gt_best


def _inside(anchor, H, W, allowed_border=0):
    """:math:`(S,)` bool: the anchors lying inside an H x W image widened
    by ``allowed_border`` pixels on every side (all anchors when None)."""
    if allowed_border is None:
        return torch.ones(len(anchor), dtype=torch.bool, device=anchor.device)
    b = allowed_border
    return ((anchor[:, 0] >= -b) & (anchor[:, 1] >= -b) &
            (anchor[:, 2] <= H + b) & (anchor[:, 3] <= W + b))


class ProposalCreator:
    """Turns the RPN's predictions on anchors into proposals (RoIs).

    Decodes the offsets on the anchors, clips to the image, drops boxes
    smaller than ``min_size * scale``, keeps the ``n_pre_nms`` best by
    score, suppresses overlaps at ``nms_thresh`` and keeps the first
    ``n_post_nms``. The train or test counts are used according to
    ``parent_model.training``.

    Args:
        parent_model (torch.nn.Module): The module whose ``training`` flag
            picks the counts (the RPN that owns this creator).
        nms_thresh (float): IoU threshold of the NMS.
        n_train_pre_nms (int): Boxes kept before NMS in training.
        n_train_post_nms (int): Boxes kept after NMS in training.
        n_test_pre_nms (int): Boxes kept before NMS in testing.
        n_test_post_nms (int): Boxes kept after NMS in testing.
        min_size (int): Smallest height and width, in pixels of the
            original image.
    """

    def __init__(self, parent_model, nms_thresh=0.7, n_train_pre_nms=12000,
                 n_train_post_nms=2000, n_test_pre_nms=6000,
                 n_test_post_nms=300, min_size=16):
        _check_thresh(nms_thresh=nms_thresh)
        self.parent_model = parent_model
        self.nms_thresh = nms_thresh
        self.n_train_pre_nms = n_train_pre_nms
        self.n_train_post_nms = n_train_post_nms
        self.n_test_pre_nms = n_test_pre_nms
        self.n_test_post_nms = n_test_post_nms
        self.min_size = min_size

    @torch.no_grad()
    def __call__(self, loc, score, anchor, img_size, scale=1.):
        """Proposes RoIs for one image.

        Args:
            loc (array): Predicted offsets, shape :math:`(HWA, 4)`.
            score (array): Predicted foreground probabilities,
                shape :math:`(HWA,)`.
            anchor (array): Anchors, shape :math:`(HWA, 4)`, each
                ``(y_min, x_min, y_max, x_max)``.
            img_size (tuple of ints): ``(H, W)`` of the scaled image.
            scale (float): The scaling applied to the original image.

        Returns:
            array: Proposals, shape :math:`(R', 4)`, each
            ``(y_min, x_min, y_max, x_max)``, best first.
        """
        is_numpy, (loc, score, anchor) = as_tensors(loc, score, anchor)
        if self.parent_model.training:
            n_pre_nms = self.n_train_pre_nms
            n_post_nms = self.n_train_post_nms
        else:
            n_pre_nms = self.n_test_pre_nms
            n_post_nms = self.n_test_post_nms

        roi = loc2bbox(anchor, loc)
        roi[:, 0::2] = roi[:, 0::2].clamp(0, img_size[0])
        roi[:, 1::2] = roi[:, 1::2].clamp(0, img_size[1])

        min_size = self.min_size * scale
        hs = roi[:, 2] - roi[:, 0]
        ws = roi[:, 3] - roi[:, 1]
        keep = torch.where((hs >= min_size) & (ws >= min_size))[0]
        roi = roi[keep]
        score = score[keep]

        # Best first. The original's np.argsort(score)[::-1] leaves tied
        # scores in an order that depends on numpy's version and the CPU;
        # here ties go in the reverse of index order, on every device.
        order = score.argsort(stable=True).flip(0)
        if n_pre_nms > 0:
            order = order[:n_pre_nms]
        roi = roi[order]
        keep = nms(roi, score[order], self.nms_thresh)
        if n_post_nms > 0:
            keep = keep[:n_post_nms]
        return as_output(is_numpy, roi[keep])
