"""vis_tool: box pictures, and the visdom Visualizer with and without a server.

Two tests use a real visdom server on localhost (conftest's
``visdom_server``).
"""

import warnings

import numpy as np
import pytest
import torch
from matplotlib import pyplot as plot
from matplotlib.figure import Figure

from conftest import free_port, stop, window_data
from utils.vis_tool import (Visualizer, fig2data, fig4vis, vis_bbox,
                            visdom_bbox)

def gray_image(height=120, width=160):
    """A (3, H, W) mid-gray RGB image in [0, 255]."""
    return np.full((3, height, width), 128., dtype=np.float32)


def red_pixels(picture):
    """Count pure red pixels of a (3, H, W) picture in [0, 1]."""
    r, g, b = picture
    return int(np.sum((r > 0.9) & (g < 0.1) & (b < 0.1)))


def test_visdom_bbox_draws_boxes_into_a_chw_picture():
    bbox = np.array([[10., 20., 60., 100.], [70., 30., 110., 150.]],
                    dtype=np.float32)
    picture = visdom_bbox(gray_image(), bbox, np.array([0, 14]),
                          np.array([0.9, 0.75]))
    plain = visdom_bbox(gray_image(), np.zeros((0, 4), dtype=np.float32))

    assert picture.shape == (3, 480, 640)
    assert picture.dtype == np.float64
    assert 0. <= picture.min() and picture.max() <= 1.
    assert red_pixels(plain) == 0
    assert red_pixels(picture) > 100


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
