"""Small helpers shared by the RPN and the heads.

Shape shorthand: N batch, C channels, R' RoIs of the batch.
"""
import torch


def normal_init(m, mean, stddev):
    """Weights from N(mean, stddev), biases zero."""
    m.weight.data.normal_(mean, stddev)
    m.bias.data.zero_()


def full_precision(*tensors):
    """float16 and bfloat16 tensors (outputs of layers under autocast) as
    float32; others as they are, so that float32 and float64 pass through
    untouched. Boxes, targets and losses are computed from these.
    """
    out = tuple(t.float() if t.dtype in (torch.float16, torch.bfloat16)
                else t for t in tensors)
    return out if len(out) > 1 else out[0]


def roi_pool_yx(roi_layer, x, rois, roi_indices):
    """Applies a torchvision RoI op to boxes in ``(y_min, x_min, y_max,
    x_max)`` order: the op wants ``(index, x_min, y_min, x_max, y_max)``.

    Under autocast the pooling runs in float32, features and RoIs alike:
    casting the RoIs to half precision would round their coordinates (to
    0.5 px between 512 and 1024 in float16, to 4 px in bfloat16).

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
    if torch.is_autocast_enabled(x.device.type):
        x = full_precision(x)
    rois = torch.as_tensor(rois, dtype=x.dtype, device=x.device)
    roi_indices = torch.as_tensor(roi_indices, device=x.device).to(x.dtype)
    indices_and_rois = torch.cat([roi_indices[:, None], rois], dim=1)
    return roi_layer(x, indices_and_rois[:, [0, 2, 1, 4, 3]].contiguous())
