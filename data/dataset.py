"""The training and evaluation datasets: images read, preprocessed for the
network (see :mod:`model.utils.preprocess`) and flipped for training.
"""
import torch

from data import util
from data.coco_dataset import COCOBboxDataset
from data.voc_dataset import VOCBboxDataset, VOC_BBOX_LABEL_NAMES
# The preprocessing belongs to the model; re-exported for the datasets and
# for code written against the original layout.
from model.utils.preprocess import (  # noqa: F401
    CAFFE_MEAN, TORCHVISION_MEAN, TORCHVISION_STD, caffe_normalize,
    inverse_normalize, preprocess, pytorch_normalze)


class Transform:
    """The training transform: preprocess, then flip horizontally at random.

    Args:
        min_size (int): See :func:`preprocess`.
        max_size (int): See :func:`preprocess`.
        caffe_pretrain (bool): See :func:`preprocess`.
        resize ({'skimage', 'bilinear'}): See :func:`preprocess`.
    """

    def __init__(self, min_size=600, max_size=1000, caffe_pretrain=False,
                 resize='skimage'):
        self.min_size = min_size
        self.max_size = max_size
        self.caffe_pretrain = caffe_pretrain
        self.resize = resize

    def __call__(self, in_data):
        """Transforms one example.

        Args:
            in_data (tuple): ``(img, bbox, label)``: the image of shape
                :math:`(3, H, W)`, RGB in [0, 255]; boxes of shape
                :math:`(R, 4)`, each ``(y_min, x_min, y_max, x_max)``;
                labels of shape :math:`(R,)`.

        Returns:
            tuple of (img, bbox, label, scale): the network input of shape
            :math:`(3, H', W')`; the boxes in its pixels, shape
            :math:`(R, 4)`, each ``(y_min, x_min, y_max, x_max)``; the
            labels unchanged; and the scale ``H' / H``.
        """
        img, bbox, label = in_data
        _, H, W = img.shape
        img = _numpy(preprocess(img, self.min_size, self.max_size,
                                self.caffe_pretrain, self.resize))
        _, o_H, o_W = img.shape
        scale = o_H / H
        bbox = util.resize_bbox(bbox, (H, W), (o_H, o_W))

        # horizontally flip
        img, params = util.random_flip(
            img, x_random=True, return_param=True)
        bbox = util.flip_bbox(
            bbox, (o_H, o_W), x_flip=params['x_flip'])

        return img, bbox, label, scale


class Dataset:
    """The training set: the ``trainval`` split, difficult objects left out.

    With ``opt.data == 'coco'``, the COCO-format set of
    ``opt.coco_train_ann`` and ``opt.coco_train_img`` instead (crowd
    regions left out), whose categories give the class names.

    Args:
        opt: Any object with the attributes ``voc_data_dir``, ``min_size``,
            ``max_size`` and ``caffe_pretrain`` (and ``data``,
            ``coco_train_ann``, ``coco_train_img`` for COCO data).
        label_names (sequence of str): The class names, in label order, of
            a VOC-layout dataset.
        db: A ready dataset with ``get_example(i) -> (img, bbox, label,
            difficult)`` and ``len``, used instead of one built from
            ``opt``.
    """

    def __init__(self, opt, label_names=VOC_BBOX_LABEL_NAMES, db=None):
        self.opt = opt
        if db is None and getattr(opt, 'data', 'voc') == 'coco':
            db = _coco_db(opt, 'train')
        elif db is None:
            db = VOCBboxDataset(opt.voc_data_dir, label_names=label_names)
        self.db = db
        self.tsf = Transform(opt.min_size, opt.max_size, opt.caffe_pretrain,
                             getattr(opt, 'resize', 'skimage'))

    def __getitem__(self, idx):
        """Returns ``(img, bbox, label, scale)`` as :class:`Transform` does."""
        ori_img, bbox, label, difficult = self.db.get_example(idx)
        img, bbox, label, scale = self.tsf((ori_img, bbox, label))
        # The flip leaves negative strides, which torch cannot wrap.
        return img.copy(), bbox.copy(), label.copy(), scale

    def __len__(self):
        return len(self.db)


class TestDataset:
    """An evaluation set: preprocessed images, no flip, original boxes.

    Unlike the original design, which always resized test images to
    600/1000, this uses ``opt.min_size``, ``opt.max_size`` and
    ``opt.caffe_pretrain``, the preprocessing the model was trained with.

    With ``opt.data == 'coco'``, the COCO-format set of
    ``opt.coco_test_ann`` and ``opt.coco_test_img`` instead (``split`` is
    not used; crowd regions are the difficult objects).

    Args:
        opt: Any object with the attributes ``voc_data_dir``, ``min_size``,
            ``max_size`` and ``caffe_pretrain`` (and ``data``,
            ``coco_test_ann``, ``coco_test_img`` for COCO data).
        split (str): The split to read.
        use_difficult (bool): Keep the objects marked difficult (flagged in
            ``difficult``).
        label_names (sequence of str): The class names, in label order, of
            a VOC-layout dataset.
        db: A ready dataset with ``get_example(i) -> (img, bbox, label,
            difficult)`` and ``len``, used instead of one built from
            ``opt``.
    """

    def __init__(self, opt, split='test', use_difficult=True,
                 label_names=VOC_BBOX_LABEL_NAMES, db=None):
        self.opt = opt
        if db is None and getattr(opt, 'data', 'voc') == 'coco':
            db = _coco_db(opt, 'test', use_difficult=use_difficult)
        elif db is None:
            db = VOCBboxDataset(opt.voc_data_dir, split=split,
                                use_difficult=use_difficult,
                                label_names=label_names)
        self.db = db

    def __getitem__(self, idx):
        """Returns ``(img, size, bbox, label, difficult)``.

        ``img`` is the network input of shape :math:`(3, H', W')`; ``size``
        is ``(H, W)`` of the image on disk; ``bbox`` (shape :math:`(R, 4)`,
        each ``(y_min, x_min, y_max, x_max)``), ``label`` and ``difficult``
        (shape :math:`(R,)`) are in the pixels of the image on disk.
        """
        ori_img, bbox, label, difficult = self.db.get_example(idx)
        img = _numpy(preprocess(ori_img, self.opt.min_size,
                                self.opt.max_size, self.opt.caffe_pretrain,
                                getattr(self.opt, 'resize', 'skimage')))
        return img, ori_img.shape[1:], bbox, label, difficult

    def __len__(self):
        return len(self.db)


def _numpy(img):
    """A preprocessed image as numpy (torchvision's resize gives a tensor)."""
    return img.numpy() if isinstance(img, torch.Tensor) else img


def _coco_db(opt, part, use_difficult=False):
    """The COCO-format dataset of ``opt.coco_<part>_ann`` and
    ``opt.coco_<part>_img`` (``part``: 'train' or 'test').

    Every image file is looked up (not read) here, so that one missing is
    found before training rather than when its example comes.

    Raises:
        ValueError: if either option is not given, or the JSON file is
            malformed (see :class:`~data.coco_dataset.COCOBboxDataset`).
        FileNotFoundError: if the JSON file, the directory or an image
            file is missing.
    """
    meanings = {
        'coco_{}_ann'.format(part): "the {} set's annotations JSON".format(
            part),
        'coco_{}_img'.format(part): 'the directory its file names are '
        'relative to'}
    missing = [name for name in meanings if getattr(opt, name, None) is None]
    if missing:
        raise ValueError('--data=coco needs {}'.format(' and '.join(
            '--{} ({})'.format(name.replace('_', '-'), meanings[name])
            for name in missing)))
    ann_file, img_dir = (getattr(opt, name) for name in meanings)
    db = COCOBboxDataset(ann_file, img_dir, use_difficult=use_difficult)
    db.check()
    return db
