"""Faster R-CNN on VGG16: the extractor, the RoI head and their weights.

Shape shorthand: N batch, R' RoIs of the batch, L foreground classes.
"""
import os

import torch
from torch import nn
from torchvision.models import VGG16_Weights, vgg16

from model.faster_rcnn import FasterRCNN
from model.region_proposal_network import RegionProposalNetwork
from model.roi_head import RoIHead, roi_pooler
from model.utils.checkpoint import (WeightsNotFound, model_state_dict,
                                    read_checkpoint, torchvision_state_dict)


def _torchvision_vgg16_state_dict():
    """torchvision's ImageNet VGG16 weights, from its cache or downloaded."""
    return torchvision_state_dict(VGG16_Weights.IMAGENET1K_V1,
                                  'ImageNet VGG16')


def _caffe_vgg16_state_dict(path):
    """A caffe-converted VGG16 state dict in torchvision's layout."""
    if not os.path.exists(path):
        raise WeightsNotFound('caffe-converted VGG16', path,
                              'see README: model.utils.convert_caffe_vgg16 '
                              'writes them',
                              missing='(python -m model.utils.'
                                      'convert_caffe_vgg16 writes them)')
    return torch.load(path, map_location='cpu', weights_only=True)


def decom_vgg16(pretrained_model='vgg16',
                caffe_pretrain_path='checkpoints/vgg16_caffe.pth',
                use_drop=False):
    """Splits VGG16 into the extractor and the head's classifier.

    The extractor is ``features[:30]`` (through the ReLU of conv5_3, stride
    16) with the first 10 layers (conv1 and conv2 blocks) frozen; the
    classifier is fc6 and fc7 with their ReLUs, and their dropouts only
    with ``use_drop``.

    Args:
        pretrained_model ({'vgg16', 'caffe', None}): torchvision's ImageNet
            weights, a caffe-converted state dict read from
            ``caffe_pretrain_path``, or random init.
        caffe_pretrain_path (str): Where the caffe-converted weights are.
        use_drop (bool): Keep the classifier's dropout layers.

    Returns:
        (nn.Sequential, nn.Sequential): extractor and classifier.
    """
    model = vgg16(weights=None)
    if pretrained_model == 'vgg16':
        model.load_state_dict(_torchvision_vgg16_state_dict())
    elif pretrained_model == 'caffe':
        model.load_state_dict(_caffe_vgg16_state_dict(caffe_pretrain_path))
    elif pretrained_model is not None:
        raise ValueError("pretrained_model must be 'vgg16', 'caffe', None or "
                         'a checkpoint path, got {!r}'.format(pretrained_model))

    features = list(model.features)[:30]
    classifier = list(model.classifier)
    del classifier[6]
    if not use_drop:
        del classifier[5]
        del classifier[2]
    for layer in features[:10]:
        for p in layer.parameters():
            p.requires_grad = False
    return nn.Sequential(*features), nn.Sequential(*classifier)


class FasterRCNNVGG16(FasterRCNN):
    """Faster R-CNN with a VGG16 extractor and fc6/fc7 head.

    Args:
        n_fg_class (int): The number of foreground classes (L).
        ratios (list of floats): Height-to-width ratios of the anchors.
        anchor_scales (list of numbers): Anchor sizes in multiples of 16 px.
        pretrained_model ({'vgg16', 'caffe', None} or str): Starting
            weights: torchvision's ImageNet VGG16, a caffe-converted VGG16
            (which wants caffe-normalized input, so the model records
            ``caffe_pretrain=True``), random init, or the path of a trained
            checkpoint (a state dict or a trainer checkpoint holding one
            under 'model').
        caffe_pretrain_path (str): Where the caffe-converted weights are.
        use_drop (bool): Dropout in the head's fc6 and fc7.
        min_size (int): Preprocessing: the shorter side's length.
        max_size (int): Preprocessing: the longer side's largest length.
        caffe_pretrain (bool): Preprocessing: caffe normalization. Default:
            True exactly when ``pretrained_model='caffe'``; state it for
            weights trained from caffe's VGG16 that carry no settings of
            their own (the original's bare state dicts).
        roi_op (str or dict): The head's RoI op, 7x7 at 1/16:
            ``'pool'`` (this design's), ``'align'`` or a dict of settings
            (see :func:`model.roi_head.roi_pooler`).
    """

    feat_stride = 16  # downsample 16x for the output of conv5 in vgg16

    def __init__(self, n_fg_class=20, ratios=[0.5, 1, 2],
                 anchor_scales=[8, 16, 32], pretrained_model='vgg16',
                 caffe_pretrain_path='checkpoints/vgg16_caffe.pth',
                 use_drop=False, min_size=600, max_size=1000,
                 caffe_pretrain=None, roi_op='pool'):
        if n_fg_class < 1:
            raise ValueError('n_fg_class must be positive, got {}'.format(
                n_fg_class))
        is_checkpoint = pretrained_model not in ('vgg16', 'caffe', None)
        extractor, classifier = decom_vgg16(
            None if is_checkpoint else pretrained_model, caffe_pretrain_path,
            use_drop)
        rpn = RegionProposalNetwork(
            512, 512, ratios=ratios, anchor_scales=anchor_scales,
            feat_stride=self.feat_stride)
        head = RoIHead(n_fg_class + 1,
                       roi_pooler(roi_op, 7, 1. / self.feat_stride),
                       classifier)
        if caffe_pretrain is None:
            caffe_pretrain = pretrained_model == 'caffe'
        super().__init__(extractor, rpn, head, min_size=min_size,
                         max_size=max_size, caffe_pretrain=caffe_pretrain)
        self.arguments = dict(
            n_fg_class=n_fg_class, ratios=list(ratios),
            anchor_scales=list(anchor_scales), use_drop=use_drop,
            min_size=min_size, max_size=max_size,
            caffe_pretrain=caffe_pretrain, roi_op=roi_op)
        if is_checkpoint:
            self.load_state_dict(model_state_dict(
                read_checkpoint(pretrained_model)))
