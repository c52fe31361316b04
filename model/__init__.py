from model.build import build_model, load_detector
from model.faster_rcnn import FasterRCNN
from model.faster_rcnn_resnet import FasterRCNNResNet50, FasterRCNNResNet101
from model.faster_rcnn_toy import FasterRCNNToy
from model.faster_rcnn_vgg16 import FasterRCNNVGG16
from model.region_proposal_network import RegionProposalNetwork
from model.roi_head import RoIHead

__all__ = ['FasterRCNN', 'FasterRCNNResNet50', 'FasterRCNNResNet101',
           'FasterRCNNToy', 'FasterRCNNVGG16',
           'RegionProposalNetwork', 'RoIHead', 'build_model',
           'load_detector']
