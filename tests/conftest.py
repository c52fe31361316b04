"""Shared test setup: import paths, the device parametrization, a tiny
composed detector, and a real visdom server on a free localhost port.

Tests run from the repository root with ``python -m pytest tests``; the root
and this folder go on ``sys.path`` so that ``import model`` and
``from reference import original`` work however pytest is started.
"""
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import torch
from torch import nn
from torch.nn import functional as F

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
        from model.roi_head import RoIPooler
        super().__init__()
        self.n_class = n_class
        self.roi = RoIPooler('pool', roi_size, 1. / 16)
        self.fc = nn.Linear(in_channels * roi_size ** 2, n_hidden)
        self.cls_loc = nn.Linear(n_hidden, n_class * 4)
        self.score = nn.Linear(n_hidden, n_class)

    def forward(self, x, rois, roi_indices):
        pool = self.roi(x, rois, roi_indices)
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


def options(**overrides):
    """train.py's options: the defaults of utils.config.Config, with
    ``overrides``."""
    from utils.config import Config
    return dict(Config()._state_dict(), **overrides)


# ------------------------------------------------ an offline torch hub

def use_hub(monkeypatch, home):
    """Points torch.hub at home (TORCH_HOME and the hub dir), restored after
    the test, and makes any download fail."""
    monkeypatch.setenv('TORCH_HOME', str(home))
    monkeypatch.setattr(torch.hub, '_hub_dir', str(home / 'hub'),
                        raising=False)
    assert torch.hub.get_dir() == str(home / 'hub')

    def offline(*args, **kwargs):
        raise urllib.error.URLError('offline')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)


# ------------------------------------------- a command stopped by SIGTERM

def sigterm_once_under_way(command, until, **popen_kwargs):
    """Starts ``command``, reads its output until a line holds ``until``,
    then sends it SIGTERM.

    Returns:
        (int, str): its exit status and the output after the signal.
    """
    proc = subprocess.Popen(command, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            **popen_kwargs)
    try:
        seen = ''
        while until not in seen:
            line = proc.stdout.readline()
            assert line, 'the command ended early:\n' + seen
            seen += line.replace('\r', '\n')
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc.returncode, rest


# ------------------------------------------------------ a visdom server
# ``python -m visdom.server`` first downloads its web assets and dies
# offline; the server's own entry point ``visdom.server.run_server.main()``
# starts it without that step.

SERVER_START_TIMEOUT = 60  # seconds a starting visdom server may take


def free_port():
    """A localhost port nobody listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture
def visdom_server(tmp_path):
    """Start a visdom server on a free localhost port.

    Yields:
        (subprocess.Popen, int): The server process and its port. At
        teardown the server is stopped by its PID: terminated, then killed
        if it has not exited after 10 s.
    """
    port = free_port()
    log_path = tmp_path / 'visdom.log'
    with open(log_path, 'w') as log:
        server = subprocess.Popen(
            [sys.executable, '-c',
             'from visdom.server.run_server import main; main()',
             '-port', str(port), '-env_path', str(tmp_path / 'envs'),
             '-logging_level', 'WARNING', '-bind_local'],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_answering(server, port, log_path)
        yield server, port
    finally:
        stop(server)


def stop(server):
    """Terminate a server process by its PID; kill it if it lingers."""
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def wait_until_answering(server, port, log_path):
    """Poll the server's page until it answers; fail if it exits or hangs."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail('visdom server exited with {}:\n{}'.format(
                server.returncode, log_path.read_text()))
        try:
            urllib.request.urlopen('http://127.0.0.1:{}/'.format(port),
                                   timeout=1).close()
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    pytest.fail('visdom server did not answer within {} s:\n{}'.format(
        SERVER_START_TIMEOUT, log_path.read_text()))


def window_data(vis, win, env):
    """The server's record of window ``win`` in ``env``, as a dict."""
    return json.loads(vis.get_window_data(win, env))


# --------------------------------------------------- reads of the host

HOST_READS = ('item', 'tolist', 'numpy', '__bool__', '__int__', '__float__',
              '__index__')


@contextlib.contextmanager
def host_reads(device):
    """Records what waits on tensor values inside the block.

    On CUDA: every synchronizing call, as :func:`utils.cuda_syncs.cuda_syncs`
    records it. On the CPU nothing
    waits, so the explicit reads stand in for them: each call of
    :data:`HOST_READS` on a tensor, as the name of the function that made
    it (dynamic shapes, e.g. ``torch.where(mask)``, are not seen here).

    Yields:
        list of str: filled in as the block runs.
    """
    if device.type == 'cuda':
        from utils.cuda_syncs import cuda_syncs
        with cuda_syncs() as syncs:
            yield syncs
        return
    reads = []
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def recording(name):
        def read(self, *args, **kwargs):
            reads.append(sys._getframe(1).f_code.co_name)
            return originals[name](self, *args, **kwargs)
        return read

    own = {name: torch.Tensor.__dict__.get(name) for name in HOST_READS}
    for name in HOST_READS:
        setattr(torch.Tensor, name, recording(name))
    try:
        yield reads
    finally:
        for name in HOST_READS:
            if own[name] is None:  # inherited from torch._C.TensorBase
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, own[name])
