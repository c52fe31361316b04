"""data/voc_dataset.py: VOCBboxDataset reads the VOC layout: boxes in
(y_min, x_min, y_max, x_max) order minus one, difficult objects, own class
names, splits, image sizes from the annotations without reading an image;
each malformed or missing file named, before training where it can be."""
import os

import numpy as np
import pytest
from PIL import Image

import train
from data.synthetic import generate_voc
from data.voc_dataset import VOC_BBOX_LABEL_NAMES, VOCBboxDataset
from utils.config import UsageError


OBJECT = """
  <object>
    <name>{name}</name>
    <pose>Unspecified</pose>
    <truncated>0</truncated>
    {difficult}
    <bndbox>
      <xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax>
    </bndbox>
  </object>"""


def _object(name='dog', xmin=11, ymin=21, xmax=31, ymax=41, difficult=0):
    tag = '' if difficult is None else (
        '<difficult>{}</difficult>'.format(difficult))
    return OBJECT.format(name=name, xmin=xmin, ymin=ymin, xmax=xmax,
                         ymax=ymax, difficult=tag)


def _write_voc(root, annotations, split='trainval', size=(48, 64)):
    """Writes a VOC-layout directory: one image per annotation body."""
    for sub in ('JPEGImages', 'Annotations', 'ImageSets/Main'):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    ids = []
    for i, objects in enumerate(annotations):
        id_ = '{:06d}'.format(i + 1)
        ids.append(id_)
        Image.new('RGB', (size[1], size[0]), (10, 20, 30)).save(
            os.path.join(root, 'JPEGImages', id_ + '.jpg'))
        with open(os.path.join(root, 'Annotations', id_ + '.xml'), 'w') as f:
            f.write('<annotation><filename>{}.jpg</filename>{}'
                    '</annotation>'.format(id_, ''.join(objects)))
    with open(os.path.join(root, 'ImageSets/Main', split + '.txt'), 'w') as f:
        f.write('\n'.join(ids) + '\n')
    return str(root)


def test_label_names_are_the_20_voc_classes_in_order():
    assert len(VOC_BBOX_LABEL_NAMES) == 20
    assert VOC_BBOX_LABEL_NAMES[0] == 'aeroplane'
    assert VOC_BBOX_LABEL_NAMES[11] == 'dog'
    assert VOC_BBOX_LABEL_NAMES[-1] == 'tvmonitor'


def test_example_coordinates_minus_one_in_yx_order(tmp_path):
    root = _write_voc(tmp_path, [[_object('dog', 11, 21, 31, 41),
                                  _object('Person ', 2, 3, 4, 5)]])
    dataset = VOCBboxDataset(root)
    assert len(dataset) == 1
    img, bbox, label, difficult = dataset[0]
    assert img.shape == (3, 48, 64) and img.dtype == np.float32
    np.testing.assert_array_equal(bbox, [[20, 10, 40, 30], [2, 1, 4, 3]])
    assert bbox.dtype == np.float32
    np.testing.assert_array_equal(label, [11, 14])
    assert label.dtype == np.int32
    np.testing.assert_array_equal(difficult, [False, False])
    assert difficult.dtype == bool


def test_float_coordinates_are_read(tmp_path):
    root = _write_voc(tmp_path, [[_object(xmin='273.5', ymin=1, xmax=300,
                                          ymax='20.25')]])
    _, bbox, _, _ = VOCBboxDataset(root).get_example(0)
    np.testing.assert_allclose(bbox, [[0, 272.5, 19.25, 299]])


def test_difficult_objects_left_out_or_kept_and_flagged(tmp_path):
    objects = [_object('cat', difficult=1), _object('dog', difficult=0),
               _object('bird', difficult=None)]
    root = _write_voc(tmp_path, [objects])
    _, _, label, difficult = VOCBboxDataset(root).get_example(0)
    np.testing.assert_array_equal(label, [11, 2])
    np.testing.assert_array_equal(difficult, [False, False])

    _, _, label, difficult = VOCBboxDataset(
        root, use_difficult=True).get_example(0)
    np.testing.assert_array_equal(label, [7, 11, 2])
    np.testing.assert_array_equal(difficult, [True, False, False])


@pytest.mark.parametrize('objects', [[], [_object('cat', difficult=1)]])
def test_image_without_objects_is_valid(tmp_path, objects):
    root = _write_voc(tmp_path, [objects])
    img, bbox, label, difficult = VOCBboxDataset(root).get_example(0)
    assert img.shape == (3, 48, 64)
    assert bbox.shape == (0, 4) and bbox.dtype == np.float32
    assert label.shape == (0,) and label.dtype == np.int32
    assert difficult.shape == (0,) and difficult.dtype == bool


def test_own_label_names(tmp_path):
    root = _write_voc(tmp_path, [[_object('b'), _object('a')]])
    _, _, label, _ = VOCBboxDataset(root, label_names=('a', 'b')).get_example(0)
    np.testing.assert_array_equal(label, [1, 0])


def test_split_argument_picks_the_file(tmp_path):
    root = _write_voc(tmp_path, [[], [], []], split='test')
    assert len(VOCBboxDataset(root, split='test')) == 3


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match='no_such_voc'):
        VOCBboxDataset(str(tmp_path / 'no_such_voc'))


def test_missing_split_file(tmp_path):
    root = _write_voc(tmp_path, [[]], split='trainval')
    with pytest.raises(FileNotFoundError, match=r'Main.test\.txt'):
        VOCBboxDataset(root, split='test')


def test_unknown_class_names_the_file_and_the_known_ones(tmp_path):
    root = _write_voc(tmp_path, [[_object('unicorn')]])
    with pytest.raises(ValueError) as info:
        VOCBboxDataset(root).get_example(0)
    message = str(info.value)
    assert '000001.xml' in message
    assert 'unicorn' in message
    assert 'aeroplane' in message and 'tvmonitor' in message


def test_malformed_coordinate_names_the_file_and_value(tmp_path):
    root = _write_voc(tmp_path, [[_object(xmin='12px')]])
    with pytest.raises(ValueError, match=r"000001\.xml.*xmin.*'12px'"):
        VOCBboxDataset(root).get_example(0)


def test_missing_coordinate(tmp_path):
    root = _write_voc(tmp_path, [[_object(ymax='')]])
    with pytest.raises(ValueError, match=r'000001\.xml.*ymax'):
        VOCBboxDataset(root).get_example(0)


def test_box_with_min_above_max(tmp_path):
    root = _write_voc(tmp_path, [[_object(xmin=50, xmax=10)]])
    with pytest.raises(ValueError, match=r'000001\.xml'):
        VOCBboxDataset(root).get_example(0)


def test_invalid_xml_names_the_file(tmp_path):
    root = _write_voc(tmp_path, [[]])
    with open(os.path.join(root, 'Annotations', '000001.xml'), 'w') as f:
        f.write('<annotation><object>')
    with pytest.raises(ValueError, match=r'000001\.xml'):
        VOCBboxDataset(root).get_example(0)


def test_unreadable_image_names_the_file(tmp_path):
    root = _write_voc(tmp_path, [[_object()]])
    with open(os.path.join(root, 'JPEGImages', '000001.jpg'), 'wb') as f:
        f.write(b'\xff\xd8 truncated')
    with pytest.raises(OSError, match=r'000001\.jpg'):
        VOCBboxDataset(root).get_example(0)


def test_missing_annotation_names_the_file(tmp_path):
    root = _write_voc(tmp_path, [[]])
    os.remove(os.path.join(root, 'Annotations', '000001.xml'))
    with pytest.raises(FileNotFoundError, match=r'000001\.xml'):
        VOCBboxDataset(root).get_example(0)


def test_voc_without_annotations_is_reported_before_training(tmp_path):
    data_dir = generate_voc(str(tmp_path / 'voc'), n_images=4, seed=0)
    os.rename(os.path.join(data_dir, 'Annotations'),
              os.path.join(data_dir, 'Labels'))
    with pytest.raises(FileNotFoundError, match='has no Annotations '
                                                'directory'):
        VOCBboxDataset(data_dir, split='trainval')


def test_split_listing_a_missing_xml_is_reported_before_training(tmp_path):
    data_dir = generate_voc(str(tmp_path / 'voc'), n_images=4, seed=0)
    with open(os.path.join(data_dir, 'ImageSets', 'Main',
                           'trainval.txt')) as f:
        first = f.readline().strip()
    os.remove(os.path.join(data_dir, 'Annotations', first + '.xml'))
    with pytest.raises(FileNotFoundError) as info:
        VOCBboxDataset(data_dir, split='trainval')
    assert "of image id '{}'".format(first) in str(info.value)
    assert 'trainval.txt' in str(info.value)
    with pytest.raises(UsageError, match="image id '{}'".format(first)):
        train.train(data='toy', voc_data_dir=data_dir, num_workers=0,
                    test_num_workers=0, device='cpu')


# -------------------------------------------- sizes from the annotations

def test_voc_sizes_come_from_the_annotations(tmp_path):
    data_dir = generate_voc(str(tmp_path / 'voc'), n_images=3, img_size=64,
                            max_obj_size=30, test_fraction=0)
    db = VOCBboxDataset(data_dir)
    # no image is read: the sizes are there without the JPEG files
    for name in os.listdir(os.path.join(data_dir, 'JPEGImages')):
        os.remove(os.path.join(data_dir, 'JPEGImages', name))
    assert [db.get_size(i) for i in range(3)] == [(64, 64)] * 3


def test_voc_size_falls_back_to_the_image_header(tmp_path):
    data_dir = generate_voc(str(tmp_path / 'voc'), n_images=1, img_size=48,
                            max_obj_size=30, test_fraction=0)
    anno = os.path.join(data_dir, 'Annotations', '000001.xml')
    text = open(anno).read()
    start, end = text.index('<size>'), text.index('</size>') + 7
    with open(anno, 'w') as f:
        f.write(text[:start] + text[end:])
    assert VOCBboxDataset(data_dir).get_size(0) == (48, 48)


def test_a_malformed_voc_size_is_named(tmp_path):
    data_dir = generate_voc(str(tmp_path / 'voc'), n_images=1, img_size=48,
                            max_obj_size=30, test_fraction=0)
    anno = os.path.join(data_dir, 'Annotations', '000001.xml')
    text = open(anno).read()
    with open(anno, 'w') as f:
        f.write(text.replace('<height>48</height>', '<height>4.5</height>'))
    with pytest.raises(ValueError, match='000001.xml: <size> must give a '
                                         'whole positive height'):
        VOCBboxDataset(data_dir).get_size(0)
