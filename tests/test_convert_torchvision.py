"""model.utils.convert_torchvision: torchvision's Faster R-CNNs (built
offline with seeded random weights) converted, rebuilt by load_detector,
give torchvision's detections: the same number, the same classes, boxes
within 0.01 px and scores within 1e-4, on images of three sizes, for each
architecture; the command's mistakes; fine-tuning from a converted file."""
import json
import os

import numpy as np
import pytest
import torch
import torchvision

import train
from conftest import free_port, use_hub
from data.synthetic import generate_voc
from model import load_detector
from model.utils.convert_torchvision import (ARCHS, coco_categories,
                                             convert_torchvision, main)
from model.utils.checkpoint import read_checkpoint

SIZES = [(240, 320), (300, 200), (173, 411)]


def torchvision_model(arch, seed=0):
    """torchvision's ``arch`` with seeded random weights, in eval mode.

    The BatchNorms get statistics (and for MobileNet, whose features are
    otherwise nearly alike for every RoI, scales and shifts), the class
    scores are spread (a wider score layer) so that dozens of detections
    an image pass 0.05 among 91 classes, with distinct scores, and the 10
    ids COCO leaves unused score -30 (as in a trained model, they are never
    the answer: the conversion drops them)."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models.detection, arch)(
        weights=None, weights_backbone=None)
    predictor = model.roi_heads.box_predictor
    mobilenet = 'mobilenet' in arch
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.)
                if mobilenet:
                    module.weight.uniform_(1., 3.)
                    module.bias.normal_(0., 1.)
        predictor.cls_score.weight.normal_(0, 0.3 if mobilenet else 0.2)
        predictor.bbox_pred.weight.normal_(0, 0.01)
        _, ids = coco_categories()
        unused = [i for i in range(1, 91) if i not in ids]
        predictor.cls_score.weight[unused] = 0.
        predictor.cls_score.bias[unused] = -30.
    return model.eval()


def images(seed):
    rng = np.random.RandomState(seed)
    return [rng.uniform(0, 255, (3,) + size).astype(np.float32)
            for size in SIZES]


def assert_same_detections(theirs, ours, category_ids):
    """torchvision's dict (x, y boxes, category ids, by score) against
    detect's (y, x boxes, labels, grouped by class)."""
    n = len(theirs['scores'])
    assert len(ours['scores']) == n
    theirs_order = theirs['scores'].argsort(descending=True)
    ours_order = ours['scores'].argsort(descending=True)
    labels = torch.as_tensor(category_ids)[ours['labels'][ours_order]]
    assert torch.equal(labels, theirs['labels'][theirs_order])
    torch.testing.assert_close(ours['scores'][ours_order],
                               theirs['scores'][theirs_order],
                               rtol=0, atol=1e-4)
    torch.testing.assert_close(ours['boxes'][ours_order][:, [1, 0, 3, 2]],
                               theirs['boxes'][theirs_order],
                               rtol=0, atol=1e-2)


@pytest.mark.slow  # ResNet-50 at 800 px: seconds an image
@pytest.mark.parametrize('arch', sorted(ARCHS))
def test_converted_detector_gives_torchvisions_detections(arch, tmp_path):
    model = torchvision_model(arch)
    src = str(tmp_path / 'torchvision.pth')
    torch.save(model.state_dict(), src)
    dst = convert_torchvision(arch, src, str(tmp_path / 'ours.pth'))
    detector, label_names, info = load_detector(dst)
    names, ids = coco_categories()
    assert label_names == tuple(names) and len(names) == 80
    assert info['category_ids'] == ids and ids[-1] == 90
    assert (detector.resize, detector.size_divisible) == ('bilinear', 32)
    assert detector.preset == 'evaluate'
    assert (detector.nms_thresh, detector.score_thresh,
            detector.detections_per_image) == (0.5, 0.05, 100)
    # every setting is torchvision's own, read off its model (random
    # weights rarely reach the small-box, clip and suppression rules)
    heads, rpn = model.roi_heads, model.rpn
    assert (detector.nms_thresh, detector.score_thresh,
            detector.detections_per_image) == (
        heads.nms_thresh, heads.score_thresh, heads.detections_per_img)
    assert (detector.min_size, detector.max_size) == (
        model.transform.min_size[0], model.transform.max_size)
    assert detector.size_divisible == model.transform.size_divisible
    assert detector.loc_clip == heads.box_coder.bbox_xform_clip == \
        rpn.box_coder.bbox_xform_clip
    # postprocess_detections: batched_nms, remove_small_boxes(1e-2)
    assert (detector.suppression, detector.min_det_size) == ('batched', 1e-2)
    ours_rpn = detector.rpn
    assert (ours_rpn.nms_thresh, ours_rpn.min_size,
            ours_rpn.score_thresh) == (rpn.nms_thresh, rpn.min_size,
                                       rpn.score_thresh)
    assert (ours_rpn.n_pre_nms, ours_rpn.n_post_nms) == (
        dict(train=rpn._pre_nms_top_n['training'],
             test=rpn._pre_nms_top_n['testing']),
        dict(train=rpn._post_nms_top_n['training'],
             test=rpn._post_nms_top_n['testing']))
    n_detections = 0
    for img in images(1):
        with torch.no_grad():
            theirs = model([torch.from_numpy(img) / 255.])[0]
        ours = detector.detect([img])[0]
        assert_same_detections(theirs, ours, ids)
        n_detections += len(theirs['scores'])
    assert n_detections >= 30


def test_unknown_arch_lists_the_supported_ones(capsys):
    with pytest.raises(SystemExit) as info:
        main(['--arch=fasterrcnn_vgg16', '--src=x.pth'])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == ('python -m model.utils.convert_torchvision: error: '
                   '--arch=fasterrcnn_vgg16 is not one of {}\n'.format(
                       ', '.join(ARCHS)))


def test_a_state_dict_of_another_arch_names_the_first_key(tmp_path, capsys):
    src = str(tmp_path / 'mobilenet.pth')
    torch.save(torchvision_model(
        'fasterrcnn_mobilenet_v3_large_320_fpn').state_dict(), src)
    with pytest.raises(SystemExit) as info:
        main(['--arch=fasterrcnn_resnet50_fpn', '--src=' + src,
              '--dst=' + str(tmp_path / 'out.pth')])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1
    assert ('{}: the state dict does not fit --arch=fasterrcnn_resnet50_fpn:'
            ' its key backbone.body.0.0.weight has no place in it'.format(
                src)) in err
    assert not os.path.exists(tmp_path / 'out.pth')


def test_offline_without_src_names_the_file_and_where(tmp_path, monkeypatch,
                                                      capsys):
    use_hub(monkeypatch, tmp_path)
    with pytest.raises(SystemExit) as info:
        main(['--arch=fasterrcnn_resnet50_fpn'])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        'python -m model.utils.convert_torchvision: error: torchvision\'s '
        'COCO-trained fasterrcnn_resnet50_fpn weights are not on this '
        'machine and could not be downloaded: put the file '
        'fasterrcnn_resnet50_fpn_coco-258fb6c6.pth in {}, or give it with '
        '--src\n'.format(tmp_path / 'hub' / 'checkpoints'))


@pytest.mark.slow  # trains
def test_fine_tuning_resets_the_class_layers_only(tmp_path, capsys):
    """One short epoch on generated data of 5 classes from a converted
    file: the run says which layers were reset; the frozen first blocks are
    the converted ones, the class layers have 5 + 1 classes."""
    arch = 'fasterrcnn_mobilenet_v3_large_320_fpn'
    src = str(tmp_path / 'tv.pth')
    torch.save(torchvision_model(arch).state_dict(), src)
    converted = convert_torchvision(arch, src, str(tmp_path / 'coco.pth'))
    data_dir = generate_voc(str(tmp_path / 'voc'), n_images=6, seed=3)
    train.train(data='voc', voc_data_dir=data_dir,
                label_names=('square', 'circle', 'triangle', 'cross', 'ring'),
                load_path=converted, epoch=1, seed=0, num_workers=0,
                test_num_workers=0, port=free_port(), device='cpu',
                out_dir=str(tmp_path / 'ck'))
    out = capsys.readouterr().out
    assert ('reset head.cls_loc, head.score (class scores and class boxes) '
            "to a fresh initialisation: the checkpoint's 80 classes "
            "(person, bicycle, car, ...) are not the data's 5 (square, "
            'circle, triangle, ...)') in out
    tuned, names, _ = load_detector(str(tmp_path / 'ck' / 'best.pth'))
    assert names == ('square', 'circle', 'triangle', 'cross', 'ring')
    assert tuned.head.score.out_features == 6
    assert (tuned.min_size, tuned.resize) == (320, 'bilinear')
    start = read_checkpoint(converted)['model']
    for key in ('extractor.body.0.0.weight', 'extractor.body.6.block.0.0.'
                'weight'):  # frozen blocks
        assert torch.equal(tuned.state_dict()[key], start[key]), key
    assert not torch.equal(tuned.state_dict()['rpn.conv.weight'],
                           start['rpn.conv.weight'])  # trained


def test_category_names_and_ids_are_cocos():
    names, ids = coco_categories()
    assert (names[0], ids[0]) == ('person', 1)
    assert (names[11], ids[11]) == ('stop sign', 13)  # 12 is unused
    assert (names[-1], ids[-1]) == ('toothbrush', 90)
    assert len(set(ids)) == 80
    json.dumps(ids)  # plain ints, for checkpoints and JSON files
