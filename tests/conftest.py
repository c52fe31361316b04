"""Shared test setup: import paths, the device parametrization and a tiny
composed detector.

Tests run from the repository root with ``python -m pytest tests``; the root
and this folder go on ``sys.path`` so that ``import model`` and
``from reference import original`` work however pytest is started.
"""
import os
import sys

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import RoIPool

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


# ------------------------------------------------- a tiny composed detector

class TinyExtractor(nn.Sequential):
    """Four conv + ReLU + 2x2 max-pool stages: stride 16, few channels."""

    def __init__(self, channels=8):
        layers = []
        in_channels = 3
        for _ in range(4):
            layers += [nn.Conv2d(in_channels, channels, 3, padding=1),
                       nn.ReLU(), nn.MaxPool2d(2)]
            in_channels = channels
        super().__init__(*layers)


class TinyHead(nn.Module):
    """A head honouring FasterRCNN's interface: RoIPool 2x2 at 1/16, one
    hidden layer, class offsets and scores."""

    def __init__(self, n_class, in_channels=8, roi_size=2, n_hidden=32):
        super().__init__()
        self.n_class = n_class
        self.roi = RoIPool((roi_size, roi_size), 1. / 16)
        self.fc = nn.Linear(in_channels * roi_size ** 2, n_hidden)
        self.cls_loc = nn.Linear(n_hidden, n_class * 4)
        self.score = nn.Linear(n_hidden, n_class)

    def forward(self, x, rois, roi_indices):
        from model.utils.layers import roi_pool_yx
        pool = roi_pool_yx(self.roi, x, rois, roi_indices)
        h = F.relu(self.fc(pool.flatten(1)))
        return self.cls_loc(h), self.score(h)


TINY_RATIOS = [0.5, 1, 2]
TINY_SCALES = [2, 4, 8]


def build_tiny_faster_rcnn(n_fg_class=3, min_size=64, max_size=128,
                           seed=0, **kwargs):
    """FasterRCNN(TinyExtractor, RegionProposalNetwork, TinyHead) with
    32-128 px anchors, for images of about 64-256 px."""
    # imported here so that a broken model package fails these tests only,
    # not the collection of every test
    from model.faster_rcnn import FasterRCNN
    from model.region_proposal_network import RegionProposalNetwork
    torch.manual_seed(seed)
    rpn = RegionProposalNetwork(8, 8, ratios=TINY_RATIOS,
                                anchor_scales=TINY_SCALES)
    return FasterRCNN(TinyExtractor(), rpn, TinyHead(n_fg_class + 1),
                      min_size=min_size, max_size=max_size, **kwargs)


@pytest.fixture
def make_tiny_faster_rcnn():
    """A factory of tiny composed detectors (see build_tiny_faster_rcnn)."""
    return build_tiny_faster_rcnn
