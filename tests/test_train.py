"""train.py: end-to-end runs on small generated datasets (VOC layout,
and COCO files written from one), the end-of-epoch schedule, the options
(each mistake one line and exit status 2, refused before any work), and
the faults a run survives (a non-finite loss, an interrupt, SIGTERM, no
visdom server).

One shortened, seeded toy run is shared by the mAP test and the notebook
test; the fault tests train on a handful of images. The COCO files have
category ids that are neither contiguous nor in the file in id order, so
that the labels must come from sorting the ids.
"""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import train
from conftest import (ROOT_DIR, TOY_CATEGORY_IDS, free_port,
                      quick_train_options, sigterm_once_under_way,
                      toy_options, use_hub, window_data)
from data.dataset import TestDataset as VOCTestDataset  # not a test class
from data.loaders import label_names_of
from data.synthetic import TOY_LABEL_NAMES, generate_voc
from model import FasterRCNNToy, load_detector
from train import TOY_PRESET, end_of_epoch
from trainer import FasterRCNNTrainer
from utils import evaluation
from utils.config import Config, UsageError
from utils.evaluation import score_detections
from utils.vis_tool import Visualizer


# ----------------------------------------------------------- the toy run

@pytest.fixture(scope='module')
def toy_run(tmp_path_factory):
    """A shortened seeded toy training: the preset's 400 images (300 to
    train on), 4 of its 8 epochs, the lr decayed after the third (0-based
    epoch 2)."""
    tmp = tmp_path_factory.mktemp('toy_run')
    data_dir = generate_voc(str(tmp / 'toy_voc'), n_images=400, seed=1)
    best_map = train.train(**quick_train_options(data_dir, tmp / 'ck', epoch=4,
                                      lr_decay_epoch=2))
    return dict(data_dir=data_dir, out_dir=str(tmp / 'ck'), best_map=best_map)


@pytest.mark.slow  # trains for minutes
def test_toy_training_beats_an_untrained_model(toy_run):
    # Measured here: the untrained model scores 0.003, the four epochs of
    # the fixture 0.61 (0.14, 0.23, 0.54 and 0.61 after each; runs on other
    # CPUs may differ by float rounding, hence the margin). The full toy
    # preset reaches 0.94.
    train.opt.__dict__.clear()
    train.opt._parse(quick_train_options(toy_run['data_dir'],
                                         toy_run['out_dir']))
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
    nb = nbformat.read(os.path.join(ROOT_DIR, 'demo.ipynb'), as_version=4)
    settings = nb.cells[1]
    assert 'CHECKPOINT' in settings.source
    settings.source = 'CHECKPOINT = {!r}\nIMAGES = None\nN_IMAGES = 2'.format(
        os.path.join(toy_run['out_dir'], 'best.pth'))
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name='python3',
        resources={'metadata': {'path': ROOT_DIR}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == 'code'
               for o in cell.outputs]
    assert any('image/png' in o.get('data', {}) for o in outputs)
    text = ''.join(o.get('text', '') for o in outputs)
    assert "trained on 'toy' for 5 classes" in text


@pytest.mark.slow  # trains for minutes
def test_checkpoint_of_another_class_count_is_refused(toy_run):
    trainer = FasterRCNNTrainer(FasterRCNNToy(n_fg_class=3))
    with pytest.raises(ValueError, match='another number of classes'):
        trainer.load(os.path.join(toy_run['out_dir'], 'best.pth'))


# ---------------------------------------------------------- the schedule

def lr_of_each_epoch(n_epoch, lr, lr_decay, lr_decay_epoch):
    """The lr every epoch trains with, as train.py's loop sets it."""
    lrs = []
    for epoch in range(n_epoch):
        lrs.append(lr)
        _, decay = end_of_epoch(epoch, 0., 0., True, lr_decay_epoch)
        if decay:
            lr *= lr_decay
    return lrs


def test_default_schedule_is_the_originals():
    # for epoch in range(14): ...; if epoch == 9: reload best, scale lr
    opt = Config()
    lrs = lr_of_each_epoch(opt.epoch, opt.lr, opt.lr_decay,
                           opt.lr_decay_epoch)
    assert lrs == pytest.approx([1e-3] * 10 + [1e-4] * 4)


def test_decay_happens_once_at_the_given_0_based_epoch():
    decays = [end_of_epoch(epoch, 0., 0., True, 9)[1] for epoch in range(14)]
    assert decays == [epoch == 9 for epoch in range(14)]


def test_toy_preset_decays_after_its_sixth_epoch():
    lrs = lr_of_each_epoch(TOY_PRESET['epoch'], TOY_PRESET['lr'], 0.1,
                           TOY_PRESET['lr_decay_epoch'])
    assert lrs == pytest.approx([5e-3] * 6 + [5e-4] * 2)


@pytest.mark.parametrize('eval_map, best_map, has_best, is_best', [
    (0.5, 0.4, True, True),
    (0.4, 0.4, True, False),   # a tie keeps the earlier best
    (0.3, 0.4, True, False),
    (0.0, 0.0, False, True),   # the first epoch is always saved
])
def test_best_checkpoint_is_a_strictly_better_map(eval_map, best_map,
                                                  has_best, is_best):
    assert end_of_epoch(0, eval_map, best_map, has_best, 9)[0] is is_best


# ----------------------------------------------------------- the options

def test_unknown_option_is_rejected_with_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match='--not_an_option.*Valid options'):
        train.train(not_an_option=1)


def run_train(*args, cwd=ROOT_DIR):
    return subprocess.run([sys.executable, os.path.join(ROOT_DIR, 'train.py'),
                           'train'] + list(args), cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_command_line_mistake_is_one_line_and_status_2():
    result = run_train('--epochs=3')
    assert result.returncode == 2
    assert 'Traceback' not in result.stderr
    assert result.stderr.count('\n') == 1
    assert result.stderr.startswith('train.py: error: Unknown option '
                                    '"--epochs"; did you mean "--epoch"?')


def test_missing_data_directory_is_one_line_and_status_2(tmp_path):
    result = run_train('--voc-data-dir={}'.format(tmp_path / 'nowhere'),
                       '--device=cpu', '--pretrained-model=None')
    assert result.returncode == 2
    assert 'Traceback' not in result.stderr
    assert 'nowhere does not exist' in result.stderr


def _main_error(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(['train'] + ['--{}={}'.format(k, v)
                                for k, v in args.items()])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith('train.py: error: ')
    return err[0][len('train.py: error: '):]


@pytest.mark.parametrize('option, value', [
    ('batch_size', 0), ('batch_size', 2.5), ('test_batch_size', -1),
    ('size_divisible', 0), ('batch_size', True)])
def test_a_batch_size_below_1_is_a_usage_error(tmp_path, option, value):
    with pytest.raises(UsageError, match='--{} must be a whole number >= 1, '
                       'got {!r}'.format(option.replace('_', '-'), value)):
        train.train(**quick_train_options(
            tmp_path / 'none', tmp_path / 'ck', epoch=1, **{option: value}))


def test_bad_amp_option_is_a_command_line_mistake():
    with pytest.raises(UsageError, match="--amp must be None, 'bf16' or "
                                         "'fp16', got 'fp8'"):
        train.train(amp='fp8')


def test_train_py_refuses_an_unknown_backbone(tmp_path):
    data_dir = generate_voc(str(tmp_path / 'voc'), n_images=4, seed=2)
    with pytest.raises(UsageError, match='backbone'):
        train.train(data='voc', voc_data_dir=data_dir, backbone='resnet18',
                    num_workers=0, test_num_workers=0, device='cpu')


def test_train_py_builds_the_creators_from_the_options():
    a, p = train.target_creators(Config()._state_dict())
    assert (a.clobber_positives, a.allowed_border, p.neg_iou_thresh_lo) == \
        (False, 0, 0.0)
    config = dict(Config()._state_dict(), clobber_positives=True,
                  allowed_border=None, neg_iou_thresh_lo=0.1)
    a, p = train.target_creators(config)
    assert (a.clobber_positives, a.allowed_border, p.neg_iou_thresh_lo) == \
        (True, None, 0.1)


@pytest.mark.parametrize('option', [dict(clobber_positives='yes'),
                                    dict(allowed_border='wide'),
                                    dict(neg_iou_thresh_lo='low'),
                                    dict(neg_iou_thresh_lo=0.7)])
def test_a_bad_rule_option_is_a_usage_error(option, tmp_path):
    with pytest.raises(UsageError, match=list(option)[0]):
        train.train(data='toy', voc_data_dir=str(tmp_path / 'none'),
                    **option)
    assert not (tmp_path / 'none').exists()  # refused before any work


@pytest.mark.slow  # trains
def test_a_training_run_uses_the_rule_options(tmp_path, monkeypatch):
    seen = []

    class Trainer(train.FasterRCNNTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append(self)

    monkeypatch.setattr(train, 'FasterRCNNTrainer', Trainer)
    data_dir = generate_voc(str(tmp_path / 'voc'), n_images=8, seed=2)
    train.train(data='toy', voc_data_dir=data_dir,
                out_dir=str(tmp_path / 'ck'), num_workers=0,
                test_num_workers=0, device='cpu', epoch=1, port=1,
                clobber_positives=True, allowed_border=16,
                neg_iou_thresh_lo=0.1)
    a = seen[0].anchor_target_creator
    p = seen[0].proposal_target_creator
    assert (a.clobber_positives, a.allowed_border, p.neg_iou_thresh_lo) == \
        (True, 16, 0.1)


def test_the_sampler_option_reaches_train_pys_creators():
    config = Config()
    assert config.sampler == 'numpy'
    config._parse(dict(sampler='torch'))
    a, p = train.target_creators(config._state_dict())
    assert a.sampler == p.sampler == 'torch'
    with pytest.raises(UsageError, match="sampler must be one of"):
        train.target_creators(dict(config._state_dict(), sampler='gpu'))


@pytest.mark.slow  # trains
def test_toy_preset_trains_with_roialign(tmp_path):
    """train.py with --roi-op=align: one short epoch, and the checkpoint
    rebuilds with RoIAlign."""
    data_dir = generate_voc(str(tmp_path / 'voc'), n_images=8, seed=2)
    train.train(data='toy', voc_data_dir=data_dir,
                out_dir=str(tmp_path / 'ck'), seed=0, num_workers=0,
                test_num_workers=0, device='cpu', epoch=1, port=1,
                roi_op='align')
    model, _, info = load_detector(str(tmp_path / 'ck' / 'best.pth'))
    assert info['config']['roi_op'] == 'align'
    assert model.head.roi.roi_op == 'align'


@pytest.mark.slow  # trains
def test_train_on_batches_of_two(four_image_data, tmp_path):
    train.train(**quick_train_options(
        four_image_data, tmp_path / 'ck', epoch=1, batch_size=2,
        test_batch_size=3))
    last = torch.load(str(tmp_path / 'ck' / 'last.pth'), weights_only=False)
    assert last['n_step'] == 2  # 3 training images: batches of 2 and 1
    assert last['config']['batch_size'] == 2


# -------------------------------------------- COCO files and class names

# The labels follow the sorted category ids: 1, 7, 12, 30, 90.
SORTED_NAMES = tuple(name for _, name in sorted(zip(TOY_CATEGORY_IDS,
                                                    TOY_LABEL_NAMES)))


def _coco_options(coco_data, out_dir, **kwargs):
    options = dict(
        data='coco', coco_train_ann=coco_data['train_ann'],
        coco_train_img=coco_data['img_dir'],
        coco_test_ann=coco_data['test_ann'],
        coco_test_img=coco_data['img_dir'], min_size=192, max_size=192,
        backbone='toy', lr=5e-3, epoch=1, seed=0, num_workers=0,
        test_num_workers=0, port=free_port(), device='cpu',
        out_dir=str(out_dir))
    options.update(kwargs)
    return options


@pytest.mark.slow  # trains
def test_coco_training_with_the_coco_metric(coco_data, tmp_path,
                                            monkeypatch):
    scored = []

    def spy(metric, *args):
        scored.append((metric, score_detections(metric, *args)))
        return scored[-1][1]

    monkeypatch.setattr(evaluation, 'score_detections', spy)
    best_map = train.train(**_coco_options(coco_data, tmp_path / 'ck',
                                           metric='coco'))

    # One epoch, scored once by COCOeval; its AP at 0.50:0.95 is the 'map'
    # that picked best.pth.
    [(metric, result)] = scored
    assert metric == 'coco'
    assert {'map', 'ap50', 'ap75', 'ap_small', 'ap_medium',
            'ap_large'} <= set(result)
    assert best_map == pytest.approx(result['map'])
    assert -1 <= best_map <= 1

    for name in ('best.pth', 'last.pth'):
        checkpoint = torch.load(str(tmp_path / 'ck' / name))
        assert checkpoint['label_names'] == list(SORTED_NAMES)
        assert checkpoint['config']['data'] == 'coco'
        assert checkpoint['config']['metric'] == 'coco'
    assert os.path.getsize(tmp_path / 'ck' / 'predictions.png') > 0


def test_coco_options_are_required(tmp_path, capsys):
    message = _main_error(dict(data='coco', out_dir=tmp_path / 'ck'),
                          capsys)
    assert message == (
        "--data=coco needs --coco-train-ann (the train set's annotations "
        'JSON) and --coco-train-img (the directory its file names are '
        'relative to)')


def test_bad_metric_and_label_names_with_coco(coco_data, tmp_path, capsys):
    options = _coco_options(coco_data, tmp_path / 'ck')
    assert _main_error(dict(options, metric='map'), capsys) == (
        "--metric must be 'voc07', 'voc' or 'coco', got 'map'")
    assert _main_error(dict(options, label_names='a,b'), capsys) == (
        '--label-names is for VOC-layout data; with --data=coco the '
        'categories of the annotation files name the classes')


def test_test_file_with_other_categories(coco_data, tmp_path, capsys):
    with open(coco_data['test_ann']) as f:
        data = json.load(f)
    data['categories'][0]['name'] = 'box'  # the first in the file: id 30
    other = tmp_path / 'other.json'
    other.write_text(json.dumps(data))
    message = _main_error(_coco_options(
        coco_data, tmp_path / 'ck', coco_test_ann=other), capsys)
    assert message == (
        'the training annotations {} and the test annotations {} declare '
        "different categories ((id, name) [(30, {!r})] only in the "
        "first, [(30, 'box')] only in the second); expected the same".format(
            coco_data['train_ann'], other, TOY_LABEL_NAMES[0]))


def test_missing_image_is_found_before_training(coco_data, tmp_path,
                                                capsys):
    with open(coco_data['train_ann']) as f:
        data = json.load(f)
    data['images'][1]['file_name'] = 'gone.jpg'
    other = tmp_path / 'train.json'
    other.write_text(json.dumps(data))
    message = _main_error(_coco_options(
        coco_data, tmp_path / 'ck', coco_train_ann=other), capsys)
    assert message == (
        'image file {} does not exist (missing from {}: 1 of the 9 images '
        'listed in {})'.format(os.path.join(coco_data['img_dir'], 'gone.jpg'),
                               coco_data['img_dir'], other))
    assert not (tmp_path / 'ck').exists()


@pytest.mark.slow  # trains
def test_voc_layout_with_own_class_names(tmp_path):
    """A VOC-layout folder of two classes, named by --label-names: one
    epoch, the names recorded in the checkpoint."""
    names = ('cross', 'circle')
    voc_dir = generate_voc(str(tmp_path / 'two'), n_images=6, seed=3,
                           label_names=names)
    (tmp_path / 'labels.txt').write_text('cross\ncircle\n')
    train.train(data='voc', voc_data_dir=voc_dir,
                label_names=str(tmp_path / 'labels.txt'), min_size=192,
                max_size=192, backbone='toy', epoch=1, seed=0,
                num_workers=0, test_num_workers=0, port=free_port(),
                device='cpu', metric='voc', out_dir=str(tmp_path / 'ck'))
    checkpoint = torch.load(str(tmp_path / 'ck' / 'best.pth'))
    assert checkpoint['label_names'] == list(names)


def test_voc_class_not_in_label_names(tmp_path, capsys):
    """Checked in every XML file of both splits before training."""
    voc_dir = generate_voc(str(tmp_path / 'two'), n_images=6, seed=3,
                           label_names=('cross', 'circle'))
    message = _main_error(dict(
        data='voc', voc_data_dir=voc_dir, label_names='cross,ring',
        pretrained_model=None, device='cpu', num_workers=0,
        test_num_workers=0, out_dir=tmp_path / 'ck'), capsys)
    assert message.startswith(os.path.join(voc_dir, 'Annotations', ''))
    assert message.endswith(".xml has an object of class 'circle', not one "
                            'of --label-names (cross, ring)')
    assert not (tmp_path / 'ck').exists()


# ---------------------------------------------------------------- faults

@pytest.mark.slow  # trains
def test_training_without_visdom_says_so_once(tiny_data, tmp_path, capsys):
    train.train(**quick_train_options(tiny_data, tmp_path / 'ck', epoch=1,
                           plot_every=1))
    err = capsys.readouterr().err
    assert err.count('visdom server not reachable') == 1


@pytest.mark.slow  # trains
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
        train.train(**quick_train_options(tiny_data, out, epoch=3))
    last = str(out / 'last.pth')
    assert last in str(err.value)
    state = torch.load(last)
    assert state['other_info']['epoch'] == 1 and state['n_step'] == n_train
    assert all(torch.isfinite(v).all() for v in state['model'].values()
               if isinstance(v, torch.Tensor))


@pytest.mark.slow  # trains
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
        train.train(**quick_train_options(tiny_data, out, epoch=3,
                                          lr_decay_epoch=0))
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
    train.train(**quick_train_options(tiny_data, out, epoch=3,
                                      lr_decay_epoch=0, resume=path))
    printed = capsys.readouterr().out
    assert 'resumed from {} at epoch 1 (lr {}, best map {:.4f})'.format(
        path, decayed_lr, best_map) in printed
    last = torch.load(str(out / 'last.pth'))
    assert last['other_info']['epoch'] == 3
    assert last['other_info']['best_map'] >= best_map


@pytest.mark.slow  # trains for minutes
def test_sigterm_saves_a_checkpoint(tiny_data, tmp_path):
    out = tmp_path / 'ck'
    args = ['--{}={}'.format(k, v) for k, v in quick_train_options(
        tiny_data, out, epoch=50).items()]
    returncode, rest = sigterm_once_under_way(
        [sys.executable, 'train.py', 'train'] + args,
        'epoch 1', cwd=ROOT_DIR)  # 'epoch 1': training is under way
    assert returncode == 1
    assert '--resume=' in rest
    assert os.path.exists(str(out / 'interrupted.pth'))


def test_resume_from_a_bare_state_dict_is_a_command_line_mistake(tmp_path):
    data_dir = generate_voc(str(tmp_path / 'voc'), n_images=4, seed=0)
    model = FasterRCNNToy(n_fg_class=5)
    path = str(tmp_path / 'bare.pth')
    torch.save(model.state_dict(), path)
    result = run_train('--data=toy', '--voc-data-dir=' + data_dir,
                       '--resume=' + path, '--num-workers=0',
                       '--test-num-workers=0', '--device=cpu',
                       '--out-dir={}'.format(tmp_path / 'ck'))
    assert result.returncode == 2, result.stderr
    assert 'Traceback' not in result.stderr
    assert '{} is not a resumable checkpoint: it lacks model, optimizer'.format(
        path) in result.stderr


# ---------------------------------------------------------------- visdom

@pytest.mark.slow  # trains
def test_training_plots_reach_a_real_visdom_server(tiny_data, tmp_path,
                                                   visdom_server):
    _, port = visdom_server
    env = 'faster-rcnn-toy'
    train.train(**quick_train_options(tiny_data, tmp_path / 'ck', epoch=1,
                           plot_every=2, port=port))
    vis = Visualizer(env=env, port=port)
    for win in ('total_loss', 'roi_cls_loss', 'gt_img', 'pred_img',
                'roi_cm', 'rpn_cm', 'log_text', 'test_map', 'labels'):
        assert vis.win_exists(win, env) is True, win
    loss = window_data(vis, 'total_loss', env)
    assert len(loss['content']['data'][0]['y']) == 3  # 6 steps, every 2nd
    assert window_data(vis, 'roi_cm', env)['width'] == 6  # 5 classes + bg
    assert 'epoch 0: lr' in window_data(vis, 'log_text', env)['content']




# ------------------------------------------ help, messages, the last line

def test_help_lists_the_commands_and_every_option():
    for argv in (['--help'], ['train', '--help'], ['evaluate', '-h']):
        result = subprocess.run([sys.executable, 'train.py'] + argv,
                                cwd=ROOT_DIR, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert out.startswith('usage: python train.py COMMAND')
        assert '\n  train ' in out and '\n  evaluate ' in out
        for name, default in Config()._state_dict().items():
            assert '  --{}={}\n'.format(name.replace('_', '-'),
                                        default) in out, name
        assert ('  --min-size=600\n        resize so that the shorter image '
                'side is this many pixels') in out
        assert 'GROUPS' not in out and 'COMMANDS' not in out


def test_offline_starting_weights_are_one_line_and_status_2(
        four_image_data, tmp_path, monkeypatch, capsys):
    use_hub(monkeypatch, tmp_path / 'home')
    with pytest.raises(SystemExit) as info:
        train.main(['train', '--voc-data-dir=' + four_image_data,
                    '--label-names=' + ','.join(TOY_LABEL_NAMES),
                    '--num-workers=0', '--test-num-workers=0',
                    '--device=cpu', '--out-dir=' + str(tmp_path / 'ck')])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        "train.py: error: torchvision's ImageNet VGG16 weights are not on "
        'this machine and could not be downloaded: put the file '
        'vgg16-397923af.pth in {}, or start from random init with '
        '--pretrained-model=None\n'.format(
            tmp_path / 'home' / 'hub' / 'checkpoints'))


def test_missing_caffe_weights_say_which_command_writes_them(
        four_image_data, tmp_path, capsys):
    missing = tmp_path / 'vgg16_caffe.pth'
    with pytest.raises(SystemExit) as info:
        train.main(['train', '--voc-data-dir=' + four_image_data,
                    '--label-names=' + ','.join(TOY_LABEL_NAMES),
                    '--caffe-pretrain', '--caffe-pretrain-path=' +
                    str(missing), '--num-workers=0', '--device=cpu',
                    '--out-dir=' + str(tmp_path / 'ck')])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        'train.py: error: caffe-converted VGG16 weights are not on this '
        'machine (python -m model.utils.convert_caffe_vgg16 writes them): '
        'put the file vgg16_caffe.pth in {}, or start from random init with '
        '--pretrained-model=None\n'.format(tmp_path))


@pytest.mark.parametrize('content', [b'\x80\x03\x99 random bytes',
                                     b'a text file\n'])
def test_a_load_path_that_is_no_checkpoint_is_one_line(
        content, four_image_data, tmp_path, capsys):
    path = tmp_path / 'not.pth'
    path.write_bytes(content)
    with pytest.raises(SystemExit) as info:
        train.main(['train', '--data=toy', '--voc-data-dir=' + four_image_data,
                    '--load-path=' + str(path), '--num-workers=0'])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        'train.py: error: {} is not a checkpoint: torch.load cannot read it '
        "(expected a file torch.save writes, as train.py's checkpoints)\n"
        .format(path))


@pytest.mark.slow  # trains
def test_a_run_says_what_changed_first_and_ends_in_one_sentence(
        tiny_data, tmp_path, capsys):
    out = tmp_path / 'ck'
    train.main(['train', '--data=toy', '--voc-data-dir=' + tiny_data,
                '--out-dir=' + str(out), '--epoch=2', '--num-workers=0',
                '--test-num-workers=0', '--device=cpu',
                '--port={}'.format(free_port())])
    lines = [line for line in capsys.readouterr().out.splitlines()
             if not line.startswith(('visdom', 'writing'))]
    assert lines[0].startswith('options: ')
    listed = set(lines[0].split()[1:])
    # the toy preset's and the user's options, each once; defaults not
    assert {'--voc-data-dir=' + tiny_data, '--backbone=toy',
            '--min-size=256', '--lr=0.005', '--epoch=2'} <= listed
    assert len(listed) == len(lines[0].split()) - 1
    assert not any(o.startswith('--roi-op') for o in listed)
    best = torch.load(str(out / 'best.pth'))['other_info']['best_map']
    assert lines[-1] == (
        'Best voc07 mAP {:.4f}, kept in {}; the test predictions are drawn '
        'in {} and the training curves in {}.'.format(
            best, out / 'best.pth', out / 'predictions.png',
            out / 'training_curves.png'))
    with open(str(out / 'history.csv')) as f:
        rows = list(csv.DictReader(f))
    assert [int(row['epoch']) for row in rows] == [0, 1]
    assert max(float(row['map']) for row in rows) == pytest.approx(best)
    assert os.path.getsize(str(out / 'training_curves.png')) > 0


# ---------------------------------------------------------------- evaluate

@pytest.fixture
def toy_checkpoint(tmp_path):
    """An untrained toy detector of the toy classes at 128 px, saved as
    train.py saves it."""
    from data.synthetic import TOY_LABEL_NAMES
    from model import FasterRCNNToy
    from trainer import FasterRCNNTrainer
    torch.manual_seed(0)
    model = FasterRCNNToy(n_fg_class=5, min_size=128, max_size=128)
    return FasterRCNNTrainer(model, label_names=TOY_LABEL_NAMES).save(
        save_path=str(tmp_path / 'toy.pth'))


def test_evaluate_prints_the_metric_and_writes_a_report(
        toy_checkpoint, tiny_data, tmp_path, capsys):
    report = tmp_path / 'report'
    metrics = train.evaluate_checkpoint(
        data='toy', voc_data_dir=tiny_data, load_path=toy_checkpoint,
        num_workers=0, test_num_workers=0, device='cpu',
        report_dir=str(report))
    out = capsys.readouterr().out.splitlines()
    assert out[0] == 'mAP (voc07, IoU 0.5): {:.4f}'.format(metrics['map'])
    assert [line.split()[1] for line in out[1:6]] == list(TOY_LABEL_NAMES)
    assert out[-1].startswith('The report is in {}: '.format(report))
    saved = json.loads((report / 'metrics.json').read_text())
    assert saved['map'] == pytest.approx(metrics['map'])
    for name in ('report.md', 'pr_curves.png', 'errors.png', 'worst.png'):
        assert (report / name).stat().st_size > 0, name
    # the same numbers as the training loop's evaluation of the model
    from model import load_detector
    model, _, _ = load_detector(toy_checkpoint)
    testset = VOCTestDataset(toy_options(tiny_data), label_names=TOY_LABEL_NAMES)
    want = train.eval(DataLoader(testset, batch_size=1), model)
    assert metrics['map'] == pytest.approx(want['map'])


def test_evaluate_without_a_checkpoint_is_one_sentence(tiny_data, capsys):
    with pytest.raises(SystemExit) as info:
        train.main(['evaluate', '--data=toy', '--voc-data-dir=' + tiny_data])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        'train.py: error: evaluate needs --load-path=CHECKPOINT, the '
        'detector to score\n')


def test_evaluate_on_data_of_other_classes_names_both(
        toy_checkpoint, tiny_data, capsys):
    with pytest.raises(SystemExit) as info:
        train.main(['evaluate', '--voc-data-dir=' + tiny_data,
                    '--label-names=cross,circle', '--num-workers=0',
                    '--test-num-workers=0', '--device=cpu',
                    '--load-path=' + toy_checkpoint])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        'train.py: error: the checkpoint {} detects 5 classes ({}) but the '
        'test set of {} has 2 (cross, circle): give the data it was trained '
        'for\n'.format(toy_checkpoint, ', '.join(TOY_LABEL_NAMES),
                       tiny_data))


@pytest.mark.slow  # trains a ResNet-50 FPN
def test_fpn_backbone_trains_and_rebuilds(four_image_data, tmp_path):
    train.train(**quick_train_options(
        four_image_data, tmp_path / 'ck', backbone='resnet50_fpn',
        pretrained_model=None, lr=1e-3, epoch=1, min_size=128,
        max_size=128))
    from model import FasterRCNNFPNResNet50, load_detector
    model, names, info = load_detector(str(tmp_path / 'ck' / 'best.pth'))
    assert isinstance(model, FasterRCNNFPNResNet50)
    assert info['config']['backbone'] == 'resnet50_fpn'
    assert (model.min_size, model.max_size) == (128, 128)
    assert names == TOY_LABEL_NAMES
