"""COCO-size data on the CPU: reading an annotations file, and scoring.

Run from the repository root::

    python benchmarks/bench_coco.py

Writes, to a temporary directory, an annotations file the size of COCO's
``instances_train2017.json`` (118,287 images, 860,001 objects, COCO's 80
category ids from 1 to 90 with its gaps, a polygon per object, 1% crowd
regions with RLE masks, areas unlike the boxes'), and measures, each in a
process of its own so that each peak is its task's:

* ``read``: building a :class:`data.coco_dataset.COCOBboxDataset` on it
  (reading and checking the JSON, indexing the objects);
* ``score coco``: scoring 5,000 images x 100 detections (labels over the 80
  classes) against a 5,000-image file of the same kind, as ``train.py
  evaluate --metric=coco`` does on a COCO-format test set
  (:func:`utils.evaluation.score` with the dataset: the file read, the
  detections turned into COCO results, COCOeval's numbers);
* ``score voc07``: the same detections by the VOC07 11-point metric.

Each figure is the task's wall time and the process's peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``), beside the resident
memory before the task (interpreter, libraries and, for scoring, the
detections). ``--check`` also runs pycocotools' own COCOeval on the same
detections and asserts that its twelve numbers and its precision, recall
and scores arrays equal ours (slow: about a minute and 3.5 GB).
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# COCO's 80 category ids: 1 to 90 but for the ten ids it never used.
COCO_CAT_IDS = tuple(i for i in range(1, 91) if i not in
                     (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
TRAIN2017 = dict(n_images=118287, n_objects=860001)
VAL_IMAGES = 5000
N_DET = 100


# ------------------------------------------------------------- the inputs

def write_coco_like(path, n_images, n_objects, seed=0):
    """Writes a COCO detection file of ``n_images`` 640x480-ish images and
    ``n_objects`` objects spread over them at random (an image may have
    none), streamed so that writing it needs little memory.

    Each object has COCO's keys: a polygon ``segmentation`` of 8 to 60
    coordinates (an RLE mask for the 1% crowd regions), an ``area`` of
    0.4 to 1 times its box's, ``iscrowd``, ``image_id``, ``bbox`` and
    ``category_id`` (one of :data:`COCO_CAT_IDS`); images have
    ``license``, ``file_name``, ``coco_url``, ``height``, ``width``,
    ``date_captured``, ``flickr_url`` and ``id``.

    Returns:
        int: The file's size in bytes.
    """
    rng = np.random.RandomState(seed)
    img_ids = rng.choice(np.arange(1, 6 * n_images), n_images, replace=False)
    heights = rng.choice([480, 427, 640, 375, 500], n_images)
    widths = rng.choice([640, 640, 480, 500, 333], n_images)
    obj_img = np.sort(rng.randint(0, n_images, n_objects))
    w = np.minimum(rng.exponential(80, n_objects) + 1, widths[obj_img] - 1)
    h = np.minimum(rng.exponential(70, n_objects) + 1, heights[obj_img] - 1)
    x = rng.uniform(0, 1, n_objects) * (widths[obj_img] - w)
    y = rng.uniform(0, 1, n_objects) * (heights[obj_img] - h)
    area = w * h * rng.uniform(0.4, 1, n_objects)
    crowd = rng.uniform(0, 1, n_objects) < 0.01
    cat = np.array(COCO_CAT_IDS)[rng.randint(0, 80, n_objects)]
    n_coords = 2 * rng.randint(4, 31, n_objects)

    with open(path, 'w') as f:
        f.write('{"info": {"description": "COCO-size benchmark file"}, '
                '"licenses": [], "images": [')
        for i in range(n_images):
            f.write((',' if i else '') + json.dumps({
                'license': 1, 'file_name': '%012d.jpg' % img_ids[i],
                'coco_url': 'http://images.cocodataset.org/train2017/'
                            '%012d.jpg' % img_ids[i],
                'height': int(heights[i]), 'width': int(widths[i]),
                'date_captured': '2013-11-14 11:18:45',
                'flickr_url': 'http://farm4.staticflickr.com/1/x.jpg',
                'id': int(img_ids[i])}))
        f.write('], "annotations": [')
        for j in range(n_objects):
            if crowd[j]:
                segmentation = {'counts': rng.randint(0, 500, 40).tolist(),
                                'size': [int(heights[obj_img[j]]),
                                         int(widths[obj_img[j]])]}
            else:
                segmentation = [np.round(rng.uniform(
                    0, 400, n_coords[j]), 2).tolist()]
            f.write((',' if j else '') + json.dumps({
                'segmentation': segmentation, 'area': round(area[j], 4),
                'iscrowd': int(crowd[j]), 'image_id': int(img_ids[obj_img[j]]),
                'bbox': [round(x[j], 2), round(y[j], 2), round(w[j], 2),
                         round(h[j], 2)],
                'category_id': int(cat[j]), 'id': 900000 + j}))
        f.write('], "categories": [')
        f.write(','.join(json.dumps({'supercategory': 'thing', 'id': c,
                                     'name': 'class%d' % c})
                         for c in COCO_CAT_IDS))
        f.write(']}')
    return os.path.getsize(path)


def detections_like(db, n_det, seed=0):
    """Per image of ``db``, ``n_det`` detections as a detector gives them:
    a third are jittered copies of the image's objects (most with their
    class), the rest boxes anywhere with any of the classes; scores
    uniform. Labels in ``[0, 80)``; boxes float32
    ``(y_min, x_min, y_max, x_max)``.

    Returns:
        tuple of three lists (bboxes, labels, scores), one array per image.
    """
    rng = np.random.RandomState(seed)
    n_class = len(db.cat_ids)
    bboxes, labels, scores = [], [], []
    for i in range(len(db)):
        H, W = db.get_size(i)
        gt_bbox, gt_label, _ = db.get_annotation(i)
        n_near = min(n_det // 3, 3 * len(gt_bbox))
        near = rng.randint(0, max(len(gt_bbox), 1), n_near)
        size = np.tile(gt_bbox[near, 2:] - gt_bbox[near, :2], 2)
        near_bbox = gt_bbox[near] + rng.normal(0, 0.1, (n_near, 4)) * size
        near_label = np.where(rng.uniform(0, 1, n_near) < 0.7,
                              gt_label[near], rng.randint(0, n_class, n_near))
        n_far = n_det - n_near
        y_min = rng.uniform(0, H - 8, n_far)
        x_min = rng.uniform(0, W - 8, n_far)
        far_bbox = np.stack([y_min, x_min,
                             y_min + rng.uniform(8, H - y_min),
                             x_min + rng.uniform(8, W - x_min)], axis=1)
        bboxes.append(np.concatenate([near_bbox, far_bbox]).astype(
            np.float32))
        labels.append(np.concatenate(
            [near_label, rng.randint(0, n_class, n_far)]).astype(np.int32))
        scores.append(rng.uniform(0, 1, n_det).astype(np.float32))
    return bboxes, labels, scores


# ------------------------------------------------------------ the tasks

def _rss_mib():
    """The process's peak resident memory so far, in MiB (Linux reports
    ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def task_read(ann_file, img_dir):
    from data.coco_dataset import COCOBboxDataset
    before = _rss_mib()
    start = time.perf_counter()
    db = COCOBboxDataset(ann_file, img_dir)
    seconds = time.perf_counter() - start
    peak = _rss_mib()
    return dict(seconds=seconds, peak_mib=peak, before_mib=before,
                n_images=len(db), n_objects=sum(
                    len(db.get_annotation(i)[1]) for i in range(len(db))))


def task_score(metric, ann_file, img_dir, check=False):
    from data.coco_dataset import COCOBboxDataset
    from utils.evaluation import Detections, score
    db = COCOBboxDataset(ann_file, img_dir, use_difficult=True)
    bboxes, labels, scores = detections_like(db, N_DET)
    gt_bboxes, gt_labels, gt_difficults = zip(
        *(db.get_annotation(i) for i in range(len(db))))
    detections = Detections(bboxes, labels, scores, list(gt_bboxes),
                            list(gt_labels), list(gt_difficults),
                            list(range(len(db))))
    before = _rss_mib()
    start = time.perf_counter()
    result = score(detections, metric, db)
    seconds = time.perf_counter() - start
    out = dict(seconds=seconds, peak_mib=_rss_mib(), before_mib=before,
               map=float(result['map']),
               n_detections=sum(len(label) for label in labels))
    if check:
        out.update(_check_with_pycocotools(db, detections, result))
    return out


def _check_with_pycocotools(db, detections, result):
    """Runs pycocotools' COCOeval on the same detections; asserts equal."""
    import contextlib
    import io
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from utils.coco_eval import (_cocoeval, _dets_of, load_coco_gt,
                                 to_coco_results)
    results = to_coco_results(*detections[:3], db.ids, db.cat_ids)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(db.ann_file)
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(
            [dict(r) for r in results]), 'bbox')
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    seconds = time.perf_counter() - start
    assert list(coco_eval.stats) == list(result['stats'])
    gt = load_coco_gt(db.ann_file)
    ours = _cocoeval(gt, _dets_of(results, gt))
    for key in ('precision', 'recall', 'scores'):
        assert np.array_equal(ours.eval[key], coco_eval.eval[key]), key
    return dict(pycocotools_seconds=seconds, pycocotools_peak_mib=_rss_mib())


def run_task(args):
    """Runs one task in a child process; returns the dict it printed."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__),
                          '--task'] + args, check=True,
                         stdout=subprocess.PIPE, universal_newlines=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--task', nargs='+', help=argparse.SUPPRESS)
    parser.add_argument('--check', action='store_true',
                        help="also run pycocotools' COCOeval and assert "
                        'equal numbers')
    parser.add_argument('--n-images', type=int,
                        default=TRAIN2017['n_images'])
    parser.add_argument('--n-objects', type=int,
                        default=TRAIN2017['n_objects'])
    args = parser.parse_args()
    if args.task:
        name, rest = args.task[0], args.task[1:]
        if name == 'read':
            out = task_read(*rest)
        else:
            out = task_score(rest[0], rest[1], rest[2],
                             check=rest[3:] == ['check'])
        print(json.dumps(out))
        return

    print('python {}, numpy {}, {}, {} CPUs'.format(
        platform.python_version(), np.__version__, platform.machine(),
        os.cpu_count()))
    with tempfile.TemporaryDirectory() as tmp:
        img_dir = os.path.join(tmp, 'img')
        os.mkdir(img_dir)
        train_file = os.path.join(tmp, 'train.json')
        start = time.perf_counter()
        size = write_coco_like(train_file, args.n_images, args.n_objects)
        print('wrote {} images, {} objects: {:.0f} MB in {:.0f} s'.format(
            args.n_images, args.n_objects, size / 1e6,
            time.perf_counter() - start))
        out = run_task(['read', train_file, img_dir])
        print('read:         {seconds:6.1f} s, peak RSS {peak_mib:6.0f} MiB '
              '({before_mib:.0f} before): {n_images} images, {n_objects} '
              'objects not crowds'.format(**out))
        os.remove(train_file)

        val_file = os.path.join(tmp, 'val.json')
        n_val_objects = round(VAL_IMAGES * TRAIN2017['n_objects']
                              / TRAIN2017['n_images'])
        write_coco_like(val_file, VAL_IMAGES, n_val_objects, seed=1)
        for metric in ('coco', 'voc07'):
            task = ['score', metric, val_file, img_dir]
            if args.check and metric == 'coco':
                task.append('check')
            out = run_task(task)
            print('score {:6s} {seconds:6.1f} s, peak RSS {peak_mib:6.0f} '
                  'MiB ({before_mib:.0f} before): {n_detections} '
                  'detections, {n_img} images x 80 classes, map '
                  '{map:.4f}'.format(metric + ':', n_img=VAL_IMAGES, **out))
            if 'pycocotools_seconds' in out:
                print('  pycocotools COCOeval on the same: {:.1f} s, peak '
                      'RSS {:.0f} MiB; equal numbers and arrays'.format(
                          out['pycocotools_seconds'],
                          out['pycocotools_peak_mib']))


if __name__ == '__main__':
    main()
