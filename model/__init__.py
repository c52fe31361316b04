from model.faster_rcnn_vgg16 import FasterRCNNVGG16

__all__ = ['FasterRCNNVGG16']
