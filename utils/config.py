"""Training options: one class holding every default, parsed from the command line.

``train.py`` hands the options given on its command line (through ``fire``) to
``opt._parse``; library code never reads ``opt`` but takes its settings as
constructor arguments (``utils/detectors.py`` maps the options to a
detector's). Each option's comment is its help text.
"""

import difflib
import inspect
import os
import re
import textwrap

from model.utils.command_line import UsageError  # noqa: F401 (train.py's)


class Config:
    """Every option of a training run, with its default.

    Options are class attributes: to add one, add an attribute with a
    one-line comment. ``_parse`` sets them on the instance and
    ``_state_dict`` lists them.
    """

    # data
    voc_data_dir = '/dataset/PASCAL2007/VOC2007/'  # VOC2007 root holding Annotations/, ImageSets/, JPEGImages/
    min_size = 600  # resize so that the shorter image side is this many pixels
    max_size = 1000  # ... unless the longer side would then exceed this many pixels
    resize = 'skimage'  # how images are resized: 'skimage' (the original's) or 'bilinear' (torchvision's detection transform)
    num_workers = min(8, os.cpu_count() or 1)  # data loader worker processes for training (8, or the number of cores if fewer)
    test_num_workers = min(8, os.cpu_count() or 1)  # data loader worker processes for evaluation (8, or the number of cores if fewer)

    # sigma of the smooth L1 losses
    rpn_sigma = 3.  # sigma of the RPN's box regression loss
    roi_sigma = 1.  # sigma of the RoI head's box regression loss

    # optimizer
    weight_decay = 0.0005  # L2 weight decay of the weights (biases get none)
    lr_decay = 0.1  # factor the learning rate is scaled by at lr_decay_epoch
    lr = 1e-3  # initial learning rate (biases get twice this)
    lr_decay_epoch = 9  # 0-based index of the epoch after which the best checkpoint is reloaded and lr scaled by lr_decay (9: after the 10th epoch, as the original's `if epoch == 9`)

    # visualization
    env = 'faster-rcnn'  # visdom environment the plots go to
    port = 8097  # port of the visdom server
    plot_every = 40  # plot losses and pictures every this many training steps

    # preset
    data = 'voc'  # dataset to train on: 'voc' (a VOC-layout folder, voc_data_dir), 'toy' (generated there on first use) or 'coco' (COCO-format JSON files, the coco_* options)
    label_names = None  # class names of a VOC-layout dataset in label order: a text file with one name per line, or the names separated by commas; None: VOC's 20 (the toy's 5 with --data=toy)
    coco_train_ann = None  # with --data=coco: the training set's annotations JSON (COCO format; its categories give the class names)
    coco_train_img = None  # with --data=coco: the directory the training JSON's file names are relative to
    coco_test_ann = None  # with --data=coco: the test set's annotations JSON, evaluated each epoch (same categories as the training set's)
    coco_test_img = None  # with --data=coco: the directory the test JSON's file names are relative to
    metric = 'voc07'  # test metric whose 'map' is logged each epoch and picks best.pth: 'voc07' (VOC 11-point AP at IoU 0.5), 'voc' (VOC area AP at IoU 0.5) or 'coco' (COCO AP at IoU 0.50:0.95)
    pretrained_model = 'vgg16'  # starting weights of the extractor: 'vgg16' (the backbone's own ImageNet weights, from torchvision's cache), or None (random init); the toy backbone has none

    # training
    epoch = 14  # number of training epochs
    use_adam = False  # use Adam instead of SGD with momentum
    use_drop = False  # use dropout in the RoI head's fully connected layers
    seed = None  # int: seed python's random, numpy and torch; None: do not seed
    device = None  # torch device to train on; None: CUDA when available, else CPU
    batch_size = 1  # training images per step (per process under torchrun), padded to the batch's largest; each image's losses are averaged, so scale --lr with it (linear rule: N times the lr for N images)
    test_batch_size = 1  # evaluation images per predict call (per process under torchrun)
    size_divisible = 1  # pad a training batch's height and width up to a multiple of this (1: to the largest image, so a batch of one is not padded)

    # evaluation
    test_num = 10000  # evaluate on at most this many test images

    # checkpoints
    load_path = None  # checkpoint whose model weights start the training
    resume = None  # checkpoint of an interrupted run to continue from
    out_dir = 'checkpoints'  # directory checkpoints, pictures and the training history (history.csv) are written to
    report_dir = None  # evaluate: write the evaluation report (metrics.json, report.md, pictures) to this directory

    caffe_pretrain = False  # use caffe pretrained VGG16 (BGR, 0-255 input) instead of torchvision's
    caffe_pretrain_path = 'checkpoints/vgg16_caffe.pth'  # file of the caffe pretrained VGG16 weights

    # choices of the other systems (README: "Choices of the other systems"); the defaults are this design's
    backbone = 'vgg16'  # 'vgg16' (fc6/fc7 head), 'resnet50' / 'resnet101' in C4 form (conv1..layer3 extract, layer4 heads the RoIs), 'resnet50_fpn' / 'resnet101_fpn' / 'mobilenet_v3_large_fpn' (with a feature pyramid), or 'toy' (the quick start's small extractor, for a CPU)
    roi_op = 'pool'  # the head's RoI op: 'pool' (RoIPool, this design's) or 'align' (RoIAlign, torchvision's and detectron2's)
    roi_sampling_ratio = 0  # RoIAlign's sample points per bin along each side; 0: adaptive (detectron2's; torchvision's Faster R-CNN uses 2)
    roi_aligned = True  # RoIAlign's half-cell shift, so that a feature cell sits at its pixels' centre (detectron2's ROIAlignV2; torchvision's Faster R-CNN: False)
    clobber_positives = False  # py-faster-rcnn's RPN_CLOBBER_POSITIVES: label RPN negatives after positives, so a gt box's best anchor below 0.3 IoU ends negative
    allowed_border = 0  # label the anchors reaching at most this many pixels outside the image (py-faster-rcnn's allowed_border); None: every anchor (torchvision)
    neg_iou_thresh_lo = 0.  # lower IoU bound of the head's negative RoIs (py-faster-rcnn's BG_THRESH_LO is 0.1)
    sampler = 'numpy'  # what draws the anchors' and RoIs' samples: 'numpy' (numpy's global RNG, the original's samples) or 'torch' (torch's RNG on the device, no host round trip; different samples)
    amp = None  # mixed precision: None (float32), 'bf16' or 'fp16' (with a gradient scaler) over the networks' layers; boxes, targets and losses stay float32

    def _parse(self, kwargs):
        """Set options.

        Args:
            kwargs (dict): Option names mapped to their new values.

        Raises:
            UsageError: If a name is not an option; nothing is set then.
        """
        state_dict = self._state_dict()
        for k in kwargs:
            if k not in state_dict:
                raise UsageError(_unknown_option_message(k, state_dict))
        for k, v in kwargs.items():
            setattr(self, k, v)

    def _state_dict(self):
        """Return every option with its current value.

        Returns:
            dict: Option names mapped to values, in declaration order.
        """
        names = [k for klass in reversed(type(self).__mro__)
                 for k in vars(klass) if not k.startswith('_')]
        return {k: getattr(self, k) for k in names}


def changed_options(config):
    """The options that differ from their defaults, as ``--name=value``
    flags on one line."""
    defaults = Config()._state_dict()
    return ' '.join('--{}={}'.format(k.replace('_', '-'), v)
                    for k, v in config._state_dict().items()
                    if v != defaults[k])


def option_help():
    """Each option's name, default and the comment that documents it in
    :class:`Config`'s source.

    Returns:
        list of (str, object, str)
    """
    defaults = Config()._state_dict()
    comments = dict(re.findall(r'^    (\w+) = .*?  # (.*)$',
                               inspect.getsource(Config), re.MULTILINE))
    return [(k, v, comments.get(k, '')) for k, v in defaults.items()]


def usage(prog, commands):
    """The help text of a command line: its commands, then every option
    with its default and its one-line description."""
    lines = ['usage: {} COMMAND [--option=value ...]'.format(prog), '',
             'commands:']
    lines += ['  {:<10} {}'.format(name, what)
              for name, what in commands.items()]
    lines += ['', 'options (--name=value or --name value; "-" and "_" '
              'alike):']
    for name, default, comment in option_help():
        lines.append('  --{}={}'.format(name.replace('_', '-'), default))
        lines += textwrap.wrap(comment, 76, initial_indent=' ' * 8,
                               subsequent_indent=' ' * 8)
    return '\n'.join(lines)


def _unknown_option_message(name, options):
    """'Unknown option "--epochs"; did you mean "--epoch"? Valid options
    are: ...'."""
    message = 'Unknown option "--{}"'.format(name)
    close = difflib.get_close_matches(name.replace('-', '_'), list(options),
                                      n=1)
    message += ('; did you mean "--{}"?'.format(close[0]) if close else '.')
    return message + ' Valid options are: {}.'.format(
        ', '.join('--' + k for k in options))


opt = Config()
