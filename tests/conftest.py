"""Shared test setup: import paths and the device parametrization.

Tests run from the repository root with ``python -m pytest tests``; the root
and this folder go on ``sys.path`` so that ``import model`` and
``import reference_original`` work however pytest is started.
"""
import os
import sys

import pytest
import torch

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT_DIR = os.path.dirname(TESTS_DIR)
for path in (ROOT_DIR, TESTS_DIR):
    if path not in sys.path:
        sys.path.insert(0, path)

DEVICES = [
    'cpu',
    pytest.param('cuda', marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason='needs a CUDA device')),
]


@pytest.fixture(params=DEVICES)
def device(request):
    """The device a test runs on: 'cpu', and 'cuda' where there is one."""
    return torch.device(request.param)
