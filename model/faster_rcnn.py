"""The Faster R-CNN detector: extractor, RPN and head composed.

Shape shorthand: N batch, R' RoIs of the batch, R detections of one image,
L foreground classes (the head predicts L + 1 with 0 = background).
"""
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from model.region_proposal_network import per_image, roi_counts
from model.roi_head import RoIPooler
from model.utils.bbox_tools import loc2bbox
from model.utils.layers import full_precision
from model.utils.preprocess import RESIZES, preprocess
from model.utils.suppression import SUPPRESSIONS, suppress

PRESETS = {
    'visualize': dict(nms_thresh=0.3, score_thresh=0.7,
                      detections_per_image=None),
    'evaluate': dict(nms_thresh=0.3, score_thresh=0.05,
                     detections_per_image=None),
}

# What the state dict records of the input's preprocessing.
PREPROCESSING = ('min_size', 'max_size', 'caffe_pretrain', 'resize',
                 'size_divisible')


class FasterRCNN(nn.Module):
    """Faster R-CNN: features, region proposals, and per-RoI classification.

    The parts come in through the constructor and may be anything that
    honours these interfaces:

    * **extractor**: ``(N, 3, H, W) -> (N, C, H / s, W / s)`` features (or
      a list of maps, finest first, for a pyramid).
    * **rpn**: ``rpn(features, img_size, scale) -> (rpn_locs, rpn_scores,
      rois, roi_indices, anchor)`` as
      :class:`model.region_proposal_network.RegionProposalNetwork`, with a
      ``feat_stride`` attribute (s; a pyramid's RPN: its levels' strides).
    * **head**: ``head(features, rois, roi_indices) -> (roi_cls_locs
      (R', (L + 1) * 4), roi_scores (R', L + 1))``, in this order, with an
      ``n_class`` (L + 1) attribute; RoIs come as ``(y_min, x_min, y_max,
      x_max)`` in input pixels (:class:`model.roi_head.RoIPooler` pools
      them).

    The model knows its input's preprocessing; :meth:`detect` applies it and
    the state dict records it.

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
        resize ({'skimage', 'bilinear'}): Preprocessing: the original's
            resize (scikit-image; boxes mapped back by one scale) or
            torchvision's (torch's bilinear interpolation after the
            normalization; boxes suppressed in the input's pixels, then
            mapped back on each axis). See :mod:`model.utils.preprocess`.
        size_divisible (int): Pad the input at the bottom and right to a
            multiple of this.
        suppression ({'per_class', 'batched'}): One ``nms`` per class (the
            original's) or torchvision's ``batched_nms`` (see
            :func:`model.utils.suppression.suppress`).
        presets (dict): The thresholds of each preset, default
            :data:`PRESETS`; :meth:`use_preset` picks one.
        min_det_size (float): Drop detections less high or wide than this,
            in input pixels (torchvision's 0.01).
        loc_clip (float): Clamp the head's size offsets to at most this
            (torchvision's ``log(1000 / 16)``); None: no clamp.
    """

    def __init__(self, extractor, rpn, head,
                 loc_normalize_mean=(0., 0., 0., 0.),
                 loc_normalize_std=(0.1, 0.1, 0.2, 0.2),
                 min_size=600, max_size=1000, caffe_pretrain=False,
                 resize='skimage', size_divisible=1, suppression='per_class',
                 presets=None, min_det_size=0., loc_clip=None):
        super().__init__()
        _check_part(rpn, 'rpn', 'feat_stride', "the extractor's stride in "
                    'input pixels')
        _check_part(head, 'head', 'n_class', 'the number of classes it '
                    'predicts, background included')
        for name, value, choices in (('suppression', suppression,
                                      SUPPRESSIONS),
                                     ('resize', resize, RESIZES)):
            if value not in choices:
                raise ValueError('{} must be one of {}, got {!r}'.format(
                    name, choices, value))
        self.extractor = extractor
        self.rpn = rpn
        self.head = head
        self.loc_normalize_mean = loc_normalize_mean
        self.loc_normalize_std = loc_normalize_std
        self.min_size = min_size
        self.max_size = max_size
        self.caffe_pretrain = caffe_pretrain
        self.resize = resize
        self.size_divisible = size_divisible
        self.suppression = suppression
        self.presets = {name: dict(dict(detections_per_image=None), **values)
                        for name, values in (presets or PRESETS).items()}
        self.min_det_size = min_det_size
        self.loc_clip = loc_clip
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
        features, _, _, rois, roi_indices, _ = self.propose(x, scale,
                                                            img_sizes)
        roi_cls_locs, roi_scores = full_precision(
            *self.head(features, rois, roi_indices))
        check_head_output(self.head, roi_cls_locs, roi_scores, rois.shape[0])
        return roi_cls_locs, roi_scores, rois, roi_indices

    def propose(self, x, scale=1., img_sizes=None):
        """Features and the RPN's outputs (arguments as :meth:`forward`).

        The images are padded to a multiple of ``size_divisible`` first.

        Returns:
            tuple: the features, then the RPN's ``rpn_locs``,
            ``rpn_scores``, ``rois``, ``roi_indices`` and ``anchor``.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError('FasterRCNN expects images x of shape (N, 3, H, '
                             'W), got {}'.format(tuple(x.shape)))
        if img_sizes is None:
            img_sizes = tuple(x.shape[2:])
        img_sizes, scales = per_image(img_sizes, scale, len(x))
        x = pad(x, self.size_divisible)
        check_img_sizes(img_sizes, tuple(x.shape[2:]),
                        self.rpn.feat_stride)
        features = self.extractor(x)
        check_stride(features, tuple(x.shape[2:]), self.rpn.feat_stride)
        return (features, *self.rpn(features, _shared_or_each(img_sizes),
                                    _shared_or_each(scales)))

    def use_preset(self, preset):
        """Sets the thresholds of :meth:`detect` and :meth:`predict`.

        Args:
            preset (str): One of ``presets``: by default 'visualize' keeps
                scores above 0.7, 'evaluate' above 0.05; both suppress at
                IoU 0.3.
        """
        if preset not in self.presets:
            raise ValueError('preset must be one of {}, got {!r}'.format(
                sorted(self.presets), preset))
        self.preset = preset
        for key, value in self.presets[preset].items():
            setattr(self, key, value)

    @torch.no_grad()
    def detect(self, imgs):
        """Detects objects in raw images, with the current preset.

        Args:
            imgs (sequence of arrays): N images, each :math:`(3, H, W)`, RGB,
                values in [0, 255] (numpy arrays or tensors), of any sizes.

        Returns:
            list of N dicts of tensors on the model's device: ``boxes``
            :math:`(R, 4)`, each ``(y_min, x_min, y_max, x_max)`` in the
            input image's pixels; ``labels`` :math:`(R,)` int64 in
            :math:`[0, L - 1]`; ``scores`` :math:`(R,)`. The detections are
            grouped by class in class order, each class by descending score.
        """
        for i, img in enumerate(imgs):
            _check_image(img, i)
        sizes = [tuple(img.shape[1:]) for img in imgs]
        inputs = [self._prepare(img, i) for i, img in enumerate(imgs)]
        return [dict(boxes=bbox, labels=label, scores=score)
                for bbox, label, score in self._detect(inputs, sizes)]

    @torch.no_grad()
    def predict(self, imgs, sizes=None, visualize=False):
        """Detects objects in images, as numpy arrays.

        With ``visualize=True`` the images are raw (see :meth:`detect`) and
        the 'visualize' preset is used for this call. With
        ``visualize=False`` the images are preprocessed already and
        ``sizes`` gives their original sizes, as evaluation passes them.
        The model is left in the mode and preset it had.

        Args:
            imgs (sequence of arrays): N images, each :math:`(3, H, W)`.
            sizes (sequence of (H, W)): Original sizes; required when
                ``visualize=False``.
            visualize (bool): Whether ``imgs`` are raw images.

        Returns:
            (list, list, list), N numpy arrays each: bboxes :math:`(R, 4)`
            float32, each ``(y_min, x_min, y_max, x_max)`` in the original
            image's pixels; labels :math:`(R,)` int32 in
            :math:`[0, L - 1]`; scores :math:`(R,)` float32.
        """
        preset = {key: getattr(self, key)
                  for key in ('preset', *self.presets[self.preset])}
        try:
            if visualize:
                self.use_preset('visualize')
                results = [(d['boxes'], d['labels'], d['scores'])
                           for d in self.detect(imgs)]
            else:
                for i, img in enumerate(imgs):
                    _check_image(img, i)
                if sizes is None or len(sizes) != len(imgs):
                    raise ValueError(
                        'predict(visualize=False) needs sizes, the (H, W) of '
                        'each original image, one per image')
                _warn_if_raw(imgs)
                results = self._detect(imgs, sizes)
        finally:
            for key, value in preset.items():
                setattr(self, key, value)
        bboxes, labels, scores = [], [], []
        for bbox, label, score in results:
            dtype = torch.promote_types(torch.promote_types(
                bbox.dtype, score.dtype), torch.float32)
            out = torch.cat((bbox.to(dtype), score[:, None].to(dtype),
                             label[:, None].to(dtype)),
                            dim=1).cpu().numpy()  # one transfer per image
            bboxes.append(out[:, :4].astype(np.float32))
            scores.append(out[:, 4].astype(np.float32))
            labels.append(out[:, 5].astype(np.int32))
        return bboxes, labels, scores

    def _prepare(self, img, i):
        """Raw image ``i`` (3, H, W) in [0, 255] as the network's input."""
        if not torch.is_tensor(img) and np.issubdtype(img.dtype, np.floating) \
                and img.size and 0 < img.max() <= 1:
            # (an all-black image, max 0, is a real image in [0, 255])
            warnings.warn(
                'predict expects images with values in [0, 255] (as '
                'read_image gives them); image {} has values in [0, 1], so '
                'few objects will be found: multiply it by 255'.format(i))
        if self.resize == 'bilinear':
            img = torch.as_tensor(img, device=self._device())
        elif torch.is_tensor(img):
            img = img.detach().cpu().numpy()
        out = preprocess(img, self.min_size, self.max_size,
                         self.caffe_pretrain, self.resize)
        stride = max(_strides(self.rpn.feat_stride))
        if min(out.shape[1:]) < stride:
            raise ValueError(
                'image {} of size {}x{} is {}x{} once resized for the model '
                '(shorter side to {}, longer at most {}), smaller than one '
                'feature stride ({} px) on a side'.format(
                    i, *img.shape[1:], *out.shape[1:], self.min_size,
                    self.max_size, stride))
        return out

    def _device(self):
        return next(self.parameters()).device

    def _detect(self, imgs, sizes):
        """Detections of preprocessed images, in eval mode; the images of
        one size go through :meth:`detections` together (never padded to
        another's size, so that each gets what it gets alone)."""
        was_training = self.training
        self.eval()
        try:
            groups = {}
            for i, img in enumerate(imgs):
                groups.setdefault(tuple(img.shape), []).append(i)
            results = [None] * len(imgs)
            for group in groups.values():
                x = torch.stack([torch.as_tensor(imgs[i], dtype=torch.float32,
                                                 device=self._device())
                                 for i in group])
                for i, result in zip(group, self.detections(
                        x, [sizes[i] for i in group])):
                    results[i] = result
            return results
        finally:
            self.train(was_training)

    def detections(self, x, sizes):
        """The tensor path from preprocessed images to detections; what
        :mod:`model.export` records.

        Args:
            x (torch.Tensor): :math:`(N, 3, H, W)` preprocessed images.
            sizes (sequence or torch.Tensor): N original ``(H, W)`` sizes.

        Returns:
            list of N (bbox, label, score) tuples of tensors, as the dicts
            of :meth:`detect`.
        """
        input_size = tuple(x.shape[2:])
        scales = [x.shape[3] / size[1] for size in sizes]
        roi_cls_locs, roi_scores, rois, roi_indices = self(
            x, scale=scales[0] if len(x) == 1 else scales)
        counts = roi_counts(roi_indices, len(x))
        return [self._postprocess(*args, size, input_size)
                for args, size in zip(zip(
                    roi_cls_locs.split(counts), roi_scores.split(counts),
                    rois.split(counts), scales), sizes)]

    def _postprocess(self, roi_cls_loc, roi_score, roi, scale, size,
                     input_size):
        """One image's detections from the head's outputs on its RoIs.

        With ``resize='skimage'`` (the original's) the RoIs are scaled back
        to the image first and everything happens in its pixels; with
        ``'bilinear'`` (torchvision's) the boxes are decoded, clipped and
        suppressed in the input's pixels, then scaled back on each axis.

        Args:
            roi_cls_loc (torch.Tensor): :math:`(R', (L + 1) \\times 4)`.
            roi_score (torch.Tensor): :math:`(R', L + 1)`.
            roi (torch.Tensor): :math:`(R', 4)` in input pixels.
            scale (float): Input width over original width.
            size (tuple of ints): ``(H, W)`` of the original image.
            input_size (tuple of ints): ``(H, W)`` of the input image.

        Returns:
            (bbox (R, 4), label (R,), score (R,)) tensors.
        """
        clip_size = input_size
        if self.resize == 'skimage':
            roi, clip_size = roi / scale, size
        n_class = self.n_class
        mean = roi.new_tensor(self.loc_normalize_mean).repeat(n_class)
        std = roi.new_tensor(self.loc_normalize_std).repeat(n_class)
        loc = (roi_cls_loc * std + mean).view(-1, 4)
        if self.loc_clip is not None:
            loc = torch.cat((loc[:, :2], loc[:, 2:].clamp(
                max=self.loc_clip)), dim=1)
        roi = roi.view(-1, 1, 4).expand(-1, n_class, 4).reshape(-1, 4)
        cls_bbox = _clip(loc2bbox(roi, loc), clip_size)
        bbox, label, score = suppress(
            cls_bbox.view(-1, n_class * 4), F.softmax(roi_score, dim=1),
            self.score_thresh, self.nms_thresh, self.suppression,
            self.min_det_size, self.detections_per_image)
        if self.resize == 'bilinear':
            bbox = bbox * _ratios(size, input_size, bbox)
        return bbox, label, score

    def get_extra_state(self):
        # Settings without weights: the preprocessing, and the head's RoI
        # op, so that a checkpoint says how it was trained.
        state = {k: getattr(self, k) for k in PREPROCESSING}
        roi = getattr(self.head, 'roi', None)
        if isinstance(roi, RoIPooler):
            state.update(roi.settings)
        return state

    def set_extra_state(self, state):
        # A setting the state does not give keeps this model's value.
        for key in PREPROCESSING:
            setattr(self, key, state.get(key, getattr(self, key)))

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """Loads weights, saying plainly when they belong to another model;
        nothing is copied then.

        A state dict without preprocessing settings (one saved by the
        original design) keeps this model's settings.

        Raises:
            ValueError: if a tensor's shape differs from this model's, as
                when the checkpoint was trained for another number of
                classes; if (with ``strict``) the tensors are another
                model's, as another backbone's; or if the checkpoint's head
                pooled its RoIs otherwise (RoIPool or RoIAlign).
        """
        state_dict = dict(state_dict)
        state_dict.setdefault('_extra_state', self.get_extra_state())
        _check_roi_settings(state_dict['_extra_state'],
                            self.get_extra_state())
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


def pad(x, size_divisible):
    """``x`` (N, C, H, W) zero-padded at the bottom and right to a multiple
    of ``size_divisible``."""
    if size_divisible == 1:
        return x
    h, w = x.shape[2:]
    return F.pad(x, (0, -w % size_divisible, 0, -h % size_divisible))


def _clip(bbox, size):
    """Boxes (R, 4) clipped to an image of ``size`` (H, W): numbers, or in a
    recording a tensor."""
    if torch.is_tensor(size):
        return torch.minimum(bbox.clamp(min=0), size.to(bbox)[[0, 1, 0, 1]])
    return torch.stack((bbox[:, 0].clamp(0, size[0]),
                        bbox[:, 1].clamp(0, size[1]),
                        bbox[:, 2].clamp(0, size[0]),
                        bbox[:, 3].clamp(0, size[1])), dim=1)


def _ratios(size, input_size, like):
    """Original over input size per axis, in float32 as torchvision maps
    boxes back: (4,) ``(ratio_y, ratio_x, ratio_y, ratio_x)``."""
    def scalar(value):
        if torch.is_tensor(value):
            return value.to(torch.float32)
        return torch.scalar_tensor(value, dtype=torch.float32,
                                   device=like.device)
    ratio_y = scalar(size[0]) / scalar(input_size[0])
    ratio_x = scalar(size[1]) / scalar(input_size[1])
    return torch.stack((ratio_y, ratio_x, ratio_y, ratio_x)).to(like)


def _shared_or_each(values):
    """``values[0]`` if every value equals it, else the list: what a batch
    passes to an RPN, so that one written for a single ``(H, W)`` and
    scale keeps working on batches of equal images."""
    values = list(values)
    if len(values) == 1 or all(v is values[0] or (not torch.is_tensor(v)
                                                  and v == values[0])
                               for v in values):
        return values[0]
    return values


def _strides(feat_stride):
    """An RPN's ``feat_stride`` as a tuple: one stride, or a pyramid's."""
    return tuple(feat_stride) if isinstance(feat_stride, (tuple, list)) \
        else (feat_stride,)


def _check_part(part, name, attribute, meaning):
    if not hasattr(part, attribute):
        raise ValueError('FasterRCNN: the {} ({}) has no attribute {!r} '
                         '({})'.format(name, type(part).__name__, attribute,
                                       meaning))


def check_stride(features, img_size, feat_stride):
    """Raises ValueError unless ``features`` (N, C, h, w) are ``feat_stride``
    times smaller than an image of ``img_size`` (H, W), rounding either
    way: the anchors are laid ``feat_stride`` pixels apart. A pyramid's
    maps are checked against its strides in order."""
    if not isinstance(features, torch.Tensor):
        for level, stride in zip(features, feat_stride):
            check_stride(level, img_size, stride)
        return
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
    feature stride (the coarsest, for a pyramid) on a side."""
    stride = max(_strides(feat_stride))
    for i, size in enumerate(img_sizes):
        if size[0] > batch_size[0] or size[1] > batch_size[1]:
            raise ValueError(
                'img_sizes[{}] is {}x{}, larger than the batch of images '
                '({}x{}) it is padded into'.format(i, *size, *batch_size))
        if min(size) < stride:
            raise ValueError(
                'image of size {}x{} is smaller than one feature stride ({} '
                'px) on a side'.format(*size, stride))


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


def _check_roi_settings(saved, own):
    """Raises ValueError if a state dict's head pooled otherwise than this
    model's does. A state dict that records no RoI op (one from before the
    option, or the original design's) was trained with RoIPool."""
    def settings(state):
        if state.get('roi_op', 'pool') == 'pool':
            return dict(roi_op='pool')
        return {k: state.get(k) for k in ('roi_op', 'sampling_ratio',
                                          'aligned')}

    if 'roi_op' not in own or settings(saved) == settings(own):
        return
    raise ValueError(
        'checkpoint does not fit this model: its head was trained with {} '
        'and this model pools with {}; build the model with roi_op={!r}, or '
        'rebuild the checkpoint\'s detector with model.load_detector'.format(
            _describe_roi(settings(saved)), _describe_roi(settings(own)),
            settings(saved)))


def _describe_roi(settings):
    if settings['roi_op'] == 'pool':
        return 'RoIPool'
    return 'RoIAlign (sampling_ratio={}, aligned={})'.format(
        settings['sampling_ratio'], settings['aligned'])


def _warn_if_raw(imgs):
    """Warns once when ``predict(visualize=False)`` is handed raw images:
    a normalized input has negative values and none far above 10."""
    for img in imgs:
        if not (img.numel() if torch.is_tensor(img) else img.size):
            continue
        low, high = float(img.min()), float(img.max())
        if low >= 0 and high > 10:
            warnings.warn(
                'predict(imgs, sizes) expects preprocessed images (as '
                'model.utils.preprocess.preprocess gives them), but these '
                'look raw (values in [0, {:.0f}]): pass raw images with '
                'predict(imgs, visualize=True) or detect(imgs)'.format(high))
            return


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
