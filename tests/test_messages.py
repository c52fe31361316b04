"""The mistakes people make, each named in one sentence: composing a
detector, feeding images and boxes, box helpers, the command line."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import train
from conftest import TinyExtractor, TinyHead, build_tiny_faster_rcnn
from data.synthetic import generate_voc
from data.util import read_image
from data.voc_dataset import VOCBboxDataset
from model import FasterRCNN, FasterRCNNToy, RegionProposalNetwork
from model.utils.bbox_tools import bbox2loc, loc2bbox
from trainer import FasterRCNNTrainer
from utils.config import Config, UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_batch(n_box=2, label=0):
    img = torch.rand(1, 3, 64, 96) * 255
    bbox = torch.tensor([[[8., 8., 40., 50.], [20., 30., 60., 90.]]])[:, :n_box]
    labels = torch.full((1, n_box), label, dtype=torch.int32)
    return img, bbox, labels


# -------------------------------------------------- composing a detector

def test_head_without_n_class_is_named_at_construction():
    class NoClassHead(TinyHead):
        def __init__(self):
            super().__init__(3)
            del self.n_class

    rpn = RegionProposalNetwork(8, 8, anchor_scales=[2, 4, 8])
    with pytest.raises(ValueError, match=r"the head \(NoClassHead\) has no "
                                         r"attribute 'n_class'"):
        FasterRCNN(TinyExtractor(), rpn, NoClassHead())


def test_rpn_without_feat_stride_is_named_at_construction():
    with pytest.raises(ValueError, match=r"the rpn \(Conv2d\) has no "
                                         r"attribute 'feat_stride'"):
        FasterRCNN(TinyExtractor(), nn.Conv2d(8, 8, 1), TinyHead(3))


class SwappedHead(TinyHead):
    def forward(self, x, rois, roi_indices):
        roi_cls_locs, roi_scores = super().forward(x, rois, roi_indices)
        return roi_scores, roi_cls_locs


def test_head_returning_scores_first_is_named():
    torch.manual_seed(0)
    rpn = RegionProposalNetwork(8, 8, anchor_scales=[2, 4, 8])
    model = FasterRCNN(TinyExtractor(), rpn, SwappedHead(4))
    with pytest.raises(ValueError) as info:
        model(torch.rand(1, 3, 64, 96))
    message = str(info.value)
    assert 'the head (SwappedHead) returned outputs of shapes' in message
    assert 'roi_cls_locs (' in message and ', 16), roi_scores (' in message
    assert 'in this order' in message
    trainer = FasterRCNNTrainer(model)
    with pytest.raises(ValueError, match='SwappedHead'):
        trainer(*tiny_batch(), 1.)


def test_extractor_of_another_stride_is_named():
    # TinyExtractor has stride 16; an RPN told 8 would lay anchors wrong.
    torch.manual_seed(0)
    rpn = RegionProposalNetwork(8, 8, anchor_scales=[2, 4, 8], feat_stride=8)
    model = FasterRCNN(TinyExtractor(), rpn, TinyHead(4))
    with pytest.raises(ValueError) as info:
        model(torch.rand(1, 3, 64, 96))
    message = str(info.value)
    assert "features are 4x6 for a 64x96 image, a stride of about 16 px" in (
        message)
    assert "the RPN's feat_stride is 8" in message
    with pytest.raises(ValueError, match="feat_stride is 8"):
        FasterRCNNTrainer(model)(*tiny_batch(), 1.)


# -------------------------------------------------------- the trainer

@pytest.fixture
def trainer():
    return FasterRCNNTrainer(build_tiny_faster_rcnn(n_fg_class=3))


def test_boxes_without_the_batch_axis_are_named(trainer):
    img, bbox, label = tiny_batch()
    with pytest.raises(ValueError) as info:
        trainer(img, bbox[0], label, 1.)
    assert str(info.value) == (
        'FasterRCNNTrainer takes a batch of one image: bboxes must have '
        'shape (1, R, 4), got (2, 4) (length 2)')


def test_an_image_without_the_batch_axis_is_named(trainer):
    img, bbox, label = tiny_batch()
    with pytest.raises(ValueError, match=r'imgs must have shape \(1, 3, H, '
                                         r'W\), got \(3, 64, 96\) \(length '
                                         r'3\)'):
        trainer(img[0], bbox, label, 1.)


def test_labels_of_the_wrong_length_are_named(trainer):
    img, bbox, label = tiny_batch()
    with pytest.raises(ValueError, match='got 2 boxes and 1 labels'):
        trainer(img, bbox, label[:, :1], 1.)


def test_a_label_beyond_the_classes_is_named(trainer):
    img, bbox, _ = tiny_batch()
    with pytest.raises(ValueError) as info:
        trainer(img, bbox, torch.tensor([[1, 6]]), 1.)
    assert str(info.value) == ('gt label 6 is out of range: the model has 3 '
                               'foreground classes (labels 0..2)')


# --------------------------------------------------------- your images

def test_predict_warns_once_about_images_in_0_1(recwarn):
    model = build_tiny_faster_rcnn()
    img = np.random.RandomState(0).uniform(0, 1, (3, 70, 90)).astype(
        np.float32)
    model.predict([img, img], visualize=True)
    messages = [str(w.message) for w in recwarn.list]
    assert any('values in [0, 255]' in m and 'image 0' in m for m in messages)
    recwarn.clear()
    model.predict([img * 255], visualize=True)
    assert not [w for w in recwarn.list if '[0, 255]' in str(w.message)]


def test_too_small_image_message_gives_the_users_size():
    model = build_tiny_faster_rcnn(min_size=64, max_size=128)
    img = np.zeros((3, 5, 400), np.float32)  # resized to 2x128
    with pytest.raises(ValueError) as info:
        model.predict([img], visualize=True)
    message = str(info.value)
    assert 'image 0 of size 5x400 is 2x128 once resized' in message
    assert 'feature stride (16 px)' in message


def test_16_bit_png_is_scaled_not_saturated(tmp_path):
    pixels = (np.arange(12 * 10).reshape(12, 10) * 500).astype(np.uint16)
    path = str(tmp_path / 'deep.png')
    Image.fromarray(pixels).save(path)
    img = read_image(path)
    assert img.shape == (3, 12, 10)
    np.testing.assert_allclose(img[1], pixels / 257., rtol=1e-6)
    assert 0 < img.max() < 255


def test_uint8_image_is_writable(tmp_path):
    path = str(tmp_path / 'x.jpg')
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(path)
    img = read_image(path, dtype=np.uint8)
    img[0, 0, 0] = 7
    assert img[0, 0, 0] == 7


# ----------------------------------------------------------- box tools

@pytest.mark.parametrize('function, names', [
    (loc2bbox, 'src_bbox and loc'), (bbox2loc, 'src_bbox and dst_bbox')])
def test_box_helpers_name_both_shapes(function, names):
    with pytest.raises(ValueError) as info:
        function(np.zeros((3, 4), np.float32), np.zeros((2, 4), np.float32))
    assert str(info.value) == (
        '{} needs {} with the same number of rows (one per box), got shapes '
        '(3, 4) and (2, 4)'.format(function.__name__, names))


# ------------------------------------------------------ the command line

def test_mistyped_option_suggests_the_closest():
    with pytest.raises(UsageError) as info:
        Config()._parse(dict(epochs=3))
    message = str(info.value)
    assert message.startswith('Unknown option "--epochs"; did you mean '
                              '"--epoch"? Valid options are: ')
    assert '--use_chainer' not in message and '--debug_file' not in message


def run_train(*args, cwd=ROOT):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'),
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


def test_voc_without_annotations_is_reported_before_training(tmp_path):
    data_dir = generate_voc(str(tmp_path / 'voc'), n_images=4, seed=0)
    os.rename(os.path.join(data_dir, 'Annotations'),
              os.path.join(data_dir, 'Labels'))
    with pytest.raises(FileNotFoundError, match='has no Annotations '
                                                'directory'):
        VOCBboxDataset(data_dir, split='trainval')


def test_split_listing_a_missing_xml_is_reported_before_training(tmp_path):
    data_dir = generate_voc(str(tmp_path / 'voc'), n_images=4, seed=0)
    with open(os.path.join(data_dir, 'ImageSets', 'Main',
                           'trainval.txt')) as f:
        first = f.readline().strip()
    os.remove(os.path.join(data_dir, 'Annotations', first + '.xml'))
    with pytest.raises(FileNotFoundError) as info:
        VOCBboxDataset(data_dir, split='trainval')
    assert "of image id '{}'".format(first) in str(info.value)
    assert 'trainval.txt' in str(info.value)
    with pytest.raises(UsageError, match="image id '{}'".format(first)):
        train.train(data='toy', voc_data_dir=data_dir, num_workers=0,
                    test_num_workers=0, device='cpu')


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


def test_default_workers_do_not_exceed_the_cores():
    assert Config().num_workers <= os.cpu_count()
    assert Config().test_num_workers <= os.cpu_count()
