"""Shared test setup, and every helper more than one test module uses (test
modules import from here, never from each other): import paths, the device
parametrization, a tiny composed detector and its fixed batches, the toy
detector and quick training runs, COCO files, an offline torch hub, a
command stopped by SIGTERM, a real visdom server on a free localhost port,
and the reads of the host.

Each library module has a test module named after it. Those without one
are tested where they are used: model/build.py (load_detector) in
test_checkpoint.py, model/fpn.py in test_faster_rcnn_fpn.py,
model/faster_rcnn_toy.py in test_roi_head.py and test_train.py,
model/utils/command_line.py in test_train.py, test_predict.py and
test_export.py, model/utils/layers.py in test_amp.py and
test_faster_rcnn_vgg16.py, utils/cuda_syncs.py in test_meters.py.

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

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT_DIR = os.path.dirname(TESTS_DIR)
for path in (ROOT_DIR, TESTS_DIR):
    if path not in sys.path:
        sys.path.insert(0, path)

# One intra-op thread in the test process. On this project's 2-core
# machines, shared with other work, torch's two threads made small ops up to
# 100x slower (a toy training step 1.5 s against 0.1 s with one thread; the
# quick suite 208 s against 73 s); the tests' small tensors gain little from
# a second thread even on an idle machine.
torch.set_num_threads(1)

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


def spread_tiny_faster_rcnn(seed=0):
    """build_tiny_faster_rcnn(seed=seed) with its RPN's scores spread: at the
    N(0, 0.01) init nearly all foreground scores are 0.5 and many tie in
    float32; spread, their order (and so the proposals) is defined."""
    model = build_tiny_faster_rcnn(seed=seed)
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        model.rpn.conv1.weight.mul_(30)
        model.rpn.score.weight.copy_(
            torch.randn(model.rpn.score.weight.shape, generator=g) * 10)
    return model


def regression_batch():
    """One fixed image (1, 3, 192, 256) as a tensor, its four boxes and
    labels as numpy arrays: the batch the seeded losses are pinned on."""
    rng = np.random.RandomState(2024)
    img = rng.normal(size=(1, 3, 192, 256)).astype(np.float32)
    img = torch.from_numpy(img)
    bbox = np.array([[10, 12, 90, 100], [40, 120, 150, 250],
                     [100, 20, 180, 70], [5, 150, 60, 200]], np.float32)
    label = np.array([0, 2, 1, 2], np.int32)
    return img, bbox, label


def tiny_batch(n_box=2, label=0):
    """A random 64x96 image in [0, 255] and ``n_box`` boxes of class
    ``label``, each with the batch axis."""
    img = torch.rand(1, 3, 64, 96) * 255
    bbox = torch.tensor([[[8., 8., 40., 50.], [20., 30., 60., 90.]]])[:, :n_box]
    labels = torch.full((1, n_box), label, dtype=torch.int32)
    return img, bbox, labels


def losses_on_one_object(trainer, steps=20):
    """The total losses of ``steps`` training steps on one 128 x 128 image
    whose one object (label 1) stands out from uniform noise."""
    rng = np.random.RandomState(0)
    img = torch.tensor(rng.uniform(-1, 1, (1, 3, 128, 128)),
                       dtype=torch.float32)
    img[:, :, 30:80, 40:100] += 2.
    bbox = torch.tensor([[[30., 40., 80., 100.]]])
    label = torch.tensor([[1]])
    return [trainer.train_step(img, bbox, label, 1.).total_loss.item()
            for _ in range(steps)]


def normal_image(seed, h=128, w=160):
    """A (3, h, w) float32 tensor of N(0, 1) values (a preprocessed image),
    drawn from ``seed``."""
    rng = np.random.RandomState(seed)
    return torch.from_numpy(rng.normal(size=(3, h, w)).astype(np.float32))


def random_image(H, W, seed=0):
    """A raw (3, H, W) RGB image in [0, 255], float32, drawn from ``seed``."""
    return np.random.RandomState(seed).uniform(
        0, 255, (3, H, W)).astype(np.float32)


# ------------------------------------- the toy detector and training runs

def toy_options(data_dir):
    """The options a TestDataset of the toy data reads, at 128 px."""
    import types
    return types.SimpleNamespace(voc_data_dir=data_dir, min_size=128,
                                 max_size=128, caffe_pretrain=False)


def toy_model():
    """An untrained (seeded) toy detector of the toy classes at 128 px,
    keeping every detection (score_thresh 0), so that an AP bites."""
    from data.synthetic import TOY_LABEL_NAMES
    from model.faster_rcnn_toy import FasterRCNNToy
    torch.manual_seed(0)
    model = FasterRCNNToy(n_fg_class=len(TOY_LABEL_NAMES), min_size=128,
                          max_size=128)
    model.score_thresh = 0.  # many detections, so that the AP bites
    return model


def quick_train_options(data_dir, out_dir, **kwargs):
    """train.train's keyword arguments for a quick seeded CPU run on toy
    VOC-layout data, with no visdom server around."""
    options = dict(data='toy', voc_data_dir=str(data_dir),
                   out_dir=str(out_dir), seed=0, num_workers=0,
                   test_num_workers=0, port=free_port(), device='cpu')
    options.update(kwargs)
    return options


@pytest.fixture
def tiny_data(tmp_path):
    """A generated toy VOC-layout dataset of 8 images (6 to train on)."""
    from data.synthetic import generate_voc
    return generate_voc(str(tmp_path / 'tiny_voc'), n_images=8, seed=2)


@pytest.fixture
def four_image_data(tmp_path):
    """A generated toy VOC-layout dataset of 4 images (3 to train on)."""
    from data.synthetic import generate_voc
    return generate_voc(str(tmp_path / 'tiny_voc'), n_images=4, seed=2)


# ---------------------------------------------------------- COCO files

# Declared out of id order on purpose: labels follow the sorted ids.
COCO_CATEGORIES = [{'id': 18, 'name': 'dog'}, {'id': 1, 'name': 'person'},
                   {'id': 3, 'name': 'car'}]


def coco_ann(ann_id, img_id, cat_id, bbox, iscrowd=0):
    """One annotation of a COCO file; ``bbox`` is [x, y, w, h]."""
    return {'id': ann_id, 'image_id': img_id, 'category_id': cat_id,
            'bbox': bbox, 'iscrowd': iscrowd, 'area': 1.0}


def write_coco(root, annotations, images=None, categories=COCO_CATEGORIES,
               write_images=True):
    """Writes ``root/ann.json`` and ``root/img/<file_name>``; returns both
    paths. Images default to two: id 7 (48x64) and id 3 (20x30)."""
    from PIL import Image
    if images is None:
        images = [
            {'id': 7, 'file_name': 'a.jpg', 'height': 48, 'width': 64},
            {'id': 3, 'file_name': 'sub/b.png', 'height': 20, 'width': 30}]
    img_dir = os.path.join(str(root), 'img')
    os.makedirs(img_dir, exist_ok=True)
    if write_images:
        for img in images:
            path = os.path.join(img_dir, img['file_name'])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.new('RGB', (img['width'], img['height']),
                      (10, 20, 30)).save(path)
    ann_file = os.path.join(str(root), 'ann.json')
    with open(ann_file, 'w') as f:
        json.dump({'images': images, 'annotations': annotations,
                   'categories': categories}, f)
    return ann_file, img_dir


def pycocotools_eval(ann_file_or_dataset, results, image_ids=None):
    """COCOeval as pycocotools' users run it, after evaluate, accumulate
    and summarize. ``results``: a list of detections or a JSON file."""
    import copy
    import io
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(ann_file_or_dataset, dict):
            coco_gt = COCO()
            coco_gt.dataset = copy.deepcopy(ann_file_or_dataset)
            coco_gt.createIndex()
        else:
            coco_gt = COCO(ann_file_or_dataset)
        if results:
            coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        else:  # loadRes cannot read an empty list
            coco_dt = COCO()
            coco_dt.dataset = {'images': coco_gt.dataset['images'],
                               'annotations': [],
                               'categories': coco_gt.dataset['categories']}
            coco_dt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_dt, 'bbox')
        if image_ids is not None:
            coco_eval.params.imgIds = list(image_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


# Category ids of the toy classes, in TOY_LABEL_NAMES order; voc_as_coco
# lists them in this order, the labels follow the sorted ids.
TOY_CATEGORY_IDS = (30, 7, 12, 90, 1)


def voc_as_coco(voc_dir, split, path):
    """The split of a VOC-layout toy dataset as a COCO JSON file at
    ``path``, its categories TOY_CATEGORY_IDS; difficult objects become
    crowd regions."""
    from data.synthetic import TOY_LABEL_NAMES
    from data.voc_dataset import VOCBboxDataset
    db = VOCBboxDataset(voc_dir, split=split, use_difficult=True,
                        return_difficult=True, label_names=TOY_LABEL_NAMES)
    images, annotations = [], []
    for i in range(len(db)):
        img, bbox, label, difficult = db.get_example(i)
        img_id = 100 + i
        images.append({'id': img_id, 'file_name': db.ids[i] + '.jpg',
                       'height': img.shape[1], 'width': img.shape[2]})
        for (y_min, x_min, y_max, x_max), l, d in zip(bbox, label,
                                                      difficult):
            w, h = float(x_max - x_min), float(y_max - y_min)
            annotations.append({
                'id': len(annotations) + 1, 'image_id': img_id,
                'category_id': TOY_CATEGORY_IDS[l], 'iscrowd': int(d),
                'bbox': [float(x_min), float(y_min), w, h], 'area': w * h})
    categories = [{'id': cat_id, 'name': name}
                  for cat_id, name in zip(TOY_CATEGORY_IDS, TOY_LABEL_NAMES)]
    with open(path, 'w') as f:
        json.dump({'images': images, 'annotations': annotations,
                   'categories': categories}, f)
    return str(path)


@pytest.fixture(scope='module')
def coco_data(tmp_path_factory):
    """COCO files of a generated 12-image toy dataset (256 px): its
    trainval split (9 images) and test split (3), and the image folder."""
    from data.synthetic import generate_voc
    tmp = tmp_path_factory.mktemp('coco')
    voc_dir = generate_voc(str(tmp / 'voc'), n_images=12, seed=2)
    return dict(
        img_dir=os.path.join(voc_dir, 'JPEGImages'),
        train_ann=voc_as_coco(voc_dir, 'trainval', tmp / 'train.json'),
        test_ann=voc_as_coco(voc_dir, 'test', tmp / 'test.json'))


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
