"""A generated dataset in the Pascal VOC layout, for machines without VOC.

Each scene is a square image with a varied background (a two-colour
gradient, soft blotches, pixel noise and, often, thin clutter lines and
dots) and up to a few solid shapes of distinct colours, one class per shape
kind. Objects may overlap a little; a few are drawn with low contrast and
marked difficult; a few scenes have no object at all.

The files follow the VOC schema, so :class:`data.voc_dataset.VOCBboxDataset`
reads them unchanged (pass ``label_names``)::

    python -m data.synthetic --out-dir toy_voc --n-images 400 --seed 0

The same arguments give the same bytes.
"""
import argparse
import os
import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image, ImageDraw

TOY_LABEL_NAMES = ('circle', 'square', 'triangle', 'cross', 'ring')

# Saturated colours for objects; backgrounds are muted, so every object
# stands out from what is behind it.
PALETTE = np.array([
    (220, 30, 30), (30, 170, 40), (30, 60, 220), (240, 220, 30),
    (210, 40, 200), (30, 200, 210), (245, 130, 20), (245, 245, 245),
    (15, 15, 15), (120, 40, 170)], dtype=np.float64)


def generate_scenes(n_images, img_size=256, label_names=TOY_LABEL_NAMES,
                    seed=0, min_obj_size=20, max_obj_size=90, max_n_obj=4,
                    p_empty=0.05, p_difficult=0.08):
    """Draws scenes of shapes at random.

    Args:
        n_images (int): The number of scenes.
        img_size (int): The side of the square images, in pixels.
        label_names (sequence of str): The classes, each a name from
            :data:`TOY_LABEL_NAMES`, in label order.
        seed (int): The seed of the scenes.
        min_obj_size (int): The shortest side of an object, in pixels.
        max_obj_size (int): The longest side of an object, in pixels.
        max_n_obj (int): The most objects in a scene (at least one unless
            the scene is empty).
        p_empty (float): The probability that a scene has no object.
        p_difficult (float): The probability that an object is drawn with
            low contrast and marked difficult.

    Returns:
        iterator of tuples (img, bbox, label, difficult), one per scene,
        checked before the first is drawn: the image, uint8 of shape
        :math:`(H, W, 3)`, RGB; the boxes, float32 of shape :math:`(R, 4)`,
        each ``(y_min, x_min, y_max, x_max)``, the first and last pixel rows
        and columns the object covers (0-based); the labels, int32 of shape
        :math:`(R,)`, indexes into ``label_names``; and the difficult flags,
        bool of shape :math:`(R,)`.

    Raises:
        ValueError: if a name is not a known shape or the sizes do not fit.
    """
    unknown = [name for name in label_names if name not in TOY_LABEL_NAMES]
    if unknown or not label_names:
        raise ValueError(
            'unknown shape class names {}; expected some of {}'.format(
                unknown, ', '.join(TOY_LABEL_NAMES)))
    if not 1 <= min_obj_size <= max_obj_size <= img_size:
        raise ValueError(
            'object sizes must satisfy 1 <= min_obj_size <= max_obj_size <= '
            'img_size, got {}, {} and {}'.format(
                min_obj_size, max_obj_size, img_size))
    return _draw_scenes(np.random.default_rng(seed), n_images, img_size,
                        label_names, min_obj_size, max_obj_size, max_n_obj,
                        p_empty, p_difficult)


def _draw_scenes(rng, n_images, img_size, label_names, min_obj_size,
                 max_obj_size, max_n_obj, p_empty, p_difficult):
    """The generator behind :func:`generate_scenes`, past its checks."""
    for _ in range(n_images):
        img = _background(rng, img_size)
        n_obj = 0 if rng.random() < p_empty else rng.integers(1, max_n_obj + 1)
        bbox = _place_boxes(rng, n_obj, img_size, min_obj_size, max_obj_size)
        label = rng.integers(0, len(label_names), len(bbox)).astype(np.int32)
        difficult = rng.random(len(bbox)) < p_difficult
        draw = ImageDraw.Draw(img)
        for box, l, is_difficult in zip(bbox, label, difficult):
            colour = _object_colour(rng, np.asarray(img), box, is_difficult)
            _draw_shape(rng, draw, label_names[l], box, colour)
        yield np.asarray(img), bbox, label, difficult


def generate_voc(out_dir, n_images=400, img_size=256,
                 label_names=TOY_LABEL_NAMES, seed=0, test_fraction=0.25,
                 **scene_kwargs):
    """Writes a dataset of generated scenes in the Pascal VOC layout.

    Writes ``JPEGImages/<id>.jpg``, ``Annotations/<id>.xml`` (1-based pixel
    coordinates) and ``ImageSets/Main/{train,val,trainval,test}.txt``. The
    last ``round(n_images * test_fraction)`` images form ``test``; the
    others form ``trainval``, split alternately into ``train`` and ``val``.

    Args:
        out_dir (str): The directory to write to; created if missing.
        n_images (int): The number of images.
        img_size (int): The side of the square images, in pixels.
        label_names (sequence of str): The classes; see
            :func:`generate_scenes`.
        seed (int): The seed; the same arguments give the same bytes.
        test_fraction (float): The share of images in the test split.
        **scene_kwargs: Passed to :func:`generate_scenes`.

    Returns:
        str: ``out_dir``.
    """
    if n_images < 1 or not 0 <= test_fraction <= 1:
        raise ValueError(
            'expected n_images >= 1 and 0 <= test_fraction <= 1, got {} and '
            '{}'.format(n_images, test_fraction))
    scenes = generate_scenes(n_images, img_size, label_names, seed,
                             **scene_kwargs)
    for sub in ('JPEGImages', 'Annotations', os.path.join('ImageSets', 'Main')):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)

    ids = ['{:06d}'.format(i + 1) for i in range(n_images)]
    for id_, (img, bbox, label, difficult) in zip(ids, scenes):
        Image.fromarray(img).save(
            os.path.join(out_dir, 'JPEGImages', id_ + '.jpg'), quality=95)
        _annotation(id_, img.shape, bbox, label, difficult, label_names).write(
            os.path.join(out_dir, 'Annotations', id_ + '.xml'))

    n_trainval = n_images - int(round(n_images * test_fraction))
    splits = {'trainval': ids[:n_trainval],
              'train': ids[:n_trainval:2],
              'val': ids[1:n_trainval:2],
              'test': ids[n_trainval:]}
    for split, split_ids in splits.items():
        path = os.path.join(out_dir, 'ImageSets', 'Main', split + '.txt')
        with open(path, 'w') as f:
            f.write(''.join(id_ + '\n' for id_ in split_ids))
    return out_dir


def _background(rng, size):
    """A muted gradient with soft blotches, noise and often some clutter."""
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    angle = rng.uniform(0, 2 * np.pi)
    t = np.cos(angle) * xx + np.sin(angle) * yy
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    start, end = np.array(_muted_colour(rng)), np.array(_muted_colour(rng))
    img = start + t[..., None] * (end - start)
    # Soft blotches: a 5x5 grid of random offsets, linearly interpolated.
    blotches = rng.normal(0, 20, (5, 5, 3))
    ramp = np.array([np.interp(np.linspace(0, 4, size), np.arange(5), row)
                     for row in np.eye(5)]).T  # (size, 5)
    img += np.einsum('yi,ijc,xj->yxc', ramp, blotches, ramp)
    img += rng.normal(0, 5, img.shape)
    img = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))

    if rng.random() < 0.6:
        draw = ImageDraw.Draw(img)
        for _ in range(rng.integers(3, 12)):
            y0, x0, y1, x1 = rng.integers(0, size, 4).tolist()
            draw.line([x0, y0, x1, y1], fill=_muted_colour(rng, 60),
                      width=int(rng.integers(1, 3)))
        for _ in range(rng.integers(0, 10)):
            y, x = rng.integers(0, size, 2).tolist()
            r = int(rng.integers(1, 4))
            draw.ellipse([x - r, y - r, x + r, y + r],
                         fill=_muted_colour(rng, 60))
    return img


def _muted_colour(rng, tint=25):
    """A grey of middle brightness, slightly tinted: RGB tuple of ints."""
    grey = rng.uniform(70, 190)
    return tuple(int(c) for c in np.clip(
        grey + rng.uniform(-tint, tint, 3), 0, 255))


def _place_boxes(rng, n_obj, img_size, min_obj_size, max_obj_size):
    """Boxes that overlap each other a little at most.

    Returns float32 boxes of shape :math:`(R, 4)`, each
    ``(y_min, x_min, y_max, x_max)``, with :math:`R \\le n\\_obj`: a box
    that does not fit after a few tries is dropped.
    """
    bbox = []
    for _ in range(n_obj):
        for _ in range(20):
            h = int(rng.integers(min_obj_size, max_obj_size + 1))
            w = int(np.clip(h * rng.uniform(0.75, 1.33),
                            min_obj_size, max_obj_size))
            y0 = int(rng.integers(0, img_size - h + 1))
            x0 = int(rng.integers(0, img_size - w + 1))
            box = (y0, x0, y0 + h - 1, x0 + w - 1)
            if all(_covered(box, other) < 0.3 and _covered(other, box) < 0.3
                   for other in bbox):
                bbox.append(box)
                break
    return np.array(bbox, dtype=np.float32).reshape((-1, 4))


def _covered(box, other):
    """The share of ``box``'s pixels that ``other`` covers."""
    h = min(box[2], other[2]) - max(box[0], other[0]) + 1
    w = min(box[3], other[3]) - max(box[1], other[1]) + 1
    area = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
    return max(h, 0) * max(w, 0) / area


def _object_colour(rng, img, box, is_difficult):
    """A palette colour far from the background under ``box``.

    A difficult object's colour is mostly that background: low contrast.
    """
    y0, x0, y1, x1 = (int(v) for v in box)
    under = img[y0:y1 + 1, x0:x1 + 1].reshape(-1, 3).mean(axis=0)
    candidates = PALETTE[rng.permutation(len(PALETTE))[:4]]
    colour = candidates[np.argmax(np.linalg.norm(candidates - under, axis=1))]
    colour = colour + rng.uniform(-15, 15, 3)
    if is_difficult:
        colour = 0.75 * under + 0.25 * colour
    return tuple(int(c) for c in np.clip(colour, 0, 255))


def _draw_shape(rng, draw, name, box, colour):
    """Draws the shape ``name`` spanning exactly the pixel rows and columns
    of ``box``, ``(y_min, x_min, y_max, x_max)``."""
    y0, x0, y1, x1 = (int(v) for v in box)
    side = min(y1 - y0, x1 - x0) + 1
    if name == 'circle':
        draw.ellipse([x0, y0, x1, y1], fill=colour)
    elif name == 'square':
        draw.rectangle([x0, y0, x1, y1], fill=colour)
    elif name == 'triangle':
        yc, xc = (y0 + y1) / 2, (x0 + x1) / 2
        # The apex points up, down, left or right.
        points = [[(x0, y1), (x1, y1), (xc, y0)],
                  [(x0, y0), (x1, y0), (xc, y1)],
                  [(x1, y0), (x1, y1), (x0, yc)],
                  [(x0, y0), (x0, y1), (x1, yc)]][rng.integers(4)]
        draw.polygon(points, fill=colour)
    elif name == 'cross':
        half = max(side // 8, 2)
        yc, xc = (y0 + y1) // 2, (x0 + x1) // 2
        draw.rectangle([x0, yc - half, x1, yc + half], fill=colour)
        draw.rectangle([xc - half, y0, xc + half, y1], fill=colour)
    elif name == 'ring':
        draw.ellipse([x0, y0, x1, y1], outline=colour,
                     width=max(side // 6, 3))


def _annotation(id_, img_shape, bbox, label, difficult, label_names):
    """The VOC XML tree of one image; coordinates are 1-based."""
    root = ET.Element('annotation')
    ET.SubElement(root, 'folder').text = 'VOC-synthetic'
    ET.SubElement(root, 'filename').text = id_ + '.jpg'
    size = ET.SubElement(root, 'size')
    for tag, value in zip(('width', 'height', 'depth'),
                          (img_shape[1], img_shape[0], img_shape[2])):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, 'segmented').text = '0'
    for box, l, is_difficult in zip(bbox, label, difficult):
        obj = ET.SubElement(root, 'object')
        ET.SubElement(obj, 'name').text = label_names[l]
        ET.SubElement(obj, 'pose').text = 'Unspecified'
        ET.SubElement(obj, 'truncated').text = '0'
        ET.SubElement(obj, 'difficult').text = str(int(is_difficult))
        bndbox = ET.SubElement(obj, 'bndbox')
        y_min, x_min, y_max, x_max = (int(v) + 1 for v in box)
        for tag, value in (('xmin', x_min), ('ymin', y_min),
                           ('xmax', x_max), ('ymax', y_max)):
            ET.SubElement(bndbox, tag).text = str(value)
    tree = ET.ElementTree(root)
    ET.indent(tree)
    return tree


def main(argv=None):
    parser = argparse.ArgumentParser(
        description='Write a generated dataset in the Pascal VOC layout.')
    parser.add_argument('--out-dir', required=True,
                        help='directory to write to')
    parser.add_argument('--n-images', type=int, default=400)
    parser.add_argument('--img-size', type=int, default=256,
                        help='side of the square images, in pixels')
    parser.add_argument('--classes', default=','.join(TOY_LABEL_NAMES),
                        help='comma-separated shape classes, some of '
                             + ','.join(TOY_LABEL_NAMES))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    label_names = tuple(name.strip() for name in args.classes.split(','))
    out_dir = generate_voc(args.out_dir, n_images=args.n_images,
                           img_size=args.img_size, label_names=label_names,
                           seed=args.seed)
    print('wrote {} images to {}'.format(args.n_images, out_dir))


if __name__ == '__main__':
    main()
