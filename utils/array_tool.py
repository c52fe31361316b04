"""Tensors to numpy arrays, at the data boundary."""

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
