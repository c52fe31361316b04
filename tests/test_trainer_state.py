"""The trainer's state across a failed step and across a resume: a
non-finite loss changes nothing, and a resumed run continues with the same
step count, momentum and random numbers."""
import random

import numpy as np
import pytest
import torch

from conftest import build_tiny_faster_rcnn
from trainer import FasterRCNNTrainer, LossTuple


def make_batch():
    g = torch.Generator().manual_seed(0)
    imgs = torch.randn(1, 3, 64, 96, generator=g)
    bboxes = torch.tensor([[[10., 20., 50., 70.]]])
    labels = torch.tensor([[1]], dtype=torch.int32)
    return imgs, bboxes, labels, 1.


def make_trainer(seed=0):
    return FasterRCNNTrainer(build_tiny_faster_rcnn(seed=seed))


def snapshot(trainer):
    """Copies of every parameter and of the optimizer's state."""
    params = {k: v.detach().clone()
              for k, v in trainer.faster_rcnn.state_dict().items()
              if isinstance(v, torch.Tensor)}
    state = {i: {k: v.clone() if isinstance(v, torch.Tensor) else v
                 for k, v in s.items()}
             for i, s in trainer.optimizer.state_dict()['state'].items()}
    return params, state


def assert_same_tensors(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ------------------------------------------------------- non-finite loss

def test_nan_loss_raises_with_the_step_and_changes_nothing():
    np.random.seed(0)
    trainer = make_trainer()
    batch = make_batch()
    trainer.train_step(*batch)  # a good step: momentum buffers exist
    params, state = snapshot(trainer)
    assert state, 'the good step left no momentum buffers'
    forward = trainer.forward

    def nan_forward(*args):
        losses = forward(*args)
        return LossTuple(*losses[:4], losses.total_loss * float('nan'))

    trainer.forward = nan_forward
    with pytest.raises(FloatingPointError, match=r'\bstep 2\b'):
        trainer.train_step(*batch)
    params_after, state_after = snapshot(trainer)
    assert_same_tensors(params_after, params)
    assert state_after.keys() == state.keys()
    for i in state:
        assert_same_tensors(state_after[i], state[i])


def test_inf_loss_raises_too():
    np.random.seed(0)
    trainer = make_trainer()
    params, _ = snapshot(trainer)
    forward = trainer.forward

    def inf_forward(*args):
        losses = forward(*args)
        return LossTuple(*losses[:4], losses.total_loss + float('inf'))

    trainer.forward = inf_forward
    with pytest.raises(FloatingPointError, match=r'\bstep 1\b'):
        trainer.train_step(*make_batch())
    assert_same_tensors(snapshot(trainer)[0], params)
    assert trainer.optimizer.state_dict()['state'] == {}


# ------------------------------------------------------------------ resume

@pytest.fixture
def resumable(tmp_path):
    """A checkpoint after two steps, and the random numbers that followed
    its saving."""
    np.random.seed(0)
    random.seed(0)
    torch.manual_seed(0)
    trainer = make_trainer()
    batch = make_batch()
    for _ in range(2):
        trainer.train_step(*batch)
    path = trainer.save(save_optimizer=True,
                        save_path=str(tmp_path / 'last.pth'), epoch=1,
                        best_map=0.)
    expected = dict(numpy=np.random.rand(5), python=[random.random()
                                                       for _ in range(5)],
                    torch=torch.rand(5))
    return trainer, path, expected


def test_resume_restores_step_count_momentum_and_rngs(resumable):
    trainer, path, expected = resumable
    # a fresh model (other weights) and a disturbed RNG
    np.random.seed(123)
    random.seed(123)
    resumed = make_trainer(seed=1)
    info = resumed.load(path, resume=True)

    assert info == dict(epoch=1, best_map=0.)
    assert resumed.n_step == trainer.n_step == 2
    assert_same_tensors(snapshot(resumed)[0], snapshot(trainer)[0])
    want = trainer.optimizer.state_dict()['state']
    got = resumed.optimizer.state_dict()['state']
    assert want and got.keys() == want.keys()
    for i in want:
        assert torch.equal(got[i]['momentum_buffer'],
                           want[i]['momentum_buffer']), i
    np.testing.assert_array_equal(np.random.rand(5), expected['numpy'])
    assert [random.random() for _ in range(5)] == expected['python']
    assert torch.equal(torch.rand(5), expected['torch'])


def test_resume_of_a_bare_state_dict_says_what_it_lacks(tmp_path):
    trainer = make_trainer()
    path = str(tmp_path / 'weights.pth')
    torch.save(trainer.faster_rcnn.state_dict(), path)
    with pytest.raises(ValueError) as err:
        make_trainer().load(path, resume=True)
    message = str(err.value)
    assert path in message and 'not a resumable checkpoint' in message
    assert 'lacks' in message and 'optimizer' in message


def test_resume_of_a_checkpoint_without_optimizer_says_so(tmp_path):
    np.random.seed(0)
    trainer = make_trainer()
    trainer.train_step(*make_batch())
    path = trainer.save(save_optimizer=False,
                        save_path=str(tmp_path / 'best.pth'), epoch=1,
                        best_map=0.)
    fresh = make_trainer(seed=1)
    before, _ = snapshot(fresh)
    with pytest.raises(ValueError) as err:
        fresh.load(path, resume=True)
    message = str(err.value)
    assert path in message and 'it lacks optimizer (' in message
    # refused before anything was loaded
    assert_same_tensors(snapshot(fresh)[0], before)
    assert fresh.n_step == 0


def test_meters_hold_the_steps_losses(make_tiny_faster_rcnn):
    # the losses reach the meters (and the non-finite check) in one
    # transfer: the same numbers as the step's tensors
    from trainer import loss_values
    trainer = FasterRCNNTrainer(make_tiny_faster_rcnn())
    img = torch.rand(1, 3, 64, 96) * 255
    bbox = torch.tensor([[[8., 8., 40., 50.]]])
    np.random.seed(0)
    losses = trainer.train_step(img, bbox, torch.tensor([[1]]), 1.)
    means = trainer.get_meter_data()
    for name, value in losses._asdict().items():
        assert means[name] == pytest.approx(value.item(), rel=1e-6)
    floats = LossTuple(1., 2., 3., 4., 10.)
    assert loss_values(floats) is floats
