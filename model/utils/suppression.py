"""Per-class non-maximum suppression of a detector's class boxes.

Shape shorthand: R RoIs, L foreground classes, C candidates.
"""
import torch
from torchvision import ops

# One nms per class (the original's), or torchvision's batched_nms.
SUPPRESSIONS = ('per_class', 'batched')


def suppress(cls_bbox, prob, score_thresh, nms_thresh, how='per_class',
             min_size=0., n_max=None):
    """Thresholds and suppresses each foreground class's boxes.

    Every (RoI, foreground class) pair scored above ``score_thresh`` (and,
    with ``min_size``, at least that high and wide) is a candidate. With
    ``how='per_class'`` each class goes through its own ``nms``, as in the
    original; with ``'batched'`` all go through one
    :func:`torchvision.ops.batched_nms`, as torchvision and detectron2 do,
    which may decide a pair whose IoU is within float rounding of
    ``nms_thresh`` the other way (its class offset rounds the coordinates).
    A recording by torch.export always takes the batched way.

    Args:
        cls_bbox (torch.Tensor): :math:`(R, (L + 1) \\times 4)`, each box
            ``(y_min, x_min, y_max, x_max)``.
        prob (torch.Tensor): :math:`(R, L + 1)` class probabilities.
        score_thresh (float): Keep pairs scoring above this.
        nms_thresh (float): Suppress a box whose IoU with a better-scored
            box of its class is above this.
        how ({'per_class', 'batched'}): See above.
        min_size (float): Drop boxes less high or wide than this.
        n_max (int): Keep at most this many, the best scored; None: all.

    Returns:
        (torch.Tensor, torch.Tensor, torch.Tensor): bbox :math:`(R'', 4)`,
        label :math:`(R'',)` int64 in :math:`[0, L - 1]` and score
        :math:`(R'',)`, grouped by class in class order, each class by
        descending score, ties in RoI order.
    """
    bbox, score, label = candidates(cls_bbox, prob, score_thresh)
    if min_size > 0:
        size = torch.minimum(bbox[:, 2] - bbox[:, 0], bbox[:, 3] - bbox[:, 1])
        big = torch.where(size >= min_size)[0]
        bbox, score, label = bbox[big], score[big], label[big]
    if how == 'batched' or torch.compiler.is_exporting():
        keep = batched_nms(bbox, score, label, nms_thresh)
    else:
        keep = per_class_nms(bbox, score, label, prob.shape[1] - 1,
                             nms_thresh)
    if n_max is not None:
        keep = keep[score[keep].sort(descending=True, stable=True)[1]][:n_max]
    keep = per_class_order(keep, score, label)
    return bbox[keep], label[keep], score[keep]


def candidates(cls_bbox, prob, score_thresh):
    """Every (RoI, foreground class) pair scored above ``score_thresh``,
    class-major: a class's boxes in RoI order.

    Returns:
        (torch.Tensor, torch.Tensor, torch.Tensor): bbox :math:`(C, 4)`,
        score :math:`(C,)` and label :math:`(C,)` int64 in
        :math:`[0, L - 1]` of the C candidates.
    """
    n_class = prob.shape[1]
    score = prob[:, 1:].transpose(0, 1)
    bbox = cls_bbox.reshape(-1, n_class, 4)[:, 1:].transpose(0, 1).reshape(
        -1, 4)
    label = torch.arange(n_class - 1, device=prob.device)[:, None].expand_as(
        score).reshape(-1)
    score = score.reshape(-1)
    candidate = torch.where(score > score_thresh)[0]
    return bbox[candidate], score[candidate], label[candidate]


def per_class_order(keep, score, label):
    """The indices ``keep`` by class, then descending score, then index
    (stable sorts, the last key first)."""
    keep = keep.sort()[0]
    keep = keep[score[keep].sort(descending=True, stable=True)[1]]
    return keep[label[keep].sort(stable=True)[1]]


def per_class_nms(bbox, score, label, n_class, nms_thresh):
    """Indices kept by ``nms`` run on each of the L classes alone."""
    keep = [label[:0]]
    for l in range(n_class):
        index = torch.where(label == l)[0]
        keep.append(index[ops.nms(bbox[index], score[index], nms_thresh)])
    return torch.cat(keep)


def batched_nms(bbox, score, label, nms_thresh):
    """:func:`torchvision.ops.batched_nms`; in a torch.export recording its
    strategy for few boxes (one nms over boxes offset by class), which
    batched_nms would choose by the number of boxes, unknown there.

    Two zero-area boxes, scored lowest, join the recorded nms and leave its
    result: torchvision 0.28's shape rule for nms, asserted at run time,
    promises at least two boxes kept.
    """
    if not torch.compiler.is_exporting():
        return ops.batched_nms(bbox, score, label, nms_thresh)
    n = bbox.shape[0]
    bbox = torch.cat((bbox, bbox.new_zeros((2, 4))))
    score = torch.cat((score, score.new_full((2,), -1.)))
    label = torch.cat((label, label.new_zeros((2,))))
    offset = label.to(bbox) * (bbox.max() + 1)
    keep = ops.nms(bbox + offset[:, None], score, nms_thresh)
    return keep[keep < n]
