"""Export of the inference path, for serving a detector outside Python.

:class:`ExportableFasterRCNN` wraps a :class:`FasterRCNN` around its own
tensor path, :meth:`FasterRCNN.detections` (a preprocessed image and its
original size in; boxes, labels and scores out), which torch.export and
ONNX record. Preprocessing (:func:`model.utils.preprocess.preprocess`)
stays outside. The one difference of a recording: it suppresses all classes
in one nms over boxes offset by class, which may decide a pair whose IoU is
within float rounding of the threshold otherwise than the per-class default.

Shape shorthand: H W the preprocessed image's size, R the detections.

    python -m model.export --checkpoint=checkpoints/best.pth --out=model.onnx
    python -m model.export --checkpoint=checkpoints/best.pth --out=model.pt2
"""
import contextlib
import json
import os
import warnings

import torch
from torch import nn

from model.build import load_detector
from model.utils.command_line import ArgumentParser, UsageError


class ExportableFasterRCNN(nn.Module):
    """The inference path of a :class:`FasterRCNN`, in tensors only.

    ``forward(x, size)`` gives what ``faster_rcnn.predict([x[0]], [size])``
    gives with the same thresholds (fixed when the module is built). The
    model, used not copied, must be in eval mode.

    Args:
        faster_rcnn (FasterRCNN): The trained detector.
        score_thresh (float): Keep detections scoring above this; default:
            the model's current preset's.
        nms_thresh (float): The suppression's IoU threshold; default: the
            model's current preset's.

    Raises:
        ValueError: if a threshold is outside [0, 1].
    """

    def __init__(self, faster_rcnn, score_thresh=None, nms_thresh=None):
        super().__init__()
        self.faster_rcnn = faster_rcnn
        self.score_thresh = float(faster_rcnn.score_thresh
                                  if score_thresh is None else score_thresh)
        self.nms_thresh = float(faster_rcnn.nms_thresh
                                if nms_thresh is None else nms_thresh)
        for name in ('score_thresh', 'nms_thresh'):
            if not 0. <= getattr(self, name) <= 1.:
                raise ValueError('{} must be in [0, 1], got {}'.format(
                    name, getattr(self, name)))

    def forward(self, x, size):
        """Detects objects in one preprocessed image.

        Args:
            x (torch.Tensor): :math:`(1, 3, H, W)` float32, preprocessed.
            size (torch.Tensor): :math:`(2,)` int64, the original image's
                ``(height, width)``; the scale is ``W / width``.

        Returns:
            (torch.Tensor, torch.Tensor, torch.Tensor): bbox :math:`(R, 4)`
            float32, each ``(y_min, x_min, y_max, x_max)`` in the original
            image's pixels; label :math:`(R,)` int64 in :math:`[0, L - 1]`;
            score :math:`(R,)` float32.
        """
        faster_rcnn = self.faster_rcnn
        if faster_rcnn.training:
            raise ValueError('ExportableFasterRCNN runs the model in eval '
                             'mode: call faster_rcnn.eval() first')
        if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise ValueError('ExportableFasterRCNN expects one image x of '
                             'shape (1, 3, H, W), got {}'.format(
                                 tuple(x.shape)))
        kept = faster_rcnn.score_thresh, faster_rcnn.nms_thresh
        faster_rcnn.score_thresh, faster_rcnn.nms_thresh = \
            self.score_thresh, self.nms_thresh
        try:
            return faster_rcnn.detections(x, size.to(x.dtype)[None])[0]
        finally:
            faster_rcnn.score_thresh, faster_rcnn.nms_thresh = kept


def _onnx_sort_stable(self, *, stable=None, dim=-1, descending=False):
    """ONNX for ``aten.sort.stable``: a TopK of every element (stable)."""
    from onnxscript import opset18 as op
    k = op.Gather(op.Shape(self), op.Constant(value_ints=[dim]))
    return op.TopK(self, k, axis=dim, largest=int(bool(descending)),
                   sorted=1)


def _onnx_roi_pool(input, rois, spatial_scale, pooled_height, pooled_width):
    """ONNX for ``torchvision::roi_pool``: MaxRoiPool."""
    from onnxscript import opset18 as op
    pool = op.MaxRoiPool(input, rois,
                         pooled_shape=(pooled_height, pooled_width),
                         spatial_scale=spatial_scale)
    # The op's second output, the argmax, serves only the backward.
    return pool, op.Cast(pool, to=6)  # 6: onnx.TensorProto.INT32


def example_inputs(faster_rcnn):
    """A zero landscape image of the preprocessed size and its size, on
    the model's device (height and width differ: the recording keeps them
    apart)."""
    device = next(faster_rcnn.parameters()).device
    height = faster_rcnn.min_size
    width = max(height + 32, min(faster_rcnn.max_size, height * 4 // 3))
    x = torch.zeros((1, 3, height, width), device=device)
    return x, torch.tensor([height, width], device=device)


@contextlib.contextmanager
def _recording(faster_rcnn):
    """Eval mode, no gradients and torchvision 0.28's warning about its own
    nms shape rule silenced while recording."""
    was_training = faster_rcnn.training
    faster_rcnn.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings(
                'ignore', message='`create_unbacked_symint`',
                category=FutureWarning)
            yield
    finally:
        faster_rcnn.train(was_training)


def _record(faster_rcnn, score_thresh, nms_thresh):
    """:func:`torch.export.export` of :class:`ExportableFasterRCNN`, the
    image's height and width free."""
    module = ExportableFasterRCNN(faster_rcnn, score_thresh, nms_thresh)
    dim = torch.export.Dim.DYNAMIC
    return torch.export.export(module.eval(), example_inputs(faster_rcnn),
                               dynamic_shapes=({2: dim, 3: dim}, None))


def export_program(faster_rcnn, score_thresh=None, nms_thresh=None):
    """Records the inference path with :func:`torch.export.export`: an
    ExportedProgram, ``program.module()(x, size) -> (bbox, label, score)``
    as :meth:`ExportableFasterRCNN.forward`, for images of any size that
    give a feature map of at least 2 x 2; it runs without this package
    (import torchvision first, for its ops)."""
    with _recording(faster_rcnn):
        return _record(faster_rcnn, score_thresh, nms_thresh)


def export_onnx(faster_rcnn, path, score_thresh=None, nms_thresh=None,
                label_names=None):
    """Writes the inference path to ``path`` as ONNX (opset 18): inputs
    ``image`` and ``size``, outputs ``bbox``, ``label`` and ``score``, any
    image size, :func:`describe`'s entries as metadata; returns ``path``.
    """
    with _recording(faster_rcnn):
        program = to_onnx(_record(faster_rcnn, score_thresh, nms_thresh),
                          ['image', 'size'], ['bbox', 'label', 'score'])
    program.model.metadata_props.update(describe(
        faster_rcnn, score_thresh, nms_thresh, label_names))
    program.save(path)
    return path


def to_onnx(program, input_names, output_names):
    """A recorded program as ONNX (opset 18), translating the ops that
    onnxscript 0.7 lacks or mistranslates; ``.save(path)`` writes it."""
    translations = {
        torch.ops.aten.sort.stable: _onnx_sort_stable,
        torch.ops.torchvision.roi_pool.default: _onnx_roi_pool,
    }
    return torch.onnx.export(
        program, dynamo=True, opset_version=18, input_names=input_names,
        output_names=output_names, custom_translation_table=translations,
        verbose=False)


def save_program(program, path, metadata=None):
    """Saves a recorded program with ``metadata`` as the extra file
    ``detector.json`` (``torch.export.load(path, extra_files=...)``)."""
    torch.export.save(program, path, extra_files={
        'detector.json': json.dumps(metadata or {})})


def describe(faster_rcnn, score_thresh=None, nms_thresh=None,
             label_names=None):
    """What a user of the exported model needs to know, as JSON strings:
    the input's preprocessing, the thresholds and the class names."""
    module = ExportableFasterRCNN(faster_rcnn, score_thresh, nms_thresh)
    info = dict(min_size=faster_rcnn.min_size,
                max_size=faster_rcnn.max_size,
                caffe_pretrain=bool(faster_rcnn.caffe_pretrain),
                resize=faster_rcnn.resize,
                size_divisible=faster_rcnn.size_divisible,
                score_thresh=module.score_thresh,
                nms_thresh=module.nms_thresh)
    if label_names is not None:
        info['label_names'] = list(label_names)
    return {key: json.dumps(value) for key, value in info.items()}


def main(argv=None):
    """``python -m model.export --checkpoint=... --out=model.onnx``."""
    parser = ArgumentParser(
        prog='python -m model.export',
        description='Export a trained checkpoint to ONNX (.onnx) or as a '
        'torch.export program (.pt2).')
    parser.add_argument('--checkpoint', required=True,
                        help='a checkpoint written by train.py')
    parser.add_argument('--out', required=True,
                        help='the file to write: NAME.onnx or NAME.pt2')
    parser.add_argument('--score-thresh', type=float, default=None,
                        help="keep detections scoring above this (default: "
                        "0.05, the 'evaluate' preset)")
    parser.add_argument('--nms-thresh', type=float, default=None,
                        help='per-class suppression IoU (default: 0.3)')
    with parser.one_line_errors():
        args = parser.parse_args(argv)
        kind = os.path.splitext(args.out)[1].lower()
        if kind not in ('.onnx', '.pt2'):
            raise UsageError('--out={} must end in .onnx (ONNX) or .pt2 '
                             '(torch.export)'.format(args.out))
        for name, value in (('score', args.score_thresh),
                            ('nms', args.nms_thresh)):
            if not 0. <= (value or 0.) <= 1.:
                raise UsageError('--{}-thresh={} must be in [0, 1]'.format(
                    name, value))
        try:
            faster_rcnn, label_names, _ = load_detector(args.checkpoint)
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(str(err)) from None
    if kind == '.onnx':
        export_onnx(faster_rcnn, args.out, args.score_thresh,
                    args.nms_thresh, label_names=label_names)
    else:
        program = export_program(faster_rcnn, args.score_thresh,
                                 args.nms_thresh)
        save_program(program, args.out, describe(
            faster_rcnn, args.score_thresh, args.nms_thresh, label_names))
    print('wrote {}'.format(args.out))


if __name__ == '__main__':
    main()
