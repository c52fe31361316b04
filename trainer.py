"""Training of Faster R-CNN: targets, the four losses, meters, checkpoints.

Shape shorthand: S sampled anchors or RoIs, L foreground classes.
"""
import math
import os
import random
import time
from collections import namedtuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torchnet.meter import AverageValueMeter

from model.build import detector_record
from model.faster_rcnn import check_head_output
from model.region_proposal_network import per_image, roi_counts
from model.utils.checkpoint import model_state_dict, read_checkpoint
from model.utils.creator_tool import (AnchorTargetCreator, ProposalTargetCreator,
                                      check_sampler)
from model.utils.layers import full_precision
from utils import distributed
from utils.amp import autocast, check_amp, grad_scaler
from utils.meters import ConfusionMatrix

LossTuple = namedtuple('LossTuple', ['rpn_loc_loss', 'rpn_cls_loss',
                                     'roi_loc_loss', 'roi_cls_loss',
                                     'total_loss'])


class FasterRCNNTrainer(nn.Module):
    """Wraps a Faster R-CNN for training: it makes the targets and the losses.

    The losses are:
    * rpn_loc_loss: smooth L1 (``rpn_sigma``) of the RPN's offsets on
      positive anchors.
    * rpn_cls_loss: cross-entropy of the RPN's objectness.
    * roi_loc_loss: smooth L1 (``roi_sigma``) of the head's offsets on
      positive RoIs.
    * roi_cls_loss: cross-entropy of the head's classes.

    Args:
        faster_rcnn (model.faster_rcnn.FasterRCNN): The model to train.
        rpn_sigma (float): Sigma of the RPN's smooth L1 loss.
        roi_sigma (float): Sigma of the head's smooth L1 loss.
        lr (float): Learning rate (biases get twice this).
        weight_decay (float): Weight decay (biases get none).
        use_adam (bool): Adam instead of SGD with momentum.
        anchor_target_creator (AnchorTargetCreator): Default: built here.
        proposal_target_creator (ProposalTargetCreator): Default: built here.
        vis (utils.vis_tool.Visualizer): Optional dashboard whose state is
            saved with the checkpoints.
        config (dict): Optional settings saved with the checkpoints.
        label_names (sequence of str): Optional class names saved with the
            checkpoints, so that :func:`model.load_detector` knows them.
        category_ids (sequence of int): Optional COCO category id of each
            label, saved with the checkpoints (data from a COCO file).
        sampler (str): The sampler of the creators built here (see
            :class:`AnchorTargetCreator`): ``'numpy'`` (default, the
            original's samples) or ``'torch'`` (on the device, different
            samples). Creators handed in keep their own.
        amp ({None, 'bf16', 'fp16'}): Mixed precision: autocast over the
            extractor, the RPN's convolutions and the head (see
            :mod:`utils.amp`); the targets and losses stay float32. fp16
            adds a gradient scaler, saved with the optimizer. None: float32.
    """

    def __init__(self, faster_rcnn, rpn_sigma=3., roi_sigma=1., lr=1e-3,
                 weight_decay=5e-4, use_adam=False, anchor_target_creator=None,
                 proposal_target_creator=None, vis=None, config=None,
                 label_names=None, sampler='numpy', amp=None,
                 category_ids=None):
        super().__init__()
        check_sampler(sampler)
        check_amp(amp)
        self.amp = amp
        self.scaler = None  # fp16's, made at the first step on its device
        self._scaler_state = None  # a loaded scaler state, until then
        self.faster_rcnn = faster_rcnn
        self.rpn_sigma = rpn_sigma
        self.roi_sigma = roi_sigma
        self.anchor_target_creator = (anchor_target_creator or
                                      AnchorTargetCreator(sampler=sampler))
        self.proposal_target_creator = (proposal_target_creator or
                                        ProposalTargetCreator(sampler=sampler))
        self.loc_normalize_mean = faster_rcnn.loc_normalize_mean
        self.loc_normalize_std = faster_rcnn.loc_normalize_std
        self.optimizer = faster_rcnn.get_optimizer(
            lr=lr, weight_decay=weight_decay, use_adam=use_adam)
        self.vis = vis
        self.config = config or {}
        self.label_names = label_names
        self.category_ids = category_ids
        self.n_step = 0
        self._ddp = None  # see wrap_ddp

        self.rpn_cm = ConfusionMatrix(2)
        self.roi_cm = ConfusionMatrix(faster_rcnn.n_class)
        self.meters = {k: AverageValueMeter() for k in LossTuple._fields}

    def forward(self, imgs, bboxes, labels, scale, img_sizes=None):
        """Forward the model on a batch and compute the losses.

        Each image's four losses are computed as for one image alone and
        averaged over the batch (scale ``--lr`` with N yourself: the linear
        rule). Per image, ProposalTargetCreator draws before
        AnchorTargetCreator, as in the original, so that a numpy seed draws
        for a batch what it draws in one-image steps; anchors over an
        image's padding are ignored (-1).

        Args:
            imgs (torch.Tensor): N preprocessed images,
                :math:`(N, 3, H, W)`, zero-padded at the bottom and right to
                the largest (see :func:`data.sampler.collate_detection`).
            bboxes (torch.Tensor or sequence): :math:`(N, R, 4)` gt boxes,
                or N arrays of shape :math:`(R, 4)` (R may differ and may be
                0), each ``(y_min, x_min, y_max, x_max)`` in the
                preprocessed image's pixels; on the host, where they are
                checked without waiting for the device.
            labels (torch.Tensor or sequence): :math:`(N, R)` labels in
                :math:`[0, L - 1]`, or N arrays of shape :math:`(R,)`.
            scale (float or sequence of floats): The scaling preprocessing
                applied to the images: one for all, or one per image.
            img_sizes (sequence of (H, W)): Each image's unpadded size;
                default: every image fills ``imgs``.

        Returns:
            LossTuple of five scalar tensors, each the mean over the batch.
        """
        n_fg_class = self.faster_rcnn.n_class - 1
        bboxes, labels = _check_batch(imgs, bboxes, labels, n_fg_class)
        img_sizes, _ = per_image(
            tuple(imgs.shape[2:]) if img_sizes is None else img_sizes, scale,
            len(imgs))
        with autocast(imgs.device, self.amp):
            features, rpn_locs, rpn_scores, rois, roi_indices, anchor = \
                self.faster_rcnn.propose(imgs, scale, img_sizes)
        counts = roi_counts(roi_indices, len(imgs))

        sample_rois, gt_roi_locs, gt_roi_labels = [], [], []
        gt_rpn_locs, gt_rpn_labels = [], []
        for roi, bbox, label, img_size in zip(rois.split(counts), bboxes,
                                              labels, img_sizes):
            # The head's targets are sampled first, as in the original
            # design, so that a numpy seed draws the same samples.
            sample_roi, gt_roi_loc, gt_roi_label = \
                self.proposal_target_creator(roi, bbox, label,
                                             self.loc_normalize_mean,
                                             self.loc_normalize_std)
            gt_rpn_loc, gt_rpn_label = self.anchor_target_creator(
                bbox, anchor, img_size)
            sample_rois.append(sample_roi)
            gt_roi_locs.append(gt_roi_loc)
            gt_roi_labels.append(gt_roi_label.long())
            gt_rpn_locs.append(gt_rpn_loc)
            gt_rpn_labels.append(gt_rpn_label.long())

        n_samples = [len(sample_roi) for sample_roi in sample_rois]
        sample_roi_index = torch.cat([
            torch.full((n,), i, dtype=torch.float32, device=imgs.device)
            for i, n in enumerate(n_samples)])
        with autocast(imgs.device, self.amp):
            roi_cls_locs, roi_scores = self.faster_rcnn.head(
                features, torch.cat(sample_rois), sample_roi_index)
        roi_cls_locs, roi_scores = full_precision(roi_cls_locs, roi_scores)
        check_head_output(self.faster_rcnn.head, roi_cls_locs, roi_scores,
                          sum(n_samples))

        per_image_losses = [
            self._losses(*args) for args in zip(
                rpn_locs, rpn_scores, gt_rpn_locs, gt_rpn_labels,
                roi_cls_locs.split(n_samples), roi_scores.split(n_samples),
                gt_roi_locs, gt_roi_labels)]
        losses = [torch.stack(loss).mean() for loss in zip(*per_image_losses)]
        return LossTuple(*losses, sum(losses))

    def _losses(self, rpn_loc, rpn_score, gt_rpn_loc, gt_rpn_label,
                roi_cls_loc, roi_score, gt_roi_loc, gt_roi_label):
        """One image's four losses; adds its labels to the confusion
        meters.

        Args:
            rpn_loc (torch.Tensor): :math:`(HWA, 4)` RPN offsets.
            rpn_score (torch.Tensor): :math:`(HWA, 2)` RPN scores.
            gt_rpn_loc (torch.Tensor): :math:`(HWA, 4)` their targets.
            gt_rpn_label (torch.Tensor): :math:`(HWA,)` in {1, 0, -1}.
            roi_cls_loc (torch.Tensor): :math:`(S, (L + 1) \\times 4)` the
                head's offsets of the sampled RoIs.
            roi_score (torch.Tensor): :math:`(S, L + 1)` their scores.
            gt_roi_loc (torch.Tensor): :math:`(S, 4)` their targets.
            gt_roi_label (torch.Tensor): :math:`(S,)` in :math:`[0, L]`.

        Returns:
            list of four scalar tensors: rpn_loc, rpn_cls, roi_loc, roi_cls.
        """
        rpn_loc_loss = _fast_rcnn_loc_loss(rpn_loc, gt_rpn_loc, gt_rpn_label,
                                           self.rpn_sigma)
        rpn_cls_loss, rpn_score = _rpn_cls_loss(rpn_score, gt_rpn_label)
        self.rpn_cm.add(rpn_score.detach(), gt_rpn_label, ignore_index=-1)

        n_sample = roi_cls_loc.shape[0]
        if n_sample == 0:
            # No RoI in either band: with neg_iou_thresh_lo > 0, an image
            # without objects has no negatives. The head learns nothing
            # from it (a mean over no samples would be nan).
            zero = roi_score.sum() * 0.
            return [rpn_loc_loss, rpn_cls_loss, zero, zero]
        roi_cls_loc = roi_cls_loc.view(n_sample, -1, 4)
        roi_loc = roi_cls_loc[
            torch.arange(n_sample, device=roi_cls_loc.device), gt_roi_label]
        roi_loc_loss = _fast_rcnn_loc_loss(roi_loc.contiguous(), gt_roi_loc,
                                           gt_roi_label, self.roi_sigma)
        roi_cls_loss = F.cross_entropy(roi_score, gt_roi_label)
        self.roi_cm.add(roi_score.detach(), gt_roi_label)
        return [rpn_loc_loss, rpn_cls_loss, roi_loc_loss, roi_cls_loss]

    def train_step(self, imgs, bboxes, labels, scale, img_sizes=None):
        """One SGD step on a batch (arguments as :meth:`forward`).

        After :meth:`wrap_ddp` the forward goes through
        DistributedDataParallel, which averages the gradients over the
        processes: a step of K processes on N images each is a step on the
        mean loss of the K N images.

        Returns:
            LossTuple of the step.

        Raises:
            FloatingPointError: if a loss is not finite (in any process,
                under torch.distributed: then every process raises); the
                weights are left as they were before the step.
        """
        self.optimizer.zero_grad()
        forward = self.forward if self._ddp is None else self._ddp
        losses = forward(imgs, bboxes, labels, scale, img_sizes)
        self.n_step += 1
        values = loss_values(losses)  # the step's one transfer of losses
        finite = math.isfinite(values.total_loss)
        if distributed.any_rank(not finite):
            raise FloatingPointError('non-finite loss at step {}{}: {}'.format(
                self.n_step, '' if not finite else
                ' in another process (this one\'s losses are finite)',
                values._asdict()))
        self._backward_and_step(losses.total_loss, imgs.device)
        self.update_meters(values)
        return losses

    def _backward_and_step(self, loss, device):
        """Backward and optimizer step; under fp16 through the gradient
        scaler, which skips a step whose gradients overflow (the loss
        itself was finite: no non-finite-loss stop) and lowers its scale."""
        if self.amp != 'fp16':
            loss.backward()
            self.optimizer.step()
            return
        if self.scaler is None:
            self.scaler = grad_scaler(device, self.amp)
            if self._scaler_state is not None:
                self.scaler.load_state_dict(self._scaler_state)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def wrap_ddp(self, **kwargs):
        """Wraps this trainer in DistributedDataParallel for
        :meth:`train_step`, in a process group already initialised.

        The trainer, not the model, is wrapped: its forward makes the
        losses. Checkpoints keep the model's own state dict. The trainer
        and the wrapper hold each other: leave the group with
        :func:`utils.distributed.shutdown`, which frees them first.

        Args:
            **kwargs: DistributedDataParallel's, e.g. ``device_ids``.

        Returns:
            DistributedDataParallel: the wrapper.
        """
        ddp = DistributedDataParallel(self, **kwargs)
        # Outside the module tree: the wrapper holds this trainer.
        self.__dict__['_ddp'] = ddp
        return ddp

    def save(self, save_optimizer=False, save_path=None, **kwargs):
        """Saves the model, settings, RNG states and ``kwargs``.

        Under torch.distributed only rank 0 writes; every process gets the
        path. The RNG states saved are rank 0's.

        Args:
            save_optimizer (bool): Also save the optimizer's state.
            save_path (str): Where; default ``checkpoints/fasterrcnn_<time>``
                followed by the values of ``kwargs``.
            **kwargs: Saved under 'other_info' (e.g. epoch, best_map).

        Returns:
            str: The path written.
        """
        save_dict = dict(model=self.faster_rcnn.state_dict(),
                         detector=detector_record(self.faster_rcnn),
                         config=self.config, other_info=kwargs,
                         n_step=self.n_step, rng=_rng_state())
        if self.label_names is not None:
            save_dict['label_names'] = list(self.label_names)
        if self.category_ids is not None:
            save_dict['category_ids'] = list(self.category_ids)
        if self.vis is not None:
            save_dict['vis_info'] = self.vis.state_dict()
        if save_optimizer:
            save_dict['optimizer'] = self.optimizer.state_dict()
            scaler = self._scaler_state_dict()
            if scaler is not None:
                save_dict['scaler'] = scaler
        if save_path is None:
            save_path = 'checkpoints/fasterrcnn_%s' % time.strftime('%m%d%H%M')
            for value in kwargs.values():
                save_path += '_%s' % value
        if not distributed.is_main():
            return save_path
        save_dir = os.path.dirname(save_path)
        if save_dir:
            os.makedirs(save_dir, exist_ok=True)
        tmp_path = save_path + '.tmp'
        torch.save(save_dict, tmp_path)
        os.replace(tmp_path, save_path)  # never leave a half-written file
        return save_path

    def load(self, path, load_optimizer=True, parse_opt=False, resume=False):
        """Loads a checkpoint written by :meth:`save` (or by the original
        design's trainer, or a bare state dict).

        The model's preprocessing comes with the weights: from the state
        dict, or from the config of an original design's checkpoint; a bare
        state dict keeps the model's own (see
        :func:`model.utils.checkpoint.model_state_dict`).

        Args:
            path (str): The checkpoint.
            load_optimizer (bool): Restore the optimizer's state if saved.
            parse_opt (bool): Keep the saved settings in ``self.config``
                (the caller decides what to do with them).
            resume (bool): Also restore the optimizer, the step count and
                the random states of python, numpy and torch, to continue an
                interrupted run.

        Returns:
            dict: The saved 'other_info' (empty for a bare state dict).

        Raises:
            ValueError: with ``resume``, if the file is not a checkpoint
                that ``save(save_optimizer=True)`` wrote during training.
        """
        state = read_checkpoint(path)
        if resume:
            check_resumable(state, path)
        self.faster_rcnn.load_state_dict(model_state_dict(state))
        if 'model' not in state:  # a bare state dict
            return {}
        if parse_opt:
            self.config = state.get('config', {})
        if (load_optimizer or resume) and state.get('optimizer'):
            self.optimizer.load_state_dict(state['optimizer'])
            self._scaler_state = state.get('scaler')
            if self.scaler is not None and self._scaler_state is not None:
                self.scaler.load_state_dict(self._scaler_state)
        if self.vis is not None and 'vis_info' in state:
            self.vis.load_state_dict(state['vis_info'])
        if resume:
            self.n_step = state['n_step']
            _set_rng_state(state['rng'])
        return state.get('other_info', {})

    def _scaler_state_dict(self):
        """fp16's gradient scaler state (its scale and growth tracker), or
        a loaded one not yet used; None without fp16."""
        if self.scaler is not None:
            return self.scaler.state_dict()
        return self._scaler_state

    def update_meters(self, losses):
        """Adds a step's losses (a LossTuple of tensors or of floats) to
        the meters."""
        for key, value in loss_values(losses)._asdict().items():
            self.meters[key].add(value)

    def reset_meters(self):
        for meter in self.meters.values():
            meter.reset()
        self.roi_cm.reset()
        self.rpn_cm.reset()

    def get_meter_data(self):
        """Mean of each loss since the last reset, by name."""
        return {k: v.value()[0] for k, v in self.meters.items()}


def loss_values(losses):
    """A LossTuple of tensors as floats, moved to the host in one transfer
    (floats pass through)."""
    if not any(torch.is_tensor(v) for v in losses):
        return losses
    values = torch.stack([torch.as_tensor(v).detach().float().reshape(())
                          for v in losses]).tolist()
    return LossTuple(*values)


def _check_batch(imgs, bboxes, labels, n_fg_class):
    """Checks a batch and gives each image's boxes and labels.

    Args:
        imgs (torch.Tensor): :math:`(N, 3, H, W)`.
        bboxes: :math:`(N, R, 4)` tensor, or N arrays of shape
            :math:`(R, 4)`.
        labels: :math:`(N, R)` tensor, or N arrays of shape :math:`(R,)`.
        n_fg_class (int): Labels must lie in ``[0, n_fg_class - 1]``.

    Returns:
        (list, list): N tensors :math:`(R, 4)` and N tensors :math:`(R,)`,
        where the inputs were.

    Raises:
        ValueError: naming the argument, its shape and the expected one
            (and the image, for a per-image array).
    """
    n = len(imgs) if imgs.ndim == 4 else len(bboxes)
    what = 'one image' if n == 1 else '{} images'.format(n)
    expected = dict(imgs='({}, 3, H, W)'.format(n),
                    bboxes='({}, R, 4)'.format(n), labels='({}, R)'.format(n))
    ndim = dict(imgs=4, bboxes=3, labels=2)
    for name, value in dict(imgs=imgs, bboxes=bboxes, labels=labels).items():
        if name != 'imgs' and not isinstance(value, torch.Tensor):
            if len(value) != n:
                raise ValueError(
                    'FasterRCNNTrainer takes a batch of {}: {} must hold one '
                    'array per image, got {}'.format(what, name, len(value)))
            continue
        shape = tuple(value.shape)
        if len(shape) != ndim[name] or shape[0] != n:
            raise ValueError(
                'FasterRCNNTrainer takes a batch of {}: {} must have '
                'shape {}, got {} (length {})'.format(
                    what, name, expected[name], shape, len(value)))
    if imgs.shape[1] != 3 or (isinstance(bboxes, torch.Tensor) and
                              bboxes.shape[2] != 4):
        raise ValueError('imgs must have shape {} and bboxes {}, got {} and '
                         '{}'.format(expected['imgs'], expected['bboxes'],
                                     tuple(imgs.shape), _shape(bboxes)))
    bboxes = [torch.as_tensor(bbox) for bbox in bboxes]
    labels = [torch.as_tensor(label) for label in labels]
    for i, (bbox, label) in enumerate(zip(bboxes, labels)):
        image = '' if n == 1 else ' (image {} of the batch)'.format(i)
        if bbox.ndim != 2 or bbox.shape[1] != 4:
            raise ValueError('bboxes[{}] must have shape (R, 4), each '
                             '(y_min, x_min, y_max, x_max), got {}'.format(
                                 i, tuple(bbox.shape)))
        if label.ndim != 1:
            raise ValueError('labels[{}] must have shape (R,), got {}'.format(
                i, tuple(label.shape)))
        if len(bbox) != len(label):
            raise ValueError('bboxes and labels must have one row per gt '
                             'box, got {} boxes and {} labels{}'.format(
                                 len(bbox), len(label), image))
        bad = (label < 0) | (label >= n_fg_class)
        if bad.any():
            raise ValueError(
                'gt label {} is out of range: the model has {} foreground '
                'classes (labels 0..{}){}'.format(
                    int(label[bad][0]), n_fg_class, n_fg_class - 1, image))
    return bboxes, labels


def _shape(value):
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    return 'a sequence of {} arrays'.format(len(value))


def check_resumable(state, path):
    """Raises ValueError unless ``state`` can continue a training run."""
    if 'model' not in state:
        lacks = ['model', 'optimizer', 'n_step', 'rng', 'other_info']
    else:
        lacks = [k for k in ('optimizer', 'n_step', 'rng') if k not in state]
        info = state.get('other_info') or {}
        lacks += ['other_info.' + k for k in ('epoch', 'best_map')
                  if k not in info]
    if lacks:
        raise ValueError(
            '{} is not a resumable checkpoint: it lacks {} (resume from the '
            'last.pth or interrupted.pth that train.py writes, or start from '
            'its weights with --load-path)'.format(path, ', '.join(lacks)))


def _rng_state():
    name, keys, pos, has_gauss, cached = np.random.get_state()
    # Plain lists rather than numpy arrays, so that torch.load's safe
    # (weights_only) mode reads the checkpoint.
    state = dict(python=random.getstate(),
                 numpy=(name, keys.tolist(), pos, has_gauss, cached),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    random.setstate(state['python'])
    name, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos,
                         has_gauss, cached))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def _rpn_cls_loss(rpn_score, gt_rpn_label):
    """The RPN's objectness loss over the labelled anchors: cross-entropy
    of two scores (background, foreground) per anchor, or binary
    cross-entropy of one logit (a pyramid's RPN, as FPN trains it).

    Args:
        rpn_score (torch.Tensor): :math:`(HWA, 2)` or :math:`(HWA, 1)`.
        gt_rpn_label (torch.Tensor): :math:`(HWA,)` in {1, 0, -1}.

    Returns:
        (torch.Tensor, torch.Tensor): the loss (0 for an image without a
        labelled anchor, decided without a host read) and the scores as
        two columns, for the confusion matrix.
    """
    labelled = gt_rpn_label >= 0
    if rpn_score.shape[1] == 1:
        logit = rpn_score[:, 0]
        loss = F.binary_cross_entropy_with_logits(
            logit, gt_rpn_label.clamp(min=0).to(logit.dtype),
            weight=labelled.to(logit.dtype), reduction='sum')
        loss = loss / labelled.sum().clamp(min=1).to(loss.dtype)
        return loss, torch.stack((-logit, logit), dim=1)
    loss = F.cross_entropy(rpn_score, gt_rpn_label, ignore_index=-1)
    return torch.where(labelled.any(), loss, loss.new_zeros(())), rpn_score


def _smooth_l1_loss(x, t, in_weight, sigma):
    """Sum of the smooth L1 loss of ``in_weight * (x - t)``.

    Quadratic ``sigma^2 / 2 * d^2`` where ``|d| < 1 / sigma^2``, linear
    ``|d| - 0.5 / sigma^2`` elsewhere.
    """
    sigma2 = sigma ** 2
    diff = in_weight * (x - t)
    abs_diff = diff.abs()
    flag = (abs_diff.detach() < (1. / sigma2)).to(diff.dtype)
    y = (flag * (sigma2 / 2.) * (diff ** 2) +
         (1 - flag) * (abs_diff - 0.5 / sigma2))
    return y.sum()


def _fast_rcnn_loc_loss(pred_loc, gt_loc, gt_label, sigma):
    """Smooth L1 over the positives, divided by the number of labels >= 0.

    Args:
        pred_loc (torch.Tensor): :math:`(S, 4)` predicted offsets.
        gt_loc (torch.Tensor): :math:`(S, 4)` target offsets.
        gt_label (torch.Tensor): :math:`(S,)`; > 0 positive, 0 negative,
            -1 ignored.
        sigma (float): Sigma of the smooth L1.

    Returns:
        torch.Tensor: scalar loss.
    """
    in_weight = (gt_label > 0).to(gt_loc.dtype)[:, None].expand_as(gt_loc)
    loc_loss = _smooth_l1_loss(pred_loc, gt_loc, in_weight, sigma)
    # An image with no labelled anchor at all would divide by 0.
    return loc_loss / (gt_label >= 0).sum().clamp(min=1).to(loc_loss.dtype)
