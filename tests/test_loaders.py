"""data/loaders.py: the class names train.py trains on, from --data and
--label-names. (The checks of the names against the data and the loaders
themselves are run through train.py, in test_train.py.)"""
import pytest

import train
from data.loaders import label_names_of
from data.synthetic import TOY_LABEL_NAMES


def test_label_names_option(tmp_path):
    path = tmp_path / 'labels.txt'
    path.write_text('apple\n\npear \n')
    assert label_names_of('voc', str(path)) == ('apple', 'pear')
    assert label_names_of('voc', ('apple', 'pear')) == ('apple', 'pear')
    assert label_names_of('toy') == TOY_LABEL_NAMES
    with pytest.raises(train.UsageError, match='is not a file; expected a '
                       'text file with one class name per line'):
        label_names_of('voc', str(tmp_path / 'nope.txt'))
    with pytest.raises(train.UsageError, match='name each class once'):
        label_names_of('voc', ('apple', 'apple'))
