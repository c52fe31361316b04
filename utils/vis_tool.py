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
from matplotlib import pyplot as plot
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from utils.array_tool import tonumpy

# The visdom client logs notices about features the Visualizer does not use
# (the incoming socket, a new HTTP session); only its errors are worth showing.
logging.getLogger('visdom').setLevel(logging.ERROR)

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


def vis_bbox(img, bbox, label=None, score=None, ax=None, label_names=None):
    """Draw boxes, with class names and scores, on an image.

    Args:
        img (numpy.ndarray): An array of shape (3, H, W), RGB, values in
            [0, 255].
        bbox (numpy.ndarray): An array of shape (R, 4), each row
            ``(y_min, x_min, y_max, x_max)`` in pixels of ``img``.
        label (numpy.ndarray): Integer array of shape (R,), class indices
            into ``label_names``; -1 is drawn as 'bg'. Optional.
        score (numpy.ndarray): Array of shape (R,) of confidences, drawn
            with two decimals. Optional.
        ax (matplotlib.axes.Axes): Axes to draw on. If :obj:`None`
            (default), a new pyplot figure is created.
        label_names (sequence of str): Class names indexed by label
            (``model.load_detector`` returns those a checkpoint records).
            None: the label numbers are drawn.

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
    for i, bb in enumerate(bbox):
        xy = (bb[1], bb[0])
        height = bb[2] - bb[0]
        width = bb[3] - bb[1]
        ax.add_patch(Rectangle(
            xy, width, height, fill=False, edgecolor='red', linewidth=2))

        caption = []
        if label is not None:
            lb = int(label[i])
            if not -1 <= lb < len(names) - 1:
                raise ValueError('label {} has no name: label_names holds {} '
                                 'names.'.format(lb, len(names) - 1))
            caption.append(names[lb])
        if score is not None:
            caption.append('{:.2f}'.format(score[i]))
        if caption:
            ax.text(bb[1], bb[0], ': '.join(caption), style='italic',
                    bbox={'facecolor': 'white', 'alpha': 0.5, 'pad': 0})
    return ax


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


def visdom_bbox(img, bbox, label=None, score=None, label_names=None):
    """Draw boxes on an image (see :func:`vis_bbox`) into a visdom picture.

    Args:
        img (numpy.ndarray): An array of shape (3, H, W), RGB, in [0, 255].
        bbox (numpy.ndarray): An array of shape (R, 4), each row
            ``(y_min, x_min, y_max, x_max)``.
        label (numpy.ndarray): Integer array of shape (R,). Optional.
        score (numpy.ndarray): Array of shape (R,). Optional.
        label_names (sequence of str): Class names indexed by label; None:
            label numbers.

    Returns:
        numpy.ndarray: The picture, a float array of shape (3, 480, 640),
        RGB, values in [0, 1].
    """
    fig = Figure()
    FigureCanvasAgg(fig)
    ax = vis_bbox(img, bbox, label, score, ax=fig.add_subplot(1, 1, 1),
                  label_names=label_names)
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
