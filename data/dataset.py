"""The network's input: resizing, normalization and the training datasets.

Images come in CHW, RGB, float32 in [0, 255] and leave as the network's
input: resized so that the shorter side is ``min_size`` and the longer at
most ``max_size``, then normalized the torchvision way (RGB, ImageNet mean
and std, values in [0, 1] before normalization) or, for caffe-pretrained
weights, the caffe way (BGR, [0, 255], mean subtracted).
"""
import numpy as np
from skimage import transform as sktsf

from data import util
from data.voc_dataset import VOCBboxDataset, VOC_BBOX_LABEL_NAMES

TORCHVISION_MEAN = np.array([0.485, 0.456, 0.406]).reshape(3, 1, 1)
TORCHVISION_STD = np.array([0.229, 0.224, 0.225]).reshape(3, 1, 1)
# Per channel, in BGR order.
CAFFE_MEAN = np.array([122.7717, 115.9465, 102.9801]).reshape(3, 1, 1)


def inverse_normalize(img, caffe_pretrain=False):
    """Turns a network input back into an image for display.

    Args:
        img (~numpy.ndarray): A normalized image of shape :math:`(3, H, W)`,
            as :func:`preprocess` returns it.
        caffe_pretrain (bool): Whether ``img`` was normalized the caffe way.

    Returns:
        ~numpy.ndarray: An RGB image of shape :math:`(3, H, W)` in
        [0, 255].
    """
    if caffe_pretrain:
        img = img + CAFFE_MEAN
        return img[::-1, :, :]
    # Approximate, as in the original design: one mean (0.45) and one std
    # (0.225) for all channels instead of the per-channel ones.
    return (img * 0.225 + 0.45).clip(min=0, max=1) * 255


def pytorch_normalze(img):
    """Normalizes an RGB image in [0, 1] with the ImageNet mean and std.

    Args:
        img (~numpy.ndarray): Shape :math:`(3, H, W)`, RGB in [0, 1].

    Returns:
        ~numpy.ndarray: Shape :math:`(3, H, W)`, float32.
    """
    return ((img - TORCHVISION_MEAN) / TORCHVISION_STD).astype(np.float32)


def caffe_normalize(img):
    """Normalizes an RGB image in [0, 1] for caffe-pretrained weights.

    Args:
        img (~numpy.ndarray): Shape :math:`(3, H, W)`, RGB in [0, 1].

    Returns:
        ~numpy.ndarray: Shape :math:`(3, H, W)`, float32, BGR in [0, 255]
        minus the caffe mean.
    """
    img = img[[2, 1, 0], :, :]  # RGB -> BGR
    img = img * 255
    return (img - CAFFE_MEAN).astype(np.float32)


def preprocess(img, min_size=600, max_size=1000, caffe_pretrain=False):
    """Resizes and normalizes an image for the network.

    The image is scaled by
    ``min(min_size / min(H, W), max_size / max(H, W))``, so that its shorter
    side is ``min_size`` unless its longer side would then exceed
    ``max_size``.

    Args:
        img (~numpy.ndarray): An image of shape :math:`(C, H, W)`, RGB in
            [0, 255].
        min_size (int): The target length of the shorter side.
        max_size (int): The upper limit of the longer side.
        caffe_pretrain (bool): Normalize the caffe way instead of the
            torchvision way.

    Returns:
        ~numpy.ndarray: The network input, float32, of shape
        :math:`(C, H \\cdot scale, W \\cdot scale)`, rounded.
    """
    C, H, W = img.shape
    scale1 = min_size / min(H, W)
    scale2 = max_size / max(H, W)
    scale = min(scale1, scale2)
    img = img / 255.
    img = sktsf.resize(img, (C, H * scale, W * scale), mode='reflect',
                       anti_aliasing=False)
    if caffe_pretrain:
        return caffe_normalize(img)
    return pytorch_normalze(img)


class Transform:
    """The training transform: preprocess, then flip horizontally at random.

    Args:
        min_size (int): See :func:`preprocess`.
        max_size (int): See :func:`preprocess`.
        caffe_pretrain (bool): See :func:`preprocess`.
    """

    def __init__(self, min_size=600, max_size=1000, caffe_pretrain=False):
        self.min_size = min_size
        self.max_size = max_size
        self.caffe_pretrain = caffe_pretrain

    def __call__(self, in_data):
        """Transforms one example.

        Args:
            in_data (tuple): ``(img, bbox, label)``: the image of shape
                :math:`(3, H, W)`, RGB in [0, 255]; boxes of shape
                :math:`(R, 4)`, each ``(y_min, x_min, y_max, x_max)``;
                labels of shape :math:`(R,)`.

        Returns:
            tuple of (img, bbox, label, scale): the network input of shape
            :math:`(3, H', W')`; the boxes in its pixels, shape
            :math:`(R, 4)`, each ``(y_min, x_min, y_max, x_max)``; the
            labels unchanged; and the scale ``H' / H``.
        """
        img, bbox, label = in_data
        _, H, W = img.shape
        img = preprocess(img, self.min_size, self.max_size,
                         caffe_pretrain=self.caffe_pretrain)
        _, o_H, o_W = img.shape
        scale = o_H / H
        bbox = util.resize_bbox(bbox, (H, W), (o_H, o_W))

        # horizontally flip
        img, params = util.random_flip(
            img, x_random=True, return_param=True)
        bbox = util.flip_bbox(
            bbox, (o_H, o_W), x_flip=params['x_flip'])

        return img, bbox, label, scale


class Dataset:
    """The training set: the ``trainval`` split, difficult objects left out.

    Args:
        opt: Any object with the attributes ``voc_data_dir``, ``min_size``,
            ``max_size`` and ``caffe_pretrain``.
        label_names (sequence of str): The class names, in label order.
    """

    def __init__(self, opt, label_names=VOC_BBOX_LABEL_NAMES):
        self.opt = opt
        self.db = VOCBboxDataset(opt.voc_data_dir, label_names=label_names)
        self.tsf = Transform(opt.min_size, opt.max_size,
                             caffe_pretrain=opt.caffe_pretrain)

    def __getitem__(self, idx):
        """Returns ``(img, bbox, label, scale)`` as :class:`Transform` does."""
        ori_img, bbox, label, difficult = self.db.get_example(idx)
        img, bbox, label, scale = self.tsf((ori_img, bbox, label))
        # The flip leaves negative strides, which torch cannot wrap.
        return img.copy(), bbox.copy(), label.copy(), scale

    def __len__(self):
        return len(self.db)


class TestDataset:
    """An evaluation set: preprocessed images, no flip, original boxes.

    Unlike the original design, which always resized test images to
    600/1000, this uses ``opt.min_size``, ``opt.max_size`` and
    ``opt.caffe_pretrain``, the preprocessing the model was trained with.

    Args:
        opt: Any object with the attributes ``voc_data_dir``, ``min_size``,
            ``max_size`` and ``caffe_pretrain``.
        split (str): The split to read.
        use_difficult (bool): Keep the objects marked difficult (flagged in
            ``difficult``).
        label_names (sequence of str): The class names, in label order.
    """

    def __init__(self, opt, split='test', use_difficult=True,
                 label_names=VOC_BBOX_LABEL_NAMES):
        self.opt = opt
        self.db = VOCBboxDataset(opt.voc_data_dir, split=split,
                                 use_difficult=use_difficult,
                                 label_names=label_names)

    def __getitem__(self, idx):
        """Returns ``(img, size, bbox, label, difficult)``.

        ``img`` is the network input of shape :math:`(3, H', W')`; ``size``
        is ``(H, W)`` of the image on disk; ``bbox`` (shape :math:`(R, 4)`,
        each ``(y_min, x_min, y_max, x_max)``), ``label`` and ``difficult``
        (shape :math:`(R,)`) are in the pixels of the image on disk.
        """
        ori_img, bbox, label, difficult = self.db.get_example(idx)
        img = preprocess(ori_img, self.opt.min_size, self.opt.max_size,
                         caffe_pretrain=self.opt.caffe_pretrain)
        return img, ori_img.shape[1:], bbox, label, difficult

    def __len__(self):
        return len(self.db)
