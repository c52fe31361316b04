"""Export of the inference path, for serving a detector outside Python.

:class:`ExportableFasterRCNN` wraps a trained :class:`FasterRCNN` as a
module of tensors only: a preprocessed image and its original size in;
boxes, labels and scores out, computed in torch (all classes suppressed in
one nms call, :func:`torchvision.ops.batched_nms`'s class-offset strategy;
no numpy), so that :func:`torch.export.export` and
:func:`torch.onnx.export` can record it.
Preprocessing (resize and normalization, :func:`model.utils.preprocess.
preprocess`) stays outside: it is the caller's job, as in
``FasterRCNN.predict(imgs, sizes)``.

Shape shorthand: H W the preprocessed image's size, R' the proposals,
R the detections kept, L foreground classes.

From the command line::

    python -m model.export --checkpoint=checkpoints/best.pth --out=model.onnx
    python -m model.export --checkpoint=checkpoints/best.pth --out=model.pt2
"""
import argparse
import contextlib
import json
import os
import warnings

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import nms

from model.build import load_detector
from model.utils.suppression import candidates, per_class_order
from model.region_proposal_network import _enumerate_shifted_anchor
from model.utils.bbox_tools import loc2bbox


class ExportableFasterRCNN(nn.Module):
    """The inference path of a :class:`FasterRCNN`, in tensors only.

    ``forward(x, size)`` gives the detections that
    ``faster_rcnn.predict([x[0]], [size])`` gives with the same thresholds:
    the same boxes and scores (to float rounding), the same labels, in the
    same order (grouped by class in class order, each class by descending
    score). The thresholds are fixed when the module is built.

    The model is used, not copied, and must be in eval mode when this
    module runs or is recorded (the RPN keeps its test-time numbers of
    proposals then); :func:`export_program` and :func:`export_onnx` put it
    in eval mode and back.

    The RPN must be a :class:`~model.region_proposal_network.
    RegionProposalNetwork` (or have its ``conv1``, ``score``, ``loc``,
    ``anchor_base``, ``feat_stride`` and ``proposal_layer``); the extractor
    and head may be any that :class:`FasterRCNN` accepts and torch.export
    can record.

    Args:
        faster_rcnn (FasterRCNN): The trained detector.
        score_thresh (float): Keep detections scoring above this; default:
            the model's current preset's (0.05 for 'evaluate', the preset
            a model starts with; 0.7 for 'visualize').
        nms_thresh (float): Suppress a detection whose IoU with a
            better-scored one of its class is above this; default: the
            model's current preset's (0.3).

    Raises:
        ValueError: if the RPN lacks one of the parts above, or a
            threshold is outside [0, 1].
    """

    def __init__(self, faster_rcnn, score_thresh=None, nms_thresh=None):
        super().__init__()
        missing = [name for name in _RPN_PARTS
                   if not hasattr(faster_rcnn.rpn, name)]
        if missing:
            raise ValueError(
                'ExportableFasterRCNN needs the RPN of a '
                'RegionProposalNetwork; this one ({}) lacks {}'.format(
                    type(faster_rcnn.rpn).__name__, ', '.join(missing)))
        if score_thresh is None:
            score_thresh = faster_rcnn.score_thresh
        if nms_thresh is None:
            nms_thresh = faster_rcnn.nms_thresh
        for name, value in (('score_thresh', score_thresh),
                            ('nms_thresh', nms_thresh)):
            if not 0. <= value <= 1.:
                raise ValueError('{} must be in [0, 1], got {}'.format(
                    name, value))
        self.faster_rcnn = faster_rcnn
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        n_class = faster_rcnn.n_class
        self.register_buffer('loc_normalize_mean', torch.tensor(
            faster_rcnn.loc_normalize_mean, dtype=torch.float32).repeat(
                n_class), persistent=False)
        self.register_buffer('loc_normalize_std', torch.tensor(
            faster_rcnn.loc_normalize_std, dtype=torch.float32).repeat(
                n_class), persistent=False)

    def forward(self, x, size):
        """Detects objects in one preprocessed image.

        Args:
            x (torch.Tensor): The preprocessed image, :math:`(1, 3, H, W)`
                float32, as :func:`model.utils.preprocess.preprocess` gives
                it (with a batch axis added).
            size (torch.Tensor): The original image's ``(height, width)``
                in pixels, shape :math:`(2,)`, int64. The scale is
                ``W / width``, as in :meth:`FasterRCNN.predict`, and boxes
                are clipped to the original image.

        Returns:
            (torch.Tensor, torch.Tensor, torch.Tensor):
            * **bbox**: :math:`(R, 4)` float32, each
              ``(y_min, x_min, y_max, x_max)`` in the original image's
              pixels.
            * **label**: :math:`(R,)` int64 in :math:`[0, L - 1]`.
            * **score**: :math:`(R,)` float32.
        """
        faster_rcnn = self.faster_rcnn
        if faster_rcnn.training:
            raise ValueError('ExportableFasterRCNN runs the model in eval '
                             'mode: call faster_rcnn.eval() first')
        if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise ValueError('ExportableFasterRCNN expects one image x of '
                             'shape (1, 3, H, W), got {}'.format(
                                 tuple(x.shape)))
        n_class = faster_rcnn.n_class
        size = size.to(device=x.device, dtype=x.dtype)
        scale = x.shape[3] / size[1]
        h = faster_rcnn.extractor(x)
        rois = _propose(faster_rcnn.rpn, h, x.shape[2:], scale)
        roi_indices = rois.new_zeros((rois.shape[0],), dtype=torch.int32)
        roi_cls_loc, roi_score = faster_rcnn.head(h, rois, roi_indices)

        # Each RoI's box for every class, in the original image, clipped.
        roi = rois / scale
        roi_cls_loc = (roi_cls_loc * self.loc_normalize_std
                       + self.loc_normalize_mean).view(-1, n_class, 4)
        roi = roi.view(-1, 1, 4).expand_as(roi_cls_loc)
        cls_bbox = loc2bbox(roi.reshape(-1, 4),
                            roi_cls_loc.reshape(-1, 4)).view(-1, n_class, 4)
        y = cls_bbox[..., 0::2].clamp(min=0).minimum(size[0])
        x_ = cls_bbox[..., 1::2].clamp(min=0).minimum(size[1])
        cls_bbox = torch.stack((y[..., 0], x_[..., 0], y[..., 1], x_[..., 1]),
                               dim=2)
        prob = F.softmax(roi_score, dim=1)
        return suppress(cls_bbox.reshape(-1, n_class * 4), prob,
                        self.score_thresh, self.nms_thresh)


_RPN_PARTS = ('conv1', 'score', 'loc', 'anchor_base', 'feat_stride',
              'proposal_layer')


def _propose(rpn, h, img_size, scale):
    """The RPN's proposals for one image's features, as
    :meth:`RegionProposalNetwork.forward` makes them in eval mode.

    Args:
        rpn (RegionProposalNetwork): The detector's RPN, in eval mode.
        h (torch.Tensor): Features, :math:`(1, C, H / s, W / s)`.
        img_size (sequence of two ints): ``(H, W)`` of the input image.
        scale (torch.Tensor): The scaling applied to the original image.

    Returns:
        torch.Tensor: :math:`(R', 4)` proposals, each
        ``(y_min, x_min, y_max, x_max)`` in input pixels.
    """
    _, _, hh, ww = h.shape
    anchor = _enumerate_shifted_anchor(rpn.anchor_base, rpn.feat_stride, hh,
                                       ww)
    n_anchor = rpn.anchor_base.shape[0]
    hidden = F.relu(rpn.conv1(h))
    rpn_loc = rpn.loc(hidden).permute(0, 2, 3, 1).reshape(-1, 4)
    rpn_score = rpn.score(hidden).permute(0, 2, 3, 1).reshape(
        hh, ww, n_anchor, 2)
    rpn_fg_score = F.softmax(rpn_score, dim=3)[..., 1].reshape(-1)
    return rpn.proposal_layer(rpn_loc, rpn_fg_score, anchor, img_size,
                              scale=scale)


def suppress(cls_bbox, prob, score_thresh, nms_thresh):
    """:meth:`FasterRCNN._suppress` in tensors, recordable by torch.export.

    Every (RoI, foreground class) pair scored above ``score_thresh`` is a
    candidate; all classes are suppressed in one nms call (see
    :func:`_batched_nms`). The detections are grouped by class in class
    order and, within a class, by descending score, ties in RoI order, as
    ``FasterRCNN.predict`` gives them.

    Args:
        cls_bbox (torch.Tensor): :math:`(R, (L + 1) \\times 4)`, each box
            ``(y_min, x_min, y_max, x_max)``.
        prob (torch.Tensor): :math:`(R, L + 1)` class probabilities.
        score_thresh (float): Keep candidates scoring above this.
        nms_thresh (float): Suppress a box whose IoU with a better-scored
            box of its class is above this.

    Returns:
        (torch.Tensor, torch.Tensor, torch.Tensor): bbox :math:`(R'', 4)`,
        label :math:`(R'',)` int64 in :math:`[0, L - 1]`, score
        :math:`(R'',)`.
    """
    bbox, score, label = candidates(cls_bbox, prob, score_thresh)
    keep = per_class_order(_batched_nms(bbox, score, label, nms_thresh),
                           score, label)
    return bbox[keep], label[keep], score[keep]


def _batched_nms(bbox, score, label, nms_thresh):
    """Suppression within each class, in one :func:`torchvision.ops.nms`
    call: :func:`torchvision.ops.batched_nms`'s own strategy for fewer than
    4000 coordinates on the CPU (100000 on a GPU), boxes offset by class so
    that boxes of two classes never overlap, written out so that
    torch.export can record it for any number of boxes.

    batched_nms itself picks its strategy by the number of boxes, which
    torch.export cannot decide when that number depends on the data and may
    exceed the threshold (300 RoIs x 20 classes do); and it returns early
    for no box. Its other strategy, one nms per class, gives the same boxes
    except where the offset's rounding decides an IoU within float rounding
    of ``nms_thresh`` the other way.

    Two zero-area boxes, scored below every other, join the candidates and
    leave the result: torchvision 0.28's shape rule for ``nms`` promises at
    least two boxes kept, which a recorded program asserts at run time. A
    zero-area box suppresses nothing and nothing suppresses it (its IoU
    with any box is 0), and it comes last.

    Args:
        bbox (torch.Tensor): :math:`(R, 4)`.
        score (torch.Tensor): :math:`(R,)`, at least 0.
        label (torch.Tensor): :math:`(R,)`.
        nms_thresh (float): Suppress a box whose IoU with a better-scored
            box of its class is above this.

    Returns:
        torch.Tensor: The indices kept, by descending score.
    """
    n = bbox.shape[0]
    bbox = torch.cat((bbox, bbox.new_zeros((2, 4))))
    score = torch.cat((score, score.new_full((2,), -1.)))
    label = torch.cat((label, label.new_zeros((2,))))
    offset = label.to(bbox) * (bbox.max() + 1)
    keep = nms(bbox + offset[:, None], score, nms_thresh)
    return keep[keep < n]


def _onnx_sort_stable(self, *, stable=None, dim=-1, descending=False):
    """ONNX for ``aten.sort.stable``, which torch.onnx does not translate:
    a TopK of every element, which the ONNX standard makes stable (equal
    values keep their index order)."""
    from onnxscript import opset18 as op
    k = op.Gather(op.Shape(self), op.Constant(value_ints=[dim]))
    return op.TopK(self, k, axis=dim, largest=int(bool(descending)),
                   sorted=1)


def _onnx_roi_pool(input, rois, spatial_scale, pooled_height, pooled_width):
    """ONNX for ``torchvision::roi_pool``: MaxRoiPool (onnxscript 0.7's
    translation takes the arguments of ``torchvision.ops.roi_pool``, not
    those of the op)."""
    from onnxscript import opset18 as op
    pool = op.MaxRoiPool(input, rois,
                         pooled_shape=(pooled_height, pooled_width),
                         spatial_scale=spatial_scale)
    # The op's second output, the argmax, is used only by the backward:
    # a placeholder of its shape and type, removed as unused.
    return pool, op.Cast(pool, to=6)  # 6: onnx.TensorProto.INT32


def example_inputs(faster_rcnn):
    """Inputs to record the model with: a zero image of the preprocessed
    size of a landscape image, and that image's original size.

    Height and width differ so that the recording keeps them apart; the
    recorded model takes any size.

    Returns:
        (torch.Tensor, torch.Tensor): ``x`` of shape
        :math:`(1, 3, H, W)` float32 and ``size`` of shape :math:`(2,)`
        int64, on the model's device.
    """
    device = next(faster_rcnn.parameters()).device
    height = faster_rcnn.min_size
    width = max(height + faster_rcnn.rpn.feat_stride,
                min(faster_rcnn.max_size, height * 4 // 3))
    x = torch.zeros((1, 3, height, width), device=device)
    return x, torch.tensor([height, width], device=device)


def _dynamic_shapes():
    """Height and width of the image free, the size's shape fixed."""
    dim = torch.export.Dim.DYNAMIC
    return ({2: dim, 3: dim}, None)


@contextlib.contextmanager
def _recording(faster_rcnn):
    """Eval mode and no gradients while recording, then the mode the model
    had; torchvision 0.28's deprecation warning about its own nms shape
    rule, raised at each recording, silenced."""
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


def export_program(faster_rcnn, score_thresh=None, nms_thresh=None):
    """Records the inference path with :func:`torch.export.export`.

    The result takes images of any height and width that give a feature
    map of at least 2 x 2 (``program.range_constraints`` states the bound
    in pixels) and runs without this package's code (``torchvision`` must
    be imported, for its ops). Save it with
    ``torch.export.save(program, 'model.pt2')``; run it with
    ``program.module()(x, size)``.

    Args:
        faster_rcnn (FasterRCNN): The trained detector; recorded in eval
            mode, and left in the mode it had.
        score_thresh (float): See :class:`ExportableFasterRCNN`.
        nms_thresh (float): See :class:`ExportableFasterRCNN`.

    Returns:
        torch.export.ExportedProgram: ``(x, size) -> (bbox, label,
        score)`` as :meth:`ExportableFasterRCNN.forward`.
    """
    with _recording(faster_rcnn):
        module = ExportableFasterRCNN(faster_rcnn, score_thresh,
                                      nms_thresh).eval()
        return torch.export.export(module, example_inputs(faster_rcnn),
                                   dynamic_shapes=_dynamic_shapes())


def export_onnx(faster_rcnn, path, score_thresh=None, nms_thresh=None,
                label_names=None):
    """Writes the inference path as an ONNX model (opset 18).

    Recorded with ``torch.onnx.export(..., dynamo=True)`` (torch.export,
    then onnxscript), with the image's height and width left free: the
    file takes images of any size. Inputs are named ``image`` and
    ``size``, outputs ``bbox``, ``label`` and ``score``, as in
    :meth:`ExportableFasterRCNN.forward`; the model's metadata
    (``metadata_props``) holds :func:`describe`'s entries. Needs the
    ``onnx`` and ``onnxscript`` packages.

    Args:
        faster_rcnn (FasterRCNN): The trained detector; recorded in eval
            mode, and left in the mode it had.
        path (str): The file to write.
        score_thresh (float): See :class:`ExportableFasterRCNN`.
        nms_thresh (float): See :class:`ExportableFasterRCNN`.
        label_names (sequence of str): The class names, kept in the
            metadata.

    Returns:
        str: ``path``.
    """
    with _recording(faster_rcnn):
        module = ExportableFasterRCNN(faster_rcnn, score_thresh,
                                      nms_thresh).eval()
        to_onnx(module, example_inputs(faster_rcnn), path,
                _dynamic_shapes(), ['image', 'size'],
                ['bbox', 'label', 'score'], metadata=describe(
                    faster_rcnn, score_thresh, nms_thresh, label_names))
    return path


def save_program(program, path, metadata=None):
    """Saves a recorded program, with ``metadata`` (e.g. :func:`describe`'s
    entries) as the extra file ``detector.json``.

    ``torch.export.load(path, extra_files={'detector.json': ''})`` reads
    both back, the extra file into that dict.

    Args:
        program (torch.export.ExportedProgram): What
            :func:`export_program` returned.
        path (str): The ``.pt2`` file to write.
        metadata (dict of str to str): What to keep beside the program.
    """
    torch.export.save(program, path, extra_files={
        'detector.json': json.dumps(metadata or {})})


def describe(faster_rcnn, score_thresh=None, nms_thresh=None,
             label_names=None):
    """What a user of the exported model needs to know, as JSON strings.

    Args:
        faster_rcnn (FasterRCNN): The detector exported.
        score_thresh (float): As given to the export.
        nms_thresh (float): As given to the export.
        label_names (sequence of str): The class names.

    Returns:
        dict: ``min_size``, ``max_size`` and ``caffe_pretrain`` (the
        preprocessing the input must have had), ``score_thresh`` and
        ``nms_thresh`` (recorded in the model), and ``label_names`` (a JSON
        list; label ``l`` is ``label_names[l]``) when given.
    """
    module = ExportableFasterRCNN(faster_rcnn, score_thresh, nms_thresh)
    info = dict(min_size=faster_rcnn.min_size,
                max_size=faster_rcnn.max_size,
                caffe_pretrain=bool(faster_rcnn.caffe_pretrain),
                score_thresh=module.score_thresh,
                nms_thresh=module.nms_thresh)
    if label_names is not None:
        info['label_names'] = list(label_names)
    return {key: json.dumps(value) for key, value in info.items()}


def to_onnx(module, args, path, dynamic_shapes, input_names, output_names,
            metadata=None):
    """``torch.onnx.export(..., dynamo=True)`` at opset 18, with this
    module's translations of the ops that onnxscript 0.7 lacks or
    mistranslates (``aten.sort.stable``, ``torchvision::roi_pool``).

    Args:
        module (nn.Module): What to record, in eval mode.
        args (tuple): Example inputs.
        path (str): The file to write.
        dynamic_shapes: As :func:`torch.export.export` takes them.
        input_names (list of str): Names of the ONNX inputs.
        output_names (list of str): Names of the ONNX outputs.
        metadata (dict of str to str): The model's ``metadata_props``.
    """
    translations = {
        torch.ops.aten.sort.stable: _onnx_sort_stable,
        torch.ops.torchvision.roi_pool.default: _onnx_roi_pool,
    }
    program = torch.onnx.export(
        module, args, dynamo=True, dynamic_shapes=dynamic_shapes,
        opset_version=18, input_names=input_names,
        output_names=output_names, custom_translation_table=translations,
        verbose=False)
    program.model.metadata_props.update(metadata or {})
    program.save(path)


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, with a mistake on the command line told in one line."""

    def error(self, message):
        self.exit(2, '{}: error: {}\n'.format(self.prog, message))


def main(argv=None):
    """``python -m model.export --checkpoint=... --out=model.onnx``.

    A command-line mistake (a missing or unreadable checkpoint, an output
    name that is neither ``.onnx`` nor ``.pt2``) is one line on stderr and
    exit status 2.
    """
    parser = _ArgumentParser(
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
    args = parser.parse_args(argv)
    kind = os.path.splitext(args.out)[1].lower()
    if kind not in ('.onnx', '.pt2'):
        parser.error('--out={} must end in .onnx (ONNX) or .pt2 '
                     '(torch.export)'.format(args.out))
    for name in ('score_thresh', 'nms_thresh'):
        value = getattr(args, name)
        if value is not None and not 0. <= value <= 1.:
            parser.error('--{}={} must be in [0, 1]'.format(
                name.replace('_', '-'), value))

    try:
        faster_rcnn, label_names, _ = load_detector(args.checkpoint)
    except (FileNotFoundError, ValueError) as err:
        # One line: torch.load's own message, inside an unreadable
        # checkpoint's, runs over several.
        parser.error(str(err).splitlines()[0])
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
