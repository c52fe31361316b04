"""Run a trained detector on images:
``python predict.py --checkpoint=CKPT [--out-dir=DIR] IMAGE_OR_DIR ...``.

For each image, a picture of its detections (boxes, class names, scores)
goes to ``DIR/<file stem>.png``, and all detections go to
``DIR/detections.json`` in COCO's results format, with ``DIR/images.json``
naming the image and category of each id (see :func:`predict`). With
``--coco-ann=FILE IMG_DIR`` the images are those FILE lists and the ids
FILE's own, so that pycocotools scores ``detections.json`` against FILE.

A mistake on the command line (a missing checkpoint or path, no image
found) is one line on stderr and exit status 2; an image that cannot be
read or is too small is named on stderr and skipped, the others are still
processed, and the exit status is then 1.
"""
import json
import os
import sys

import torch
# Pictures are drawn on their own Agg canvas: no display needed, and the
# pyplot backend of a notebook importing this module is left alone.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm import tqdm

from data.coco_dataset import COCOBboxDataset
from data.util import read_image
from model import load_detector
from model.utils.command_line import ArgumentParser, UsageError
from utils.coco_eval import to_coco_results
from utils.vis_tool import vis_bbox

# The file types a directory is scanned for (case-insensitive); a file named
# on the command line is read whatever its name.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.tif',
                    '.tiff', '.webp', '.ppm', '.pgm')

# The 'visualize' preset's threshold: the pictures are for people. With
# --coco-ann the default is the model's 'evaluate' preset's, for scoring.
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


def detect(faster_rcnn, img):
    """One image's detections at the model's current thresholds, as numpy
    arrays: boxes (R, 4), each ``(y_min, x_min, y_max, x_max)`` in the
    image's pixels; labels (R,) in [0, L - 1]; scores (R,)."""
    detections = faster_rcnn.detect([img])[0]
    return tuple(detections[key].cpu().numpy()
                 for key in ('boxes', 'labels', 'scores'))


def draw(img, bbox, label, score, label_names, path, score_thresh):
    """Writes a picture of the detections on the image, at its own size
    (saying so when there is none above ``score_thresh``)."""
    height, width = img.shape[1:]
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    vis_bbox(img, bbox, label, score, ax=ax, label_names=label_names,
             score_thresh=score_thresh)
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


def coco_images(ann_file, img_dir):
    """The image files a COCO-format file lists and their ids.

    Returns:
        (COCOBboxDataset, list of str, list): the file read, the image
        paths in its order and their image ids.

    Raises:
        UsageError: if the file is not a COCO file, or an image it lists
            is not in ``img_dir`` (the first missing one is named).
    """
    try:
        db = COCOBboxDataset(ann_file, img_dir)
        db.check()
    except (OSError, ValueError) as err:
        raise UsageError(str(err)) from None
    return db, [db.image_path(i) for i in range(len(db))], list(db.ids)


def category_ids_for(label_names, saved, db=None):
    """The COCO category id of each label: those the checkpoint saved (a
    detector trained on COCO-format data), else those of ``db``'s
    categories of the same names, else labels + 1."""
    if saved is not None:
        return list(saved)
    if db is None:
        return list(range(1, len(label_names) + 1))
    by_name = dict(zip(db.label_names, db.cat_ids))
    missing = [name for name in label_names if name not in by_name]
    if missing:
        raise UsageError('the checkpoint\'s class {!r} is no category of {} '
                         '(it has {})'.format(missing[0], db.ann_file,
                                              ', '.join(db.label_names)))
    return [by_name[name] for name in label_names]


def predict(checkpoint, paths, out_dir='predictions', score_thresh=None,
            device=None, coco_ann=None):
    """Detects objects in images and writes pictures and COCO JSON files.

    Image ids are the images' positions in the run, from 1 (the order of
    ``paths``, each directory's files sorted by name), or with
    ``coco_ann`` the ids that file gives its images; an image that is
    skipped keeps its id unused. Category ids are those of the data the
    checkpoint was trained on when it was a COCO-format file, else those
    of ``coco_ann``'s categories of the same names, else labels + 1.

    Written to ``out_dir``:

    * ``<stem>.png`` per image (``<stem>_2.png``, ... for a stem met
      again): the image with its boxes, class names and scores;
    * ``detections.json``: COCO's results format, a list of
      ``{"image_id", "category_id", "bbox": [x, y, width, height],
      "score"}`` in image pixels;
    * ``images.json``: ``{"images": [{"id", "file_name", "height",
      "width", "picture"}], "categories": [{"id", "name"}],
      "annotations": []}``, which ``pycocotools.coco.COCO`` reads.

    Args:
        checkpoint (str): A checkpoint written by ``train.py``.
        paths (sequence of str): Image files and directories of images;
            with ``coco_ann``, the one directory its file names are
            relative to.
        out_dir (str): Where the files go; created if missing.
        score_thresh (float): Keep detections scoring above this; default
            0.7 (the pictures' threshold), or with ``coco_ann`` the
            model's 'evaluate' preset (0.05), as ``train.py evaluate``.
        device (str): Torch device; default CUDA when available, else CPU.
        coco_ann (str): A COCO-format file listing the images to predict.

    Returns:
        (int, list of str): the number of images processed, and one line
        per image skipped, naming it and why.

    Raises:
        UsageError: for a missing checkpoint or path, no image found, an
            image of ``coco_ann`` missing, or a bad device or threshold.
    """
    if score_thresh is not None and not 0. <= score_thresh <= 1.:
        raise UsageError('--score-thresh={} must be in [0, 1]'.format(
            score_thresh))
    db = None
    if coco_ann is None:
        files = find_images(paths)
        image_ids = range(1, len(files) + 1)
    elif len(paths) != 1 or not os.path.isdir(paths[0]):
        raise UsageError('--coco-ann takes one IMG_DIR, the directory its '
                         'file names are relative to; got {}'.format(
                             ', '.join(paths)))
    else:
        db, files, image_ids = coco_images(coco_ann, paths[0])
    device = _device(device)
    try:
        faster_rcnn, label_names, info = load_detector(checkpoint,
                                                       device=device)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from None
    n_fg_class = faster_rcnn.n_class - 1
    if label_names is None:
        label_names = tuple(str(l) for l in range(n_fg_class))
    category_ids = category_ids_for(label_names, info['category_ids'], db)
    faster_rcnn.use_preset('evaluate' if coco_ann else 'visualize')
    if score_thresh is not None:
        faster_rcnn.score_thresh = score_thresh
    os.makedirs(out_dir, exist_ok=True)

    images, results, skipped, taken = [], [], [], set()
    for img_id, path in zip(image_ids, tqdm(files, desc='predict')):
        try:
            img = read_image(path)
            bbox, label, score = detect(faster_rcnn, img)
        except (OSError, ValueError) as err:
            skipped.append(_skip_message(path, err))
            tqdm.write(skipped[-1], file=sys.stderr)
            continue
        picture = _picture_name(path, taken)
        draw(img, bbox, label, score, label_names,
             os.path.join(out_dir, picture), faster_rcnn.score_thresh)
        images.append({'id': img_id, 'file_name': path,
                       'height': int(img.shape[1]),
                       'width': int(img.shape[2]), 'picture': picture})
        results += to_coco_results([bbox], [label], [score], [img_id],
                                   category_ids)

    with open(os.path.join(out_dir, 'detections.json'), 'w') as f:
        json.dump(results, f)
    categories = [{'id': cat_id, 'name': name}
                  for cat_id, name in zip(category_ids, label_names)]
    with open(os.path.join(out_dir, 'images.json'), 'w') as f:
        json.dump({'images': images, 'categories': categories,
                   'annotations': []}, f, indent=1)
    print('{} images, {} detections above {}: pictures, detections.json and '
          'images.json in {}{}'.format(
              len(images), len(results), faster_rcnn.score_thresh, out_dir,
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


def main(argv=None):
    """The command line: a mistake in it is one line and exit status 2;
    skipped images make the exit status 1."""
    parser = ArgumentParser(
        prog='predict.py',
        description='Detect objects in images with a trained checkpoint.')
    parser.add_argument('paths', nargs='+', metavar='IMAGE_OR_DIR',
                        help='image files, or directories of images (with '
                        '--coco-ann: the one directory its file names are '
                        'relative to)')
    parser.add_argument('--checkpoint', required=True,
                        help='a checkpoint written by train.py')
    parser.add_argument('--out-dir', default='predictions',
                        help='where pictures and JSON files go '
                        '(default: predictions)')
    parser.add_argument('--score-thresh', type=float, default=None,
                        help='keep detections scoring above this (default: '
                        "{}, the 'visualize' preset; with --coco-ann the "
                        "model's 'evaluate' preset, 0.05)".format(
                            DEFAULT_SCORE_THRESH))
    parser.add_argument('--coco-ann', default=None, metavar='FILE',
                        help='predict the images this COCO-format file '
                        'lists, and write its image and category ids')
    parser.add_argument('--device', default=None,
                        help='torch device (default: cuda if available, '
                        'else cpu)')
    with parser.one_line_errors():
        args = parser.parse_args(argv)
        _, skipped = predict(args.checkpoint, args.paths, args.out_dir,
                             args.score_thresh, args.device, args.coco_ann)
    if skipped:
        sys.exit(1)


if __name__ == '__main__':
    main()
