"""Small helpers shared by the RPN and the heads.

Shape shorthand: N batch, C channels, R' RoIs of the batch.
"""
import torch


def normal_init(m, mean, stddev):
    """Weights from N(mean, stddev), biases zero."""
    m.weight.data.normal_(mean, stddev)
    m.bias.data.zero_()


def roi_pool_yx(roi_layer, x, rois, roi_indices):
    """Applies a torchvision RoI op to boxes in ``(y_min, x_min, y_max,
    x_max)`` order: the op wants ``(index, x_min, y_min, x_max, y_max)``.

    Args:
        roi_layer (nn.Module): e.g. ``torchvision.ops.RoIPool`` or
            ``torchvision.ops.RoIAlign``.
        x (torch.Tensor): Features, :math:`(N, C, H, W)`.
        rois (torch.Tensor): :math:`(R', 4)`, each
            ``(y_min, x_min, y_max, x_max)`` in input pixels.
        roi_indices (torch.Tensor): :math:`(R',)`, the image of each RoI.

    Returns:
        torch.Tensor: pooled features, :math:`(R', C, h, w)`.
    """
    rois = torch.as_tensor(rois, dtype=x.dtype, device=x.device)
    roi_indices = torch.as_tensor(roi_indices, device=x.device).to(x.dtype)
    indices_and_rois = torch.cat([roi_indices[:, None], rois], dim=1)
    return roi_layer(x, indices_and_rois[:, [0, 2, 1, 4, 3]].contiguous())
