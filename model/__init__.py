from model.build import load_detector
from model.faster_rcnn import FasterRCNN
from model.faster_rcnn_fpn import (FasterRCNNFPNMobileNetV3Large,
                                   FasterRCNNFPNResNet50,
                                   FasterRCNNFPNResNet101)
from model.faster_rcnn_resnet import FasterRCNNResNet50, FasterRCNNResNet101
from model.faster_rcnn_toy import FasterRCNNToy
from model.faster_rcnn_vgg16 import FasterRCNNVGG16
from model.region_proposal_network import RegionProposalNetwork
from model.roi_head import RoIHead, RoIPooler

__all__ = ['FasterRCNN', 'FasterRCNNFPNMobileNetV3Large',
           'FasterRCNNFPNResNet50', 'FasterRCNNFPNResNet101',
           'FasterRCNNResNet50', 'FasterRCNNResNet101',
           'FasterRCNNToy', 'FasterRCNNVGG16', 'RegionProposalNetwork',
           'RoIHead', 'RoIPooler', 'load_detector']
