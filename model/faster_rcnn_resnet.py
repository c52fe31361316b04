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
from model.roi_head import RoIHead, roi_pooler
from model.utils.checkpoint import (model_state_dict, read_checkpoint,
                                    torchvision_state_dict)

# builder, ImageNet weights, and the name the offline error gives them
RESNETS = {
    'resnet50': (resnet50, ResNet50_Weights.IMAGENET1K_V1,
                 'ImageNet ResNet-50'),
    'resnet101': (resnet101, ResNet101_Weights.IMAGENET1K_V1,
                  'ImageNet ResNet-101'),
}


def resnet(arch='resnet50', pretrained=True):
    """torchvision's ResNet with every BatchNorm frozen
    (:class:`torchvision.ops.FrozenBatchNorm2d`).

    Args:
        arch ({'resnet50', 'resnet101'}): Which ResNet.
        pretrained (bool): torchvision's ImageNet weights (from its cache,
            or downloaded), or random init.
    """
    if arch not in RESNETS:
        raise ValueError('arch must be one of {}, got {!r}'.format(
            sorted(RESNETS), arch))
    build, weights, name = RESNETS[arch]
    model = build(weights=None, norm_layer=FrozenBatchNorm2d)
    if pretrained:
        model.load_state_dict(torchvision_state_dict(weights, name))
    return model


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
    model = resnet(arch, pretrained)
    extractor = nn.Sequential(model.conv1, model.bn1, model.relu,
                              model.maxpool, model.layer1, model.layer2,
                              model.layer3)
    for layer in (model.conv1, model.layer1):
        for p in layer.parameters():
            p.requires_grad = False
    return extractor, model.layer4


def resnet_classifier(top, in_channels=1024, roi_size=14):
    """The head's classifier of the C4 form: the pooled RoIs, flattened as
    :class:`model.roi_head.RoIHead` hands them over, through ``layer4``
    (``top``) and a global average pool:
    :math:`(R', C S S) -> (R', 2048)`."""
    return nn.Sequential(nn.Unflatten(1, (in_channels, roi_size, roi_size)),
                         top, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


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
            random init, or the path of a trained checkpoint.
        min_size (int): Preprocessing: the shorter side's length.
        max_size (int): Preprocessing: the longer side's largest length.
        roi_op (str or dict): The head's RoI op (see
            :func:`model.roi_head.roi_pooler`).
        roi_size (int): Side of the pooled RoIs that enter ``layer4``: 14
            (detectron2's C4), which ``layer4``'s stride makes 7 x 7, the
            size ImageNet training gave it; 7 (jwyang's) is cheaper.
    """

    arch = None  # set by the subclasses
    feat_stride = 16  # conv1, maxpool, layer2 and layer3 halve the size

    def __init__(self, n_fg_class=20, ratios=[0.5, 1, 2],
                 anchor_scales=[8, 16, 32], pretrained_model=None,
                 min_size=600, max_size=1000, roi_op='pool', roi_size=14):
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
        head = RoIHead(n_fg_class + 1,
                       roi_pooler(roi_op, roi_size, 1. / self.feat_stride),
                       resnet_classifier(top, roi_size=roi_size),
                       n_feature=2048)
        super().__init__(extractor, rpn, head, min_size=min_size,
                         max_size=max_size, caffe_pretrain=False)
        self.arguments = dict(
            n_fg_class=n_fg_class, ratios=list(ratios),
            anchor_scales=list(anchor_scales), min_size=min_size,
            max_size=max_size, roi_op=roi_op, roi_size=roi_size)
        if is_checkpoint:
            self.load_state_dict(model_state_dict(
                read_checkpoint(pretrained_model)))


class FasterRCNNResNet50(_FasterRCNNResNet):
    __doc__ = _FasterRCNNResNet.__doc__.replace(
        'on a ResNet', 'on ResNet-50', 1)
    arch = 'resnet50'

    def __init__(self, n_fg_class=20, ratios=[0.5, 1, 2],
                 anchor_scales=[8, 16, 32], pretrained_model='resnet50',
                 min_size=600, max_size=1000, roi_op='pool', roi_size=14):
        super().__init__(n_fg_class, ratios, anchor_scales, pretrained_model,
                         min_size, max_size, roi_op, roi_size)


class FasterRCNNResNet101(_FasterRCNNResNet):
    __doc__ = _FasterRCNNResNet.__doc__.replace(
        'on a ResNet', 'on ResNet-101', 1)
    arch = 'resnet101'

    def __init__(self, n_fg_class=20, ratios=[0.5, 1, 2],
                 anchor_scales=[8, 16, 32], pretrained_model='resnet101',
                 min_size=600, max_size=1000, roi_op='pool', roi_size=14):
        super().__init__(n_fg_class, ratios, anchor_scales, pretrained_model,
                         min_size, max_size, roi_op, roi_size)
