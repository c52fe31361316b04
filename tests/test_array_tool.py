"""array_tool: numpy <-> torch round trips and python scalars."""

import numpy as np
import pytest
import torch

from utils.array_tool import scalar, tonumpy, totensor


def test_numpy_tensor_round_trip_keeps_values_shape_and_dtype():
    for dtype in (np.float32, np.float64, np.int64, np.int32, np.bool_):
        array = (np.arange(24).reshape(2, 3, 4) % 3).astype(dtype)
        tensor = totensor(array)
        assert isinstance(tensor, torch.Tensor)
        assert tuple(tensor.shape) == array.shape
        back = tonumpy(tensor)
        assert back.dtype == array.dtype
        np.testing.assert_array_equal(back, array)


def test_tonumpy_passes_arrays_through_and_detaches_tensors():
    array = np.ones((2, 2), dtype=np.float32)
    assert tonumpy(array) is array
    weight = torch.ones(3, requires_grad=True)
    np.testing.assert_array_equal(tonumpy(weight * 2), [2., 2., 2.])


def test_totensor_shares_memory_with_a_contiguous_array():
    array = np.zeros(4, dtype=np.float32)
    tensor = totensor(array)
    tensor[1] = 5.
    assert array[1] == 5.


def test_totensor_accepts_a_flipped_array():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)[:, ::-1]
    np.testing.assert_array_equal(totensor(array).numpy(), array)


def test_totensor_passes_tensors_through_detached():
    weight = torch.ones(3, requires_grad=True)
    tensor = totensor(weight)
    assert not tensor.requires_grad
    assert tensor.data_ptr() == weight.data_ptr()


def test_totensor_moves_to_the_given_device():
    for device in ('cpu', torch.device('cpu')):
        assert totensor(np.ones(2), device=device).device.type == 'cpu'
        assert totensor(torch.ones(2), device=device).device.type == 'cpu'
    assert totensor(torch.ones(2, dtype=torch.float64), 'cpu').dtype == torch.float64


def test_totensor_rejects_the_old_cuda_flag():
    with pytest.raises(TypeError, match='device'):
        totensor(np.ones(2), False)


def test_scalar_returns_python_numbers():
    assert scalar(np.array([2.5])) == 2.5
    assert type(scalar(np.array([2.5]))) is float
    assert scalar(np.float32(1.5)) == 1.5
    assert scalar(np.array(3)) == 3 and type(scalar(np.array(3))) is int
    assert scalar(torch.tensor([[7.]])) == 7.
    assert type(scalar(torch.tensor(4))) is int


def test_scalar_rejects_more_than_one_element():
    with pytest.raises(ValueError, match='exactly one element'):
        scalar(np.zeros(2))
    with pytest.raises(ValueError, match='exactly one element'):
        scalar(torch.zeros(0))


def test_unsupported_types_get_a_clear_error():
    for function in (tonumpy, totensor, scalar):
        with pytest.raises(TypeError, match='list'):
            function([1, 2])
