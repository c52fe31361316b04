"""The RoI head of Faster R-CNN: pool each RoI, classify it, refine its box.

Shape shorthand: N batch, C channels, R' RoIs of the batch, L foreground
classes (the head predicts L + 1 with 0 = background).
"""
from torch import nn
from torchvision.ops import RoIAlign, RoIPool

from model.utils.layers import normal_init, roi_pool_yx


def roi_layer(roi_op, roi_size, spatial_scale, sampling_ratio=0,
              aligned=True):
    """torchvision's RoIPool or RoIAlign, as ``roi_op`` says.

    Args:
        roi_op ({'pool', 'align'}): RoIPool (the max of each bin, on the
            feature cells the bin's rounded bounds cover) or RoIAlign (the
            average of bilinearly interpolated sample points in each bin).
        roi_size (int): Height and width of the pooled features.
        spatial_scale (float): Feature size over image size.
        sampling_ratio (int): RoIAlign: sample points per bin along each
            side; 0 (or less): adaptive, ``ceil(h / roi_size)`` along the
            height for an RoI ``h`` feature cells high (likewise along the
            width), about one per feature cell the bin covers.
        aligned (bool): RoIAlign: shift the boxes by half a feature cell so
            that a feature cell's centre sits at the centre of the pixels it
            was computed from (detectron2's ROIAlignV2).

    Returns:
        nn.Module
    """
    if roi_op == 'pool':
        return RoIPool((roi_size, roi_size), spatial_scale)
    if roi_op == 'align':
        if isinstance(sampling_ratio, bool) or not isinstance(
                sampling_ratio, int):
            raise ValueError('sampling_ratio must be an int (0: adaptive), '
                             'got {!r}'.format(sampling_ratio))
        if not isinstance(aligned, bool):
            raise ValueError('aligned must be True or False, got {!r}'.format(
                aligned))
        return RoIAlign((roi_size, roi_size), spatial_scale,
                        sampling_ratio=sampling_ratio, aligned=aligned)
    raise ValueError("roi_op must be 'pool' (RoIPool) or 'align' (RoIAlign), "
                     'got {!r}'.format(roi_op))


class RoIHead(nn.Module):
    """RoI pooling, a classifier, and the class and box predictors.

    Any extractor's head: ``classifier`` turns the flattened pooled features
    into ``n_feature`` values per RoI (VGG16's fc6 and fc7 in
    :class:`model.faster_rcnn_vgg16.VGG16RoIHead`, two small layers in the
    toy model).

    The RoIs come as ``(y_min, x_min, y_max, x_max)``, this library's box
    order; :func:`model.utils.layers.roi_pool_yx` reorders them to the
    ``(x_min, y_min, x_max, y_max)`` that torchvision's ops want.

    The pooling is this design's RoIPool by default; ``roi_op='align'``
    uses RoIAlign, as torchvision's and detectron2's Faster R-CNN do. The
    defaults of ``sampling_ratio`` (0, adaptive) and ``aligned`` (True) are
    detectron2's ROIAlignV2: with this library's boxes, where a box's
    edges are pixel edges (width = x_max - x_min), the feature cell at
    stride s covers pixels ``[s i, s i + s)`` and its value belongs at
    their centre ``s i + s / 2``; ``aligned=True`` samples there, False
    (torchvision's Faster R-CNN, with ``sampling_ratio=2``) half a cell off.
    The choice has no weights, so it is recorded in the model's state dict
    by :class:`model.faster_rcnn.FasterRCNN` (see :attr:`roi_settings`).

    Args:
        n_class (int): The number of classes, background included (L + 1).
        roi_size (int): Height and width of the pooled features.
        spatial_scale (float): Feature size over image size.
        classifier (nn.Module): ``(R', C * roi_size ** 2) -> (R', n_feature)``.
        n_feature (int): Width of the classifier's output.
        roi_op ({'pool', 'align'}): RoIPool or RoIAlign.
        sampling_ratio (int): RoIAlign's sample points per bin along each
            side; 0: adaptive (see :func:`roi_layer`).
        aligned (bool): RoIAlign's half-cell shift (see :func:`roi_layer`).
    """

    def __init__(self, n_class, roi_size, spatial_scale, classifier,
                 n_feature=4096, roi_op='pool', sampling_ratio=0,
                 aligned=True):
        roi = roi_layer(roi_op, roi_size, spatial_scale, sampling_ratio,
                        aligned)
        super().__init__()
        self.classifier = classifier
        self.cls_loc = nn.Linear(n_feature, n_class * 4)
        self.score = nn.Linear(n_feature, n_class)
        normal_init(self.cls_loc, 0, 0.001)
        normal_init(self.score, 0, 0.01)
        self.n_class = n_class
        self.roi_size = roi_size
        self.spatial_scale = spatial_scale
        self.roi_op = roi_op
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.roi = roi

    @property
    def roi_settings(self):
        """dict: How this head pools: ``roi_op``, and for RoIAlign its
        ``sampling_ratio`` and ``aligned``."""
        if self.roi_op == 'pool':
            return dict(roi_op='pool')
        return dict(roi_op=self.roi_op, sampling_ratio=self.sampling_ratio,
                    aligned=self.aligned)

    def forward(self, x, rois, roi_indices):
        """Class scores and box offsets of each RoI.

        Args:
            x (torch.Tensor): Features, :math:`(N, C, H, W)`.
            rois (torch.Tensor): :math:`(R', 4)`, each
                ``(y_min, x_min, y_max, x_max)`` in input pixels.
            roi_indices (torch.Tensor): :math:`(R',)`, the image of each RoI.

        Returns:
            (torch.Tensor, torch.Tensor): roi_cls_locs
            :math:`(R', (L + 1) \\times 4)` and roi_scores
            :math:`(R', L + 1)`, in this order.
        """
        pool = roi_pool_yx(self.roi, x, rois, roi_indices)
        h = self.classifier(pool.flatten(1))
        return self.cls_loc(h), self.score(h)
