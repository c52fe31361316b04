"""Per-class non-maximum suppression of predict's detections, class by
class (the original's) or all classes in one batched call, checked so
that both keep the same boxes.

Shape shorthand: R RoIs, L foreground classes, C candidates, K kept.
"""
import torch
from torchvision.ops import batched_nms, nms

# How far from ``nms_thresh`` an IoU must lie for the check of
# checked_batched_nms to trust its own reading of it: torchvision's kernels
# compute the IoU as nms_iou does, but CUDA's compares it with the
# threshold in float32 and may fuse a multiply-add, which moves an IoU by a
# few units in the last place of float32 (2 ** -23 at 1).
IOU_MARGIN = 2 ** -20


def candidates(cls_bbox, prob, score_thresh):
    """Every (RoI, foreground class) pair scored above ``score_thresh``,
    class-major: a class's boxes in RoI order, so that an index order is a
    (class, RoI) order.

    Args:
        cls_bbox (torch.Tensor): :math:`(R, (L + 1) \\times 4)`, each box
            ``(y_min, x_min, y_max, x_max)``.
        prob (torch.Tensor): :math:`(R, L + 1)` class probabilities.
        score_thresh (float): Keep pairs scoring above this.

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
    """The indices ``keep`` (of :func:`candidates`) in per-class nms's
    order, whatever order the suppression gave them in: by class, then
    descending score, then RoI (stable sorts, the last key first)."""
    keep = keep.sort()[0]
    keep = keep[score[keep].sort(descending=True, stable=True)[1]]
    return keep[label[keep].sort(stable=True)[1]]


def per_class_nms(bbox, score, label, classes, nms_thresh):
    """Indices kept by ``nms`` run on each of ``classes``' candidates
    alone, on their device (torchvision's own way for large inputs)."""
    keep = [label[:0]]
    for l in classes:
        index = torch.where(label == l)[0]
        keep.append(index[nms(bbox[index], score[index], nms_thresh)])
    return torch.cat(keep)


def checked_batched_nms(bbox, score, label, n_class, n_roi, nms_thresh):
    """The indices :func:`per_class_nms` keeps, from one
    :func:`torchvision.ops.batched_nms` call.

    batched_nms separates the classes by adding a class offset to the
    coordinates, whose rounding can decide an IoU within float rounding of
    ``nms_thresh`` the other way. So its result is checked on the device
    (:func:`doubtful_classes`), and the rare class it leaves in doubt is
    suppressed again on its own.

    Args:
        bbox (torch.Tensor): :math:`(C, 4)` candidates in class-major,
            RoI order, as :func:`candidates` gives them.
        score (torch.Tensor): :math:`(C,)`.
        label (torch.Tensor): :math:`(C,)` in :math:`[0, L - 1]`.
        n_class (int): L.
        n_roi (int): R, the most candidates a class can have.
        nms_thresh (float): Suppress a box whose IoU with a better-scored
            box of its class is above this.

    Returns:
        torch.Tensor: :math:`(K,)` the indices kept, in no set order.
    """
    keep = batched_nms(bbox, score, label, nms_thresh)
    doubt = doubtful_classes(bbox, score, label, keep, n_class, n_roi,
                             nms_thresh)
    if not doubt.any():  # the check's one read on the host
        return keep
    redo = torch.where(doubt)[0].tolist()
    return torch.cat((keep[~doubt[label[keep]]],
                      per_class_nms(bbox, score, label, redo, nms_thresh)))


def doubtful_classes(bbox, score, label, keep, n_class, n_roi, nms_thresh):
    """The classes whose kept indices ``keep`` may differ from ``nms`` run
    on the class alone.

    Greedy suppression keeps a candidate exactly when no kept candidate of
    its class ranked above it (higher score, or the same score and an
    earlier RoI) has an IoU above ``nms_thresh`` with it; only its result
    has that property. A class is in doubt when ``keep`` breaks that rule
    for it, when an IoU that the rule reads lies within
    :data:`IOU_MARGIN` of ``nms_thresh``, or when a kept candidate ties in
    score with another that it overlaps (nms's sort may rank ties either
    way, and which one stays then depends on it; where no kept candidate
    does, every ranking of ties keeps the same).

    Each kept candidate is compared with every candidate of its class: a
    class's candidates are consecutive, at most R of them.

    Args:
        bbox (torch.Tensor): :math:`(C, 4)` candidates in class-major, RoI
            order.
        score (torch.Tensor): :math:`(C,)`.
        label (torch.Tensor): :math:`(C,)` in :math:`[0, L - 1]`.
        keep (torch.Tensor): :math:`(K,)` indices of kept candidates.
        n_class (int): L.
        n_roi (int): R, the most candidates a class can have.
        nms_thresh (float): The IoU threshold of the suppression.

    Returns:
        torch.Tensor: :math:`(L,)` bool, True for a class in doubt.
    """
    # (index_add_ rather than bincount or masks, whose sizes on a GPU
    # would be read on the host)
    count = label.new_zeros(n_class).index_add_(0, label,
                                                torch.ones_like(label))
    end = count.cumsum(0)
    start = end - count
    kept = torch.zeros_like(label, dtype=torch.bool)
    kept[keep] = True
    suppressed = torch.zeros_like(label)
    doubts = torch.zeros_like(count)
    offset = torch.arange(n_roi, device=label.device)
    for rows in keep.split(max(1, 2 ** 20 // max(n_roi, 1))):  # (K',)
        row_label = label[rows]
        # the candidates of each row's class, padded to R: (K', R)
        cols = start[row_label, None] + offset
        valid = cols < end[row_label, None]
        cols = cols.clamp(max=len(label) - 1)
        excess = nms_iou(bbox[rows], bbox[cols]).double() - nms_thresh
        tie = score[rows, None] == score[cols]
        above = valid & ((score[rows, None] > score[cols])
                         | tie & (rows[:, None] < cols))
        suppressed.index_add_(0, cols.flatten(),
                              (above & (excess > 0)).flatten().long())
        near = above & (excess.abs() <= IOU_MARGIN)
        overlapping_tie = (valid & tie & (rows[:, None] != cols)
                           & (excess > -IOU_MARGIN))
        doubts.index_add_(0, row_label,
                          (near | overlapping_tie).any(1).long())
    wrong = kept == (suppressed > 0)  # kept though suppressed, or neither
    return doubts.index_add_(0, label, wrong.long()) > 0


def nms_iou(bbox_a, bbox_b):
    """IoU of each box of ``bbox_a`` with each box of its row of ``bbox_b``,
    computed as torchvision's ``nms`` computes it (the same operations in
    the same order and dtype).

    Args:
        bbox_a (torch.Tensor): :math:`(A, 4)`.
        bbox_b (torch.Tensor): :math:`(A, B, 4)`.

    Returns:
        torch.Tensor: :math:`(A, B)`.
    """
    def area(bbox):
        return (bbox[..., 2] - bbox[..., 0]) * (bbox[..., 3] - bbox[..., 1])

    bbox_a = bbox_a[:, None]
    top_left = torch.maximum(bbox_a[..., :2], bbox_b[..., :2])
    bottom_right = torch.minimum(bbox_a[..., 2:], bbox_b[..., 2:])
    size = (bottom_right - top_left).clamp(min=0)
    inter = size[..., 0] * size[..., 1]
    return inter / (area(bbox_a) + area(bbox_b) - inter)
