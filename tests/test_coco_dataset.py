"""data/coco_dataset.py: COCOBboxDataset reads a COCO annotation file:
boxes from [x, y, w, h] to (y_min, x_min, y_max, x_max), labels in the
order of the sorted category ids, crowd regions, areas, sizes without
reading an image; each malformed or missing part named in one line."""
import json
import os

import numpy as np
import pytest

from conftest import COCO_CATEGORIES, coco_ann, write_coco
from data.coco_dataset import COCOBboxDataset

def _message(excinfo):
    """The error's message, checked to be one line."""
    message = str(excinfo.value)
    assert '\n' not in message
    return message


def test_boxes_are_converted_from_xywh_to_yx_min_max(tmp_path):
    ann_file, img_dir = write_coco(tmp_path, [
        coco_ann(1, 7, 1, [10, 20, 30, 5]),
        coco_ann(2, 7, 18, [0.5, 1.25, 2.5, 3.0])])
    dataset = COCOBboxDataset(ann_file, img_dir)
    img, bbox, label, difficult = dataset[0]
    assert img.shape == (3, 48, 64) and img.dtype == np.float32
    np.testing.assert_array_equal(img[:, 0, 0], [10, 20, 30])
    assert bbox.dtype == np.float32 and bbox.shape == (2, 4)
    # (y, x, y + h, x + w)
    np.testing.assert_array_equal(bbox, [[20, 10, 25, 40],
                                         [1.25, 0.5, 4.25, 3.0]])
    assert label.dtype == np.int32
    np.testing.assert_array_equal(difficult, [False, False])


def test_labels_follow_category_ids_sorted_and_keep_names(tmp_path):
    ann_file, img_dir = write_coco(tmp_path, [
        coco_ann(1, 7, 18, [0, 0, 5, 5]), coco_ann(2, 7, 1, [0, 0, 5, 5]),
        coco_ann(3, 7, 3, [0, 0, 5, 5])])
    dataset = COCOBboxDataset(ann_file, img_dir)
    assert dataset.label_names == ('person', 'car', 'dog')
    assert dataset.cat_ids == (1, 3, 18)
    _, _, label, _ = dataset[0]
    np.testing.assert_array_equal(label, [2, 0, 1])


def test_images_in_file_order_with_ids_and_sizes_from_the_json(tmp_path):
    ann_file, img_dir = write_coco(tmp_path, [coco_ann(1, 3, 1, [1, 2, 3, 4])])
    dataset = COCOBboxDataset(ann_file, img_dir)
    assert len(dataset) == 2
    assert dataset.ids == [7, 3]
    assert dataset.get_size(0) == (48, 64)
    assert dataset.get_size(1) == (20, 30)
    img, bbox, _, _ = dataset.get_example(1)
    assert img.shape == (3, 20, 30)
    np.testing.assert_array_equal(bbox, [[2, 1, 6, 4]])


def test_sizes_and_annotations_come_without_reading_images(tmp_path):
    ann_file, img_dir = write_coco(
        tmp_path, [coco_ann(1, 7, 3, [1, 2, 3, 4])], write_images=False)
    dataset = COCOBboxDataset(ann_file, img_dir)
    assert dataset.get_size(0) == (48, 64)
    bbox, label, _ = dataset.get_annotation(0)
    np.testing.assert_array_equal(bbox, [[2, 1, 6, 4]])
    np.testing.assert_array_equal(label, [1])


def test_image_without_annotations_gives_empty_arrays(tmp_path):
    ann_file, img_dir = write_coco(tmp_path, [coco_ann(1, 7, 1, [0, 0, 5, 5])])
    img, bbox, label, difficult = COCOBboxDataset(ann_file, img_dir)[1]
    assert img.shape == (3, 20, 30)
    assert bbox.shape == (0, 4) and bbox.dtype == np.float32
    assert label.shape == (0,) and label.dtype == np.int32
    assert difficult.shape == (0,) and difficult.dtype == bool


def test_crowd_regions_left_out_unless_use_difficult(tmp_path):
    ann_file, img_dir = write_coco(tmp_path, [
        coco_ann(1, 7, 1, [0, 0, 5, 5]),
        coco_ann(2, 7, 3, [1, 1, 5, 5], iscrowd=1),
        coco_ann(3, 7, 18, [2, 2, 5, 5])])
    _, bbox, label, difficult = COCOBboxDataset(ann_file, img_dir)[0]
    np.testing.assert_array_equal(label, [0, 2])
    np.testing.assert_array_equal(difficult, [False, False])
    np.testing.assert_array_equal(bbox[:, 0], [0, 2])

    _, bbox, label, difficult = COCOBboxDataset(
        ann_file, img_dir, use_difficult=True)[0]
    np.testing.assert_array_equal(label, [0, 1, 2])
    np.testing.assert_array_equal(difficult, [False, True, False])
    np.testing.assert_array_equal(bbox[1], [1, 1, 6, 6])


def test_only_crowd_regions_give_empty_arrays(tmp_path):
    ann_file, img_dir = write_coco(
        tmp_path, [coco_ann(1, 7, 1, [0, 0, 5, 5], iscrowd=1)])
    _, bbox, label, difficult = COCOBboxDataset(ann_file, img_dir)[0]
    assert bbox.shape == (0, 4) and label.shape == (0,)
    assert difficult.shape == (0,)


def test_zero_width_or_height_boxes_are_left_out(tmp_path):
    ann_file, img_dir = write_coco(tmp_path, [
        coco_ann(1, 7, 1, [3, 4, 0, 5]), coco_ann(2, 7, 1, [3, 4, 5, 0]),
        coco_ann(3, 7, 1, [3, 4, 0.25, 0.5])])
    _, bbox, _, _ = COCOBboxDataset(ann_file, img_dir, use_difficult=True)[0]
    # The tiny but positive box stays.
    np.testing.assert_array_equal(bbox, [[4, 3, 4.5, 3.25]])


def test_areas_are_the_files_aligned_with_the_kept_objects(tmp_path):
    anns = [coco_ann(1, 7, 1, [0, 0, 10, 20]),
            coco_ann(2, 7, 3, [5, 5, 4, 4], 1),
            coco_ann(3, 7, 18, [1, 2, 3, 0]),
            coco_ann(4, 7, 18, [1, 2, 6, 5]),
            coco_ann(5, 3, 1, [0, 0, 2, 2])]
    for ann, area in zip(anns, (150.5, 7.0, 0.0, None, 3)):
        if area is None:
            del ann['area']  # none in the file: the box's
        else:
            ann['area'] = area
    ann_file, img_dir = write_coco(tmp_path, anns)
    dataset = COCOBboxDataset(ann_file, img_dir)
    # The crowd region and the zero-height box are left out.
    assert dataset.get_annotation(0)[1].tolist() == [0, 2]
    area = dataset.get_area(0)
    assert area.dtype == np.float64
    assert area.tolist() == [150.5, 30.0]
    assert dataset.get_area(1).tolist() == [3.0]
    with_crowds = COCOBboxDataset(ann_file, img_dir, use_difficult=True)
    assert with_crowds.get_area(0).tolist() == [150.5, 7.0, 30.0]
    assert with_crowds.get_annotation(0)[2].tolist() == [False, True, False]


def test_segmentations_are_not_kept(tmp_path):
    ann = coco_ann(1, 7, 1, [0, 0, 10, 20])
    ann['segmentation'] = [[0, 0, 10, 0, 10, 20]]
    ann_file, img_dir = write_coco(tmp_path, [ann])
    dataset = COCOBboxDataset(ann_file, img_dir)
    np.testing.assert_array_equal(dataset.get_annotation(0)[0],
                                  [[0, 0, 20, 10]])


# ------------------------------------------------------------- bad input

@pytest.mark.parametrize('area', ['12', True, float('inf'), [3]])
def test_an_area_that_is_not_a_number_is_named(tmp_path, area):
    ann = coco_ann(4, 7, 1, [0, 0, 10, 20])
    ann['area'] = area
    ann_file, img_dir = write_coco(tmp_path, [ann])
    with pytest.raises(ValueError) as excinfo:
        COCOBboxDataset(ann_file, img_dir)
    assert _message(excinfo) == (
        'annotation file {}: annotation 4 of image 7 has area {!r}; '
        'expected a finite number'.format(ann_file, area))


def test_missing_annotation_file_is_named(tmp_path):
    path = str(tmp_path / 'nope.json')
    with pytest.raises(FileNotFoundError) as excinfo:
        COCOBboxDataset(path, str(tmp_path))
    assert _message(excinfo) == 'annotation file {} does not exist'.format(
        path)


def test_invalid_json_is_named(tmp_path):
    path = tmp_path / 'ann.json'
    path.write_text('{"images": [')
    with pytest.raises(ValueError) as excinfo:
        COCOBboxDataset(str(path), str(tmp_path))
    message = _message(excinfo)
    assert message.startswith(
        'annotation file {} is not valid JSON: '.format(path))


@pytest.mark.parametrize('key', ['images', 'annotations', 'categories'])
def test_missing_top_level_key_is_named(tmp_path, key):
    ann_file, img_dir = write_coco(tmp_path, [])
    with open(ann_file) as f:
        data = json.load(f)
    del data[key]
    with open(ann_file, 'w') as f:
        json.dump(data, f)
    with pytest.raises(ValueError) as excinfo:
        COCOBboxDataset(ann_file, img_dir)
    assert _message(excinfo) == (
        'annotation file {} lacks the "{}" key (a list); expected a COCO '
        'detection file with "images", "annotations" and '
        '"categories"'.format(ann_file, key))


def test_json_that_is_not_an_object_is_named(tmp_path):
    path = tmp_path / 'ann.json'
    path.write_text('[1, 2]')
    with pytest.raises(ValueError) as excinfo:
        COCOBboxDataset(str(path), str(tmp_path))
    assert _message(excinfo) == (
        'annotation file {} holds a JSON list; expected an object with the '
        'keys "images", "annotations" and "categories"'.format(path))


def test_undeclared_category_names_the_id_and_the_image(tmp_path):
    ann_file, img_dir = write_coco(tmp_path, [
        coco_ann(1, 7, 1, [0, 0, 5, 5]), coco_ann(41, 3, 99, [0, 0, 5, 5])])
    with pytest.raises(ValueError) as excinfo:
        COCOBboxDataset(ann_file, img_dir)
    assert _message(excinfo) == (
        'annotation file {}: annotation 41 of image 3 has category id 99, '
        'which "categories" does not declare'.format(ann_file))


def test_negative_width_or_height_names_annotation_image_and_box(tmp_path):
    for box in ([1, 2, -3, 4], [1, 2, 3, -0.5]):
        ann_file, img_dir = write_coco(tmp_path, [coco_ann(5, 7, 3, box)])
        with pytest.raises(ValueError) as excinfo:
            COCOBboxDataset(ann_file, img_dir)
        assert _message(excinfo) == (
            'annotation file {}: annotation 5 of image 7 has bbox '
            '[x, y, width, height] = {} with a negative width or '
            'height'.format(ann_file, box))


def test_annotation_of_an_unlisted_image_is_named(tmp_path):
    ann_file, img_dir = write_coco(tmp_path,
                                   [coco_ann(5, 12, 3, [0, 0, 1, 1])])
    with pytest.raises(ValueError) as excinfo:
        COCOBboxDataset(ann_file, img_dir)
    assert _message(excinfo) == (
        'annotation file {}: annotation 5 refers to image 12, which "images" '
        'does not list'.format(ann_file))


def test_malformed_bbox_is_named(tmp_path):
    ann_file, img_dir = write_coco(tmp_path, [coco_ann(5, 7, 3, [0, 0, 1])])
    with pytest.raises(ValueError) as excinfo:
        COCOBboxDataset(ann_file, img_dir)
    assert _message(excinfo) == (
        'annotation file {}: annotation 5 of image 7 has bbox [0, 0, 1]; '
        'expected [x, y, width, height], four finite numbers'.format(
            ann_file))


def test_image_entry_without_size_is_named(tmp_path):
    ann_file, img_dir = write_coco(
        tmp_path, [], images=[{'id': 7, 'file_name': 'a.jpg'}],
        write_images=False)
    with pytest.raises(ValueError) as excinfo:
        COCOBboxDataset(ann_file, img_dir)
    message = _message(excinfo)
    assert message.startswith('annotation file {}: the entry '.format(
        ann_file))
    assert message.endswith('of "images" lacks "height", "width"')


def test_missing_image_directory_is_named(tmp_path):
    ann_file, _ = write_coco(tmp_path, [])
    img_dir = str(tmp_path / 'elsewhere')
    with pytest.raises(FileNotFoundError) as excinfo:
        COCOBboxDataset(ann_file, img_dir)
    assert _message(excinfo) == (
        'image directory {} does not exist; expected the directory that the '
        'file names in {} are relative to'.format(img_dir, ann_file))


def test_missing_image_file_raises_when_read_and_in_check(tmp_path):
    ann_file, img_dir = write_coco(tmp_path, [coco_ann(1, 3, 1, [0, 0, 5, 5])])
    missing = os.path.join(img_dir, 'sub/b.png')
    os.remove(missing)
    dataset = COCOBboxDataset(ann_file, img_dir)
    dataset[0]
    with pytest.raises(FileNotFoundError) as excinfo:
        dataset[1]
    assert _message(excinfo) == 'image file {} does not exist'.format(
        missing)
    # The annotation alone is still there.
    np.testing.assert_array_equal(dataset.get_annotation(1)[0],
                                  [[0, 0, 5, 5]])

    with pytest.raises(FileNotFoundError) as excinfo:
        dataset.check()
    assert _message(excinfo) == (
        'image file {} does not exist (missing from {}: 1 of the 2 images '
        'listed in {})'.format(missing, img_dir, ann_file))


def test_check_passes_when_every_image_exists(tmp_path):
    ann_file, img_dir = write_coco(tmp_path, [])
    assert COCOBboxDataset(ann_file, img_dir).check() is None


def test_repeated_category_or_image_ids_are_named(tmp_path):
    categories = COCO_CATEGORIES + [dict(COCO_CATEGORIES[0], name='again')]
    ann_file, img_dir = write_coco(tmp_path / 'c', [], categories=categories)
    with pytest.raises(ValueError) as excinfo:
        COCOBboxDataset(ann_file, img_dir)
    assert _message(excinfo) == (
        'annotation file {}: category ids [{}] are declared more than once '
        'in "categories"'.format(ann_file, COCO_CATEGORIES[0]['id']))

    images = [{'id': i, 'file_name': '{}.jpg'.format(n), 'height': 8,
               'width': 8} for n, i in enumerate([4, 9, 4, 2, 9])]
    ann_file, img_dir = write_coco(tmp_path / 'i', [], images=images)
    with pytest.raises(ValueError) as excinfo:
        COCOBboxDataset(ann_file, img_dir)
    assert _message(excinfo) == (
        'annotation file {}: image ids [4, 9] are listed more than once in '
        '"images"'.format(ann_file))
