"""utils/vis_tool.py: box pictures, and the visdom Visualizer with and
without a server.

Pictures are drawn on Agg canvases and read back as pixels. Two tests use a
real visdom server on localhost (conftest's ``visdom_server``).
"""

import warnings

import numpy as np
import pytest
import torch
from matplotlib import pyplot as plot
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from conftest import free_port, stop, window_data
from utils.vis_tool import (BG_COLOR, PALETTE, Visualizer, fig2data, fig4vis,
                            label_color, vis_bbox, vis_gt_and_pred,
                            visdom_bbox)

def gray_image(height=120, width=160):
    """A (3, H, W) mid-gray RGB image in [0, 255]."""
    return np.full((3, height, width), 128., dtype=np.float32)


def color_pixels(picture, color, tol=2 / 255):
    """Count the pixels of a (3, H, W) picture in [0, 1] of RGB ``color``."""
    near = np.abs(picture - np.asarray(color)[:, None, None]) <= tol
    return int(np.sum(near.all(axis=0)))


def image_sized_axes(height, width, dpi=100):
    """Axes filling an Agg figure of the image's size, as predict.py draws."""
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig.add_axes((0, 0, 1, 1))


def default_axes():
    """One subplot of a default 640x480 Agg figure, as visdom_bbox draws."""
    fig = Figure()
    FigureCanvasAgg(fig)
    return fig.add_subplot(1, 1, 1)


def left_edge_color(rgba, ax, bb):
    """The RGB (0-255) of the left edge of box ``bb``, ``(y_min, x_min,
    y_max, x_max)``, on the gray image, below the part a caption may cover.

    ``rgba`` is the drawn figure (fig2data). Across the edge, the line's
    core is the pixel least mixed with the gray (anti-aliasing blends its
    sides); the median over 20 rows is returned.
    """
    y_min, x_min, y_max, _ = bb
    ys = np.linspace(y_min + 0.4 * (y_max - y_min), y_max - 2, 20)
    disp = ax.transData.transform(np.stack([np.full_like(ys, x_min), ys], 1))
    rows = rgba.shape[0] - 1 - np.floor(disp[:, 1]).astype(int)
    cols = np.floor(disp[:, :1]).astype(int) + np.arange(-2, 3)
    across = rgba[rows[:, None], cols, :3].astype(float)  # (20, 5, 3)
    core = np.abs(across - 128.).sum(axis=2).argmax(axis=1)
    return np.median(across[np.arange(len(rows)), core], axis=0)


def test_visdom_bbox_draws_boxes_into_a_chw_picture():
    bbox = np.array([[10., 20., 60., 100.], [70., 30., 110., 150.]],
                    dtype=np.float32)
    picture = visdom_bbox(gray_image(), bbox, np.array([0, 14]),
                          np.array([0.9, 0.75]))
    plain = visdom_bbox(gray_image(), np.zeros((0, 4), dtype=np.float32))

    assert picture.shape == (3, 480, 640)
    assert picture.dtype == np.float64
    assert 0. <= picture.min() and picture.max() <= 1.
    for k in (0, 14):  # each box in its class's colour
        assert color_pixels(plain, label_color(k)) == 0
        assert color_pixels(picture, label_color(k)) > 100


def test_visdom_bbox_does_not_leave_pyplot_figures_open():
    before = plot.get_fignums()
    visdom_bbox(gray_image(), np.array([[10., 20., 60., 100.]]))
    assert plot.get_fignums() == before


def test_vis_bbox_captions_use_the_given_label_names():
    fig = Figure()
    ax = fig.add_subplot(1, 1, 1)
    bbox = np.array([[10., 20., 60., 100.], [70., 30., 110., 150.]])
    vis_bbox(gray_image(), bbox, np.array([1, -1]), np.array([0.9, 0.25]),
             ax=ax, label_names=('circle', 'square'))
    assert [t.get_text() for t in ax.texts] == ['square: 0.90', 'bg: 0.25']
    assert len(ax.patches) == 2


def test_vis_bbox_without_names_draws_the_label_numbers():
    # not VOC's names: a toy box of label 1 is no "bicycle"
    ax = vis_bbox(gray_image(), np.array([[10., 20., 60., 100.],
                                          [1., 2., 30., 40.]]),
                  np.array([14, -1]), np.array([0.5, 0.25]))
    assert [t.get_text() for t in ax.texts] == ['14: 0.50', 'bg: 0.25']
    plot.close(ax.get_figure())


@pytest.mark.parametrize('kwargs, message', [
    (dict(bbox=np.zeros((2, 3))), 'shape'),
    (dict(label=np.array([0])), 'label'),
    (dict(score=np.array([0.5])), 'score'),
    (dict(label=np.array([0, 20]), label_names=tuple('abcdefghijklmnopqrst')),
     'label 20 has no name'),
])
def test_vis_bbox_rejects_bad_input(kwargs, message):
    arguments = dict(bbox=np.array([[10., 20., 60., 100.], [1., 2., 3., 4.]]))
    arguments.update(kwargs)
    fig = Figure()
    with pytest.raises(ValueError, match=message):
        vis_bbox(gray_image(), ax=fig.add_subplot(1, 1, 1), **arguments)


def test_label_colors_are_fixed_per_class_and_cycle_past_the_palette():
    assert len(set(PALETTE)) == len(PALETTE) == 20
    assert [label_color(k) for k in range(20)] == list(PALETTE)
    assert label_color(20) == label_color(0)
    assert label_color(79) == label_color(19)
    assert label_color(-1) == BG_COLOR not in PALETTE


def test_vis_bbox_draws_each_class_in_its_colour():
    bbox = np.array([[20., 10., 110., 90.],     # class 1
                     [20., 120., 110., 200.],   # class 2
                     [130., 10., 230., 90.],    # class 1 again
                     [130., 220., 230., 300.]])  # background
    label = np.array([1, 2, 1, -1])
    ax = image_sized_axes(240, 320)
    vis_bbox(gray_image(240, 320), bbox, label, np.array([.9, .8, .7, .6]),
             ax=ax, label_names=('a', 'b', 'c'))
    rgba = fig2data(ax.get_figure())
    colors = [left_edge_color(rgba, ax, bb) for bb in bbox]

    expected = [np.array(label_color(lb)) * 255 for lb in label]
    for color, want in zip(colors, expected):
        np.testing.assert_allclose(color, want, atol=1.5)
    assert np.abs(colors[0] - colors[1]).max() > 50  # two classes differ
    np.testing.assert_array_equal(colors[0], colors[2])  # one class, twice
    # the captions' grounds have their box's colour
    for text, lb in zip(ax.texts, label):
        ground = text.get_bbox_patch().get_facecolor()
        assert ground[:3] == pytest.approx(label_color(lb))

    # a class keeps its colour in another picture, with other classes
    other = image_sized_axes(240, 320)
    vis_bbox(gray_image(240, 320), bbox[[2, 1]], np.array([1, 0]), ax=other)
    rgba = fig2data(other.get_figure())
    np.testing.assert_array_equal(left_edge_color(rgba, other, bbox[2]),
                                  colors[0])
    np.testing.assert_allclose(left_edge_color(rgba, other, bbox[1]),
                               np.array(label_color(0)) * 255, atol=1.5)


def test_vis_bbox_without_labels_draws_every_box_in_one_colour():
    ax = image_sized_axes(240, 320)
    bbox = np.array([[20., 10., 110., 90.], [20., 120., 110., 200.]])
    vis_bbox(gray_image(240, 320), bbox, score=np.array([0.9, 0.8]), ax=ax)
    rgba = fig2data(ax.get_figure())
    for bb in bbox:
        np.testing.assert_allclose(left_edge_color(rgba, ax, bb),
                                   np.array(label_color(0)) * 255, atol=1.5)
    assert [t.get_text() for t in ax.texts] == ['0.90', '0.80']


# Boxes at the corners and along the edges of a 240x320 image, with the
# longest VOC name: above them there is no room, to their right neither.
EDGE_BOXES = np.array([
    [0., 0., 80., 100.],       # top-left corner
    [0., 200., 60., 319.],     # top-right corner
    [160., 250., 239., 319.],  # bottom-right corner
    [170., 0., 239., 60.],     # bottom-left corner
    [0., 0., 239., 319.],      # the whole image
    [100., 300., 140., 319.],  # thin, on the right edge
    [3., 120., 50., 160.],     # 3 pixels under the top
])


@pytest.mark.parametrize('make_axes', [
    lambda: image_sized_axes(240, 320),  # predict.py's picture
    lambda: image_sized_axes(240, 320, dpi=50),
    default_axes,  # visdom_bbox's
])
def test_vis_bbox_keeps_every_caption_inside_the_image(make_axes):
    ax = make_axes()
    n = len(EDGE_BOXES)
    vis_bbox(gray_image(240, 320), EDGE_BOXES, np.full(n, 1),
             np.full(n, 0.99), ax=ax, label_names=('x', 'pottedplant'))
    fig = ax.get_figure()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    image = ax.get_window_extent(renderer)
    assert len(ax.texts) == n
    for text, bb in zip(ax.texts, EDGE_BOXES):
        for extent in (text.get_window_extent(renderer),
                       text.get_bbox_patch().get_window_extent(renderer)):
            assert image.x0 - 0.5 <= extent.x0 and extent.x1 <= image.x1 + 0.5
            assert image.y0 - 0.5 <= extent.y0 and extent.y1 <= image.y1 + 0.5


def caption_extent(ax, bb, name='pottedplant'):
    """Draw box ``bb`` on a 240x320 image in ``ax``; return the drawn box's
    top-left corner and its caption's ground, in display pixels."""
    vis_bbox(gray_image(240, 320), bb[None], np.array([1]), ax=ax,
             label_names=('x', name))
    fig = ax.get_figure()
    fig.canvas.draw()
    ground = ax.texts[0].get_bbox_patch().get_window_extent(
        fig.canvas.get_renderer())
    return ax.transData.transform((bb[1], bb[0])), ground


def test_a_caption_goes_inside_the_box_exactly_when_it_has_no_room_above():
    # One image pixel is one display pixel, and the image's top is at
    # y = -0.5: a caption whose ground is ``need`` high fits above a box
    # with y_min = need - 0.5, and not above one a hundredth higher.
    _, ground = caption_extent(image_sized_axes(240, 320),
                               np.array([100., 20., 200., 120.]))
    need = ground.height
    for room, above in ((need, True), (need - 0.01, False)):
        bb = np.array([room - 0.5, 20., 200., 120.])
        (corner_x, corner_y), ground = caption_extent(
            image_sized_axes(240, 320), bb)
        if above:
            assert ground.y0 == pytest.approx(corner_y, abs=1e-6)
            assert ground.y1 == pytest.approx(240., abs=1e-6)
        else:
            assert ground.y1 == pytest.approx(corner_y, abs=1e-6)
        # left-aligned with the box either way
        assert ground.x0 == pytest.approx(corner_x, abs=1e-6)


def test_a_caption_moves_left_exactly_when_it_would_leave_the_image():
    # The image's right edge is at x = 319.5, 320 display pixels.
    _, ground = caption_extent(image_sized_axes(240, 320),
                               np.array([100., 20., 200., 120.]))
    need = ground.width
    for x_min, fits in ((319.5 - need, True), (319.5 - need + 0.01, False)):
        bb = np.array([100., x_min, 200., 319.])
        (corner_x, _), ground = caption_extent(image_sized_axes(240, 320), bb)
        if fits:
            assert ground.x0 == pytest.approx(corner_x, abs=1e-6)
            assert ground.x1 == pytest.approx(320., abs=1e-6)
        else:
            assert ground.x1 == pytest.approx(320., abs=1e-6)
            assert ground.x0 < corner_x


def caption_height(ax, height, width):
    """The height in display pixels of one caption on a (height, width)
    image drawn in ``ax``."""
    vis_bbox(gray_image(height, width), np.array([[height / 2, 0., height,
                                                   width / 2]]),
             np.array([0]), np.array([0.5]), ax=ax)
    fig = ax.get_figure()
    fig.canvas.draw()
    return ax.texts[0].get_window_extent(fig.canvas.get_renderer()).height


def test_caption_size_follows_the_image_size_in_the_figure():
    small = caption_height(image_sized_axes(240, 320), 240, 320)
    large = caption_height(image_sized_axes(960, 1280), 960, 1280)
    assert 240 / 40 < small < 240 / 12
    assert large == pytest.approx(4 * small, rel=0.1)
    # the same pixels at half the dpi: the font's points double, its pixels
    # stay
    assert caption_height(image_sized_axes(240, 320, dpi=50), 240, 320
                          ) == pytest.approx(small, rel=0.1)
    # what counts is the image's size in the figure, not in its own pixels:
    # in visdom_bbox's 640x480 figure both images are shown alike
    assert caption_height(default_axes(), 240, 320) == pytest.approx(
        caption_height(default_axes(), 960, 1280), rel=0.02)
    # a tall image is shown as high as the axes, a wide one lower: the
    # caption follows the image's height, not the axes'
    assert caption_height(default_axes(), 100, 1000) < 0.5 * caption_height(
        default_axes(), 240, 320)


def test_vis_bbox_says_when_there_is_no_detection():
    empty = np.zeros((0, 4), dtype=np.float32)
    ax = image_sized_axes(240, 320)
    vis_bbox(gray_image(240, 320), empty, np.zeros(0, np.int64), np.zeros(0),
             ax=ax, label_names=('x',), score_thresh=0.7)
    assert [t.get_text() for t in ax.texts] == ['no detection above 0.70']
    fig = ax.get_figure()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    image = ax.get_window_extent(renderer)
    extent = ax.texts[0].get_bbox_patch().get_window_extent(renderer)
    assert image.x0 < extent.x0 and extent.x1 < image.x1
    assert image.y0 < extent.y0 and extent.y1 < image.y1

    # the threshold given, with two decimals
    ax = default_axes()
    vis_bbox(gray_image(), empty, score_thresh=0.05, ax=ax)
    assert [t.get_text() for t in ax.texts] == ['no detection above 0.05']
    # without a threshold, or with a box, nothing is said
    ax = default_axes()
    vis_bbox(gray_image(), empty, ax=ax)
    assert len(ax.texts) == 0
    ax = default_axes()
    vis_bbox(gray_image(), np.array([[10., 20., 60., 100.]]), ax=ax,
             score_thresh=0.7)
    assert len(ax.texts) == 0
    # and visdom_bbox passes it on
    plain = visdom_bbox(gray_image(), empty)
    said = visdom_bbox(gray_image(), empty, score_thresh=0.7)
    assert np.abs(said - plain).max() > 0.5


def panel_pixels(fig, ax):
    """The drawn figure's RGB (0-255) inside ``ax``'s image, top row first."""
    rgba = fig2data(fig.get_figure(root=True))
    extent = ax.get_window_extent()
    height = rgba.shape[0]
    rows = slice(int(np.ceil(height - extent.y1)),
                 int(np.floor(height - extent.y0)))
    cols = slice(int(np.ceil(extent.x0)), int(np.floor(extent.x1)))
    return rgba[rows, cols, :3].transpose(2, 0, 1) / 255.


def test_vis_gt_and_pred_draws_two_titled_panels():
    before = plot.get_fignums()
    gt_bbox = np.array([[10., 10., 60., 60.]])
    pred_bbox = np.array([[60., 90., 110., 150.]])
    fig = vis_gt_and_pred(gray_image(), gt_bbox, np.array([2]), pred_bbox,
                          np.array([5]), np.array([0.9]))
    assert plot.get_fignums() == before
    assert isinstance(fig.canvas, FigureCanvasAgg)
    gt_ax, pred_ax = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ['ground truth',
                                                   'predictions']
    assert [t.get_text() for t in gt_ax.texts] == ['2']
    assert [t.get_text() for t in pred_ax.texts] == ['5: 0.90']
    assert gt_ax.get_window_extent().x1 < pred_ax.get_window_extent().x0

    gt_pixels = panel_pixels(fig, gt_ax)
    pred_pixels = panel_pixels(fig, pred_ax)
    assert color_pixels(gt_pixels, label_color(2)) > 100
    assert color_pixels(gt_pixels, label_color(5)) == 0
    assert color_pixels(pred_pixels, label_color(5)) > 100
    assert color_pixels(pred_pixels, label_color(2)) == 0
    # each in its place on the image
    rgba = fig2data(fig)
    np.testing.assert_allclose(left_edge_color(rgba, gt_ax, gt_bbox[0]),
                               np.array(label_color(2)) * 255, atol=1.5)
    np.testing.assert_allclose(left_edge_color(rgba, pred_ax, pred_bbox[0]),
                               np.array(label_color(5)) * 255, atol=1.5)
    assert fig4vis(fig).shape == (3, 400, 960)


def test_vis_gt_and_pred_draws_rows_of_a_larger_figure():
    # as a picture of several test images: one subfigure per image
    fig = Figure(figsize=(6, 5))
    FigureCanvasAgg(fig)
    rows = fig.subfigures(2, 1)
    empty = np.zeros((0, 4))
    for row, n_pred in zip(rows, (1, 0)):
        assert vis_gt_and_pred(
            gray_image(), np.array([[10., 10., 60., 60.]]), np.array([2]),
            np.array([[60., 90., 110., 150.]])[:n_pred] if n_pred else empty,
            np.array([5])[:n_pred], np.array([0.9])[:n_pred],
            label_names=tuple('abcdef'), score_thresh=0.7, fig=row) is row
    assert [ax.get_title() for ax in fig.axes] == [
        'ground truth', 'predictions'] * 2
    assert [[t.get_text() for t in ax.texts] for ax in fig.axes] == [
        ['c'], ['f: 0.90'], ['c'], ['no detection above 0.70']]
    top, bottom = rows
    assert (top.axes[0].get_window_extent().y0
            > bottom.axes[0].get_window_extent().y1)
    assert fig2data(fig).shape == (500, 600, 4)


def test_fig2data_gives_rgba_of_the_figure_size():
    fig = Figure(figsize=(2, 1), dpi=50)
    data = fig2data(fig)
    assert data.shape == (50, 100, 4)
    assert data.dtype == np.uint8
    assert (data[..., 3] == 255).all()


def test_fig4vis_takes_a_figure_or_its_axes():
    fig = Figure(figsize=(2, 1), dpi=50)
    assert fig4vis(fig).shape == (3, 50, 100)
    assert fig4vis(fig.add_subplot(1, 1, 1)).shape == (3, 50, 100)


def use_every_drawing_method(vis):
    """Call each drawing method of a Visualizer once or twice."""
    vis.plot('loss', 1.5)
    vis.plot_many({'loss': 1.0, 'rpn_loc_loss': 0.5, 'skipped': None})
    vis.img('gt_img', visdom_bbox(gray_image(), np.array([[10., 20., 60., 100.]]),
                                  np.array([3])))
    vis.img_many({'roi_cm': torch.eye(21)})
    vis.text('[[1, 2], [3, 4]]', win='rpn_cm')
    vis.log({'loss': 1.0, 'lr': 1e-3})


def test_visualizer_without_server_says_so_once_and_keeps_going(capfd):
    port = free_port()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        vis = Visualizer(env='no-server', port=port)
        assert not vis.connected
        use_every_drawing_method(vis)
        use_every_drawing_method(vis)
        vis.load_state_dict(dict(vis.state_dict(), env='other'))
        vis.reinit('no-server')

    out, err = capfd.readouterr()
    lines = (out + err).splitlines()
    assert lines == ['visdom server not reachable at http://localhost:{}; '
                     'training goes on without plots (start one with '
                     '`python -m visdom.server`).'.format(port)]
    assert [str(w.message) for w in caught] == []
    assert vis.index == {'loss': 4, 'rpn_loc_loss': 2}
    assert vis.log_text.count('<br>') == 2


def test_visualizer_state_dict_round_trip():
    vis = Visualizer(env='first', port=free_port())
    vis.plot('loss', 1.)
    vis.log('epoch 1')
    state = vis.state_dict()

    restored = Visualizer(env='second', port=free_port())
    restored.load_state_dict(state)
    assert restored.env == 'first'
    assert restored.index == {'loss': 1}
    assert restored.log_text == vis.log_text
    restored.plot('loss', 2.)
    assert vis.index == {'loss': 1}


def test_visualizer_windows_arrive_at_a_real_server(visdom_server, capfd):
    _, port = visdom_server
    env = 'faster-rcnn-test'
    vis = Visualizer(env=env, port=port)
    assert vis.connected

    vis.plot('total_loss', 1.5)
    vis.plot('total_loss', 0.75)
    vis.img('pred_img', visdom_bbox(
        gray_image(), np.array([[10., 20., 60., 100.]]), np.array([3]),
        np.array([0.8])))
    roi_cm = torch.zeros(21, 21)
    roi_cm[torch.arange(21), torch.arange(21)] = 1.
    vis.img('roi_cm', roi_cm)
    vis.text('[[90, 10], [5, 95]]', win='rpn_cm')
    vis.log('epoch 0, map 0.5')

    for win in ('total_loss', 'pred_img', 'roi_cm', 'rpn_cm', 'log_text'):
        assert vis.win_exists(win, env) is True, win
    assert vis.win_exists('never_drawn', env) is False

    loss = window_data(vis, 'total_loss', env)
    assert loss['type'] == 'plot'
    assert loss['content']['data'][0]['y'] == [1.5, 0.75]
    for win in ('pred_img', 'roi_cm'):
        picture = window_data(vis, win, env)
        assert picture['type'] == 'image'
        assert picture['content']['src'].startswith('data:image/png;base64,')
    assert window_data(vis, 'pred_img', env)['width'] == 640
    assert window_data(vis, 'roi_cm', env)['width'] == 21
    assert window_data(vis, 'rpn_cm', env)['content'] == '[[90, 10], [5, 95]]'
    assert 'epoch 0, map 0.5' in window_data(vis, 'log_text', env)['content']

    out, err = capfd.readouterr()
    assert 'visdom server' not in out + err


def test_visualizer_says_once_when_the_server_goes_away(visdom_server, capfd):
    server, port = visdom_server
    vis = Visualizer(env='goes-away', port=port)
    vis.plot('loss', 1.)
    assert vis.connected
    stop(server)

    use_every_drawing_method(vis)
    use_every_drawing_method(vis)

    assert not vis.connected
    out, err = capfd.readouterr()
    assert (out + err).splitlines() == [
        'visdom server at http://localhost:{} stopped answering; training '
        'goes on without plots.'.format(port)]
    assert vis.index['loss'] == 5
