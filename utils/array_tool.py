"""Conversions between numpy arrays, torch tensors and python numbers."""

import numpy as np
import torch


def tonumpy(data):
    """Return a numpy array holding the values of ``data``.

    Args:
        data (numpy.ndarray or torch.Tensor): An array of any shape, on any
            device. A tensor is detached and copied to the CPU.

    Returns:
        numpy.ndarray: ``data`` itself if it is an array, else an array of
        the same shape and dtype.

    Raises:
        TypeError: If ``data`` is neither an array nor a tensor.
    """
    if isinstance(data, np.ndarray):
        return data
    if isinstance(data, torch.Tensor):
        return data.detach().cpu().numpy()
    raise TypeError('tonumpy expects a numpy array or a torch tensor, got {}.'
                    .format(type(data).__name__))


def totensor(data, device=None):
    """Return a torch tensor holding the values of ``data``.

    Args:
        data (numpy.ndarray or torch.Tensor): An array of any shape. An array
            becomes a tensor sharing its memory when it is contiguous (a
            copy otherwise); a tensor is detached.
        device (torch.device or str): Device to move the tensor to. If
            :obj:`None` (default), it stays where it is (the CPU for an
            array).

    Returns:
        torch.Tensor: A tensor of the same shape and dtype as ``data``.

    Raises:
        TypeError: If ``data`` is neither an array nor a tensor, or
            ``device`` is a bool (the original's ``cuda`` flag).
    """
    if isinstance(device, bool):
        raise TypeError('totensor takes a device (such as "cuda" or '
                        'torch.device("cpu")) or None, not the bool {}.'
                        .format(device))
    if isinstance(data, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(data))
    elif isinstance(data, torch.Tensor):
        tensor = data.detach()
    else:
        raise TypeError('totensor expects a numpy array or a torch tensor, '
                        'got {}.'.format(type(data).__name__))
    if device is not None:
        tensor = tensor.to(device)
    return tensor


def scalar(data):
    """Return the python number held by a one-element array or tensor.

    Args:
        data (numpy.ndarray, numpy scalar or torch.Tensor): Holds exactly one
            element, in any shape (such as ``()`` or ``(1,)``).

    Returns:
        int, float or bool: The element.

    Raises:
        TypeError: If ``data`` is not an array, numpy scalar or tensor.
        ValueError: If ``data`` does not hold exactly one element.
    """
    if not isinstance(data, (np.ndarray, np.generic, torch.Tensor)):
        raise TypeError('scalar expects a numpy array or a torch tensor, '
                        'got {}.'.format(type(data).__name__))
    size = data.numel() if isinstance(data, torch.Tensor) else data.size
    if size != 1:
        raise ValueError('scalar expects exactly one element, got {} (shape '
                         '{}).'.format(size, tuple(data.shape)))
    return data.item()
