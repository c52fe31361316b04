"""Train Faster R-CNN: ``python train.py train [--option=value ...]``.

Options are the fields of :class:`utils.config.Config`. ``--data=toy``
trains a small detector on a generated VOC-layout dataset (written on first
use), so that the whole pipeline runs on a CPU machine without VOC.
``--data=coco`` trains on COCO-format annotation files (``--coco-train-ann``,
``--coco-train-img``, ``--coco-test-ann``, ``--coco-test-img``), and
``--metric`` chooses the test metric (voc07, voc or coco).
"""
import contextlib
import functools
import io
import os
import random
import signal
import sys

import fire
import numpy as np
import torch
from torch.utils import data as data_
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from data.dataset import Dataset, TestDataset, inverse_normalize
from data.sampler import (AspectRatioBatchSampler, collate_detection,
                          collate_test, eval_batches, orientation_groups)
from data.synthetic import TOY_LABEL_NAMES, generate_voc
from data.voc_dataset import VOC_BBOX_LABEL_NAMES
from model import build_model
from model.utils.creator_tool import AnchorTargetCreator, ProposalTargetCreator
from trainer import FasterRCNNTrainer
from utils import array_tool as at
from utils import distributed
from utils.amp import AMP_DTYPES
from utils.coco_eval import eval_detection_coco
from utils.config import UsageError, opt
from utils.eval_tool import eval_detection_voc
from utils.vis_tool import Visualizer, vis_bbox, visdom_bbox

# What --data=toy changes; options given on the command line win.
TOY_PRESET = dict(
    voc_data_dir='toy_voc', min_size=256, max_size=256, lr=5e-3,
    epoch=8, lr_decay_epoch=5, num_workers=1, test_num_workers=1,
    pretrained_model=None, env='faster-rcnn-toy', seed=0)


def eval(dataloader, faster_rcnn, test_num=10000, metric='voc07'):
    """The ``metric`` of ``faster_rcnn`` on a :class:`TestDataset` loader
    (see :func:`score_detections`): VOC07 11-point AP by default.

    The loader's batches may hold several images (see
    :func:`data.sampler.collate_test`; torch's default collate of a batch
    of one works too) and must not shuffle. Under torch.distributed each
    process evaluates the images its loader gives it (see
    :func:`data.sampler.eval_batches`), the results are gathered, and every
    process returns the mAP of all of them: the one a single process
    evaluating them all gets.

    Returns:
        dict: 'ap' (L,) per class and 'map', as :func:`score_detections`.
    """
    order = [i for batch in dataloader.batch_sampler for i in batch]
    order = iter(order[:test_num])
    results = {}  # dataset index -> (pred bbox, label, score, gt ...)
    for batch in tqdm(dataloader, desc='eval', leave=False,
                      disable=not distributed.is_main()):
        _check_stop()
        imgs, sizes, gt_bboxes, gt_labels, gt_difficults = _test_lists(batch)
        imgs = imgs[:test_num - len(results)]
        if not imgs:
            continue
        for result in zip(*faster_rcnn.predict(imgs, sizes), gt_bboxes,
                          gt_labels, gt_difficults):
            results[next(order)] = result
    results = {index: result
               for part in distributed.all_gather_object(results)
               for index, result in part.items()}
    pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels, \
        gt_difficults = (list(column) for column in zip(
            *(results[i] for i in sorted(results)))) if results else [[]] * 6
    return score_detections(metric, pred_bboxes, pred_labels, pred_scores,
                            gt_bboxes, gt_labels, gt_difficults)


# The --metric choices: VOC AP at IoU 0.5 by 11-point interpolation (the
# original design's) or by area, and COCO's AP at IoU 0.50:0.95.
METRICS = ('voc07', 'voc', 'coco')


def score_detections(metric, pred_bboxes, pred_labels, pred_scores,
                     gt_bboxes, gt_labels, gt_difficults):
    """Scores detections by one of :data:`METRICS`.

    Args:
        metric ({'voc07', 'voc', 'coco'}): 'voc07' and 'voc' call
            :func:`utils.eval_tool.eval_detection_voc` with and without
            ``use_07_metric``; 'coco' calls
            :func:`utils.coco_eval.eval_detection_coco` (objects' sizes by
            their boxes' areas).
        pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels,
        gt_difficults: Per image, as those functions take them.

    Returns:
        dict: 'ap' (L,) per class and 'map', the headline number that
        training logs and picks its best checkpoint by (for 'coco': AP at
        IoU 0.50:0.95; its other numbers are in the dict too).
    """
    if metric == 'coco':
        return eval_detection_coco(pred_bboxes, pred_labels, pred_scores,
                                   gt_bboxes, gt_labels, gt_difficults)
    return eval_detection_voc(pred_bboxes, pred_labels, pred_scores,
                              gt_bboxes, gt_labels, gt_difficults,
                              use_07_metric=metric == 'voc07')


def coco_label_names(train_db, test_db):
    """The class names of COCO-format training and test sets.

    Raises:
        UsageError: unless both files declare the same categories (ids and
            names): a label must mean one class in both.
    """
    train = list(zip(train_db.cat_ids, train_db.label_names))
    test = list(zip(test_db.cat_ids, test_db.label_names))
    if train != test:
        raise UsageError(
            'the training annotations {} and the test annotations {} '
            'declare different categories ((id, name) {} only in the '
            'first, {} only in the second); expected the same'.format(
                train_db.ann_file, test_db.ann_file,
                [c for c in train if c not in test],
                [c for c in test if c not in train]))
    return tuple(train_db.label_names)


def _test_lists(batch):
    """A test batch as lists of images, original (H, W) sizes, boxes,
    labels and difficult flags: from :func:`data.sampler.collate_test`, or
    from torch's default collate (a loader of batch size 1, as the
    original design built it)."""
    imgs, sizes, bboxes, labels, difficults = batch
    if isinstance(imgs, torch.Tensor):
        sizes = list(zip(*(size.tolist() for size in sizes)))
        return (list(imgs), sizes, list(bboxes.numpy()),
                list(labels.numpy()), list(difficults.numpy()))
    return batch


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


def check_voc_class_names(db):
    """Raises UsageError naming the first object of a VOC-layout dataset
    whose class is not one of ``db.label_names``, before any training.

    Reads the XML files of the split, no image; a file that does not parse
    is left to the dataset to report when it reads it.
    """
    from xml.etree import ElementTree
    known = set(db.label_names)
    for id_ in db.ids:
        path = os.path.join(db.data_dir, 'Annotations', id_ + '.xml')
        try:
            objects = ElementTree.parse(path).getroot().findall('object')
        except ElementTree.ParseError:
            continue
        for obj in objects:
            name = (obj.findtext('name') or '').strip()
            if name not in known:
                raise UsageError(
                    '{} has an object of class {!r}, not one of '
                    '--label-names ({})'.format(
                        path, name, ', '.join(db.label_names)))


def _label_names(data, names=None):
    """The class names of a VOC-layout dataset: ``names`` (the
    ``--label-names`` option: a text file with one name per line, or a
    sequence of names), else the toy's or VOC's."""
    if names is None:
        return TOY_LABEL_NAMES if data == 'toy' else VOC_BBOX_LABEL_NAMES
    if isinstance(names, str):
        if not os.path.isfile(names):
            raise UsageError(
                '--label-names={} is not a file; expected a text file with '
                'one class name per line, or the names separated by commas '
                '(--label-names=cat,dog)'.format(names))
        with open(names) as f:
            names = [line.strip() for line in f if line.strip()]
    names = tuple(str(name) for name in names)
    if not names or len(set(names)) != len(names):
        raise UsageError('--label-names must name each class once, got '
                         '{}'.format(list(names)))
    return names


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
    label_names = _label_names(opt.data, opt.label_names)
    if (main and opt.data == 'toy' and
            not os.path.isdir(opt.voc_data_dir)):
        print('writing the toy dataset to {}'.format(opt.voc_data_dir))
        generate_voc(opt.voc_data_dir, label_names=label_names)
    distributed.barrier()

    dataloader, testset, test_dataloader = _loaders(opt, label_names, device)
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
        trainer.wrap_ddp(device_ids=[device.index] if device.type == 'cuda'
                         else None)
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
            _set_epoch(dataloader, epoch)
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
            log_info = 'epoch {}: lr {:.2e}, map {:.4f}, loss {}'.format(
                epoch, _lr(trainer), eval_result['map'], {
                    k: round(v, 4) for k, v in trainer.get_meter_data().items()})
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


def _set_epoch(dataloader, epoch):
    """Tells a distributed sampler the epoch, which seeds its shuffle."""
    for sampler in (dataloader.sampler, dataloader.batch_sampler):
        if hasattr(sampler, 'set_epoch'):
            sampler.set_epoch(epoch)


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


def _loaders(opt, label_names, device):
    """The training loader, the test set and its loader.

    One process shuffles the whole training set; under torchrun each
    process takes its share through a DistributedSampler. Batches of more
    than one image hold images of one orientation, their sizes read from
    the annotations. Each process evaluates its share of the test set (see
    :func:`data.sampler.eval_batches`), in batches of images of one size
    where it can.

    A dataset that cannot be read is a command-line mistake (UsageError),
    reported before any training. For a CUDA ``device`` the training
    batches come in pinned memory, so that their copy does not wait.
    """
    try:
        dataset = Dataset(opt, label_names=label_names)
        testset = TestDataset(opt, label_names=label_names)
        n_test = min(len(testset), opt.test_num)
        train_sizes = ([dataset.db.get_size(i) for i in range(len(dataset))]
                       if opt.batch_size > 1 else None)
        test_sizes = ([testset.db.get_size(i) for i in range(n_test)]
                      if opt.test_batch_size > 1 else None)
    except (OSError, ValueError) as err:
        raise UsageError(str(err)) from None
    rank, world_size = distributed.rank(), distributed.world_size()
    if len(dataset) < world_size:
        raise UsageError(
            'the training set has {} images, fewer than the {} processes '
            'that would share it: start fewer (torchrun --nproc_per_node) '
            'or train on more images'.format(len(dataset), world_size))
    if world_size > 1:
        sampler = DistributedSampler(dataset, shuffle=True,
                                     seed=opt.seed or 0)
    else:
        sampler = data_.RandomSampler(dataset)
    collate = functools.partial(collate_detection,
                                size_divisible=opt.size_divisible)
    if opt.batch_size > 1:
        batch_sampler = AspectRatioBatchSampler(
            sampler, orientation_groups(train_sizes), opt.batch_size)
        batching = dict(batch_sampler=batch_sampler)
    else:
        batching = dict(batch_size=1, sampler=sampler)
    dataloader = data_.DataLoader(
        dataset, collate_fn=collate, num_workers=opt.num_workers,
        pin_memory=device.type == 'cuda', **batching)
    test_dataloader = data_.DataLoader(
        testset, batch_sampler=eval_batches(
            n_test, opt.test_batch_size, rank, world_size, test_sizes),
        collate_fn=collate_test, num_workers=opt.test_num_workers)
    return dataloader, testset, test_dataloader


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
