"""utils/config.py: Config's original defaults, option parsing (an unknown
option named with the closest), the state dict, the changed options and the
help text."""
import os

import pytest

from utils.config import (Config, UsageError, changed_options, option_help,
                          usage)

SPEC_DEFAULTS = {
    'voc_data_dir': '/dataset/PASCAL2007/VOC2007/',
    'min_size': 600,
    'max_size': 1000,
    'rpn_sigma': 3.,
    'roi_sigma': 1.,
    'weight_decay': 0.0005,
    'lr_decay': 0.1,
    'lr': 1e-3,
    'env': 'faster-rcnn',
    'port': 8097,
    'plot_every': 40,
    'data': 'voc',
    'pretrained_model': 'vgg16',
    'epoch': 14,
    'use_adam': False,
    'use_drop': False,
    'test_num': 10000,
    'load_path': None,
    'caffe_pretrain': False,
    'caffe_pretrain_path': 'checkpoints/vgg16_caffe.pth',
}

NEW_DEFAULTS = {
    # The spec's 8 workers, but never more than the machine has cores.
    'num_workers': min(8, os.cpu_count()),
    'test_num_workers': min(8, os.cpu_count()),
    'lr_decay_epoch': 9,
    'seed': None,
    'device': None,
    'resume': None,
    'out_dir': 'checkpoints',
}


def test_defaults_are_the_spec_values():
    state = Config()._state_dict()
    for name, value in {**SPEC_DEFAULTS, **NEW_DEFAULTS}.items():
        assert state[name] == value, name
        assert type(state[name]) is type(value), name


def test_state_dict_lists_public_fields_only():
    state = Config()._state_dict()
    assert set(SPEC_DEFAULTS) | set(NEW_DEFAULTS) <= set(state)
    assert not [k for k in state if k.startswith('_')]
    # the original's options that nothing read are gone
    assert not {'use_chainer', 'debug_file'} & set(state)


def test_parse_sets_options_on_the_instance_only(capsys):
    opt = Config()
    opt._parse({'lr': 5e-3, 'env': 'toy', 'seed': 3})
    assert (opt.lr, opt.env, opt.seed) == (5e-3, 'toy', 3)
    assert (Config.lr, Config().lr) == (1e-3, 1e-3)
    assert capsys.readouterr().out == ''  # train.py says what changed


def test_changed_options_lists_only_what_differs():
    opt = Config()
    assert changed_options(opt) == ''
    opt._parse({'lr': 5e-3, 'epoch': 14, 'voc_data_dir': 'toy_voc'})
    # epoch=14 is the default: not listed
    assert changed_options(opt) == '--voc-data-dir=toy_voc --lr=0.005'


def test_help_gives_every_option_its_default_and_comment():
    entries = option_help()
    assert [name for name, _, _ in entries] == list(Config()._state_dict())
    assert all(comment for _, _, comment in entries)
    entry = dict((name, (default, comment)) for name, default, comment
                 in entries)
    assert entry['min_size'] == (
        600, 'resize so that the shorter image side is this many pixels')
    text = usage('python train.py', dict(train='train it'))
    assert text.splitlines()[0] == \
        'usage: python train.py COMMAND [--option=value ...]'
    assert '  train      train it' in text
    assert '  --min-size=600\n        resize so that the shorter image ' \
        'side is this many pixels' in text
    assert max(len(line) for line in text.splitlines()) <= 84


def test_parse_rejects_an_unknown_option_and_sets_nothing():
    opt = Config()
    with pytest.raises(ValueError) as error:
        opt._parse({'lr': 0.5, 'learning_rate': 0.1})
    message = str(error.value)
    assert '--learning_rate' in message
    assert '--lr,' in message and '--out_dir' in message
    assert opt.lr == 1e-3


def test_state_dict_round_trip(capsys):
    source = Config()
    source._parse({'lr': 0.01, 'epoch': 3, 'use_adam': True, 'resume': 'x.pth'})
    target = Config()
    target._parse(source._state_dict())
    assert target._state_dict() == source._state_dict()


def test_a_subclass_keeps_the_base_options():
    class ToyConfig(Config):
        toy_size = 256  # side of the generated images

    state = ToyConfig()._state_dict()
    assert state['toy_size'] == 256
    assert state['lr'] == 1e-3


def test_mistyped_option_suggests_the_closest():
    with pytest.raises(UsageError) as info:
        Config()._parse(dict(epochs=3))
    message = str(info.value)
    assert message.startswith('Unknown option "--epochs"; did you mean '
                              '"--epoch"? Valid options are: ')
    assert '--use_chainer' not in message and '--debug_file' not in message


def test_default_workers_do_not_exceed_the_cores():
    assert Config().num_workers <= os.cpu_count()
    assert Config().test_num_workers <= os.cpu_count()
