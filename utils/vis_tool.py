"""Pictures of boxes on images, and a visdom dashboard that training can do without.

Boxes are ``(y_min, x_min, y_max, x_max)`` in pixels of their image; images
are CHW, RGB, in [0, 255]. R is the number of boxes.

Pictures meant for visdom are drawn on their own Agg canvas, so they render
without a display and without changing the pyplot backend (a notebook that
imports this module keeps showing its figures inline).
"""

import contextlib
import io
import logging
import socket
import sys
import time
import warnings
from urllib.parse import urlparse

import numpy as np
import visdom
from matplotlib import colormaps
from matplotlib import pyplot as plot
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.transforms import offset_copy

from utils.array_tool import tonumpy

# The visdom client logs notices about features the Visualizer does not use
# (the incoming socket, a new HTTP session); only its errors are worth showing.
logging.getLogger('visdom').setLevel(logging.ERROR)

# One colour per class, indexed by label and cycled past 20 classes: tab20's
# ten strong colours (tab10's) first, then its ten light ones.
PALETTE = (colormaps['tab20'].colors[0::2]
           + colormaps['tab20'].colors[1::2])
# Colour of the background label, -1 ('bg'): in no class's colour.
BG_COLOR = (0., 0., 0.)
# Caption font size as a fraction of the image's height in the figure.
CAPTION_FRACTION = 1 / 24
# Space around a caption's text, as a fraction of its font size.
CAPTION_PAD = 0.2
# Opacity of a caption's ground.
CAPTION_ALPHA = 0.8


def vis_image(img, ax=None):
    """Draw a color image.

    Args:
        img (numpy.ndarray): An array of shape (3, H, W), RGB, values in
            [0, 255] (clipped to that range before drawing).
        ax (matplotlib.axes.Axes): Axes to draw on. If :obj:`None`
            (default), a new pyplot figure is created.

    Returns:
        matplotlib.axes.Axes: The axes drawn on.
    """
    if ax is None:
        ax = plot.figure().add_subplot(1, 1, 1)
    # CHW -> HWC
    img = np.clip(img.transpose((1, 2, 0)), 0, 255)
    ax.imshow(img.astype(np.uint8))
    return ax


def label_color(label):
    """Return the colour boxes of a class are drawn in.

    Args:
        label (int): A class index; -1 is the background ('bg').

    Returns:
        tuple: RGB in [0, 1]: ``PALETTE[label % len(PALETTE)]``, the same
        for a class in every picture; ``BG_COLOR`` for -1.
    """
    if label < 0:
        return BG_COLOR
    return PALETTE[label % len(PALETTE)]


def _text_color(color):
    """Black on a light background colour, white on a dark one."""
    r, g, b = color[:3]
    return 'black' if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else 'white'


def _caption_fontsize(ax):
    """Return the caption font size, in points, for the image on ``ax``.

    It is ``CAPTION_FRACTION`` of the image's height in the figure: the
    height in pixels of the axes' extent (once the image's aspect ratio is
    applied), over the figure's dpi.
    """
    ax.apply_aspect()
    return ax.bbox.height * CAPTION_FRACTION * 72. / ax.figure.dpi


def _add_caption(ax, caption, x_min, y_min, color, fontsize):
    """Write ``caption`` on a ``color`` ground at a box's top-left corner.

    The caption sits above the box, left-aligned with it. Where it does not
    fit above (the box touches the image's top) it goes inside the box,
    under its top edge; where it would run off the image's right edge it
    is aligned to that edge instead. Positions are in data coordinates with
    a pad in points, so the caption stays inside if the figure is saved at
    another dpi.

    Args:
        ax (matplotlib.axes.Axes): Axes holding the image.
        caption (str): The text.
        x_min, y_min (float): The box's top-left corner, in image pixels.
        color (tuple): RGB in [0, 1] of the ground.
        fontsize (float): In points.

    Returns:
        matplotlib.text.Text: The caption.
    """
    pad = CAPTION_PAD * fontsize  # points, on each side of the text
    (left, right), (bottom, top) = ax.get_xlim(), ax.get_ylim()  # y is down
    x = min(max(x_min, left), right)
    y = min(max(y_min, top), bottom)
    text = ax.text(x, y, caption, fontsize=fontsize, color=_text_color(color),
                   ha='left', va='bottom',
                   bbox={'facecolor': color, 'edgecolor': 'none',
                         'alpha': CAPTION_ALPHA, 'pad': pad})
    # Measured in display pixels; the text's size does not depend on where
    # it is.
    extent = text.get_window_extent()
    pad_px = pad * ax.figure.dpi / 72.
    corner_x, corner_y = ax.transData.transform((x, y))
    right_px, top_px = ax.transData.transform((right, top))
    dx, dy = pad, pad
    if top_px - corner_y < extent.height + 2 * pad_px:
        text.set_verticalalignment('top')
        dy = -pad
    if corner_x + extent.width + 2 * pad_px > right_px:
        text.set_horizontalalignment('right')
        text.set_x(right)
        dx = -pad
    text.set_transform(offset_copy(ax.transData, fig=ax.figure, x=dx, y=dy,
                                   units='points'))
    return text


def vis_bbox(img, bbox, label=None, score=None, ax=None, label_names=None,
             score_thresh=None):
    """Draw boxes, with class names and scores, on an image.

    Each class has its colour (:func:`label_color`), used for its boxes and
    the ground of their captions. Captions are sized to the image as the
    axes show it (``CAPTION_FRACTION`` of its height) and kept inside it.
    The size follows the axes' extent at the time of the call: lay out the
    figure (``subplots_adjust``, ``add_axes``) before drawing.

    Args:
        img (numpy.ndarray): An array of shape (3, H, W), RGB, values in
            [0, 255].
        bbox (numpy.ndarray): An array of shape (R, 4), each row
            ``(y_min, x_min, y_max, x_max)`` in pixels of ``img``.
        label (numpy.ndarray): Integer array of shape (R,), class indices
            into ``label_names``; -1 is drawn as 'bg'. Optional: without
            it every box has the colour of class 0.
        score (numpy.ndarray): Array of shape (R,) of confidences, drawn
            with two decimals. Optional.
        ax (matplotlib.axes.Axes): Axes to draw on. If :obj:`None`
            (default), a new pyplot figure is created.
        label_names (sequence of str): Class names indexed by label
            (``model.load_detector`` returns those a checkpoint records).
            None: the label numbers are drawn.
        score_thresh (float): The score the detections were kept above.
            With no box, "no detection above <score_thresh>" is written on
            the image. None (default): nothing is written.

    Returns:
        matplotlib.axes.Axes: The axes drawn on.

    Raises:
        ValueError: If ``bbox`` is not of shape (R, 4), ``label`` or
            ``score`` has not R entries, or a label has no name.
    """
    if label_names is None:
        names = [str(i) for i in range(max(map(int, label), default=-1) + 1)
                 ] if label is not None else []
    else:
        names = list(label_names)
    names.append('bg')  # so that label -1 reads 'bg'
    bbox = np.asarray(bbox)
    if len(bbox) and (bbox.ndim != 2 or bbox.shape[1] != 4):
        raise ValueError('bbox must have shape (R, 4), got {}.'
                         .format(bbox.shape))
    if label is not None and len(label) != len(bbox):
        raise ValueError('label must have one entry per box ({}), got {}.'
                         .format(len(bbox), len(label)))
    if score is not None and len(score) != len(bbox):
        raise ValueError('score must have one entry per box ({}), got {}.'
                         .format(len(bbox), len(score)))

    ax = vis_image(img, ax=ax)
    fontsize = _caption_fontsize(ax)
    if score_thresh is not None and not len(bbox):
        ax.text(0.5, 0.5, 'no detection above {:.2f}'.format(score_thresh),
                transform=ax.transAxes, ha='center', va='center',
                fontsize=fontsize,
                bbox={'facecolor': 'white', 'edgecolor': 'none',
                      'alpha': CAPTION_ALPHA, 'pad': CAPTION_PAD * fontsize})
    for i, bb in enumerate(bbox):
        lb = 0 if label is None else int(label[i])
        if label is not None and not -1 <= lb < len(names) - 1:
            raise ValueError('label {} has no name: label_names holds {} '
                             'names.'.format(lb, len(names) - 1))
        color = label_color(lb)
        xy = (bb[1], bb[0])
        height = bb[2] - bb[0]
        width = bb[3] - bb[1]
        ax.add_patch(Rectangle(
            xy, width, height, fill=False, edgecolor=color, linewidth=2))

        caption = []
        if label is not None:
            caption.append(names[lb])
        if score is not None:
            caption.append('{:.2f}'.format(score[i]))
        if caption:
            _add_caption(ax, ': '.join(caption), bb[1], bb[0], color,
                         fontsize)
    return ax


def vis_gt_and_pred(img, gt_bbox, gt_label, pred_bbox, pred_label,
                    pred_score, label_names=None, score_thresh=None,
                    fig=None):
    """Draw the ground truth beside the predictions on one image.

    Two panels without axes: the left titled 'ground truth', the right
    'predictions', each drawn by :func:`vis_bbox` (a class has the same
    colour in both).

    Args:
        img (numpy.ndarray): An array of shape (3, H, W), RGB, values in
            [0, 255].
        gt_bbox (numpy.ndarray): An array of shape (R, 4), each row
            ``(y_min, x_min, y_max, x_max)`` in pixels of ``img``.
        gt_label (numpy.ndarray): Integer array of shape (R,).
        pred_bbox (numpy.ndarray): An array of shape (R', 4), each row
            ``(y_min, x_min, y_max, x_max)`` in pixels of ``img``.
        pred_label (numpy.ndarray): Integer array of shape (R',).
        pred_score (numpy.ndarray): Array of shape (R',).
        label_names (sequence of str): Class names indexed by label; None:
            label numbers.
        score_thresh (float): The score the predictions were kept above,
            written on the right panel when there is none (see
            :func:`vis_bbox`). Optional.
        fig (matplotlib.figure.Figure or matplotlib.figure.SubFigure):
            Where to draw: a figure, or one of its subfigures (a row of a
            larger picture). If :obj:`None` (default), a new 9.6 x 4 inch
            figure on its own Agg canvas (no pyplot figure is opened).

    Returns:
        matplotlib.figure.Figure: ``fig``, or the new figure.
    """
    if fig is None:
        fig = Figure(figsize=(9.6, 4.))
        FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1, 2, left=0.01, right=0.99, bottom=0.01,
                            top=0.92, wspace=0.04)
    panels = (('ground truth', gt_bbox, gt_label, None, None),
              ('predictions', pred_bbox, pred_label, pred_score,
               score_thresh))
    for spec, (title, bbox, label, score, thresh) in zip(grid, panels):
        ax = fig.add_subplot(spec)
        ax.axis('off')
        ax.set_title(title)
        vis_bbox(img, bbox, label, score, ax=ax, label_names=label_names,
                 score_thresh=thresh)
    return fig


def draw_test_predictions(faster_rcnn, db, label_names, path, score_thresh,
                          n=4):
    """Draws the ground truth beside the predictions (at the 'visualize'
    preset) of the first ``n`` images of a dataset into a PNG, one row per
    image.

    Args:
        faster_rcnn (FasterRCNN): The detector.
        db: A dataset with ``get_example(i) -> (img, bbox, label, ...)``.
        label_names (sequence of str): The class names.
        path (str): The PNG to write.
        score_thresh (float): The visualize preset's threshold, said in a
            picture without detections.
        n (int): How many images.

    Returns:
        str: ``path``.
    """
    n = min(n, len(db))
    fig = Figure(figsize=(8, 3.3 * max(n, 1)))
    FigureCanvasAgg(fig)
    rows = fig.subfigures(n, 1, squeeze=False)[:, 0] if n else []
    for i, row in enumerate(rows):
        img, gt_bbox, gt_label = db.get_example(i)[:3]
        bboxes, labels, scores = faster_rcnn.predict([img], visualize=True)
        vis_gt_and_pred(img, gt_bbox, gt_label, bboxes[0], labels[0],
                        scores[0], label_names=label_names,
                        score_thresh=score_thresh, fig=row)
    fig.savefig(path)
    return path


def fig2data(fig):
    """Render a figure to an RGBA array.

    Args:
        fig (matplotlib.figure.Figure): The figure. One without an Agg
            canvas gets one.

    Returns:
        numpy.ndarray: A uint8 array of shape (H, W, 4), RGBA, H and W the
        figure's size in pixels.
    """
    if not hasattr(fig.canvas, 'buffer_rgba'):
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    return np.array(fig.canvas.buffer_rgba())


def fig4vis(fig):
    """Render a figure to an image for visdom, and close it.

    Args:
        fig (matplotlib.figure.Figure or matplotlib.axes.Axes): The figure,
            or axes on it (such as :func:`vis_bbox` returns).

    Returns:
        numpy.ndarray: A float array of shape (3, H, W), RGB, values in
        [0, 1].
    """
    fig = fig.get_figure()
    img_data = fig2data(fig)
    plot.close(fig)
    # HWC -> CHW
    return img_data[:, :, :3].transpose((2, 0, 1)) / 255.


def visdom_bbox(img, bbox, label=None, score=None, label_names=None,
                score_thresh=None):
    """Draw boxes on an image (see :func:`vis_bbox`) into a visdom picture.

    Args:
        img (numpy.ndarray): An array of shape (3, H, W), RGB, in [0, 255].
        bbox (numpy.ndarray): An array of shape (R, 4), each row
            ``(y_min, x_min, y_max, x_max)``.
        label (numpy.ndarray): Integer array of shape (R,). Optional.
        score (numpy.ndarray): Array of shape (R,). Optional.
        label_names (sequence of str): Class names indexed by label; None:
            label numbers.
        score_thresh (float): With no box, "no detection above
            <score_thresh>" is written. Optional.

    Returns:
        numpy.ndarray: The picture, a float array of shape (3, 480, 640),
        RGB, values in [0, 1].
    """
    fig = Figure()
    FigureCanvasAgg(fig)
    ax = vis_bbox(img, bbox, label, score, ax=fig.add_subplot(1, 1, 1),
                  label_names=label_names, score_thresh=score_thresh)
    return fig4vis(ax)


def _server_reachable(server, port, timeout=1.):
    """Tell whether something accepts connections at ``server:port``.

    Args:
        server (str): URL of the server, such as 'http://localhost'.
        port (int): Its port.
        timeout (float): Seconds to wait for a connection.

    Returns:
        bool: True if a TCP connection could be opened.
    """
    url = urlparse(server if '://' in server else 'http://' + server)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


class Visualizer(object):
    """Training dashboard on visdom: line plots, images and a text log.

    With no server reachable it says so once and its drawing methods do
    nothing (the plot indices and the log still advance, so that
    :meth:`state_dict` stays meaningful). The same holds if the server
    stops answering later. Other visdom client methods (``line``,
    ``scatter``, ...) pass through to the client.

    Args:
        env (str): Visdom environment to draw in.
        port (int): Port of the visdom server.
        server (str): URL of the visdom server.
        **kwargs: Further arguments of :class:`visdom.Visdom`.
    """

    def __init__(self, env='default', port=8097, server='http://localhost',
                 **kwargs):
        self._vis_kw = dict(kwargs, port=port, server=server)
        self._warned = False
        # plot name -> number of values plotted so far (the x of the next)
        self.index = {}
        self.log_text = ''
        self.reinit(env)

    def reinit(self, env='default', **kwargs):
        """Connect anew, to another environment or with other arguments.

        Args:
            env (str): Visdom environment to draw in.
            **kwargs: Arguments of :class:`visdom.Visdom` replacing those
                given so far.

        Returns:
            Visualizer: This visualizer.
        """
        self._vis_kw.update(kwargs)
        self.connected = _server_reachable(self._vis_kw['server'],
                                           self._vis_kw['port'])
        if self.connected:
            try:
                self.vis = self._client(env, send=True)
            except ConnectionError:
                self.connected = False
        if not self.connected:
            # A client that does not send accepts every call and does nothing.
            self.vis = self._client(env, send=False)
            self._say_once('visdom server not reachable at {}:{}; training '
                           'goes on without plots (start one with `python -m '
                           'visdom.server`).')
        return self

    def plot_many(self, d):
        """Append one value to each of several line plots.

        Args:
            d (dict): Plot names mapped to values, e.g. ``{'loss': 0.11}``;
                :obj:`None` values are skipped.
        """
        for k, v in d.items():
            if v is not None:
                self.plot(k, v)

    def img_many(self, d):
        """Show several images.

        Args:
            d (dict): Window names mapped to images (see :meth:`img`).
        """
        for k, v in d.items():
            self.img(k, v)

    def plot(self, name, y, **kwargs):
        """Append one value to the line plot ``name``.

        Args:
            name (str): Plot (and window) name, e.g. 'loss'.
            y (float): The value; its x is the number of values before it.
            **kwargs: Further arguments of :meth:`visdom.Visdom.line`.
        """
        x = self.index.get(name, 0)
        self._draw(self.vis.line, Y=np.array([y]), X=np.array([x]), win=name,
                   opts=dict(title=name),
                   update=None if x == 0 else 'append', **kwargs)
        self.index[name] = x + 1

    def img(self, name, img_, **kwargs):
        """Show an image, or a grid of images, in window ``name``.

        Args:
            name (str): Window name.
            img_ (numpy.ndarray or torch.Tensor): Shape (H, W), (3, H, W),
                (N, 1, H, W) or (N, 3, H, W); floats in [0, 1] or [0, 255].
            **kwargs: Further arguments of :meth:`visdom.Visdom.images`
                (such as ``nrow``).
        """
        img_ = np.asarray(tonumpy(img_), dtype=np.float32)
        self._draw(self.vis.images, img_, win=name, opts=dict(title=name),
                   **kwargs)

    def log(self, info, win='log_text'):
        """Append a time-stamped line to the text log and show the log.

        Args:
            info: What to log (a dict of losses, a message, ...).
            win (str): Window name.
        """
        self.log_text += '[{time}] {info} <br>'.format(
            time=time.strftime('%m%d_%H%M%S'), info=info)
        self.text(self.log_text, win)

    def text(self, text, win):
        """Show a text in window ``win``, replacing its content.

        Args:
            text (str): The text (HTML).
            win (str): Window name.
        """
        self._draw(self.vis.text, text, win=win)

    def state_dict(self):
        """Return what a checkpoint needs to continue the plots and the log.

        Returns:
            dict: Keys 'index', 'vis_kw', 'log_text' and 'env'.
        """
        return {
            'index': dict(self.index),
            'vis_kw': dict(self._vis_kw),
            'log_text': self.log_text,
            'env': self.vis.env,
        }

    def load_state_dict(self, d):
        """Continue the plots and the log of a :meth:`state_dict`.

        The server this visualizer was given is kept; the environment is
        the saved one.

        Args:
            d (dict): As returned by :meth:`state_dict`.

        Returns:
            Visualizer: This visualizer.
        """
        self.index = dict(d.get('index', {}))
        self.log_text = d.get('log_text', '')
        env = d.get('env', self.vis.env)
        if env != self.vis.env:
            self.reinit(env)
        return self

    def __getattr__(self, name):
        # Called only for names not found on the Visualizer itself.
        if name == 'vis':  # not set yet: do not recurse
            raise AttributeError(name)
        return getattr(self.vis, name)

    def _client(self, env, send):
        """Return a visdom client for ``env``; it posts only if ``send``."""
        with warnings.catch_warnings():
            # visdom 0.2.4 calls the deprecated logger.warn to note that
            # there is no incoming socket, which the Visualizer never uses.
            warnings.simplefilter('ignore', DeprecationWarning)
            return visdom.Visdom(**dict(
                self._vis_kw, env=env, send=send, use_incoming_socket=False,
                raise_exceptions=True))

    def _draw(self, method, *args, **kwargs):
        """Call a drawing method of the client unless the server is gone."""
        if not self.connected:
            return
        try:
            # The client prints its own connection errors; the one line
            # said below replaces them.
            with contextlib.redirect_stdout(io.StringIO()):
                method(*args, **kwargs)
        except ConnectionError:
            self.connected = False
            self._say_once('visdom server at {}:{} stopped answering; '
                           'training goes on without plots.')

    def _say_once(self, message):
        """Print ``message`` (formatted with server and port) the first time."""
        if not self._warned:
            self._warned = True
            print(message.format(self._vis_kw['server'], self._vis_kw['port']),
                  file=sys.stderr)
