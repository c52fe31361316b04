"""Detection data in the COCO format: one JSON file and a folder of images.

The JSON file holds ``images`` (``id``, ``file_name``, ``height``,
``width``), ``annotations`` (``id``, ``image_id``, ``category_id``,
``bbox`` as ``[x, y, width, height]`` in pixels, ``iscrowd``) and
``categories`` (``id``, ``name``), as in the `COCO`_ detection files
(``instances_train2017.json``, ...) and in files that other tools write in
that format.

.. _`COCO`: https://cocodataset.org/#format-data

The file is read with :mod:`json` and checked here, so that a bad file gets
one sentence naming what is wrong instead of an assertion deep inside a
reader; pycocotools is needed only for the metrics
(:mod:`utils.coco_eval`).
"""
import collections
import json
import math
import os

import numpy as np

from data.util import read_image


class COCOBboxDataset:
    """Bounding box dataset for a COCO-format annotation file.

    The index corresponds to each entry of the file's ``images``, in the
    file's order. An example is ``(img, bbox, label, difficult)``:

    * img: :math:`(3, H, W)`, float32, RGB in [0, 255].
    * bbox: :math:`(R, 4)`, float32, each ``(y_min, x_min, y_max, x_max)``:
      COCO's ``[x, y, width, height]`` becomes
      ``(y, x, y + height, x + width)``.
    * label: :math:`(R,)`, int32, in :math:`[0, L - 1]`.
    * difficult: :math:`(R,)`, bool; ``True`` for a crowd region
      (``iscrowd`` 1), which is only kept with ``use_difficult``.

    Labels: the categories sorted by ``id`` get labels ``0, 1, ...,
    L - 1``; ``label_names[l]`` is the name of label ``l`` and
    ``cat_ids[l]`` its category id. COCO's 80 categories have ids from 1 to
    90 with gaps; sorting by id gives them the order every COCO tool uses,
    whatever their order in the file.

    Crowd regions (``iscrowd`` 1) are boxes around a group of objects; like
    VOC's difficult objects they are left out unless ``use_difficult``, and
    flagged in ``difficult`` when kept.

    Boxes of zero width or height (COCO's files hold a few) are left out,
    always: nothing can be learned from them (their regression targets are
    ``log 0``) and no box can overlap them. Boxes of any positive size are
    kept as they are. COCO's own metric counts them as objects (each one a
    missed object), so :func:`utils.evaluation.score` scores a COCO-format
    test set against the file itself (``ann_file``, ``ids``, ``cat_ids``),
    not against these arrays, for pycocotools' numbers exactly.

    Each object's ``area`` (:meth:`get_area`) is the file's: COCO's files
    give the segmentation mask's, which decides whether the object is
    small, medium or large in COCO's metric. The masks themselves are not
    read.

    An image without annotations (or whose annotations are all left out)
    gives ``R = 0``: ``bbox`` of shape :math:`(0, 4)`, ``label`` and
    ``difficult`` of shape :math:`(0,)`.

    The whole JSON file is checked when the dataset is built, since it is in
    memory then. The image files are not opened or even looked up, so that
    building a dataset of 100k images stays instant; an image file that is
    missing raises :class:`FileNotFoundError` when its example is read, as
    with :class:`~data.voc_dataset.VOCBboxDataset`. Call :meth:`check`
    before a long run to find a missing file up front. A wrong ``img_dir``
    (not a directory) is caught when the dataset is built.

    Args:
        ann_file (str): Path to the annotation JSON file, e.g.
            ``annotations/instances_val2017.json``.
        img_dir (str): The directory that each image's ``file_name`` is
            relative to, e.g. ``val2017``.
        use_difficult (bool): Keep the crowd regions.
        return_difficult (bool): Kept for the same signature as
            :class:`~data.voc_dataset.VOCBboxDataset`; ``difficult`` is
            always returned.

    Attributes:
        ids (list): The image ids, one per example, in the file's order.
        label_names (tuple of str): The category names, in label order.
        cat_ids (tuple): The category ids, in label order.

    Raises:
        FileNotFoundError: if ``ann_file`` or ``img_dir`` is missing.
        ValueError: if ``ann_file`` is not valid JSON, lacks one of the
            keys ``images``, ``annotations`` and ``categories``, or holds an
            entry that is malformed, refers to an undeclared image or
            category, has a box of negative width or height, or an
            ``area`` that is not a number.
    """

    def __init__(self, ann_file, img_dir, use_difficult=False,
                 return_difficult=False):
        data = _load_json(ann_file)
        if not os.path.isdir(img_dir):
            raise FileNotFoundError(
                'image directory {} does not exist; expected the directory '
                'that the file names in {} are relative to'.format(
                    img_dir, ann_file))
        self.ann_file = ann_file
        self.img_dir = img_dir
        self.use_difficult = use_difficult
        self.return_difficult = return_difficult

        categories = sorted(
            (_check_category(ann_file, cat) for cat in data['categories']),
            key=lambda cat: cat['id'])
        self.cat_ids = tuple(cat['id'] for cat in categories)
        self.label_names = tuple(cat['name'] for cat in categories)
        label_of = {cat_id: l for l, cat_id in enumerate(self.cat_ids)}
        _check_once(ann_file, self.cat_ids, 'category ids {} are declared '
                    'more than once in "categories"')

        images = [_check_image(ann_file, img) for img in data['images']]
        self.ids = [img['id'] for img in images]
        index_of = {img_id: i for i, img_id in enumerate(self.ids)}
        _check_once(ann_file, self.ids, 'image ids {} are listed more than '
                    'once in "images"')
        self._files = [img['file_name'] for img in images]
        self._sizes = [(int(img['height']), int(img['width']))
                       for img in images]

        # The objects of all images, image by image (each image's in the
        # file's order): boxes (M, 4), labels, crowd flags and areas (M,),
        # and where each image's start, (n_images + 1,).
        img_index, labels, crowds, areas, boxes = [], [], [], [], []
        for ann in data['annotations']:
            box, cat_id, img_id, crowd, area = _check_annotation(
                ann_file, ann, label_of, index_of)
            img_index.append(index_of[img_id])
            labels.append(label_of[cat_id])
            crowds.append(crowd)
            areas.append(area)
            boxes.append(box)
        x, y, w, h = np.array(boxes, dtype=np.float64).reshape((-1, 4)).T
        keep = (w != 0) & (h != 0)
        order = np.flatnonzero(keep)[np.argsort(
            np.array(img_index, dtype=np.int64)[keep], kind='stable')]
        self._bbox = np.stack((y, x, y + h, x + w), axis=1)[order].astype(
            np.float32)
        self._label = np.array(labels, dtype=np.int32)[order]
        self._crowd = np.array(crowds, dtype=bool)[order]
        area = np.array(areas, dtype=np.float64)
        self._area = np.where(np.isnan(area), w * h, area)[order]
        self._start = np.searchsorted(
            np.array(img_index, dtype=np.int64)[order],
            np.arange(len(images) + 1))

    def __len__(self):
        return len(self.ids)

    def get_size(self, i):
        """The ``(H, W)`` of the i-th image, from the JSON file.

        Reads no image, so that a sampler can group images by aspect ratio
        without decoding them.

        Args:
            i (int): The index of the example.

        Returns:
            tuple of two ints: the height and width in pixels.
        """
        return self._sizes[i]

    def get_example(self, i):
        """Returns the i-th example.

        Args:
            i (int): The index of the example.

        Returns:
            tuple of (img, bbox, label, difficult), as described in the
            class docstring.

        Raises:
            FileNotFoundError: if the image file is missing.
            OSError: if the image cannot be read.
        """
        img = read_image(self.image_path(i), color=True)
        bbox, label, difficult = self.get_annotation(i)
        return img, bbox, label, difficult

    def image_path(self, i):
        """The path of the i-th image's file: ``img_dir/file_name``."""
        return os.path.join(self.img_dir, self._files[i])

    __getitem__ = get_example

    def get_annotation(self, i):
        """The boxes, labels and difficult flags of the i-th image.

        Reads no image.

        Args:
            i (int): The index of the example.

        Returns:
            tuple of (bbox, label, difficult), as described in the class
            docstring.
        """
        objects = self._objects(i)
        return (self._bbox[objects], self._label[objects],
                self._crowd[objects])

    def get_area(self, i):
        """The area of each object that :meth:`get_annotation` returns.

        The file's ``area`` (COCO's files give the segmentation mask's,
        which decides an object's small/medium/large range in COCO's
        metric), or the box's ``width * height`` where the file has none.
        Reads no image.

        Args:
            i (int): The index of the example.

        Returns:
            ~numpy.ndarray: Shape :math:`(R,)`, float64, in pixels.
        """
        return self._area[self._objects(i)]

    def _objects(self, i):
        """The indices of the i-th image's objects that are kept."""
        objects = np.arange(self._start[i], self._start[i + 1])
        if not self.use_difficult:
            objects = objects[~self._crowd[objects]]
        return objects

    def check(self):
        """Checks that every image file exists, without reading any.

        Meant to be called once before a long run, so that a missing file
        is found in a second rather than when its example is reached.

        Raises:
            FileNotFoundError: naming the first missing file and how many
                are missing.
        """
        missing = [path for path in (os.path.join(self.img_dir, f)
                                     for f in self._files)
                   if not os.path.isfile(path)]
        if missing:
            raise FileNotFoundError(
                'image file {} does not exist (missing from {}: {} of the {} '
                'images listed in {})'.format(
                    missing[0], self.img_dir, len(missing), len(self),
                    self.ann_file))


def _load_json(ann_file):
    """Reads the annotation file and checks its top-level keys."""
    try:
        with open(ann_file) as f:
            data = json.load(f, object_hook=_without_segmentation)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            'annotation file {} does not exist'.format(ann_file)) from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError('annotation file {} is not valid JSON: {}'.format(
            ann_file, err)) from err
    if not isinstance(data, dict):
        raise ValueError(
            'annotation file {} holds a JSON {}; expected an object with the '
            'keys "images", "annotations" and "categories"'.format(
                ann_file, type(data).__name__))
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(data.get(key), list):
            raise ValueError(
                'annotation file {} lacks the "{}" key (a list); expected a '
                'COCO detection file with "images", "annotations" and '
                '"categories"'.format(ann_file, key))
    return data


def _without_segmentation(obj):
    """A JSON object without its ``segmentation``: the masks are not used,
    and dropped as each annotation is read they never fill the memory (a
    file the size of COCO's train2017 is read in a third of the time with
    less than half the memory)."""
    obj.pop('segmentation', None)
    return obj


def _check_entry(ann_file, entry, kind, keys):
    """Checks that an entry of a list in the file is an object with keys."""
    if not isinstance(entry, dict):
        raise ValueError(
            'annotation file {}: an entry of "{}" is {!r}; expected an '
            'object'.format(ann_file, kind, entry))
    missing = [key for key in keys if key not in entry]
    if missing:
        raise ValueError(
            'annotation file {}: the entry {} of "{}" lacks {}'.format(
                ann_file, json.dumps(entry)[:200], kind,
                ', '.join('"{}"'.format(key) for key in missing)))


def _check_once(ann_file, ids, message):
    """Raises ValueError unless each of ``ids`` appears once; ``message``
    names the repeated ones at its ``{}``."""
    repeated = sorted(i for i, n in collections.Counter(ids).items() if n > 1)
    if repeated:
        raise ValueError('annotation file {}: '.format(ann_file) +
                         message.format(repeated))


def _check_category(ann_file, cat):
    _check_entry(ann_file, cat, 'categories', ('id', 'name'))
    return cat


def _check_image(ann_file, img):
    _check_entry(ann_file, img, 'images',
                 ('id', 'file_name', 'height', 'width'))
    size = (img['height'], img['width'])
    if not all(_is_number(v) and v > 0 for v in size):
        raise ValueError(
            'annotation file {}: image {} has height and width {}; expected '
            'positive numbers'.format(ann_file, img['id'], size))
    return img


def _check_annotation(ann_file, ann, label_of, index_of):
    """Checks one annotation; returns its box, category, image, crowd flag
    and area (``nan`` where the file gives none)."""
    _check_entry(ann_file, ann, 'annotations',
                 ('id', 'image_id', 'category_id', 'bbox'))
    ann_id, img_id, cat_id = ann['id'], ann['image_id'], ann['category_id']
    if img_id not in index_of:
        raise ValueError(
            'annotation file {}: annotation {} refers to image {}, which '
            '"images" does not list'.format(ann_file, ann_id, img_id))
    if cat_id not in label_of:
        raise ValueError(
            'annotation file {}: annotation {} of image {} has category id '
            '{}, which "categories" does not declare'.format(
                ann_file, ann_id, img_id, cat_id))
    box = ann['bbox']
    if not (isinstance(box, list) and len(box) == 4
            and all(_is_number(v) for v in box)):
        raise ValueError(
            'annotation file {}: annotation {} of image {} has bbox {!r}; '
            'expected [x, y, width, height], four finite numbers'.format(
                ann_file, ann_id, img_id, box))
    if box[2] < 0 or box[3] < 0:
        raise ValueError(
            'annotation file {}: annotation {} of image {} has bbox '
            '[x, y, width, height] = {} with a negative width or '
            'height'.format(ann_file, ann_id, img_id, box))
    area = ann.get('area')
    if area is not None and not _is_number(area):
        raise ValueError(
            'annotation file {}: annotation {} of image {} has area {!r}; '
            'expected a finite number'.format(ann_file, ann_id, img_id, area))
    return (box, cat_id, img_id, bool(ann.get('iscrowd', 0)),
            math.nan if area is None else area)


def _is_number(value):
    """Whether a value read from JSON is a finite number (not a bool)."""
    return type(value) in (int, float) and math.isfinite(value)
