"""Pascal VOC detection data as it lies on disk.

A VOC-layout directory holds ``JPEGImages/<id>.jpg``,
``Annotations/<id>.xml`` and ``ImageSets/Main/<split>.txt`` (one id per
line).
"""
import os
import xml.etree.ElementTree as ET

import numpy as np

from data.util import read_image, read_image_size

VOC_BBOX_LABEL_NAMES = (
    'aeroplane',
    'bicycle',
    'bird',
    'boat',
    'bottle',
    'bus',
    'car',
    'cat',
    'chair',
    'cow',
    'diningtable',
    'dog',
    'horse',
    'motorbike',
    'person',
    'pottedplant',
    'sheep',
    'sofa',
    'train',
    'tvmonitor')


class VOCBboxDataset:
    """Bounding box dataset for PASCAL `VOC`_ and data in its layout.

    .. _`VOC`: http://host.robots.ox.ac.uk/pascal/VOC/voc2007/

    The index corresponds to each image. An example is
    ``(img, bbox, label, difficult)``:

    * img: :math:`(3, H, W)`, float32, RGB in [0, 255].
    * bbox: :math:`(R, 4)`, float32, each ``(y_min, x_min, y_max, x_max)``:
      the annotation's 1-based pixel coordinates minus 1.
    * label: :math:`(R,)`, int32, in :math:`[0, L - 1]`, the index of the
      object's name in ``label_names``.
    * difficult: :math:`(R,)`, bool; all ``False`` unless ``use_difficult``.

    An image without objects (or whose objects are all difficult and left
    out) gives ``R = 0``.

    Args:
        data_dir (str): Path to the root of the data, e.g.
            ``VOCdevkit/VOC2007``.
        split ({'train', 'val', 'trainval', 'test'}): Which split to read:
            the name of a file in ``ImageSets/Main`` without ``.txt``.
        use_difficult (bool): Keep the objects marked difficult.
        return_difficult (bool): Kept for compatibility with the original
            signature; ``difficult`` is always returned.
        label_names (sequence of str): The class names, in label order.

    Raises:
        FileNotFoundError: if ``data_dir``, the split file,
            ``Annotations/`` or the XML file of a listed id is missing.
    """

    def __init__(self, data_dir, split='trainval',
                 use_difficult=False, return_difficult=False,
                 label_names=VOC_BBOX_LABEL_NAMES):
        if not os.path.isdir(data_dir):
            raise FileNotFoundError(
                'VOC data directory {} does not exist; expected a directory '
                'with JPEGImages, Annotations and ImageSets/Main'.format(
                    data_dir))
        id_list_file = os.path.join(
            data_dir, 'ImageSets', 'Main', '{0}.txt'.format(split))
        if not os.path.isfile(id_list_file):
            raise FileNotFoundError(
                'split file {} does not exist; expected one image id per '
                'line for split {!r}'.format(id_list_file, split))
        with open(id_list_file) as f:
            self.ids = [id_.strip() for id_ in f if id_.strip()]
        _check_annotations(data_dir, self.ids, id_list_file)
        self.data_dir = data_dir
        self.use_difficult = use_difficult
        self.return_difficult = return_difficult
        self.label_names = tuple(label_names)

    def __len__(self):
        return len(self.ids)

    def get_example(self, i):
        """Returns the i-th example.

        Args:
            i (int): The index of the example.

        Returns:
            tuple of (img, bbox, label, difficult), as described in the
            class docstring.

        Raises:
            FileNotFoundError: if the annotation or the image is missing.
            ValueError: if the annotation is malformed or names an unknown
                class.
            OSError: if the image cannot be read.
        """
        id_ = self.ids[i]
        anno_file = os.path.join(self.data_dir, 'Annotations', id_ + '.xml')
        bbox, label, difficult = self._read_annotation(anno_file)
        img_file = os.path.join(self.data_dir, 'JPEGImages', id_ + '.jpg')
        img = read_image(img_file, color=True)
        return img, bbox, label, difficult

    __getitem__ = get_example

    def get_size(self, i):
        """The ``(H, W)`` of the i-th image, from its annotation's
        ``<size>``.

        Decodes no image, so that a sampler can group images by aspect
        ratio cheaply; an annotation without ``<size>`` falls back to the
        image file's header.

        Args:
            i (int): The index of the example.

        Returns:
            tuple of two ints: the height and width in pixels.

        Raises:
            ValueError: if ``<size>`` is malformed.
            FileNotFoundError, OSError: if the fallback cannot read the
                image's header.
        """
        id_ = self.ids[i]
        anno_file = os.path.join(self.data_dir, 'Annotations', id_ + '.xml')
        try:
            size = ET.parse(anno_file).find('size')
        except ET.ParseError as err:
            raise ValueError('annotation file {} is not valid XML: {}'.format(
                anno_file, err)) from err
        if size is None or size.find('height') is None or size.find(
                'width') is None:
            return read_image_size(
                os.path.join(self.data_dir, 'JPEGImages', id_ + '.jpg'))
        h, w = (_read_number(anno_file, size, tag) for tag in ('height',
                                                               'width'))
        if h < 1 or w < 1 or h != int(h) or w != int(w):
            raise ValueError('annotation file {}: <size> must give a whole '
                             'positive height and width, got {} x {}'.format(
                                 anno_file, h, w))
        return int(h), int(w)

    def _read_annotation(self, anno_file):
        """Reads the boxes, labels and difficult flags of one XML file."""
        try:
            anno = ET.parse(anno_file)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                'annotation file {} does not exist'.format(anno_file)) from err
        except ET.ParseError as err:
            raise ValueError('annotation file {} is not valid XML: {}'.format(
                anno_file, err)) from err

        bbox = list()
        label = list()
        difficult = list()
        for obj in anno.findall('object'):
            # A missing <difficult> tag means the object is not difficult.
            is_difficult = _read_number(anno_file, obj, 'difficult', '0') == 1
            if is_difficult and not self.use_difficult:
                continue
            difficult.append(is_difficult)
            bndbox = obj.find('bndbox')
            if bndbox is None:
                raise ValueError(
                    'annotation file {}: an object has no <bndbox>'.format(
                        anno_file))
            box = [_read_number(anno_file, bndbox, tag)
                   for tag in ('ymin', 'xmin', 'ymax', 'xmax')]
            if box[0] > box[2] or box[1] > box[3]:
                raise ValueError(
                    'annotation file {}: box (ymin, xmin, ymax, xmax) = {} '
                    'has a min above its max'.format(anno_file, box))
            # Subtract 1 to make the 1-based pixel indexes 0-based.
            bbox.append([v - 1 for v in box])
            label.append(self._label_of(anno_file, obj))

        bbox = np.array(bbox, dtype=np.float32).reshape((-1, 4))
        label = np.array(label, dtype=np.int32)
        difficult = np.array(difficult, dtype=bool)
        return bbox, label, difficult

    def _label_of(self, anno_file, obj):
        """The label of an <object>: the index of its name."""
        name_tag = obj.find('name')
        name = '' if name_tag is None else (name_tag.text or '')
        name = name.lower().strip()
        if name not in self.label_names:
            raise ValueError(
                'annotation file {}: unknown class name {!r}; expected one '
                'of {}'.format(anno_file, name, ', '.join(self.label_names)))
        return self.label_names.index(name)


def _read_number(anno_file, parent, tag, default=None):
    """Reads the number in ``<tag>`` under ``parent``, e.g. "273" or "273.5".

    A missing tag gives ``default``; with no default it is an error.
    """
    element = parent.find(tag)
    if element is None or element.text is None:
        if default is None:
            raise ValueError('annotation file {}: missing <{}>'.format(
                anno_file, tag))
        text = default
    else:
        text = element.text
    try:
        value = float(text)
    except ValueError as err:
        raise ValueError(
            'annotation file {}: malformed <{}> value {!r}; expected a '
            'number'.format(anno_file, tag, text)) from err
    if not np.isfinite(value):
        raise ValueError(
            'annotation file {}: malformed <{}> value {!r}; expected a '
            'finite number'.format(anno_file, tag, text))
    return value


def _check_annotations(data_dir, ids, id_list_file):
    """Raises FileNotFoundError, before any image is read, unless every id
    of the split has its XML file (a stat per id: 0.1 s for VOC07)."""
    anno_dir = os.path.join(data_dir, 'Annotations')
    if not os.path.isdir(anno_dir):
        raise FileNotFoundError(
            '{} has no Annotations directory; expected one XML file per '
            'image id there'.format(data_dir))
    for id_ in ids:
        path = os.path.join(anno_dir, id_ + '.xml')
        if not os.path.isfile(path):
            raise FileNotFoundError(
                'annotation file {} of image id {!r} (listed in {}) does not '
                'exist'.format(path, id_, id_list_file))
