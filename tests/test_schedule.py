"""The end-of-epoch decisions of train.py, without training: the
original's schedule decays after its 0-based epoch 9 (the 10th)."""
import pytest

from train import TOY_PRESET, end_of_epoch
from utils.config import Config


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
