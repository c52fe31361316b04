"""Faster R-CNN with a feature pyramid (FPN) on ResNet-50, ResNet-101 and
MobileNetV3-Large.

The field's default Faster R-CNN (torchvision's ``fasterrcnn_resnet50_fpn``,
detectron2's R50-FPN), built from this library's parts as chainercv builds
it (``chainercv/links/model/fpn``):

* the extractor (:class:`model.fpn.FeaturePyramid`): torchvision's ResNet
  stages C2..C5 (conv1 and layer1 frozen, every BatchNorm frozen), lateral
  1x1 and output 3x3 convolutions of 256 channels giving P2..P5 (strides 4
  to 32), and P6 (stride 64) by a stride-2 max pool;
* the RPN (:class:`model.fpn.PyramidRPN`): one head for all levels, one
  objectness logit per anchor, anchors of 32, 64, 128, 256 and 512 px on
  P2..P6 with ratios 0.5, 1 and 2;
* the head: each RoI pooled on its level (FPN's rule, levels 2 to 5) by
  RoIAlign 7x7 with 2 samples a bin side, two 1024-wide fully connected
  layers, and the class and box predictors.

The MobileNetV3-Large model is torchvision's ``fasterrcnn_mobilenet_v3_
large_fpn``: a two-level pyramid on the last two stages (both of stride 32,
160 and 960 channels) plus a pooled level, five anchor sizes (32 to 512 px)
on every level, the RoIs pooled on the first level.

Shape shorthand: N batch, R' RoIs of the batch, L foreground classes.
"""
import os

from torch import nn
from torch.nn import functional as F
from torchvision.models import MobileNet_V3_Large_Weights, mobilenet_v3_large
from torchvision.ops import FrozenBatchNorm2d

from model.faster_rcnn import FasterRCNN
from model.faster_rcnn_resnet import RESNETS, resnet
from model.fpn import LOC_CLIP, FeaturePyramid, PyramidRPN
from model.roi_head import RoIHead, roi_pooler
from model.utils.checkpoint import (model_state_dict, read_checkpoint,
                                    torchvision_state_dict)

# torchvision's Faster R-CNN pools the RoIs so (and so load its weights).
FPN_ROI_OP = dict(roi_op='align', sampling_ratio=2, aligned=False)

# The RPN's numbers: FPN's (detectron2's, torchvision's).
FPN_RPN_PARAMS = dict(nms_thresh=0.7, n_train_pre_nms=2000,
                      n_train_post_nms=2000, n_test_pre_nms=1000,
                      n_test_post_nms=1000, min_size=1e-3, score_thresh=0.)


class ResNetBody(nn.Module):
    """A torchvision ResNet's stages: ``(N, 3, H, W) ->`` [C2, C3, C4, C5],
    of strides 4, 8, 16, 32 and 256, 512, 1024, 2048 channels. conv1 and
    layer1 do not train; every BatchNorm is frozen."""

    def __init__(self, model):
        super().__init__()
        for name in ('conv1', 'bn1', 'relu', 'maxpool', 'layer1', 'layer2',
                     'layer3', 'layer4'):
            setattr(self, name, getattr(model, name))
        for layer in (self.conv1, self.layer1):
            for p in layer.parameters():
                p.requires_grad = False

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        maps = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            maps.append(x)
        return maps


class MobileNetBody(nn.Sequential):
    """torchvision's MobileNetV3-Large features, every BatchNorm frozen:
    ``(N, 3, H, W) ->`` the outputs of blocks 13 and 16 (strides 32, 160
    and 960 channels). Blocks 0 to 6 do not train (torchvision's three
    trainable stages).

    Args:
        pretrained (bool): torchvision's ImageNet weights, or random init.
    """

    returned = (13, 16)

    def __init__(self, pretrained=True):
        model = mobilenet_v3_large(weights=None, norm_layer=FrozenBatchNorm2d)
        if pretrained:
            model.load_state_dict(torchvision_state_dict(
                MobileNet_V3_Large_Weights.IMAGENET1K_V1,
                'ImageNet MobileNetV3-Large'))
        super().__init__(*model.features)
        for block in list(self)[:7]:
            for p in block.parameters():
                p.requires_grad = False

    def forward(self, x):
        maps = []
        for i, block in enumerate(self):
            x = block(x)
            if i in self.returned:
                maps.append(x)
        return maps


class TwoMLPHead(nn.Module):
    """The box head's classifier: two fully connected layers with ReLU,
    :math:`(R', C S S) -> (R', n\\_feature)`."""

    def __init__(self, in_features, n_feature=1024):
        super().__init__()
        self.fc6 = nn.Linear(in_features, n_feature)
        self.fc7 = nn.Linear(n_feature, n_feature)

    def forward(self, x):
        return F.relu(self.fc7(F.relu(self.fc6(x))))


class FasterRCNNFPN(FasterRCNN):
    """Faster R-CNN on a feature pyramid: the extractor returns its levels
    finest first, the RPN proposes on all of them, the head pools each RoI
    on its level.

    Args:
        extractor (FeaturePyramid): The pyramid, C channels.
        n_fg_class (int): The number of foreground classes (L).
        feat_stride (sequence of ints): Each level's stride.
        anchor_sizes (sequence of sequences): Each level's anchor sizes.
        ratios (sequence of floats): The anchors' height-to-width ratios.
        rpn_params (dict): :class:`model.fpn.PyramidRPN`'s numbers.
        roi_op (str or dict): The head's RoI op (see
            :func:`model.roi_head.roi_pooler`), on the levels of strides
            ``roi_strides``.
        roi_strides (sequence of ints): The levels the head pools from.
        n_feature (int): Width of the head's fully connected layers.
        **kwargs: :class:`FasterRCNN`'s settings (preprocessing,
            suppression, presets, ...).
    """

    def __init__(self, extractor, n_fg_class, feat_stride, anchor_sizes,
                 ratios, rpn_params, roi_op, roi_strides, n_feature=1024,
                 **kwargs):
        if n_fg_class < 1:
            raise ValueError('n_fg_class must be positive, got {}'.format(
                n_fg_class))
        channels = extractor.output[0].out_channels
        rpn = PyramidRPN(channels, feat_stride, anchor_sizes, ratios,
                         **rpn_params)
        pooler = roi_pooler(roi_op, 7, tuple(1. / s for s in roi_strides))
        head = RoIHead(n_fg_class + 1, pooler,
                       TwoMLPHead(channels * 7 * 7, n_feature), n_feature)
        super().__init__(extractor, rpn, head, **kwargs)


class _PretrainedFPN(FasterRCNNFPN):
    """Faster R-CNN with FPN on an ImageNet backbone of torchvision's (see
    the module's docstring).

    Args:
        n_fg_class (int): The number of foreground classes (L).
        pretrained_model (str or None): The backbone's name (the class's
            ``arch``) for torchvision's ImageNet weights of the backbone
            (from torchvision's cache, or downloaded), None for random init,
            or the path of a trained checkpoint.
        min_size (int): Preprocessing: the shorter side's length.
        max_size (int): Preprocessing: the longer side's largest length.
        resize ({'skimage', 'bilinear'}): Preprocessing: the original's
            resize or torchvision's.
        size_divisible (int): Pad the input to a multiple of this.
        anchor_sizes (sequence of sequences): Each level's anchor sizes.
        ratios (sequence of floats): The anchors' height-to-width ratios.
        rpn_params (dict): The RPN's numbers, default
            :data:`FPN_RPN_PARAMS`.
        roi_op (str or dict): The head's RoI op, default
            :data:`FPN_ROI_OP` (torchvision's RoIAlign).
        presets (dict): The thresholds of each preset (see
            :class:`FasterRCNN`).
        suppression ({'per_class', 'batched'}): See :class:`FasterRCNN`.
        min_det_size (float): See :class:`FasterRCNN`.
        loc_clip (float): See :class:`FasterRCNN`; default torchvision's.
    """

    arch = None  # set by the subclasses, with:
    feat_stride = None  # each level's stride
    roi_strides = None  # the strides of the levels the head pools from
    anchor_sizes = None  # each level's anchor sizes

    def __init__(self, n_fg_class=20, pretrained_model=None, min_size=600,
                 max_size=1000, resize='skimage', size_divisible=32,
                 anchor_sizes=None, ratios=(0.5, 1., 2.), rpn_params=None,
                 roi_op=None, presets=None, suppression='per_class',
                 min_det_size=0., loc_clip=LOC_CLIP):
        if not (pretrained_model is None or
                isinstance(pretrained_model, (str, os.PathLike))) or \
                pretrained_model in BACKBONE_NAMES - {self.arch}:
            raise ValueError(
                "pretrained_model of {} must be {!r} (ImageNet weights), "
                'None (random init) or a checkpoint path, got {!r}'.format(
                    type(self).__name__, self.arch, pretrained_model))
        anchor_sizes = anchor_sizes or self.anchor_sizes
        rpn_params = dict(FPN_RPN_PARAMS, **(rpn_params or {}))
        roi_op = FPN_ROI_OP if roi_op is None else roi_op
        super().__init__(
            self.pyramid(pretrained_model == self.arch), n_fg_class,
            self.feat_stride, anchor_sizes, ratios, rpn_params, roi_op,
            self.roi_strides, min_size=min_size, max_size=max_size,
            resize=resize, size_divisible=size_divisible, presets=presets,
            suppression=suppression, min_det_size=min_det_size,
            loc_clip=loc_clip)
        self.arguments = dict(
            n_fg_class=n_fg_class, min_size=min_size, max_size=max_size,
            resize=resize, size_divisible=size_divisible,
            anchor_sizes=[list(s) for s in anchor_sizes],
            ratios=list(ratios), rpn_params=rpn_params, roi_op=roi_op,
            presets=presets, suppression=suppression,
            min_det_size=min_det_size, loc_clip=loc_clip)
        if pretrained_model not in (None, self.arch):
            self.load_state_dict(model_state_dict(
                read_checkpoint(pretrained_model)))

    def pyramid(self, pretrained):
        """The extractor, with the backbone's ImageNet weights if
        ``pretrained``."""
        raise NotImplementedError


class _FPNResNet(_PretrainedFPN):
    feat_stride = (4, 8, 16, 32, 64)
    roi_strides = (4, 8, 16, 32)
    anchor_sizes = ((32,), (64,), (128,), (256,), (512,))

    def pyramid(self, pretrained):
        return FeaturePyramid(ResNetBody(resnet(self.arch, pretrained)),
                              (256, 512, 1024, 2048), 256)


class FasterRCNNFPNResNet50(_FPNResNet):
    __doc__ = _PretrainedFPN.__doc__.replace(
        'on an ImageNet backbone', 'on ResNet-50', 1)
    arch = 'resnet50'

    def __init__(self, n_fg_class=20, pretrained_model='resnet50', **kwargs):
        super().__init__(n_fg_class, pretrained_model, **kwargs)


class FasterRCNNFPNResNet101(_FPNResNet):
    __doc__ = _PretrainedFPN.__doc__.replace(
        'on an ImageNet backbone', 'on ResNet-101', 1)
    arch = 'resnet101'

    def __init__(self, n_fg_class=20, pretrained_model='resnet101',
                 **kwargs):
        super().__init__(n_fg_class, pretrained_model, **kwargs)


class FasterRCNNFPNMobileNetV3Large(_PretrainedFPN):
    __doc__ = _PretrainedFPN.__doc__.replace(
        'on an ImageNet backbone', 'on MobileNetV3-Large', 1)
    arch = 'mobilenet_v3_large'
    feat_stride = (32, 32, 64)
    roi_strides = (32, 32)
    anchor_sizes = ((32, 64, 128, 256, 512),) * 3

    def __init__(self, n_fg_class=20, pretrained_model='mobilenet_v3_large',
                 **kwargs):
        super().__init__(n_fg_class, pretrained_model, **kwargs)

    def pyramid(self, pretrained):
        return FeaturePyramid(MobileNetBody(pretrained), (160, 960), 256)


# The names of starting weights a detector may be given.
BACKBONE_NAMES = {'vgg16', 'caffe', 'mobilenet_v3_large'} | set(RESNETS)
