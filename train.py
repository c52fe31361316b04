"""Train Faster R-CNN: ``python train.py train [--option=value ...]``.

Options are the fields of :class:`utils.config.Config`. ``--data=toy``
trains a small detector on a generated VOC-layout dataset (written on first
use), so that the whole pipeline runs on a CPU machine without VOC.
``--data=coco`` trains on COCO-format annotation files (``--coco-train-ann``,
``--coco-train-img``, ``--coco-test-ann``, ``--coco-test-img``), and
``--metric`` chooses the test metric (voc07, voc or coco).
"""
import contextlib
import io
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
                          label_names_of, make_loaders, set_epoch)
from data.synthetic import generate_voc
from model import build_model
from model.utils.creator_tool import AnchorTargetCreator, ProposalTargetCreator
from trainer import FasterRCNNTrainer
from utils import array_tool as at
from utils import distributed
from utils.amp import AMP_DTYPES
from utils.config import UsageError, opt
from utils.evaluation import METRICS, evaluate
from utils.vis_tool import Visualizer, vis_bbox, visdom_bbox

# What --data=toy changes; options given on the command line win.
TOY_PRESET = dict(
    voc_data_dir='toy_voc', min_size=256, max_size=256, lr=5e-3,
    epoch=8, lr_decay_epoch=5, num_workers=1, test_num_workers=1,
    pretrained_model=None, env='faster-rcnn-toy', seed=0)


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


def check_preprocessing(faster_rcnn, config, path):
    """Raises UsageError unless the datasets preprocess as the model does.

    Args:
        faster_rcnn (FasterRCNN): The model after loading ``path``.
        config (dict): The options the datasets were built with.
        path (str): The checkpoint the model's settings came from.
    """
    keys = ('min_size', 'max_size', 'caffe_pretrain')
    model = {k: getattr(faster_rcnn, k) for k in keys}
    data = {k: config[k] for k in keys}
    if model != data:
        raise UsageError(
            'the model from {} was trained on images preprocessed with {} '
            'but the datasets would use {}: give the same --min-size, '
            '--max-size and --caffe-pretrain'.format(
                path, _settings(model), _settings(data)))


def _settings(settings):
    return ', '.join('{}={}'.format(k, v) for k, v in settings.items())


def save_predictions_png(faster_rcnn, testset, label_names, path, n=4):
    """Draws the predictions on the first ``n`` test images into a PNG."""
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    fig = Figure(figsize=(4 * n, 4.4))
    FigureCanvasAgg(fig)
    n = min(n, len(testset))
    for i in range(n):
        img = testset.db.get_example(i)[0]
        bboxes, labels, scores = faster_rcnn.predict([img], visualize=True)
        ax = fig.add_subplot(1, n, i + 1)
        vis_bbox(img, bboxes[0], labels[0], scores[0], ax=ax,
                 label_names=label_names)
        ax.axis('off')
    fig.tight_layout()
    fig.savefig(path)
    return path


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
                                    _scores[0], label_names=label_names))
    vis.text(str(trainer.rpn_cm.value().tolist()), win='rpn_cm')
    # visdom reads a float image with values above 1 as 0-255 bytes.
    roi_cm = trainer.roi_cm.value().astype(np.float32)
    vis.img('roi_cm', roi_cm[None] / max(roi_cm.max(), 1.))


def train(**kwargs):
    """Train on ``--data`` (voc, toy or coco); options as in
    utils/config.py."""
    opt.__dict__.clear()  # back to the class defaults, whatever ran before
    if kwargs.get('data') == 'toy':
        kwargs = {**TOY_PRESET, **kwargs}
    with contextlib.redirect_stdout(
            sys.stdout if distributed.env_rank() == 0 else io.StringIO()):
        opt._parse(kwargs)  # prints the options: once under torchrun
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
    anchor_target_creator, proposal_target_creator = target_creators(
        opt._state_dict())
    device = distributed.init(opt.device)
    main = distributed.is_main()
    if opt.seed is not None:
        # numpy's draws (the creators' samples, the flips) differ by process
        _seed(opt.seed + distributed.rank())
    label_names = label_names_of(opt.data, opt.label_names)
    if (main and opt.data == 'toy' and
            not os.path.isdir(opt.voc_data_dir)):
        print('writing the toy dataset to {}'.format(opt.voc_data_dir))
        generate_voc(opt.voc_data_dir, label_names=label_names)
    distributed.barrier()

    dataloader, testset, test_dataloader = make_loaders(opt, label_names, device)
    if opt.data == 'coco':
        label_names = coco_label_names(dataloader.dataset.db, testset.db)
    elif opt.label_names is not None:
        for db in (dataloader.dataset.db, testset.db):
            check_voc_class_names(db)
    pretrained = ('caffe' if opt.caffe_pretrain else opt.pretrained_model)
    try:
        faster_rcnn = build_model(
            opt._state_dict(), len(label_names),
            pretrained_model=None if opt.load_path or opt.resume
            else pretrained)
    except ValueError as err:  # e.g. an unknown --backbone or --roi-op
        raise UsageError(str(err)) from None
    vis = Visualizer(env=opt.env, port=opt.port) if main else None
    trainer = FasterRCNNTrainer(
        faster_rcnn, rpn_sigma=opt.rpn_sigma, roi_sigma=opt.roi_sigma,
        lr=opt.lr, weight_decay=opt.weight_decay, use_adam=opt.use_adam,
        anchor_target_creator=anchor_target_creator,
        proposal_target_creator=proposal_target_creator,
        vis=vis, config=opt._state_dict(), label_names=label_names,
        amp=opt.amp).to(device)
    if main:
        os.makedirs(opt.out_dir, exist_ok=True)

    start_epoch, best_map, best_path = 0, 0., None
    if opt.resume:
        info = _load(trainer, opt.resume, resume=True)
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
        _load(trainer, opt.load_path, load_optimizer=False)
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
        png = save_predictions_png(
            faster_rcnn, testset, label_names,
            os.path.join(opt.out_dir, 'predictions.png'))
        print('best map {:.4f}; checkpoint {}; predictions drawn in {}'
              .format(best_map, best_path, png))
    distributed.barrier()  # the processes leave together
    return best_map


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


def _load(trainer, path, **kwargs):
    """Loads ``path`` into the trainer, and checks that the datasets
    preprocess as the loaded model does."""
    try:
        info = trainer.load(path, **kwargs)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from None
    check_preprocessing(trainer.faster_rcnn, opt._state_dict(), path)
    return info


def _lr(trainer):
    return trainer.optimizer.param_groups[0]['lr']


def main(argv=None):
    """The command line: a mistake in it is one line and exit status 2 (said
    once under torchrun, by rank 0); a crash inside training keeps its
    traceback."""
    # fire prints the command's result: under torchrun, rank 0 alone
    quiet = distributed.env_rank() != 0
    try:
        with open(os.devnull, 'w') if quiet else contextlib.nullcontext(
                sys.stdout) as out, contextlib.redirect_stdout(out):
            fire.Fire(command=argv)
    except UsageError as err:
        if distributed.env_rank() == 0:
            print('train.py: error: {}'.format(err), file=sys.stderr)
        sys.exit(2)
    finally:
        distributed.shutdown()


if __name__ == '__main__':
    main()
