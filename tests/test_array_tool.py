"""utils/array_tool.py: tonumpy, from a tensor or an array."""
import numpy as np
import pytest
import torch

from utils.array_tool import tonumpy


def test_numpy_tensor_round_trip_keeps_values_shape_and_dtype():
    for dtype in (np.float32, np.float64, np.int64, np.int32, np.bool_):
        array = (np.arange(24).reshape(2, 3, 4) % 3).astype(dtype)
        tensor = torch.from_numpy(array)
        back = tonumpy(tensor)
        assert back.dtype == array.dtype
        np.testing.assert_array_equal(back, array)


def test_tonumpy_passes_arrays_through_and_detaches_tensors():
    array = np.ones((2, 2), dtype=np.float32)
    assert tonumpy(array) is array
    weight = torch.ones(3, requires_grad=True)
    np.testing.assert_array_equal(tonumpy(weight * 2), [2., 2., 2.])


def test_unsupported_types_get_a_clear_error():
    with pytest.raises(TypeError, match='list'):
        tonumpy([1, 2])
