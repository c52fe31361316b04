"""Run a trained detector on images:
``python predict.py --checkpoint=CKPT [--out-dir=DIR] IMAGE_OR_DIR ...``.

For each image, a picture of its detections (boxes, class names, scores)
goes to ``DIR/<file stem>.png``, and all detections go to
``DIR/detections.json`` in COCO's results format, with ``DIR/images.json``
naming the image and category of each id (see :func:`predict`).

A mistake on the command line (a missing checkpoint or path, no image
found) is one line on stderr and exit status 2; an image that cannot be
read or is too small is named on stderr and skipped, the others are still
processed, and the exit status is then 1.
"""
import argparse
import json
import os
import sys

import torch
# Pictures are drawn on their own Agg canvas: no display needed, and the
# pyplot backend of a notebook importing this module is left alone.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm import tqdm

from data.util import read_image
from model import load_detector
from model.utils.preprocess import preprocess
from utils.coco_eval import to_coco_results
from utils.config import UsageError
from utils.vis_tool import vis_bbox

# The file types a directory is scanned for (case-insensitive); a file named
# on the command line is read whatever its name.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.tif',
                    '.tiff', '.webp', '.ppm', '.pgm')

# The 'visualize' preset's threshold: the pictures are for people.
DEFAULT_SCORE_THRESH = 0.7


def find_images(paths):
    """The image files that ``paths`` name, in order.

    A directory gives its files with an image extension (not its
    subdirectories'), sorted by name; a file is taken as it is.

    Raises:
        UsageError: if a path does not exist, or no image is found.
    """
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(
                os.path.join(path, name) for name in os.listdir(path)
                if name.lower().endswith(IMAGE_EXTENSIONS)
                and os.path.isfile(os.path.join(path, name)))
        elif os.path.exists(path):
            files.append(path)
        else:
            raise UsageError('{} does not exist; expected an image file or '
                             'a directory of images'.format(path))
    if not files:
        raise UsageError('no image found in {}; expected files ending in '
                         '{}'.format(', '.join(paths),
                                     ', '.join(IMAGE_EXTENSIONS)))
    return files


def detect(faster_rcnn, img, score_thresh):
    """Detections in one image, at the given score threshold.

    Args:
        faster_rcnn (FasterRCNN): The detector.
        img (~numpy.ndarray): :math:`(3, H, W)`, RGB in [0, 255].
        score_thresh (float): Keep detections scoring above this.

    Returns:
        (~numpy.ndarray, ~numpy.ndarray, ~numpy.ndarray): boxes
        :math:`(R, 4)`, each ``(y_min, x_min, y_max, x_max)`` in the
        image's pixels; labels :math:`(R,)` in :math:`[0, L - 1]`; scores
        :math:`(R,)`.
    """
    x = preprocess(img, faster_rcnn.min_size, faster_rcnn.max_size,
                   caffe_pretrain=faster_rcnn.caffe_pretrain)
    # predict() restores the preset it found after each call, which resets
    # the threshold: set it for each call.
    faster_rcnn.use_preset('visualize')
    faster_rcnn.score_thresh = score_thresh
    bboxes, labels, scores = faster_rcnn.predict([x], [img.shape[1:]])
    return bboxes[0], labels[0], scores[0]


def draw(img, bbox, label, score, label_names, path):
    """Writes a picture of the detections on the image, at its own size."""
    height, width = img.shape[1:]
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    vis_bbox(img, bbox, label, score, ax=ax, label_names=label_names)
    ax.axis('off')
    fig.savefig(path)


def _picture_name(path, taken):
    """``<stem>.png``, or ``<stem>_<n>.png`` when an earlier image of this
    run had the stem."""
    stem = os.path.splitext(os.path.basename(path))[0]
    name, n = stem + '.png', 1
    while name in taken:
        n += 1
        name = '{}_{}.png'.format(stem, n)
    taken.add(name)
    return name


def predict(checkpoint, paths, out_dir='predictions',
            score_thresh=DEFAULT_SCORE_THRESH, device=None):
    """Detects objects in images and writes pictures and COCO JSON files.

    Image ids are the images' positions in the run, from 1 (the order of
    ``paths``, each directory's files sorted by name); an image that is
    skipped keeps its id unused. Category ids are labels + 1 (COCO's ids
    start at 1).

    Written to ``out_dir``:

    * ``<stem>.png`` per image (``<stem>_2.png``, ... for a stem met
      again): the image with its boxes, class names and scores;
    * ``detections.json``: COCO's results format, a list of
      ``{"image_id", "category_id", "bbox": [x, y, width, height],
      "score"}`` in image pixels;
    * ``images.json``: ``{"images": [{"id", "file_name", "height",
      "width", "picture"}], "categories": [{"id", "name"}],
      "annotations": []}``, which ``pycocotools.coco.COCO`` reads, so that
      ``COCO('images.json').loadRes('detections.json')`` works (when
      there is a detection: loadRes fails on an empty list).

    Args:
        checkpoint (str): A checkpoint written by ``train.py``.
        paths (sequence of str): Image files and directories of images.
        out_dir (str): Where the files go; created if missing.
        score_thresh (float): Keep detections scoring above this.
        device (str): Torch device; default CUDA when available, else CPU.

    Returns:
        (int, list of str): the number of images processed, and one line
        per image skipped, naming it and why.

    Raises:
        UsageError: for a missing checkpoint or path, no image found, or
            a bad device or threshold.
    """
    if not 0. <= score_thresh <= 1.:
        raise UsageError('--score-thresh={} must be in [0, 1]'.format(
            score_thresh))
    files = find_images(paths)
    device = _device(device)
    try:
        faster_rcnn, label_names, _ = load_detector(checkpoint,
                                                    device=device)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from None
    n_fg_class = faster_rcnn.n_class - 1
    if label_names is None:
        label_names = tuple(str(l) for l in range(n_fg_class))
    os.makedirs(out_dir, exist_ok=True)

    images, results, skipped, taken = [], [], [], set()
    for img_id, path in enumerate(tqdm(files, desc='predict'), 1):
        try:
            img = read_image(path)
            bbox, label, score = detect(faster_rcnn, img, score_thresh)
        except (OSError, ValueError) as err:
            skipped.append(_skip_message(path, err))
            tqdm.write(skipped[-1], file=sys.stderr)
            continue
        picture = _picture_name(path, taken)
        draw(img, bbox, label, score, label_names,
             os.path.join(out_dir, picture))
        images.append({'id': img_id, 'file_name': path,
                       'height': int(img.shape[1]),
                       'width': int(img.shape[2]), 'picture': picture})
        results += to_coco_results([bbox], [label], [score], [img_id],
                                   range(1, n_fg_class + 1))

    with open(os.path.join(out_dir, 'detections.json'), 'w') as f:
        json.dump(results, f)
    categories = [{'id': l + 1, 'name': name}
                  for l, name in enumerate(label_names)]
    with open(os.path.join(out_dir, 'images.json'), 'w') as f:
        json.dump({'images': images, 'categories': categories,
                   'annotations': []}, f, indent=1)
    print('{} images, {} detections above {}: pictures, detections.json and '
          'images.json in {}{}'.format(
              len(images), len(results), score_thresh, out_dir,
              '; {} skipped'.format(len(skipped)) if skipped else ''))
    return len(images), skipped


def _skip_message(path, err):
    """One line naming an image skipped and why (the message of a read
    error names the file already)."""
    if isinstance(err, OSError):
        return 'skipped: {}'.format(err)
    return 'skipped {}: {}'.format(path, err)


def _device(device):
    if device is None:
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(device)
    except RuntimeError:
        raise UsageError('--device={} is not a torch device; expected e.g. '
                         'cpu, cuda or cuda:1'.format(device)) from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise UsageError('--device={}: no CUDA device is available; use '
                         '--device=cpu'.format(device))
    return device


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, with a mistake on the command line told in one line."""

    def error(self, message):
        raise UsageError(message)


def main(argv=None):
    """The command line: a mistake in it is one line and exit status 2;
    skipped images make the exit status 1."""
    parser = _ArgumentParser(
        prog='predict.py',
        description='Detect objects in images with a trained checkpoint.')
    parser.add_argument('paths', nargs='+', metavar='IMAGE_OR_DIR',
                        help='image files, or directories of images')
    parser.add_argument('--checkpoint', required=True,
                        help='a checkpoint written by train.py')
    parser.add_argument('--out-dir', default='predictions',
                        help='where pictures and JSON files go '
                        '(default: predictions)')
    parser.add_argument('--score-thresh', type=float,
                        default=DEFAULT_SCORE_THRESH,
                        help='keep detections scoring above this (default: '
                        "{}, the 'visualize' preset; 0.05 for an evaluation)"
                        .format(DEFAULT_SCORE_THRESH))
    parser.add_argument('--device', default=None,
                        help='torch device (default: cuda if available, '
                        'else cpu)')
    try:
        args = parser.parse_args(argv)
        _, skipped = predict(args.checkpoint, args.paths, args.out_dir,
                             args.score_thresh, args.device)
    except UsageError as err:
        # One line: torch.load's own message, inside an unreadable
        # checkpoint's, runs over several.
        print('predict.py: error: {}'.format(str(err).splitlines()[0]),
              file=sys.stderr)
        sys.exit(2)
    if skipped:
        sys.exit(1)


if __name__ == '__main__':
    main()
