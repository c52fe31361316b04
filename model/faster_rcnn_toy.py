"""A small Faster R-CNN for the generated toy dataset and CPU training.

The same RPN, RoI head and :class:`FasterRCNN` as the VGG16 model, on a
small convolutional extractor and a narrow classifier. It trains from
scratch in minutes on a CPU. Two choices differ from VGG16 for the toy's
small objects (20-90 px on 256 px images): the extractor's stride is 8,
not 16, so that an RoI of a small object spans several feature cells (at
stride 16 the same schedule reached mAP 0.48 where stride 8 reached 0.83);
and it normalizes with GroupNorm, which treats a batch of one image the same
way in training and testing (BatchNorm's running statistics do not).
"""
from torch import nn

from model.faster_rcnn import FasterRCNN
from model.region_proposal_network import RegionProposalNetwork
from model.roi_head import RoIHead, roi_pooler
from model.utils.checkpoint import model_state_dict, read_checkpoint

TOY_PROPOSAL_CREATOR_PARAMS = dict(n_train_pre_nms=3000, n_train_post_nms=600,
                                   n_test_pre_nms=1500, n_test_post_nms=300)


def _conv_block(in_channels, out_channels, stride=1, kernel_size=3):
    return [nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                      kernel_size // 2, bias=False),
            nn.GroupNorm(8, out_channels), nn.ReLU(inplace=True)]


def toy_extractor(width=32):
    """A four-stage extractor of stride 8: (N, 3, H, W) -> (N, 4 width,
    H / 8, W / 8)."""
    w = width
    layers = (_conv_block(3, w, stride=2, kernel_size=5) +          # 1/2
              _conv_block(w, 2 * w, stride=2) +                     # 1/4
              _conv_block(2 * w, 2 * w) +
              _conv_block(2 * w, 4 * w, stride=2) +                 # 1/8
              _conv_block(4 * w, 4 * w) +
              _conv_block(4 * w, 4 * w))
    return nn.Sequential(*layers)


class FasterRCNNToy(FasterRCNN):
    """Faster R-CNN with a small extractor, for small images and objects.

    Args:
        n_fg_class (int): The number of foreground classes (L).
        ratios (list of floats): Height-to-width ratios of the anchors.
        anchor_scales (list of numbers): Anchor sizes in multiples of 16 px;
            the default 1.5, 3, 6 gives 24, 48 and 96 px anchors, to match
            objects of 20-90 px.
        width (int): Channels of the first stage (the last has 4x).
        proposal_creator_params (dict): Keyword arguments of the RPN's
            ProposalCreator. The default keeps fewer boxes around the NMS
            than VGG16's 12000/2000 and 6000/300: a 256 px image at stride 8
            has 9216 anchors in all, and NMS over all of them would take
            most of a CPU training step.
        n_feature (int): Width of the head's two fully connected layers.
        min_size (int): Preprocessing: the shorter side's length.
        max_size (int): Preprocessing: the longer side's largest length.
        roi_op (str or dict): The head's RoI op (see
            :func:`model.roi_head.roi_pooler`).
        pretrained_model (str or None): None (random init: the toy model
            has no pretrained weights) or the path of a trained checkpoint.
    """

    feat_stride = 8

    def __init__(self, n_fg_class=5, ratios=[0.5, 1, 2],
                 anchor_scales=[1.5, 3, 6], width=32, n_feature=256,
                 proposal_creator_params=TOY_PROPOSAL_CREATOR_PARAMS,
                 min_size=256, max_size=256, roi_op='pool',
                 pretrained_model=None):
        if n_fg_class < 1:
            raise ValueError('n_fg_class must be positive, got {}'.format(
                n_fg_class))
        extractor = toy_extractor(width)
        rpn = RegionProposalNetwork(
            4 * width, 4 * width, ratios=ratios, anchor_scales=anchor_scales,
            feat_stride=self.feat_stride,
            proposal_creator_params=proposal_creator_params)
        roi_size = 7
        classifier = nn.Sequential(
            nn.Linear(4 * width * roi_size ** 2, n_feature),
            nn.ReLU(inplace=True),
            nn.Linear(n_feature, n_feature), nn.ReLU(inplace=True))
        head = RoIHead(n_fg_class + 1,
                       roi_pooler(roi_op, roi_size, 1. / self.feat_stride),
                       classifier, n_feature=n_feature)
        super().__init__(extractor, rpn, head, min_size=min_size,
                         max_size=max_size)
        self.arguments = dict(
            n_fg_class=n_fg_class, ratios=list(ratios),
            anchor_scales=list(anchor_scales), width=width,
            n_feature=n_feature,
            proposal_creator_params=dict(proposal_creator_params),
            min_size=min_size, max_size=max_size, roi_op=roi_op)
        if pretrained_model is not None:
            self.load_state_dict(model_state_dict(
                read_checkpoint(pretrained_model)))
