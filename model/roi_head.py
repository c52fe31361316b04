"""The RoI head of Faster R-CNN: pool each RoI, classify it, refine its box.

Shape shorthand: N batch, C channels, R' RoIs of the batch, L foreground
classes (the head predicts L + 1 with 0 = background).
"""
from torch import nn
from torchvision.ops import RoIPool

from model.utils.layers import normal_init, roi_pool_yx


class RoIHead(nn.Module):
    """RoIPool, a classifier, and the class and box predictors.

    Any extractor's head: ``classifier`` turns the flattened pooled features
    into ``n_feature`` values per RoI (VGG16's fc6 and fc7 in
    :class:`model.faster_rcnn_vgg16.VGG16RoIHead`, two small layers in the
    toy model).

    The RoIs come as ``(y_min, x_min, y_max, x_max)``, this library's box
    order; :func:`model.utils.layers.roi_pool_yx` reorders them to the
    ``(x_min, y_min, x_max, y_max)`` that torchvision's ops want.

    Args:
        n_class (int): The number of classes, background included (L + 1).
        roi_size (int): Height and width of the pooled features.
        spatial_scale (float): Feature size over image size.
        classifier (nn.Module): ``(R', C * roi_size ** 2) -> (R', n_feature)``.
        n_feature (int): Width of the classifier's output.
    """

    def __init__(self, n_class, roi_size, spatial_scale, classifier,
                 n_feature=4096):
        super().__init__()
        self.classifier = classifier
        self.cls_loc = nn.Linear(n_feature, n_class * 4)
        self.score = nn.Linear(n_feature, n_class)
        normal_init(self.cls_loc, 0, 0.001)
        normal_init(self.score, 0, 0.01)
        self.n_class = n_class
        self.roi_size = roi_size
        self.spatial_scale = spatial_scale
        self.roi = RoIPool((roi_size, roi_size), spatial_scale)

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
