"""End-to-end tests of train.py on a small generated VOC-layout dataset.

One shortened, seeded toy run is shared by the mAP test and the notebook
test; the fault tests train on a handful of images.
"""
import os
import sys

import numpy as np
import pytest
import torch

import train
from data.dataset import TestDataset as VOCTestDataset  # not a test class
from data.loaders import label_names_of
from data.synthetic import generate_voc
from model import load_detector
from model.faster_rcnn_toy import FasterRCNNToy
from conftest import free_port, sigterm_once_under_way, window_data
from trainer import FasterRCNNTrainer
from utils.vis_tool import Visualizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _options(data_dir, out_dir, **kwargs):
    """Toy options for a quick CPU run with no visdom server around."""
    options = dict(data='toy', voc_data_dir=str(data_dir),
                   out_dir=str(out_dir), seed=0, num_workers=0,
                   test_num_workers=0, port=free_port(), device='cpu')
    options.update(kwargs)
    return options


@pytest.fixture(scope='module')
def toy_run(tmp_path_factory):
    """A shortened seeded toy training: the preset's 400 images (300 to
    train on), 4 of its 8 epochs, the lr decayed after the third (0-based
    epoch 2)."""
    tmp = tmp_path_factory.mktemp('toy_run')
    data_dir = generate_voc(str(tmp / 'toy_voc'), n_images=400, seed=1)
    best_map = train.train(**_options(data_dir, tmp / 'ck', epoch=4,
                                      lr_decay_epoch=2))
    return dict(data_dir=data_dir, out_dir=str(tmp / 'ck'), best_map=best_map)


@pytest.fixture
def tiny_data(tmp_path):
    return generate_voc(str(tmp_path / 'tiny_voc'), n_images=8, seed=2)


@pytest.mark.slow  # trains for minutes
def test_toy_training_beats_an_untrained_model(toy_run):
    # Measured here: the untrained model scores 0.003, the four epochs of
    # the fixture 0.61 (0.14, 0.23, 0.54 and 0.61 after each; runs on other
    # CPUs may differ by float rounding, hence the margin). The full toy
    # preset reaches 0.94.
    train.opt.__dict__.clear()
    train.opt._parse(_options(toy_run['data_dir'], toy_run['out_dir']))
    torch.manual_seed(0)
    untrained = FasterRCNNToy(n_fg_class=5, min_size=256, max_size=256)
    testset = VOCTestDataset(train.opt, label_names=label_names_of('toy'))
    loader = torch.utils.data.DataLoader(testset, batch_size=1)
    untrained_map = train.eval(loader, untrained)['map']

    assert untrained_map < 0.05
    assert toy_run['best_map'] > 0.4
    assert toy_run['best_map'] > untrained_map + 0.35


@pytest.mark.slow  # trains for minutes
def test_toy_run_leaves_checkpoints_and_a_picture(toy_run):
    out = toy_run['out_dir']
    for name in ('best.pth', 'last.pth', 'predictions.png'):
        assert os.path.getsize(os.path.join(out, name)) > 0
    faster_rcnn, label_names, info = load_detector(
        os.path.join(out, 'best.pth'))
    assert info['config']['data'] == 'toy' and len(label_names) == 5
    assert faster_rcnn.min_size == 256 and faster_rcnn.max_size == 256
    last = torch.load(os.path.join(out, 'last.pth'))
    assert last['other_info']['epoch'] == 4
    assert last['other_info']['best_map'] == pytest.approx(toy_run['best_map'])


@pytest.mark.slow  # trains for minutes
def test_demo_notebook_runs_against_a_trained_checkpoint(toy_run):
    nbformat = pytest.importorskip('nbformat')
    nbclient = pytest.importorskip('nbclient')
    nb = nbformat.read(os.path.join(ROOT, 'demo.ipynb'), as_version=4)
    settings = nb.cells[1]
    assert 'CHECKPOINT' in settings.source
    settings.source = 'CHECKPOINT = {!r}\nIMAGES = None\nN_IMAGES = 2'.format(
        os.path.join(toy_run['out_dir'], 'best.pth'))
    nbclient.NotebookClient(nb, timeout=300, kernel_name='python3',
                            resources={'metadata': {'path': ROOT}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == 'code'
               for o in cell.outputs]
    assert any('image/png' in o.get('data', {}) for o in outputs)
    text = ''.join(o.get('text', '') for o in outputs)
    assert "trained on 'toy' for 5 classes" in text


def test_unknown_option_is_rejected_with_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match='--not_an_option.*Valid options'):
        train.train(not_an_option=1)


def test_training_without_visdom_says_so_once(tiny_data, tmp_path, capsys):
    train.train(**_options(tiny_data, tmp_path / 'ck', epoch=1,
                           plot_every=1))
    err = capsys.readouterr().err
    assert err.count('visdom server not reachable') == 1


def test_non_finite_loss_stops_with_the_step_and_keeps_last_checkpoint(
        tiny_data, tmp_path, monkeypatch):
    forward = FasterRCNNTrainer.forward
    n_train = 6  # 8 images, 2 in the test split

    def forward_nan_at_step_8(self, *args):
        losses = forward(self, *args)
        if self.n_step == 7:  # the step about to be counted is the 8th
            losses = losses._replace(total_loss=losses.total_loss * np.nan)
        return losses

    monkeypatch.setattr(FasterRCNNTrainer, 'forward', forward_nan_at_step_8)
    out = tmp_path / 'ck'
    with pytest.raises(SystemExit, match='non-finite loss at step 8') as err:
        train.train(**_options(tiny_data, out, epoch=3))
    last = str(out / 'last.pth')
    assert last in str(err.value)
    state = torch.load(last)
    assert state['other_info']['epoch'] == 1 and state['n_step'] == n_train
    assert all(torch.isfinite(v).all() for v in state['model'].values()
               if isinstance(v, torch.Tensor))


def test_interrupt_saves_a_checkpoint_that_resume_continues(
        tiny_data, tmp_path, monkeypatch, capsys):
    train_step = FasterRCNNTrainer.train_step

    def interrupted_at_step_9(self, *args):
        if self.n_step == 8:
            raise KeyboardInterrupt
        return train_step(self, *args)

    out = tmp_path / 'ck'
    monkeypatch.setattr(FasterRCNNTrainer, 'train_step', interrupted_at_step_9)
    with pytest.raises(SystemExit, match='interrupted in epoch 1') as err:
        train.train(**_options(tiny_data, out, epoch=3, lr_decay_epoch=0))
    path = str(out / 'interrupted.pth')
    assert '--resume=' + path in str(err.value)
    saved = torch.load(path)
    best_map = saved['other_info']['best_map']
    decayed_lr = 5e-3 * 0.1  # the toy lr, decayed after epoch 0
    assert saved['other_info']['epoch'] == 1
    assert saved['optimizer']['param_groups'][0]['lr'] == pytest.approx(
        decayed_lr)

    monkeypatch.setattr(FasterRCNNTrainer, 'train_step', train_step)
    capsys.readouterr()
    train.train(**_options(tiny_data, out, epoch=3, lr_decay_epoch=0,
                           resume=path))
    printed = capsys.readouterr().out
    assert 'resumed from {} at epoch 1 (lr {}, best map {:.4f})'.format(
        path, decayed_lr, best_map) in printed
    last = torch.load(str(out / 'last.pth'))
    assert last['other_info']['epoch'] == 3
    assert last['other_info']['best_map'] >= best_map


@pytest.mark.slow  # trains for minutes
def test_sigterm_saves_a_checkpoint(tiny_data, tmp_path):
    out = tmp_path / 'ck'
    args = ['--{}={}'.format(k, v) for k, v in _options(
        tiny_data, out, epoch=50).items()]
    returncode, rest = sigterm_once_under_way(
        [sys.executable, 'train.py', 'train'] + args,
        'epoch 1', cwd=ROOT)  # 'epoch 1': training is under way
    assert returncode == 1
    assert '--resume=' in rest
    assert os.path.exists(str(out / 'interrupted.pth'))


@pytest.mark.slow  # trains for minutes
def test_checkpoint_of_another_class_count_is_refused(toy_run):
    trainer = FasterRCNNTrainer(FasterRCNNToy(n_fg_class=3))
    with pytest.raises(ValueError, match='another number of classes'):
        trainer.load(os.path.join(toy_run['out_dir'], 'best.pth'))



def test_training_plots_reach_a_real_visdom_server(tiny_data, tmp_path,
                                                   visdom_server):
    _, port = visdom_server
    env = 'faster-rcnn-toy'
    train.train(**_options(tiny_data, tmp_path / 'ck', epoch=1,
                           plot_every=2, port=port))
    vis = Visualizer(env=env, port=port)
    for win in ('total_loss', 'roi_cls_loss', 'gt_img', 'pred_img',
                'roi_cm', 'rpn_cm', 'log_text', 'test_map', 'labels'):
        assert vis.win_exists(win, env) is True, win
    loss = window_data(vis, 'total_loss', env)
    assert len(loss['content']['data'][0]['y']) == 3  # 6 steps, every 2nd
    assert window_data(vis, 'roi_cm', env)['width'] == 6  # 5 classes + bg
    assert 'epoch 0: lr' in window_data(vis, 'log_text', env)['content']
