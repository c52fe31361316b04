"""utils/amp.py: mixed precision. Autocast on the networks' layers only,
float32 for boxes, targets and losses (model/utils/layers.py's
full_precision), in the trainer's step and in predict; fp16's gradient
scaler in the checkpoints; the default (amp=None) untouched (the seeded
pins of test_trainer.py)."""
import numpy as np
import pytest
import torch

from conftest import (build_tiny_faster_rcnn, regression_batch,
                      spread_tiny_faster_rcnn)
from model import roi_head
from model.utils.preprocess import preprocess
from trainer import FasterRCNNTrainer
from utils.amp import check_amp


# bf16 keeps 8 bits of mantissa: a loss of about 1 moves by a few 1e-3
# through the layers; the sampled targets may differ where rounding moves a
# proposal across a threshold. Measured here: at most 0.013 apart (the
# total; 0.009 for one loss of 0.68).
BF16_LOSS_TOLERANCE = 5e-2


def one_step_losses(amp, seed=0):
    model = spread_tiny_faster_rcnn()
    trainer = FasterRCNNTrainer(model, amp=amp)
    img, bbox, label = regression_batch()
    np.random.seed(seed)
    losses = trainer.train_step(img, torch.from_numpy(bbox)[None],
                                torch.from_numpy(label)[None], 1.)
    return trainer, losses


def test_bf16_step_is_finite_and_close_to_fp32():
    _, fp32 = one_step_losses(None)
    _, bf16 = one_step_losses('bf16')
    for name, a, b in zip(fp32._fields, fp32, bf16):
        assert b.dtype == torch.float32, name
        assert torch.isfinite(b), name
        assert abs(a.item() - b.item()) < BF16_LOSS_TOLERANCE, name


def test_bf16_creators_and_roi_ops_see_float32(monkeypatch):
    model = spread_tiny_faster_rcnn()
    trainer = FasterRCNNTrainer(model, amp='bf16')
    seen = {}

    def spy(name, creator):
        def call(*args, **kwargs):
            seen[name] = [a.dtype for a in args if torch.is_tensor(a) and
                          a.is_floating_point()]
            return creator(*args, **kwargs)
        return call

    monkeypatch.setattr(trainer, 'proposal_target_creator',
                        spy('ptc', trainer.proposal_target_creator))
    monkeypatch.setattr(trainer, 'anchor_target_creator',
                        spy('atc', trainer.anchor_target_creator))
    pool = roi_head.roi_pool  # torchvision's op, as the RoIPooler calls it

    def roi_spy(x, rois, *args):
        seen.setdefault('pooled', x.dtype)
        seen.setdefault('rois', rois.dtype)
        return pool(x, rois, *args)

    monkeypatch.setattr(roi_head, 'roi_pool', roi_spy)
    def features_hook(module, args, out):
        seen.setdefault('features', out.dtype)

    model.extractor.register_forward_hook(features_hook)
    img, bbox, label = regression_batch()
    np.random.seed(0)
    trainer.train_step(img, torch.from_numpy(bbox)[None],
                       torch.from_numpy(label)[None], 1.)
    assert seen['ptc'] and set(seen['ptc']) == {torch.float32}
    assert seen['atc'] and set(seen['atc']) == {torch.float32}
    # the features in bfloat16, pooled in float32: the RoIs never rounded
    assert seen['features'] == torch.bfloat16
    assert seen['pooled'] == seen['rois'] == torch.float32


def test_predict_under_autocast_returns_float32_in_the_images_pixels():
    model = build_tiny_faster_rcnn(n_fg_class=3, min_size=64, max_size=128)
    model.use_preset('evaluate')
    model.score_thresh = 0.
    img = np.random.RandomState(0).uniform(0, 255, (3, 70, 90)).astype(
        np.float32)
    x = preprocess(img, min_size=64, max_size=128)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        bboxes, labels, scores = model.predict([x], sizes=[(70, 90)])
    assert bboxes[0].dtype == np.float32 and scores[0].dtype == np.float32
    assert len(bboxes[0]) > 0
    assert (bboxes[0] >= 0).all() and (bboxes[0][:, 2] <= 70).all()
    assert (bboxes[0][:, 3] <= 90).all()


def test_fp16_scaler_state_is_saved_and_restored(tmp_path):
    trainer, losses = one_step_losses('fp16')
    assert torch.isfinite(losses.total_loss)
    trainer.scaler.update(new_scale=1024.)  # not a fresh scaler's 65536
    state = trainer.scaler.state_dict()
    assert state['scale'] == 1024.
    path = trainer.save(save_optimizer=True, save_path=str(tmp_path / 'c'),
                        epoch=1, best_map=0.)
    assert torch.load(path)['scaler'] == state

    restored = FasterRCNNTrainer(spread_tiny_faster_rcnn(), amp='fp16')
    restored.load(path, resume=True)
    assert restored._scaler_state_dict() == state
    img, bbox, label = regression_batch()
    restored.train_step(img, torch.from_numpy(bbox)[None],
                        torch.from_numpy(label)[None], 1.)
    # 1024, or 512 after an overflow: the saved scale, not a fresh one
    assert restored.scaler.get_scale() in (1024., 512.)


def test_fp16_overflow_is_skipped_not_a_non_finite_loss_stop():
    trainer, _ = one_step_losses('fp16')
    # a scale so large that the fp16 gradients overflow: the scaler skips
    # the step and halves its scale; the loss itself was finite
    trainer.scaler = torch.amp.GradScaler('cpu', init_scale=2. ** 60)
    before = {k: v.clone() for k, v in trainer.faster_rcnn.state_dict().items()
              if torch.is_tensor(v)}
    img, bbox, label = regression_batch()
    losses = trainer.train_step(img, torch.from_numpy(bbox)[None],
                                torch.from_numpy(label)[None], 1.)
    assert torch.isfinite(losses.total_loss)
    assert trainer.scaler.get_scale() == 2. ** 59
    after = trainer.faster_rcnn.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key


def test_amp_none_is_the_default_and_bad_values_are_named():
    assert FasterRCNNTrainer(build_tiny_faster_rcnn()).amp is None
    with pytest.raises(ValueError, match="amp must be None, 'bf16' or "
                                         "'fp16', got 'fp8'"):
        check_amp('fp8')
