"""The network's input: resizing and normalization.

Images come in CHW, RGB, float32 in [0, 255] and leave as the network's
input: resized so that the shorter side is ``min_size`` and the longer at
most ``max_size``, then normalized the torchvision way (RGB, ImageNet mean
and std, values in [0, 1] before normalization) or, for caffe-pretrained
weights, the caffe way (BGR, [0, 255], mean subtracted).

Two resizes: the original's (``'skimage'``: scikit-image's bilinear resize,
reflect mode, no anti-aliasing, to the rounded size) and torchvision's
detection transform's (``'bilinear'``: normalize first, then torch's
bilinear interpolation to the floored size, in float32 on the image's
device).

It lives in ``model/`` because a trained model knows its preprocessing and
:meth:`model.faster_rcnn.FasterRCNN.predict` applies it; ``data.dataset``
re-exports these names for the training sets.
"""
import numpy as np
import torch
from skimage import transform as sktsf
from torch.nn import functional as F

RESIZES = ('skimage', 'bilinear')

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


def preprocess(img, min_size=600, max_size=1000, caffe_pretrain=False,
               resize='skimage'):
    """Resizes and normalizes an image for the network.

    The image is scaled by
    ``min(min_size / min(H, W), max_size / max(H, W))``, so that its shorter
    side is ``min_size`` unless its longer side would then exceed
    ``max_size``.

    Args:
        img (~numpy.ndarray or torch.Tensor): An image of shape
            :math:`(C, H, W)`, RGB in [0, 255].
        min_size (int): The target length of the shorter side.
        max_size (int): The upper limit of the longer side.
        caffe_pretrain (bool): Normalize the caffe way instead of the
            torchvision way.
        resize ({'skimage', 'bilinear'}): The original's resize, on numpy,
            or torchvision's, on torch (see the module's docstring).

    Returns:
        The network input, float32, of shape :math:`(C, H \\cdot scale,
        W \\cdot scale)`: a numpy array (rounded sizes) for 'skimage', a
        tensor on the image's device (floored sizes) for 'bilinear'.
    """
    C, H, W = img.shape
    scale = min(min_size / min(H, W), max_size / max(H, W))
    if resize == 'bilinear':
        return _bilinear(img, scale, caffe_pretrain)
    img = img / 255.
    img = sktsf.resize(img, (C, H * scale, W * scale), mode='reflect',
                       anti_aliasing=False)
    if caffe_pretrain:
        return caffe_normalize(img)
    return pytorch_normalze(img)


def _bilinear(img, scale, caffe_pretrain):
    """torchvision's GeneralizedRCNNTransform on one image: normalize in
    float32, then resize by ``scale`` with torch's bilinear interpolation
    (the size floored, the scale recomputed from it)."""
    img = torch.as_tensor(img).float()
    if caffe_pretrain:
        img = img.flip(0) - torch.as_tensor(CAFFE_MEAN, dtype=torch.float32,
                                            device=img.device)
    else:
        img = img / 255.
        mean, std = (torch.as_tensor(v, dtype=torch.float32, device=img.device)
                     for v in (TORCHVISION_MEAN, TORCHVISION_STD))
        img = (img - mean) / std
    return F.interpolate(img[None], scale_factor=scale, mode='bilinear',
                         recompute_scale_factor=True, align_corners=False)[0]
