"""model/utils/convert_caffe_vgg16.py: the caffe VGG16 converter writes
what ``pretrained_model='caffe'`` loads, refuses a file already converted,
and names what is missing offline. Nothing is downloaded."""
import os

import pytest
import torch
import torchvision

from conftest import use_hub
from model import FasterRCNNVGG16
from model.utils.convert_caffe_vgg16 import FILE_NAME, convert_caffe_vgg16


def caffe_layout(state):
    """torchvision VGG16 keys with the classifier's linears at 1 and 4, as
    in vgg16-00b39a1b.pth."""
    moves = {'classifier.0.': 'classifier.1.', 'classifier.3.': 'classifier.4.'}
    out = {}
    for key, value in state.items():
        for old, new in moves.items():
            if key.startswith(old):
                key = new + key[len(old):]
        out[key] = value
    return out


@pytest.fixture(scope='module')
def caffe_file(tmp_path_factory):
    torch.manual_seed(5)
    state = torchvision.models.vgg16().state_dict()
    path = str(tmp_path_factory.mktemp('caffe') / FILE_NAME)
    torch.save(caffe_layout(state), path)
    yield dict(path=path, state=state)
    os.remove(path)


@pytest.mark.slow  # seconds, not minutes, but the quick suite leaves it out
def test_converter_writes_what_caffe_pretrain_loads(caffe_file, tmp_path):
    dst = str(tmp_path / 'checkpoints' / 'vgg16_caffe.pth')
    assert convert_caffe_vgg16(src=caffe_file['path'], dst=dst) == dst
    converted = torch.load(dst)
    assert sorted(converted) == sorted(caffe_file['state'])
    vgg = torchvision.models.vgg16(weights=None)
    vgg.load_state_dict(converted)  # strict: every key in place
    assert torch.equal(vgg.classifier[3].weight,
                       caffe_file['state']['classifier.3.weight'])
    model = FasterRCNNVGG16(n_fg_class=2, pretrained_model='caffe',
                            caffe_pretrain_path=dst)
    assert model.caffe_pretrain is True
    assert torch.equal(model.head.classifier[0].weight,
                       caffe_file['state']['classifier.0.weight'])
    os.remove(dst)


@pytest.mark.slow  # writes a VGG16-size file (528 MB)
def test_converter_refuses_a_file_already_in_torchvision_layout(
        tmp_path, caffe_file):
    src = str(tmp_path / 'converted.pth')
    torch.save({k: v for k, v in caffe_file['state'].items()
                if k.startswith('classifier')}, src)
    with pytest.raises(ValueError, match='not the caffe VGG16'):
        convert_caffe_vgg16(src=src, dst=str(tmp_path / 'out.pth'))


def test_converter_offline_says_which_file_and_where(tmp_path, monkeypatch):
    use_hub(monkeypatch, tmp_path)
    with pytest.raises(RuntimeError) as info:
        convert_caffe_vgg16(dst=str(tmp_path / 'out.pth'))
    message = str(info.value)
    assert FILE_NAME in message and '--src=' in message
    assert os.path.join(str(tmp_path / 'hub'), 'checkpoints',
                        FILE_NAME) in message
    assert '\n' not in message
    assert not os.path.exists(str(tmp_path / 'out.pth'))


def test_converter_names_a_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere.pth does not exist'):
        convert_caffe_vgg16(src=str(tmp_path / 'nowhere.pth'))
