"""Reading images and moving boxes with the image they belong to.

Images are CHW, RGB, float32 in [0, 255]. Boxes are arrays of shape
:math:`(R, 4)`, each ``(y_min, x_min, y_max, x_max)`` in pixels.
"""
import contextlib
import random

import numpy as np
from PIL import Image


def read_image(path, dtype=np.float32, color=True):
    """Reads an image from a file.

    Grayscale, palette and RGBA images are converted to RGB (the alpha
    channel is dropped) when ``color`` is ``True``; 16-bit grayscale images
    are scaled to [0, 255]. The array is always writable.

    Args:
        path (str): A path of an image file.
        dtype: The type of the array. The default is ``np.float32``.
        color (bool): If ``True``, the result has three channels in RGB
            order; if ``False``, one grayscale channel.

    Returns:
        ~numpy.ndarray: An image of shape :math:`(3, H, W)` if ``color``
        is ``True``, :math:`(1, H, W)` otherwise, with values in [0, 255].

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        OSError: if ``path`` cannot be read as an image.
    """
    with _open_image(path) as f:
        img = _pixels(f, color, dtype)

    if img.ndim == 2:
        # (H, W) -> (1, H, W)
        return img[np.newaxis]
    # (H, W, C) -> (C, H, W)
    return img.transpose((2, 0, 1))


def read_image_size(path):
    """The ``(H, W)`` of an image file, from its header (no decoding).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        OSError: if ``path`` cannot be read as an image.
    """
    with _open_image(path) as f:
        w, h = f.size
    return h, w


@contextlib.contextmanager
def _open_image(path):
    """Opens an image file with PIL for the block; a missing file, or one
    that cannot be read as an image there, raises naming the path."""
    try:
        with Image.open(path) as f:
            yield f
    except FileNotFoundError as err:
        raise FileNotFoundError(
            'image file {} does not exist'.format(path)) from err
    except OSError as err:
        raise OSError(
            'cannot read image file {}: expected an image PIL can '
            'decode (JPEG, PNG, ...)'.format(path)) from err


def _pixels(f, color, dtype):
    """The pixels of an open PIL image in [0, 255], (H, W, 3) or (H, W).

    16-bit and 32-bit grayscale images (PNG 'I;16', 'I') are scaled from
    their own range (0-65535) to [0, 255]; PIL's own conversion to RGB
    would saturate them to 255.
    """
    if f.mode.startswith('I;16') or f.mode == 'I':
        img = np.asarray(f, dtype=np.float64) / 257.
        if color:
            img = np.repeat(img[:, :, None], 3, axis=2)
        return img.astype(dtype)
    # np.array, not np.asarray: a uint8 view of PIL's buffer is read-only.
    return np.array(f.convert('RGB' if color else 'L'), dtype=dtype)


def resize_bbox(bbox, in_size, out_size):
    """Resizes boxes along with the image they belong to.

    Args:
        bbox (~numpy.ndarray): Boxes of shape :math:`(R, 4)`, each
            ``(y_min, x_min, y_max, x_max)``.
        in_size (tuple): ``(H, W)`` of the image before resizing.
        out_size (tuple): ``(H, W)`` of the image after resizing.

    Returns:
        ~numpy.ndarray: The boxes rescaled to ``out_size``, shape
        :math:`(R, 4)`.
    """
    bbox = bbox.copy()
    y_scale = float(out_size[0]) / in_size[0]
    x_scale = float(out_size[1]) / in_size[1]
    bbox[:, 0] = y_scale * bbox[:, 0]
    bbox[:, 2] = y_scale * bbox[:, 2]
    bbox[:, 1] = x_scale * bbox[:, 1]
    bbox[:, 3] = x_scale * bbox[:, 3]
    return bbox


def flip_bbox(bbox, size, y_flip=False, x_flip=False):
    """Flips boxes along with the image they belong to.

    Args:
        bbox (~numpy.ndarray): Boxes of shape :math:`(R, 4)`, each
            ``(y_min, x_min, y_max, x_max)``.
        size (tuple): ``(H, W)`` of the image.
        y_flip (bool): Flip vertically.
        x_flip (bool): Flip horizontally.

    Returns:
        ~numpy.ndarray: The flipped boxes, shape :math:`(R, 4)`.
    """
    H, W = size
    bbox = bbox.copy()
    if y_flip:
        y_max = H - bbox[:, 0]
        y_min = H - bbox[:, 2]
        bbox[:, 0] = y_min
        bbox[:, 2] = y_max
    if x_flip:
        x_max = W - bbox[:, 1]
        x_min = W - bbox[:, 3]
        bbox[:, 1] = x_min
        bbox[:, 3] = x_max
    return bbox


def random_flip(img, y_random=False, x_random=False,
                return_param=False, copy=False):
    """Flips an image at random, vertically and/or horizontally.

    Each allowed flip happens with probability 0.5, drawn from python's
    ``random`` module.

    Args:
        img (~numpy.ndarray): An image of shape :math:`(C, H, W)`.
        y_random (bool): Allow a vertical flip.
        x_random (bool): Allow a horizontal flip.
        return_param (bool): Also return which flips were made.
        copy (bool): Return a copy instead of a view with negative strides.

    Returns:
        ~numpy.ndarray or (~numpy.ndarray, dict): The image, shape
        :math:`(C, H, W)`; with ``return_param``, also a dict with the keys
        ``'y_flip'`` and ``'x_flip'`` (bools).
    """
    y_flip, x_flip = False, False
    if y_random:
        y_flip = random.choice([True, False])
    if x_random:
        x_flip = random.choice([True, False])

    if y_flip:
        img = img[:, ::-1, :]
    if x_flip:
        img = img[:, :, ::-1]

    if copy:
        img = img.copy()

    if return_param:
        return img, {'y_flip': y_flip, 'x_flip': x_flip}
    return img
