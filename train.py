"""Train Faster R-CNN: ``python train.py train [--option=value ...]``;
score a checkpoint: ``python train.py evaluate --load-path=CKPT ...``.

Options are the fields of :class:`utils.config.Config`
(``python train.py --help`` lists them). ``--data=toy`` trains a small
detector on a generated VOC-layout dataset (written on first use), so that
the whole pipeline runs on a CPU machine without VOC. ``--data=coco``
trains on COCO-format annotation files (``--coco-train-ann``,
``--coco-train-img``, ``--coco-test-ann``, ``--coco-test-img``), and
``--metric`` chooses the test metric (voc07, voc or coco).
"""
import os
import random
import signal
import sys

import fire
import numpy as np
import torch
from tqdm import tqdm

from data.dataset import inverse_normalize
from data.loaders import (check_voc_class_names, coco_label_names,
                          label_names_of, make_loaders, make_test_loader,
                          set_epoch)
from data.synthetic import generate_voc
from model.build import build_detector
from model.utils.checkpoint import WeightsNotFound, model_state_dict
from model.utils.creator_tool import AnchorTargetCreator, ProposalTargetCreator
from trainer import FasterRCNNTrainer
from utils import array_tool as at
from utils import distributed
from utils.amp import AMP_DTYPES
from utils.config import UsageError, changed_options, opt, usage
from utils.detectors import (build_from_options, check_given_options,
                             checkpoint_classes, detects_classes,
                             load_weights, read_start, start_preprocessing)
from utils.evaluation import METRICS, collect_detections, evaluate, score
from utils.report import (HISTORY_FILE, append_history,
                          draw_training_curves, metric_lines, write_report)
from utils.vis_tool import (Visualizer, draw_test_predictions, visdom_bbox)

# What --data=toy changes; options given on the command line win.
TOY_PRESET = dict(
    voc_data_dir='toy_voc', backbone='toy', min_size=256, max_size=256,
    lr=5e-3, epoch=8, lr_decay_epoch=5, num_workers=1, test_num_workers=1,
    pretrained_model=None, env='faster-rcnn-toy', seed=0)

# The pictures' threshold: that of predict(..., visualize=True).
PICTURE_SCORE_THRESH = 0.7


def eval(dataloader, faster_rcnn, test_num=10000, metric='voc07'):
    """The ``metric`` of ``faster_rcnn`` on a test loader (see
    :func:`utils.evaluation.evaluate`), stopping on a signal."""
    return evaluate(dataloader, faster_rcnn, test_num=test_num,
                    metric=metric, check_stop=_check_stop)


def _seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _Stop(Exception):
    """A stop asked for by SIGINT or SIGTERM and agreed by every process."""


# Signals received this run: the first asks to stop at the next step (all
# processes together, so that rank 0 can save a consistent checkpoint);
# a second stops at once.
_signals = []


def _on_signal(signum, frame):
    _signals.append(signum)
    if len(_signals) > 1:
        raise KeyboardInterrupt
    if distributed.is_main():
        tqdm.write('{} received: stopping after this step (send it again '
                   'to stop at once)'.format(signal.Signals(signum).name))


def _check_stop():
    """Raises _Stop if any process received a stop signal; under
    torch.distributed a collective, called by every process at the same
    steps."""
    if distributed.any_rank(_signals):
        raise _Stop


def end_of_epoch(epoch, eval_map, best_map, has_best, lr_decay_epoch):
    """What the loop does after evaluating an epoch, as the original does.

    Args:
        epoch (int): The epoch just finished, 0-based.
        eval_map (float): Its mAP.
        best_map (float): The best mAP before it.
        has_best (bool): Whether a best checkpoint was saved before.
        lr_decay_epoch (int): The 0-based epoch after which the lr decays
            (the original's ``if epoch == 9``: after the 10th epoch).

    Returns:
        (bool, bool): whether this epoch is the new best (saved as
        best.pth), and whether the best checkpoint is now reloaded and the
        lr scaled by ``lr_decay``.
    """
    is_best = not has_best or eval_map > best_map
    return is_best, epoch == lr_decay_epoch


def _plot(trainer, imgs, bboxes_, labels_, img_sizes, label_names):
    """Losses, the first image's gt and predicted boxes, and the confusion
    matrices to visdom."""
    vis = trainer.vis
    vis.plot_many(trainer.get_meter_data())
    h, w = (int(v) for v in img_sizes[0])
    ori_img_ = inverse_normalize(at.tonumpy(imgs[0, :, :h, :w]),
                                 caffe_pretrain=trainer.faster_rcnn.caffe_pretrain)
    vis.img('gt_img', visdom_bbox(ori_img_, at.tonumpy(bboxes_[0]),
                                  at.tonumpy(labels_[0]),
                                  label_names=label_names))
    _bboxes, _labels, _scores = trainer.faster_rcnn.predict([ori_img_],
                                                            visualize=True)
    vis.img('pred_img', visdom_bbox(ori_img_, _bboxes[0], _labels[0],
                                    _scores[0], label_names=label_names,
                                    score_thresh=PICTURE_SCORE_THRESH))
    vis.text(str(trainer.rpn_cm.value().tolist()), win='rpn_cm')
    # visdom reads a float image with values above 1 as 0-255 bytes.
    roi_cm = trainer.roi_cm.value().astype(np.float32)
    vis.img('roi_cm', roi_cm[None] / max(roi_cm.max(), 1.))


def train(**kwargs):
    """Train on ``--data`` (voc, toy or coco); options as in
    utils/config.py. Returns the best mAP."""
    given = _parse_options(kwargs)
    anchor_target_creator, proposal_target_creator = target_creators(
        opt._state_dict())
    start = opt.resume or opt.load_path
    if start:
        checkpoint, record = _start_from(start, given, bool(opt.resume))
    device = distributed.init(opt.device)
    main = distributed.is_main()
    if opt.seed is not None:
        # numpy's draws (the creators' samples, the flips) differ by process
        _seed(opt.seed + distributed.rank())
    label_names = _toy_data_ready(label_names_of(opt.data, opt.label_names))

    dataloader, testset, test_dataloader = make_loaders(opt, label_names, device)
    category_ids = None
    if opt.data == 'coco':
        label_names = coco_label_names(dataloader.dataset.db, testset.db)
        category_ids = list(testset.db.cat_ids)
    elif opt.label_names is not None:
        for db in (dataloader.dataset.db, testset.db):
            check_voc_class_names(db)
    if start:
        faster_rcnn = build_detector(record, len(label_names))
    else:
        faster_rcnn = build_from_options(opt._state_dict(), len(label_names))
    if main:
        print('options:', changed_options(opt) or 'the defaults')
    vis = Visualizer(env=opt.env, port=opt.port) if main else None
    trainer = FasterRCNNTrainer(
        faster_rcnn, rpn_sigma=opt.rpn_sigma, roi_sigma=opt.roi_sigma,
        lr=opt.lr, weight_decay=opt.weight_decay, use_adam=opt.use_adam,
        anchor_target_creator=anchor_target_creator,
        proposal_target_creator=proposal_target_creator,
        vis=vis, config=opt._state_dict(), label_names=label_names,
        category_ids=category_ids, amp=opt.amp).to(device)
    if main:
        os.makedirs(opt.out_dir, exist_ok=True)
        if not opt.resume and os.path.exists(_history_path()):
            os.remove(_history_path())  # a new run: a new history

    start_epoch, best_map, best_path = 0, 0., None
    if opt.resume:
        info = _load(trainer, opt.resume)
        start_epoch, best_map = info['epoch'], info['best_map']
        best_path = info.get('best_path')
        if distributed.world_size() > 1:
            # The checkpoint holds rank 0's random states: each process
            # goes on from its own seed, drawn from them.
            _seed(np.random.randint(2 ** 31 - 1 - distributed.world_size())
                  + distributed.rank())
        if main:
            print('resumed from {} at epoch {} (lr {}, best map {:.4f})'
                  .format(opt.resume, start_epoch, _lr(trainer), best_map))
    elif opt.load_path:
        reset = load_weights(faster_rcnn, checkpoint, label_names)
        if main and reset:
            print(reset)
    if distributed.world_size() > 1:
        # No device_ids: DDP would move the batch's gt to the GPU, where
        # its checks wait on the device; the images are there already.
        trainer.wrap_ddp()
    if main:
        vis.text(list(label_names), win='labels')

    del _signals[:]
    handlers = {signum: signal.signal(signum, _on_signal)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    last_path = os.path.join(opt.out_dir, 'last.pth')
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, opt.epoch):
            trainer.reset_meters()
            set_epoch(dataloader, epoch)
            for ii, (imgs, bboxes_, labels_, scales, img_sizes) in tqdm(
                    enumerate(dataloader), total=len(dataloader),
                    desc='epoch {}'.format(epoch), disable=not main):
                _check_stop()
                # The gt stays on the host: the trainer checks it there and
                # the creators move it without waiting.
                imgs = imgs.to(device, non_blocking=True).float()
                trainer.train_step(imgs, bboxes_, labels_, scales, img_sizes)
                if main and (ii + 1) % opt.plot_every == 0 and vis.connected:
                    _plot(trainer, imgs, bboxes_, labels_, img_sizes,
                          label_names)

            eval_result = eval(test_dataloader, faster_rcnn,
                               test_num=opt.test_num, metric=opt.metric)
            # every process's mean loss, averaged over the processes
            losses = distributed.mean_over_ranks(trainer.get_meter_data())
            log_info = 'epoch {}: lr {:.2e}, map {:.4f}, loss {}'.format(
                epoch, _lr(trainer), eval_result['map'],
                {k: round(v, 4) for k, v in losses.items()})
            if main:
                vis.plot('test_map', eval_result['map'])
                vis.log(log_info)
                tqdm.write(log_info)
                append_history(opt.out_dir, epoch, _lr(trainer),
                               eval_result['map'], losses)
            is_best, decay = end_of_epoch(
                epoch, eval_result['map'], best_map, best_path is not None,
                opt.lr_decay_epoch)
            if is_best:
                best_map = float(eval_result['map'])
                best_path = trainer.save(
                    save_path=os.path.join(opt.out_dir, 'best.pth'),
                    epoch=epoch + 1, best_map=best_map)
            if decay:
                distributed.barrier()  # rank 0 has written best.pth
                trainer.load(best_path, load_optimizer=True)
                trainer.faster_rcnn.scale_lr(opt.lr_decay)
            trainer.save(save_optimizer=True, save_path=last_path,
                         epoch=epoch + 1, best_map=best_map,
                         best_path=best_path)
    except (_Stop, KeyboardInterrupt) as err:
        for signum in handlers:  # let nothing cut the saving short
            signal.signal(signum, signal.SIG_IGN)
        path = trainer.save(save_optimizer=True, save_path=os.path.join(
            opt.out_dir, 'interrupted.pth'), epoch=epoch, best_map=best_map,
            best_path=best_path)
        if isinstance(err, _Stop):
            distributed.barrier()  # no process leaves before rank 0 saved
        _exit('interrupted in epoch {}; continue with --resume={}'.format(
            epoch, path))
    except FloatingPointError as err:
        _exit('training stopped: {} (epoch {}); the last good checkpoint is '
              '{}'.format(err, epoch, (last_path if os.path.exists(last_path)
                                        else best_path)))
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)

    if main:
        trainer.load(best_path, load_optimizer=False)
        png = draw_test_predictions(
            faster_rcnn, testset.db, label_names,
            os.path.join(opt.out_dir, 'predictions.png'),
            PICTURE_SCORE_THRESH)
        curves = draw_training_curves(opt.out_dir)
        print('Best {} mAP {:.4f}, kept in {}; the test predictions are '
              'drawn in {} and the training curves in {}.'.format(
                  opt.metric, best_map, best_path, png, curves))
    distributed.barrier()  # the processes leave together
    return best_map


def evaluate_checkpoint(**kwargs):
    """Scores a checkpoint (``--load-path``) on the test set the data
    options name, and with ``--report-dir`` writes a report there.
    Returns the metric's numbers."""
    given = _parse_options(kwargs)
    if not opt.load_path:
        raise UsageError('evaluate needs --load-path=CHECKPOINT, the '
                         'detector to score')
    checkpoint, record = _start_from(opt.load_path, given)
    theirs = checkpoint.get('label_names')
    device = distributed.init(opt.device)
    label_names = _toy_data_ready(label_names_of(
        opt.data, opt.label_names if opt.label_names or opt.data != 'voc'
        else theirs))
    testset, test_dataloader = make_test_loader(opt, label_names)
    if opt.data == 'coco':
        label_names = tuple(testset.db.label_names)
    _check_classes(checkpoint, label_names, _data_name(opt))
    faster_rcnn = build_detector(record, len(label_names))
    faster_rcnn.load_state_dict(model_state_dict(checkpoint))
    faster_rcnn.to(device)
    detections = collect_detections(test_dataloader, faster_rcnn,
                                    opt.test_num, check_stop=_check_stop)
    metrics = score(detections, opt.metric, testset.db)
    if distributed.is_main():
        print('\n'.join(metric_lines(metrics, label_names, opt.metric)))
        if opt.report_dir:
            paths = write_report(
                opt.report_dir, metrics, label_names, *detections[:6],
                image_getter=lambda i: testset.db.get_example(
                    detections.indices[i])[0], metric=opt.metric)
            print('The report is in {}: {}.'.format(
                opt.report_dir, ', '.join(sorted(paths))))
    distributed.barrier()
    return metrics


def _parse_options(kwargs):
    """Sets ``opt`` from the command line's options (with --data=toy's
    preset) and checks them; returns the names given."""
    opt.__dict__.clear()  # back to the class defaults, whatever ran before
    opt._parse({**TOY_PRESET, **kwargs} if kwargs.get('data') == 'toy'
               else kwargs)
    check_options(opt)
    return set(kwargs)


def _start_from(path, given, resume=False):
    """The checkpoint a run starts from and its detector's record; its
    preprocessing becomes the datasets'."""
    checkpoint, record = read_start(path, resume)
    preprocessing = start_preprocessing(checkpoint, record)
    check_given_options(opt._state_dict(), given, record, preprocessing,
                        path)
    for key, value in preprocessing.items():
        setattr(opt, key, value)
    return checkpoint, record


def _toy_data_ready(label_names):
    """Writes the toy dataset on first use (--data=toy); returns
    ``label_names``."""
    if (distributed.is_main() and opt.data == 'toy' and
            not os.path.isdir(opt.voc_data_dir)):
        print('writing the toy dataset to {}'.format(opt.voc_data_dir))
        generate_voc(opt.voc_data_dir, label_names=label_names)
    distributed.barrier()
    return label_names


def _check_classes(checkpoint, label_names, data):
    """Raises UsageError unless the checkpoint detects the data's classes."""
    if not detects_classes(checkpoint, label_names):
        n_theirs, theirs = checkpoint_classes(checkpoint)
        raise UsageError(
            'the checkpoint {} detects {} classes ({}) but the test set of '
            '{} has {} ({}): give the data it was trained for'.format(
                opt.load_path, n_theirs, ', '.join(theirs or ['unnamed']),
                data, len(label_names), ', '.join(label_names)))


def _data_name(opt):
    if opt.data == 'coco':
        return opt.coco_test_ann
    return opt.voc_data_dir


def _history_path():
    return os.path.join(opt.out_dir, HISTORY_FILE)


def check_options(opt):
    """Raises UsageError for an option value train.py cannot use."""
    if opt.data not in ('voc', 'toy', 'coco'):
        raise UsageError("--data must be 'voc', 'toy' or 'coco', got "
                         "{!r}".format(opt.data))
    if opt.metric not in METRICS:
        raise UsageError("--metric must be 'voc07', 'voc' or 'coco', got "
                         "{!r}".format(opt.metric))
    if opt.amp not in AMP_DTYPES:
        raise UsageError("--amp must be None, 'bf16' or 'fp16', got "
                         "{!r}".format(opt.amp))
    if opt.data == 'coco' and opt.label_names is not None:
        raise UsageError('--label-names is for VOC-layout data; with '
                         '--data=coco the categories of the annotation '
                         'files name the classes')
    check_batch_options(opt)


def check_batch_options(opt):
    """Raises UsageError unless the batch sizes and padding multiple are
    whole numbers >= 1."""
    for name in ('batch_size', 'test_batch_size', 'size_divisible'):
        value = getattr(opt, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError('--{} must be a whole number >= 1, got {!r}'
                             .format(name.replace('_', '-'), value))


def _exit(message):
    """Exits with status 1: rank 0 says why, the other processes quietly."""
    raise SystemExit(message if distributed.is_main() else 1)


def target_creators(config):
    """The trainer's target creators, with the rules the options choose:
    py-faster-rcnn's ``clobber_positives``, ``allowed_border`` and
    ``neg_iou_thresh_lo`` (the defaults are this design's rules), and the
    ``sampler`` that draws their samples.

    Args:
        config (dict): Options as ``opt._state_dict()`` gives them.

    Returns:
        (AnchorTargetCreator, ProposalTargetCreator)

    Raises:
        UsageError: for a value a creator refuses.
    """
    try:
        return (AnchorTargetCreator(
                    clobber_positives=config['clobber_positives'],
                    allowed_border=config['allowed_border'],
                    sampler=config['sampler']),
                ProposalTargetCreator(
                    neg_iou_thresh_lo=config['neg_iou_thresh_lo'],
                    sampler=config['sampler']))
    except ValueError as err:
        raise UsageError(str(err)) from None


def _load(trainer, path):
    """Resumes the trainer from ``path``; a checkpoint that does not fit
    is a command-line mistake."""
    try:
        return trainer.load(path, resume=True)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from None


def _lr(trainer):
    return trainer.optimizer.param_groups[0]['lr']


COMMANDS = dict(
    train='train a detector on --data, evaluating it after each epoch',
    evaluate='score the checkpoint --load-path on the test set of --data '
    '(--report-dir: write a report)')


def main(argv=None):
    """The command line: ``--help`` lists the commands and options; a
    mistake is one line and exit status 2 (said once under torchrun, by
    rank 0); a crash inside training keeps its traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or '--help' in argv or '-h' in argv:
        print(usage('python train.py', COMMANDS))
        sys.exit(0 if argv else 2)
    try:
        # (fire would print the command's result: the sentence it prints
        # says it)
        fire.Fire(dict(train=train, evaluate=evaluate_checkpoint),
                  command=argv, name='train.py',
                  serialize=lambda result: None)
    except UsageError as err:
        if distributed.env_rank() == 0:
            print('train.py: error: {}'.format(err), file=sys.stderr)
        sys.exit(2)
    except WeightsNotFound as err:
        if distributed.env_rank() == 0:
            print('train.py: error: ' + err.advice(
                'start from random init with --pretrained-model=None'),
                file=sys.stderr)
        sys.exit(2)
    finally:
        distributed.shutdown()


if __name__ == '__main__':
    main()
