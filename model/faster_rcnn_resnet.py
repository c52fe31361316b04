"""Faster R-CNN on ResNet-50 and ResNet-101, in the "C4" form.

The C4 form is the one of the ResNet paper's detection experiments, of
jwyang/faster-rcnn.pytorch and of detectron2's ``R_50_C4`` / ``R_101_C4``:
torchvision's ResNet through ``layer3`` (conv4_x, stride 16, 1024 channels)
is the extractor shared by the RPN and the head; each RoI is pooled to
14 x 14 (RoIPool or RoIAlign) and goes through ``layer4`` (conv5_x, stride
2: 7 x 7, 2048 channels) and a global average pool, which play the part of
VGG16's fc6 and fc7, before the same class and box predictors.

As in those projects, ``conv1`` and ``layer1`` are frozen, and every
BatchNorm is frozen too: its statistics and its affine parameters stay the
ImageNet ones (:class:`torchvision.ops.FrozenBatchNorm2d`), since a batch of
one image, or of 128 RoIs of one image, gives no useful batch statistics.
Input is normalized as torchvision's ImageNet models expect.

Shape shorthand: N batch, R' RoIs of the batch, L foreground classes.
"""
import os

from torch import nn
from torchvision.models import (ResNet50_Weights, ResNet101_Weights,
                                resnet50, resnet101)
from torchvision.ops import FrozenBatchNorm2d

from model.faster_rcnn import FasterRCNN
from model.region_proposal_network import RegionProposalNetwork
from model.roi_head import RoIHead
from model.utils.checkpoint import (model_state_dict, read_checkpoint,
                                    torchvision_state_dict)

# builder, ImageNet weights, and the name the offline error gives them
RESNETS = {
    'resnet50': (resnet50, ResNet50_Weights.IMAGENET1K_V1,
                 'ImageNet ResNet-50'),
    'resnet101': (resnet101, ResNet101_Weights.IMAGENET1K_V1,
                  'ImageNet ResNet-101'),
}


def decom_resnet(arch='resnet50', pretrained=True):
    """Splits a torchvision ResNet into the C4 extractor and head top.

    Every BatchNorm is a :class:`torchvision.ops.FrozenBatchNorm2d`; the
    extractor's ``conv1`` and ``layer1`` do not train.

    Args:
        arch ({'resnet50', 'resnet101'}): Which ResNet.
        pretrained (bool): torchvision's ImageNet weights (from torchvision's
            cache, or downloaded), or random init.

    Returns:
        (nn.Sequential, nn.Sequential): the extractor ``conv1`` ..
        ``layer3``, :math:`(N, 3, H, W) -> (N, 1024, H / 16, W / 16)`, and
        ``layer4``, :math:`(R', 1024, h, w) -> (R', 2048, h / 2, w / 2)`.
    """
    if arch not in RESNETS:
        raise ValueError('arch must be one of {}, got {!r}'.format(
            sorted(RESNETS), arch))
    build, weights, name = RESNETS[arch]
    model = build(weights=None, norm_layer=FrozenBatchNorm2d)
    if pretrained:
        model.load_state_dict(torchvision_state_dict(weights, name))
    extractor = nn.Sequential(model.conv1, model.bn1, model.relu,
                              model.maxpool, model.layer1, model.layer2,
                              model.layer3)
    for layer in (model.conv1, model.layer1):
        for p in layer.parameters():
            p.requires_grad = False
    return extractor, model.layer4


class ResNetRoIHead(RoIHead):
    """RoI pooling, ResNet's ``layer4`` and a global average pool, and the
    class and box predictors.

    Args:
        n_class (int): The number of classes, background included (L + 1).
        roi_size (int): Height and width of the pooled features.
        spatial_scale (float): Feature size over image size.
        top (nn.Module): ``layer4``,
            ``(R', in_channels, roi_size, roi_size) -> (R', n_feature, h, w)``.
        roi_op ({'pool', 'align'}): RoIPool or RoIAlign.
        sampling_ratio (int): RoIAlign's sample points per bin along each
            side; 0: adaptive.
        aligned (bool): RoIAlign's half-cell shift.
        in_channels (int): Channels of the extractor's features.
        n_feature (int): Channels of ``top``'s output.
    """

    def __init__(self, n_class, roi_size, spatial_scale, top, roi_op='pool',
                 sampling_ratio=0, aligned=True, in_channels=1024,
                 n_feature=2048):
        # RoIHead hands its classifier the pooled features flattened.
        classifier = nn.Sequential(
            nn.Unflatten(1, (in_channels, roi_size, roi_size)), top,
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        super().__init__(n_class, roi_size, spatial_scale, classifier,
                         n_feature=n_feature, roi_op=roi_op,
                         sampling_ratio=sampling_ratio, aligned=aligned)


class _FasterRCNNResNet(FasterRCNN):
    """Faster R-CNN on a ResNet in C4 form (see the module's docstring).

    Args:
        n_fg_class (int): The number of foreground classes (L).
        ratios (list of floats): Height-to-width ratios of the anchors.
        anchor_scales (list of numbers): Anchor sizes in multiples of 16 px.
        pretrained_model (str or None): Starting weights: the class's
            ResNet name (``'resnet50'`` or ``'resnet101'``) for
            torchvision's ImageNet weights (read from torchvision's cache,
            ``<torch.hub.get_dir()>/checkpoints``, or downloaded), None for
            random init, or the path of a trained checkpoint (a state dict
            or a trainer checkpoint holding one under 'model').
        min_size (int): Preprocessing: the shorter side's length.
        max_size (int): Preprocessing: the longer side's largest length.
        roi_op ({'pool', 'align'}): The head's RoIPool or RoIAlign (see
            :class:`model.roi_head.RoIHead`).
        sampling_ratio (int): RoIAlign's sample points per bin along each
            side; 0: adaptive.
        aligned (bool): RoIAlign's half-cell shift.
        roi_size (int): Side of the pooled RoIs that enter ``layer4``: 14
            (detectron2's C4), which ``layer4``'s stride makes 7 x 7, the
            size ImageNet training gave it; 7 (jwyang's) is cheaper.
    """

    arch = None  # set by the subclasses
    feat_stride = 16  # conv1, maxpool, layer2 and layer3 halve the size

    def __init__(self, n_fg_class=20, ratios=[0.5, 1, 2],
                 anchor_scales=[8, 16, 32], pretrained_model=None,
                 min_size=600, max_size=1000, roi_op='pool',
                 sampling_ratio=0, aligned=True, roi_size=14):
        if n_fg_class < 1:
            raise ValueError('n_fg_class must be positive, got {}'.format(
                n_fg_class))
        others = {'vgg16', 'caffe'} | (set(RESNETS) - {self.arch})
        if not (pretrained_model is None or
                isinstance(pretrained_model, (str, os.PathLike))) or \
                pretrained_model in others:
            raise ValueError(
                "pretrained_model of {} must be {!r} (ImageNet weights), "
                'None (random init) or a checkpoint path, got {!r}'.format(
                    type(self).__name__, self.arch, pretrained_model))
        is_checkpoint = pretrained_model not in (self.arch, None)
        extractor, top = decom_resnet(
            self.arch, pretrained=pretrained_model == self.arch)
        rpn = RegionProposalNetwork(
            1024, 512, ratios=ratios, anchor_scales=anchor_scales,
            feat_stride=self.feat_stride)
        head = ResNetRoIHead(n_class=n_fg_class + 1, roi_size=roi_size,
                             spatial_scale=1. / self.feat_stride, top=top,
                             roi_op=roi_op, sampling_ratio=sampling_ratio,
                             aligned=aligned)
        super().__init__(extractor, rpn, head, min_size=min_size,
                         max_size=max_size, caffe_pretrain=False)
        if is_checkpoint:
            self.load_state_dict(model_state_dict(
                read_checkpoint(pretrained_model)))


class FasterRCNNResNet50(_FasterRCNNResNet):
    __doc__ = _FasterRCNNResNet.__doc__.replace(
        'on a ResNet', 'on ResNet-50', 1)
    arch = 'resnet50'

    def __init__(self, n_fg_class=20, ratios=[0.5, 1, 2],
                 anchor_scales=[8, 16, 32], pretrained_model='resnet50',
                 min_size=600, max_size=1000, roi_op='pool',
                 sampling_ratio=0, aligned=True, roi_size=14):
        super().__init__(n_fg_class, ratios, anchor_scales, pretrained_model,
                         min_size, max_size, roi_op, sampling_ratio, aligned,
                         roi_size)


class FasterRCNNResNet101(_FasterRCNNResNet):
    __doc__ = _FasterRCNNResNet.__doc__.replace(
        'on a ResNet', 'on ResNet-101', 1)
    arch = 'resnet101'

    def __init__(self, n_fg_class=20, ratios=[0.5, 1, 2],
                 anchor_scales=[8, 16, 32], pretrained_model='resnet101',
                 min_size=600, max_size=1000, roi_op='pool',
                 sampling_ratio=0, aligned=True, roi_size=14):
        super().__init__(n_fg_class, ratios, anchor_scales, pretrained_model,
                         min_size, max_size, roi_op, sampling_ratio, aligned,
                         roi_size)
