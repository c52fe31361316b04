"""The Faster R-CNN detector: extractor, RPN and head composed.

Shape shorthand: N batch, R' RoIs of the batch, L foreground classes
(the head predicts L + 1 with 0 = background).
"""
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from model.region_proposal_network import (per_image, roi_counts,
                                           shared_or_each)
from model.utils.bbox_tools import loc2bbox
from model.utils.layers import full_precision
from model.utils.preprocess import preprocess
from model.utils.suppression import (candidates, checked_batched_nms,
                                     per_class_nms, per_class_order)

# How predict suppresses overlapping boxes: class by class (the original's)
# or all classes in one call (faster on a GPU); both keep the same boxes.
SUPPRESSIONS = ('per_class', 'batched')

PRESETS = {
    'visualize': dict(nms_thresh=0.3, score_thresh=0.7),
    'evaluate': dict(nms_thresh=0.3, score_thresh=0.05),
}


class FasterRCNN(nn.Module):
    """Faster R-CNN: features, region proposals, and per-RoI classification.

    The parts come in through the constructor and may be anything that
    honours these interfaces:

    * **extractor**: ``(N, 3, H, W) -> (N, C, H / s, W / s)`` features.
    * **rpn**: ``rpn(features, img_size, scale) -> (rpn_locs, rpn_scores,
      rois, roi_indices, anchor)`` as
      :class:`model.region_proposal_network.RegionProposalNetwork`, with a
      ``feat_stride`` attribute (s).
    * **head**: ``head(features, rois, roi_indices) -> (roi_cls_locs
      (R', (L + 1) * 4), roi_scores (R', L + 1))``, in this order, with an
      ``n_class`` (L + 1) attribute. The RoIs come as ``(y_min, x_min,
      y_max, x_max)`` in input pixels and ``roi_indices`` (R',) gives each
      one's image; :func:`model.utils.layers.roi_pool_yx` hands them to
      torchvision's RoI ops, which want ``(x_min, y_min, x_max, y_max)``.

    The parts are checked: at construction, that the RPN has a
    ``feat_stride`` and the head an ``n_class``; at each forward, that the
    features are ``feat_stride`` times smaller than the image and that the
    head's outputs have the shapes above.

    The model remembers how its input was preprocessed (shorter side scaled
    to ``min_size``, longer side at most ``max_size``, torchvision or caffe
    normalization); :meth:`predict` uses it, and it travels in the model's
    ``state_dict``.

    Args:
        extractor (nn.Module): The feature extractor.
        rpn (nn.Module): The region proposal network.
        head (nn.Module): The RoI head.
        loc_normalize_mean (tuple of four floats): Mean of the head's
            location targets.
        loc_normalize_std (tuple of four floats): Standard deviation of the
            head's location targets.
        min_size (int): Preprocessing: the shorter side's length.
        max_size (int): Preprocessing: the longer side's largest length.
        caffe_pretrain (bool): Preprocessing: caffe normalization (BGR,
            0-255, mean subtracted) instead of torchvision's.
        suppression ({'per_class', 'batched'}): How :meth:`predict`
            suppresses overlaps: one ``nms`` per class (the original's) or
            one ``batched_nms`` for all classes (see :meth:`_suppress`); an
            attribute of the same name can be changed later.
    """

    def __init__(self, extractor, rpn, head,
                 loc_normalize_mean=(0., 0., 0., 0.),
                 loc_normalize_std=(0.1, 0.1, 0.2, 0.2),
                 min_size=600, max_size=1000, caffe_pretrain=False,
                 suppression='per_class'):
        super().__init__()
        _check_part(rpn, 'rpn', 'feat_stride', "the extractor's stride in "
                    'input pixels')
        _check_part(head, 'head', 'n_class', 'the number of classes it '
                    'predicts, background included')
        self.extractor = extractor
        self.rpn = rpn
        self.head = head
        self.loc_normalize_mean = loc_normalize_mean
        self.loc_normalize_std = loc_normalize_std
        self.min_size = min_size
        self.max_size = max_size
        self.caffe_pretrain = caffe_pretrain
        if suppression not in SUPPRESSIONS:
            raise ValueError('suppression must be one of {}, got {!r}'.format(
                SUPPRESSIONS, suppression))
        self.suppression = suppression
        self.use_preset('evaluate')

    @property
    def n_class(self):
        """The number of classes the head predicts, background included."""
        return self.head.n_class

    def forward(self, x, scale=1., img_sizes=None):
        """Forward Faster R-CNN.

        Args:
            x (torch.Tensor): Preprocessed images, :math:`(N, 3, H, W)`;
                images of different sizes come zero-padded at the bottom
                and right (see ``img_sizes``).
            scale (float or sequence of floats): The scaling applied to the
                original images, or one scale per image.
            img_sizes (sequence of (H, W)): Each image's unpadded size, for
                its proposals; default: every image is ``x``'s full size.

        Returns:
            (torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor):
            * **roi_cls_locs**: :math:`(R', (L + 1) \\times 4)` offsets.
            * **roi_scores**: :math:`(R', L + 1)` class scores.
            * **rois**: :math:`(R', 4)` proposals, each
              ``(y_min, x_min, y_max, x_max)``.
            * **roi_indices**: :math:`(R',)` the image of each RoI.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError('FasterRCNN expects images x of shape (N, 3, H, '
                             'W), got {}'.format(tuple(x.shape)))
        img_size = tuple(x.shape[2:])
        stride = self.rpn.feat_stride
        if min(img_size) < stride:
            raise ValueError('image of size {}x{} is smaller than one feature '
                             'stride ({} px) on a side'.format(*img_size, stride))
        img_sizes, scales = per_image(
            img_size if img_sizes is None else img_sizes, scale, len(x))
        check_img_sizes(img_sizes, img_size, stride)
        h = self.extractor(x)
        check_stride(h, img_size, stride)
        rpn_locs, rpn_scores, rois, roi_indices, anchor = self.rpn(
            h, shared_or_each(img_sizes), shared_or_each(scales))
        roi_cls_locs, roi_scores = full_precision(
            *self.head(h, rois, roi_indices))
        check_head_output(self.head, roi_cls_locs, roi_scores, len(rois))
        return roi_cls_locs, roi_scores, rois, roi_indices

    def use_preset(self, preset):
        """Sets the NMS and score thresholds of :meth:`predict`.

        Args:
            preset ({'visualize', 'evaluate'}): 'visualize' keeps scores
                above 0.7, 'evaluate' above 0.05; both suppress at IoU 0.3.
        """
        if preset not in PRESETS:
            raise ValueError('preset must be one of {}, got {!r}'.format(
                sorted(PRESETS), preset))
        self.preset = preset
        self.nms_thresh = PRESETS[preset]['nms_thresh']
        self.score_thresh = PRESETS[preset]['score_thresh']

    def get_extra_state(self):
        # The head's RoI op (RoIPool or RoIAlign) has no weights: it is
        # recorded here so that a checkpoint says how it was trained.
        return dict(min_size=self.min_size, max_size=self.max_size,
                    caffe_pretrain=self.caffe_pretrain,
                    **getattr(self.head, 'roi_settings', {}))

    def set_extra_state(self, state):
        # Runs before any weight is copied (this module loads before its
        # parts), so a mismatch leaves the model as it was.
        _check_roi_settings(state, getattr(self.head, 'roi_settings', None))
        # A setting the state does not give keeps this model's value.
        self.min_size = state.get('min_size', self.min_size)
        self.max_size = state.get('max_size', self.max_size)
        self.caffe_pretrain = state.get('caffe_pretrain', self.caffe_pretrain)

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """Loads weights, saying plainly when they belong to another model.

        A state dict without preprocessing settings (one saved by the
        original design) keeps this model's settings.

        Raises:
            ValueError: if a tensor's shape differs from this model's, as
                when the checkpoint was trained for another number of
                classes; if (with ``strict``) the tensors are another
                model's, as another backbone's; or if the checkpoint's head
                pooled its RoIs
                otherwise (RoIPool or RoIAlign, see ``roi_op``), before any
                weight is copied.
        """
        state_dict = dict(state_dict)
        state_dict.setdefault('_extra_state', self.get_extra_state())
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise ValueError(
                'checkpoint does not fit this {}: {} of its tensors are not '
                'in the checkpoint{} and {} of the checkpoint\'s are not in '
                'it{}; the checkpoint holds another model (another '
                'backbone?)'.format(
                    type(self).__name__, len(missing),
                    ' ({}, ...)'.format(missing[0]) if missing else '',
                    len(unexpected),
                    ' ({}, ...)'.format(unexpected[0]) if unexpected else ''))
        for key, value in state_dict.items():
            if (key in own and isinstance(value, torch.Tensor)
                    and value.shape != own[key].shape):
                hint = ('; the checkpoint was trained for another number of '
                        'classes (this model has {} with background)'.format(
                            self.n_class) if key.startswith('head.') else '')
                raise ValueError(
                    'checkpoint does not fit this model: {} has shape {} in '
                    'the checkpoint and {} here{}'.format(
                        key, tuple(value.shape), tuple(own[key].shape), hint))
        return super().load_state_dict(state_dict, strict, assign)

    def _suppress(self, raw_cls_bbox, raw_prob):
        """Per-class thresholding and NMS, background skipped.

        Every (RoI, foreground class) pair scored above ``score_thresh`` is
        a candidate. With ``suppression='per_class'`` (the default) each
        class is suppressed by its own ``nms`` call, as in the original;
        with ``'batched'`` all classes go through one
        :func:`torchvision.ops.batched_nms` call, whose result is checked
        on the device against the per-class rule (see
        :func:`~model.utils.suppression.checked_batched_nms`). Both keep
        the same detections, run on the device of the inputs and move the
        result to the host once. The detections are grouped by class in
        class order and, within a class, ordered as ``nms`` on that class
        alone orders them: by descending score, ties by RoI order.

        Args:
            raw_cls_bbox (torch.Tensor): :math:`(R, (L + 1) \\times 4)`,
                each box ``(y_min, x_min, y_max, x_max)``.
            raw_prob (torch.Tensor): :math:`(R, L + 1)`.

        Returns:
            numpy bbox (R'', 4) float32, each
            ``(y_min, x_min, y_max, x_max)``, label (R'',) int32 in
            :math:`[0, L - 1]`, score (R'',) float32, grouped by class.
        """
        bbox, score, label = candidates(raw_cls_bbox, raw_prob,
                                        self.score_thresh)
        if self.suppression == 'batched':
            keep = checked_batched_nms(bbox, score, label, self.n_class - 1,
                                       len(raw_prob), self.nms_thresh)
        else:
            keep = per_class_nms(bbox, score, label, range(self.n_class - 1),
                                 self.nms_thresh)
        keep = per_class_order(keep, score, label)
        dtype = torch.promote_types(
            torch.promote_types(bbox.dtype, score.dtype), torch.float32)
        out = torch.cat((bbox[keep].to(dtype), score[keep, None].to(dtype),
                         label[keep, None].to(dtype)), dim=1).cpu().numpy()
        bbox = out[:, :4].astype(np.float32)
        score = out[:, 4].astype(np.float32)
        label = out[:, 5].astype(np.int32)
        return bbox, label, score

    @torch.no_grad()
    def predict(self, imgs, sizes=None, visualize=False):
        """Detects objects in images.

        With ``visualize=True`` the images are raw and of any sizes: CHW,
        RGB, values in [0, 255]; they are preprocessed here with the model's
        own settings, and the 'visualize' preset is used for this call. With
        ``visualize=False`` the images are already preprocessed and
        ``sizes`` gives their original sizes, as evaluation passes them.
        The model is left in the mode (train or eval) and preset it had.

        The images are detected together: those of the same (preprocessed)
        size in one forward, so pass as many as fit in memory at once. Each
        image's detections are the ones it gets in a call of its own (up to
        float rounding of batched kernels): images are never padded.

        Args:
            imgs (sequence of arrays): N images, each :math:`(3, H, W)`
                (numpy arrays or tensors).
            sizes (sequence of (H, W)): Original sizes; required when
                ``visualize=False``.
            visualize (bool): Whether ``imgs`` are raw images.

        Returns:
            (list, list, list), N numpy arrays each:
            * **bboxes**: :math:`(R, 4)` float32, each
              ``(y_min, x_min, y_max, x_max)`` in the original image's pixels.
            * **labels**: :math:`(R,)` int32 in :math:`[0, L - 1]`.
            * **scores**: :math:`(R,)` float32 confidences.
        """
        for i, img in enumerate(imgs):
            _check_image(img, i)
        if visualize:
            sizes = [tuple(img.shape[1:]) for img in imgs]
            imgs = [self._preprocess(_to_numpy(img), i)
                    for i, img in enumerate(imgs)]
        elif sizes is None or len(sizes) != len(imgs):
            raise ValueError('predict(visualize=False) needs sizes, the (H, W) '
                             'of each original image, one per image')

        # the mode, the preset and thresholds set by hand, as they were
        was_training = self.training
        preset = (self.preset, self.nms_thresh, self.score_thresh)
        self.eval()
        if visualize:
            self.use_preset('visualize')
        try:
            results = self._predict_batch(imgs, sizes)
        finally:
            self.train(was_training)
            self.preset, self.nms_thresh, self.score_thresh = preset
        bboxes, labels, scores = (list(r) for r in zip(*results)) \
            if results else ([], [], [])
        return bboxes, labels, scores

    def _preprocess(self, img, i):
        """Image ``i`` (3, H, W) in [0, 255] as the network's input."""
        # (an all-black image, max 0, is a real image in [0, 255])
        if (np.issubdtype(img.dtype, np.floating) and img.size
                and 0 < img.max() <= 1):
            warnings.warn(
                'predict expects images with values in [0, 255] (as '
                'read_image gives them); image {} has values in [0, 1], so '
                'few objects will be found: multiply it by 255'.format(i))
        out = preprocess(img.astype(np.float32), min_size=self.min_size,
                         max_size=self.max_size,
                         caffe_pretrain=self.caffe_pretrain)
        stride = self.rpn.feat_stride
        if min(out.shape[1:]) < stride:
            raise ValueError(
                'image {} of size {}x{} is {}x{} once resized for the model '
                '(shorter side to {}, longer at most {}), smaller than one '
                'feature stride ({} px) on a side'.format(
                    i, *img.shape[1:], *out.shape[1:], self.min_size,
                    self.max_size, stride))
        return out

    def _predict_batch(self, imgs, sizes):
        """Detections of preprocessed images, in their original pixels.

        The images of one size go through the network in one forward; each
        other size gets its own. Images are never padded: zeros below or
        right of an image would change its features along those edges, and
        each image's detections are to be those it gets alone.
        """
        device = next(self.parameters()).device
        groups = {}
        for i, img in enumerate(imgs):
            groups.setdefault(tuple(img.shape), []).append(i)
        results = [None] * len(imgs)
        for group in groups.values():
            x = torch.stack([torch.as_tensor(imgs[i], dtype=torch.float32,
                                             device=device) for i in group])
            scales = [x.shape[3] / sizes[i][1] for i in group]
            roi_cls_locs, roi_scores, rois, roi_indices = self(x, scale=scales)
            # The RPN gives each image's RoIs together, in image order.
            counts = roi_counts(roi_indices, len(group))
            for i, scale, roi_cls_loc, roi_score, roi in zip(
                    group, scales, roi_cls_locs.split(counts),
                    roi_scores.split(counts), rois.split(counts)):
                results[i] = self._postprocess(roi_cls_loc, roi_score, roi,
                                               scale, sizes[i])
        return results

    def _postprocess(self, roi_cls_loc, roi_score, rois, scale, size):
        """One image's detections from the head's outputs on its RoIs.

        Args:
            roi_cls_loc (torch.Tensor): :math:`(R', (L + 1) \\times 4)`.
            roi_score (torch.Tensor): :math:`(R', L + 1)`.
            rois (torch.Tensor): :math:`(R', 4)`, each
                ``(y_min, x_min, y_max, x_max)`` in the network input's
                pixels.
            scale (float): Network input over original image size.
            size (tuple of ints): ``(H, W)`` of the original image.

        Returns:
            numpy bbox, label and score as :meth:`_suppress` gives them.
        """
        roi = rois / scale

        mean = roi.new_tensor(self.loc_normalize_mean).repeat(self.n_class)
        std = roi.new_tensor(self.loc_normalize_std).repeat(self.n_class)
        roi_cls_loc = (roi_cls_loc * std + mean).view(-1, self.n_class, 4)
        roi = roi.view(-1, 1, 4).expand_as(roi_cls_loc)
        cls_bbox = loc2bbox(roi.reshape(-1, 4), roi_cls_loc.reshape(-1, 4))
        cls_bbox = cls_bbox.view(-1, self.n_class * 4)
        cls_bbox[:, 0::2] = cls_bbox[:, 0::2].clamp(min=0, max=size[0])
        cls_bbox[:, 1::2] = cls_bbox[:, 1::2].clamp(min=0, max=size[1])
        prob = F.softmax(roi_score, dim=1)
        return self._suppress(cls_bbox, prob)

    def get_optimizer(self, lr=1e-3, weight_decay=5e-4, use_adam=False):
        """Builds the optimizer: biases get twice the lr and no decay.

        Args:
            lr (float): Learning rate of the weights.
            weight_decay (float): L2 decay of the weights.
            use_adam (bool): Adam instead of SGD with momentum 0.9.

        Returns:
            torch.optim.Optimizer, also kept as ``self.optimizer``.
        """
        params = []
        for key, value in self.named_parameters():
            if not value.requires_grad:
                continue
            if 'bias' in key:
                params.append({'params': [value], 'lr': lr * 2,
                               'weight_decay': 0})
            else:
                params.append({'params': [value], 'lr': lr,
                               'weight_decay': weight_decay})
        if use_adam:
            self.optimizer = torch.optim.Adam(params)
        else:
            self.optimizer = torch.optim.SGD(params, momentum=0.9)
        return self.optimizer

    def scale_lr(self, decay=0.1):
        """Multiplies the lr of every parameter group by ``decay``."""
        for param_group in self.optimizer.param_groups:
            param_group['lr'] *= decay
        return self.optimizer


def _check_part(part, name, attribute, meaning):
    if not hasattr(part, attribute):
        raise ValueError('FasterRCNN: the {} ({}) has no attribute {!r} '
                         '({})'.format(name, type(part).__name__, attribute,
                                       meaning))


def check_stride(features, img_size, feat_stride):
    """Raises ValueError unless ``features`` (N, C, h, w) are ``feat_stride``
    times smaller than an image of ``img_size`` (H, W), rounding either
    way: the anchors are laid ``feat_stride`` pixels apart."""
    for size, n in zip(img_size, features.shape[2:]):
        if not size // feat_stride <= n <= -(-size // feat_stride):
            raise ValueError(
                "the extractor's features are {}x{} for a {}x{} image, a "
                "stride of about {:.3g} px, but the RPN's feat_stride is {}: "
                'build the RPN with the extractor\'s stride'.format(
                    *features.shape[2:], *img_size,
                    img_size[0] / features.shape[2], feat_stride))


def check_img_sizes(img_sizes, batch_size, feat_stride):
    """Raises ValueError unless each image's ``(H, W)`` in ``img_sizes``
    fits in the padded batch's ``batch_size`` (H, W) and spans at least one
    feature stride on a side."""
    for i, size in enumerate(img_sizes):
        if size[0] > batch_size[0] or size[1] > batch_size[1]:
            raise ValueError(
                'img_sizes[{}] is {}x{}, larger than the batch of images '
                '({}x{}) it is padded into'.format(i, *size, *batch_size))
        if min(size) < feat_stride:
            raise ValueError(
                'img_sizes[{}] is {}x{}, smaller than one feature stride ({} '
                'px) on a side'.format(i, *size, feat_stride))


def check_head_output(head, roi_cls_locs, roi_scores, n_roi):
    """Raises ValueError unless the head returned (roi_cls_locs
    (R', (L + 1) * 4), roi_scores (R', L + 1)) for ``n_roi`` RoIs."""
    n_class = head.n_class
    expected = ((n_roi, n_class * 4), (n_roi, n_class))
    got = (tuple(roi_cls_locs.shape), tuple(roi_scores.shape))
    if got != expected:
        raise ValueError(
            'the head ({}) returned outputs of shapes {} and {}; expected '
            '(roi_cls_locs {}, roi_scores {}) for {} RoIs and n_class={}, in '
            'this order'.format(type(head).__name__, *got, *expected, n_roi,
                                n_class))


def _check_roi_settings(state, own):
    """Raises ValueError if a state dict's head pooled otherwise than
    ``own`` (the head's ``roi_settings``) does.

    A state dict that records no RoI op (one from before the option, or
    the original design's) was trained with RoIPool.
    """
    if own is None:
        return
    saved = {k: state[k] for k in ('roi_op', 'sampling_ratio', 'aligned')
             if k in state}
    saved.setdefault('roi_op', 'pool')
    if saved['roi_op'] == 'pool':
        saved = dict(roi_op='pool')
    if saved != own:
        raise ValueError(
            'checkpoint does not fit this model: its head was trained with '
            '{} and this model pools with {}; build the model with {} (with '
            'train.py: {}), or rebuild the checkpoint\'s detector with '
            'model.load_detector, which reads its config'.format(
                _describe_roi(saved), _describe_roi(own),
                ', '.join('{}={!r}'.format(k, v) for k, v in saved.items()),
                ' '.join('{}={}'.format(_ROI_FLAGS[k], v)
                         for k, v in saved.items())))


# train.py's options for a head's roi_settings
_ROI_FLAGS = dict(roi_op='--roi-op', sampling_ratio='--roi-sampling-ratio',
                  aligned='--roi-aligned')


def _describe_roi(settings):
    if settings['roi_op'] == 'pool':
        return 'RoIPool'
    return 'RoIAlign (sampling_ratio={}, aligned={})'.format(
        settings.get('sampling_ratio'), settings.get('aligned'))


def _to_numpy(img):
    return img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else img


def _check_image(img, i):
    """Raises ValueError unless image ``i`` is a real-valued (3, H, W) array."""
    if not hasattr(img, 'shape') or len(img.shape) != 3 or img.shape[0] != 3:
        got = tuple(img.shape) if hasattr(img, 'shape') else type(img).__name__
        raise ValueError('predict expects each image as an array of shape '
                         '(3, H, W) (CHW, RGB), got {} for image {}'.format(
                             got, i))
    if isinstance(img, torch.Tensor):
        real = not (img.dtype.is_complex or img.dtype == torch.bool)
    else:
        real = (np.issubdtype(img.dtype, np.integer) or
                np.issubdtype(img.dtype, np.floating))
    if not real:
        raise ValueError('predict expects images of real numbers (float or '
                         'integer), got dtype {} for image {}'.format(
                             img.dtype, i))
