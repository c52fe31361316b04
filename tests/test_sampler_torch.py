"""sampler='torch' in the target creators: torch's RNG on the device of
the inputs instead of numpy's global RNG. The samples differ from the
original's; the counts, the candidates and the offsets do not."""
import numpy as np
import pytest
import torch

from model.utils import creator_tool
from model.utils.bbox_tools import bbox_iou
from model.utils.creator_tool import AnchorTargetCreator, ProposalTargetCreator
from test_creator_tool import make_case, make_rois

SEEDS = range(20)


def anchor_case(seed, device):
    _, img_size, anchor, bbox, _ = make_case(seed)
    return (torch.from_numpy(bbox).to(device),
            torch.from_numpy(anchor).to(device), img_size)


def proposal_case(seed, device):
    rng, img_size, _, bbox, label = make_case(seed)
    roi = make_rois(rng, img_size, bbox)
    return [torch.from_numpy(a).to(device) for a in (roi, bbox, label)]


@pytest.mark.parametrize('seed', SEEDS)
def test_anchor_target_counts_and_candidates(seed, device):
    bbox, anchor, img_size = anchor_case(seed, device)
    np_loc, np_label = AnchorTargetCreator()(bbox, anchor, img_size)
    loc, label = AnchorTargetCreator(sampler='torch')(bbox, anchor, img_size)
    assert label.device == device and label.dtype == torch.int32
    assert int((label == 1).sum()) == int((np_label == 1).sum())
    assert int((label == 0).sum()) == int((np_label == 0).sum())
    # the candidates: every label before any is dropped
    everything = AnchorTargetCreator(n_sample=10 ** 7)(bbox, anchor, img_size)[1]
    assert ((label == 1) <= (everything == 1)).all()
    assert ((label == 0) <= (everything == 0)).all()
    torch.testing.assert_close(loc, np_loc, rtol=0, atol=0)


@pytest.mark.parametrize('value', [1, 0])
def test_torch_subsample_keeps_n_of_the_candidates(value, device):
    """sampler='torch' drops all but n_keep of the labels equal to value,
    only among them, and n_keep may be a tensor on the device (nothing is
    read on the host)."""
    generator = np.random.RandomState(value)
    start = torch.from_numpy(generator.randint(-1, 2, 500).astype(np.int32))
    start = start.to(device)
    n_candidates = int((start == value).sum())
    for n_keep in (0, 1, 17, n_candidates - 1, n_candidates, 10 ** 6,
                   torch.tensor(40, device=device)):
        label = start.clone()
        creator_tool._subsample(label, value, n_keep, 'torch')
        assert int((label == value).sum()) == min(int(n_keep), n_candidates)
        # only candidates dropped, to -1; every other label untouched
        changed = label != start
        assert (start[changed] == value).all() and (label[changed] == -1).all()
    # every candidate can be kept: the draw is not biased to one end
    kept = torch.zeros(len(start), dtype=torch.bool, device=device)
    for seed in range(30):
        torch.manual_seed(seed)
        label = start.clone()
        creator_tool._subsample(label, value, 20, 'torch')
        kept |= label == value
    assert int(kept.sum()) > n_candidates // 2


@pytest.mark.parametrize('seed', SEEDS)
def test_proposal_target_counts_and_candidates(seed, device):
    roi, bbox, label = proposal_case(seed, device)
    creator = ProposalTargetCreator(sampler='torch')
    _, _, np_roi_label = ProposalTargetCreator()(roi, bbox, label)
    sample_roi, gt_roi_loc, gt_roi_label = creator(roi, bbox, label)
    assert sample_roi.device == device and gt_roi_label.device == device
    assert len(gt_roi_label) == len(np_roi_label)
    assert int((gt_roi_label > 0).sum()) == int((np_roi_label > 0).sum())
    assert int((gt_roi_label == 0).sum()) == int((np_roi_label == 0).sum())
    # positives first, as with numpy
    n_pos = int((gt_roi_label > 0).sum())
    assert (gt_roi_label[:n_pos] > 0).all()
    # every sample a proposal or a gt box, none twice (the RoIs are
    # distinct), each from its own candidates
    all_roi = torch.cat((roi, bbox))
    assert len(torch.unique(all_roi, dim=0)) == len(all_roi)
    assert (sample_roi[:, None] == all_roi[None]).all(dim=2).any(dim=1).all()
    assert len(torch.unique(sample_roi, dim=0)) == len(sample_roi)
    if len(bbox):
        max_iou = bbox_iou(sample_roi, bbox).max(dim=1)[0]
        assert (max_iou[:n_pos] >= creator.pos_iou_thresh).all()
        assert (max_iou[n_pos:] < creator.neg_iou_thresh_hi).all()


@pytest.mark.parametrize('n', [0, 1, 7, 300])
def test_random_ranking_puts_the_candidates_first_in_any_order(n, device):
    generator = np.random.RandomState(n)
    candidate = torch.from_numpy(generator.rand(n) < 0.3).to(device)
    n_candidate = int(candidate.sum())
    first = set()
    for seed in range(40):
        torch.manual_seed(seed)
        ranking = creator_tool._random_ranking(candidate)
        assert ranking.device == device
        assert sorted(ranking.tolist()) == list(range(n))  # a permutation
        assert candidate[ranking[:n_candidate]].all()
        assert not candidate[ranking[n_candidate:]].any()
        if n_candidate:
            first.add(int(ranking[0]))
    # many candidates come first in some draw: no end is favoured
    assert len(first) >= min(n_candidate, 10)


def test_candidates_by_hand(device):
    """Three positives and five negatives, two and one of them kept: the
    torch draws pick among exactly those."""
    creator = ProposalTargetCreator(n_sample=3, pos_ratio=0.5,
                                    sampler='torch')
    bbox = torch.tensor([[0., 0., 10., 10.]], device=device)
    near = torch.tensor([[0., 0., 10., 9.], [0., 0., 9., 10.]], device=device)
    far = torch.tensor([[20., 20., 30., 30.]], device=device) \
        + torch.arange(5., device=device)[:, None]
    roi = torch.cat((near, far))
    label = torch.tensor([4], device=device)
    for seed in range(10):
        torch.manual_seed(seed)
        sample_roi, _, gt_roi_label = creator(roi, bbox, label)
        assert gt_roi_label.tolist() == [5, 5, 0]
        candidates = torch.cat((near, bbox))
        assert (sample_roi[:2, None] == candidates[None]).all(2).any(1).all()
        assert not torch.equal(sample_roi[0], sample_roi[1])
        assert (sample_roi[2:, None] == far[None]).all(2).any(1).all()


def test_same_torch_seed_gives_the_same_samples(device):
    bbox, anchor, img_size = anchor_case(0, device)
    roi, gt_bbox, gt_label = proposal_case(0, device)
    anchor_creator = AnchorTargetCreator(sampler='torch')
    proposal_creator = ProposalTargetCreator(sampler='torch')
    outputs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outputs.append((anchor_creator(bbox, anchor, img_size)[1],
                        proposal_creator(roi, gt_bbox, gt_label)[0]))
    (label_a, roi_a), (label_b, roi_b), (label_c, roi_c) = outputs
    assert torch.equal(label_a, label_b) and torch.equal(roi_a, roi_b)
    assert not torch.equal(label_a, label_c)
    assert not torch.equal(roi_a, roi_c)


def test_torch_draw_leaves_numpys_rng_alone(device):
    bbox, anchor, img_size = anchor_case(0, device)
    roi, gt_bbox, gt_label = proposal_case(0, device)
    np.random.seed(3)
    before = np.random.get_state()
    AnchorTargetCreator(sampler='torch')(bbox, anchor, img_size)
    ProposalTargetCreator(sampler='torch')(roi, gt_bbox, gt_label)
    after = np.random.get_state()
    assert before[0] == after[0] and before[2:] == after[2:]
    np.testing.assert_array_equal(before[1], after[1])
    # while a numpy draw does move it
    AnchorTargetCreator()(bbox, anchor, img_size)
    assert not np.array_equal(np.random.get_state()[1], before[1])


def test_default_is_numpy():
    assert AnchorTargetCreator().sampler == 'numpy'
    assert ProposalTargetCreator().sampler == 'numpy'


@pytest.mark.parametrize('make', [AnchorTargetCreator, ProposalTargetCreator])
@pytest.mark.parametrize('sampler', ['Torch', 'np', 'cuda', None, 0])
def test_bad_sampler_is_a_value_error(make, sampler):
    with pytest.raises(ValueError, match="sampler must be one of 'numpy', "
                                         "'torch', got"):
        make(sampler=sampler)


# --------------------------------------------- the trainer and train.py

def test_trainer_builds_its_creators_with_the_sampler(make_tiny_faster_rcnn):
    from trainer import FasterRCNNTrainer
    model = make_tiny_faster_rcnn()
    trainer = FasterRCNNTrainer(model)
    assert trainer.anchor_target_creator.sampler == 'numpy'
    assert trainer.proposal_target_creator.sampler == 'numpy'
    trainer = FasterRCNNTrainer(model, sampler='torch')
    assert trainer.anchor_target_creator.sampler == 'torch'
    assert trainer.proposal_target_creator.sampler == 'torch'
    # creators handed in keep their own
    trainer = FasterRCNNTrainer(
        model, sampler='torch', anchor_target_creator=AnchorTargetCreator())
    assert trainer.anchor_target_creator.sampler == 'numpy'
    assert trainer.proposal_target_creator.sampler == 'torch'
    with pytest.raises(ValueError, match="sampler must be one of"):
        FasterRCNNTrainer(model, sampler='cupy')


def test_a_torch_sampled_step_on_the_device(make_tiny_faster_rcnn, device):
    """The regression batch with sampler='torch': the same number of
    anchors and RoIs sampled, finite losses on the device, repeatable under
    a torch seed, and numpy's RNG left alone."""
    from trainer import FasterRCNNTrainer
    from test_trainer_losses import regression_batch, tiny_model_for_regression
    model = tiny_model_for_regression(make_tiny_faster_rcnn).to(device)
    img, bbox, label = regression_batch()
    args = (img.to(device), torch.from_numpy(bbox)[None].to(device),
            torch.from_numpy(label)[None].to(device), 0.8)
    trainer = FasterRCNNTrainer(model, sampler='torch')
    np.random.seed(7)
    numpy_state = np.random.get_state()[1].copy()
    runs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        trainer.reset_meters()
        losses = trainer.forward(*args)
        for value in losses:
            assert value.device == device and torch.isfinite(value)
        assert trainer.rpn_cm.value().sum() == 256
        assert trainer.roi_cm.value().sum() == 128
        runs.append([v.item() for v in losses])
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_the_sampler_option_reaches_train_pys_creators():
    import train
    from utils.config import Config, UsageError
    config = Config()
    assert config.sampler == 'numpy'
    config._parse(dict(sampler='torch'))
    a, p = train.target_creators(config._state_dict())
    assert a.sampler == p.sampler == 'torch'
    with pytest.raises(UsageError, match="sampler must be one of"):
        train.target_creators(dict(config._state_dict(), sampler='gpu'))
