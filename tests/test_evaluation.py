"""utils.evaluation.evaluate: the stop check it is given, and test_num."""
import pytest
from torch.utils.data import DataLoader

from data import dataset
from data.sampler import collate_test, eval_batches
from data.synthetic import TOY_LABEL_NAMES, generate_voc
from test_distributed import toy_model, toy_options
from utils.evaluation import evaluate


@pytest.fixture(scope='module')
def testset(tmp_path_factory):
    data_dir = generate_voc(str(tmp_path_factory.mktemp('toy')), n_images=5,
                            img_size=128, max_obj_size=60, test_fraction=1,
                            seed=3)
    return dataset.TestDataset(toy_options(data_dir),
                               label_names=TOY_LABEL_NAMES)


class Stop(Exception):
    pass


def test_the_stop_check_runs_before_each_batch_and_can_stop(testset):
    loader = DataLoader(testset, collate_fn=collate_test,
                        batch_sampler=eval_batches(5, 2, 0, 1))
    calls = []
    result = evaluate(loader, toy_model(), check_stop=lambda: calls.append(1))
    assert len(calls) == len(loader) == 3  # batches of 2, 2 and 1
    assert 0 <= result['map'] <= 1

    def stop_at_the_second():
        calls.append(1)
        if len(calls) == 5:
            raise Stop
    with pytest.raises(Stop):
        evaluate(loader, toy_model(), check_stop=stop_at_the_second)


def test_test_num_scores_the_first_images_only(testset):
    model = toy_model()
    first_three = evaluate(DataLoader(testset, batch_size=1), model,
                           test_num=3)
    want = evaluate(DataLoader([testset[i] for i in range(3)], batch_size=1),
                    model)
    assert first_three['map'] == want['map']
    # the test bites: all five score otherwise
    assert evaluate(DataLoader(testset, batch_size=1), model)['map'] != \
        want['map']
