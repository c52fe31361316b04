"""The data train.py trains and tests on, from its options: the class
names, their checks, and the loaders."""
import functools
import os

from torch.utils import data as data_
from torch.utils.data.distributed import DistributedSampler

from data.dataset import Dataset, TestDataset
from data.sampler import (AspectRatioBatchSampler, collate_detection,
                          collate_test, eval_batches, orientation_groups)
from data.synthetic import TOY_LABEL_NAMES
from data.voc_dataset import VOC_BBOX_LABEL_NAMES
from utils import distributed
from utils.config import UsageError


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


def label_names_of(data, names=None):
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


def make_loaders(opt, label_names, device):
    """The training loader, the test set and its loader (see
    :func:`make_test_loader`).

    One process shuffles the whole training set; under torchrun each
    process takes its share through a DistributedSampler. Batches of more
    than one image hold images of one orientation, their sizes read from
    the annotations.

    A dataset that cannot be read is a command-line mistake (UsageError),
    reported before any training. For a CUDA ``device`` the training
    batches come in pinned memory, so that their copy does not wait.
    """
    try:
        dataset = Dataset(opt, label_names=label_names)
        train_sizes = ([dataset.db.get_size(i) for i in range(len(dataset))]
                       if opt.batch_size > 1 else None)
    except (OSError, ValueError) as err:
        raise UsageError(str(err)) from None
    testset, test_dataloader = make_test_loader(opt, label_names)
    world_size = distributed.world_size()
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
    return dataloader, testset, test_dataloader


def make_test_loader(opt, label_names):
    """The test set and its loader: each process evaluates its share of the
    first ``opt.test_num`` images (see :func:`data.sampler.eval_batches`),
    in batches of images of one size where it can.

    A dataset that cannot be read is a command-line mistake (UsageError).
    """
    try:
        testset = TestDataset(opt, label_names=label_names)
        n_test = min(len(testset), opt.test_num)
        test_sizes = ([testset.db.get_size(i) for i in range(n_test)]
                      if opt.test_batch_size > 1 else None)
    except (OSError, ValueError) as err:
        raise UsageError(str(err)) from None
    test_dataloader = data_.DataLoader(
        testset, batch_sampler=eval_batches(
            n_test, opt.test_batch_size, distributed.rank(),
            distributed.world_size(), test_sizes),
        collate_fn=collate_test, num_workers=opt.test_num_workers)
    return testset, test_dataloader


def set_epoch(dataloader, epoch):
    """Tells a distributed sampler the epoch, which seeds its shuffle."""
    for sampler in (dataloader.sampler, dataloader.batch_sampler):
        if hasattr(sampler, 'set_epoch'):
            sampler.set_epoch(epoch)
