"""README.md: its code blocks, so that none can rot.

Python blocks run as a user's own script would: from another directory,
with the repository on PYTHONPATH as the README says, on a checkpoint of
the kind the quick start writes. Shell commands are checked as far as this
machine can run them: `python -m` modules and scripts exist, the caffe
converter runs on a file the test writes, and every `train.py` command's
options are options (the training itself needs VOC or a GPU; the quick
start's is run by the training tests).
"""
import os
import re
import shlex
import subprocess
import sys
from importlib.util import find_spec

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from model import FasterRCNNToy
from train import COMMANDS
from trainer import FasterRCNNTrainer
from utils.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, 'README.md')).read()
BLOCKS = re.findall(r'^ *```(\w+)\n(.*?)^ *```', README, re.M | re.S)
PYTHON_BLOCKS = [code for lang, code in BLOCKS if lang == 'python']
SHELL_LINES = [line.strip() for lang, code in BLOCKS if lang == 'bash'
               for line in code.replace('\\\n', ' ').splitlines()
               if line.strip()]


def commands(line):
    """The commands of a shell line, split at && and ;, without leading
    VAR=value assignments."""
    for part in re.split(r'&&|;', line):
        words = shlex.split(part)
        while words and re.match(r'^\w+=', words[0]):
            words = words[1:]
        if words:
            yield words


def test_readme_has_the_blocks_it_should():
    assert PYTHON_BLOCKS, 'no python block found'
    assert any('train.py train --data=toy' in line for line in SHELL_LINES)
    assert any('pytest tests' in line for line in SHELL_LINES)


@pytest.fixture
def user_dir(tmp_path):
    """A folder outside the repository holding what the snippets use: the
    quick start's kind of checkpoint (the toy model) and a photo."""
    torch.manual_seed(0)
    model = FasterRCNNToy(n_fg_class=5, min_size=256, max_size=256)
    config = dict(Config()._state_dict(), data='toy', min_size=256,
                  max_size=256)
    os.makedirs(str(tmp_path / 'checkpoints'))
    FasterRCNNTrainer(model, config=config,
                      label_names=('circle', 'square', 'triangle', 'cross',
                                   'ring')).save(
        save_path=str(tmp_path / 'checkpoints' / 'best.pth'))
    pixels = np.random.RandomState(0).randint(0, 255, (300, 400, 3))
    Image.fromarray(pixels.astype(np.uint8)).save(str(tmp_path / 'my.jpg'))
    return tmp_path


def export_as_the_readme_says(user_dir):
    """Runs the README's export command in ``user_dir`` (the ONNX block
    loads what it writes)."""
    line = next(line for line in SHELL_LINES
                if 'model.export' in line and 'model.onnx' in line)
    words = next(commands(line))
    result = subprocess.run([sys.executable] + words[1:], cwd=str(user_dir),
                            env=dict(os.environ, PYTHONPATH=ROOT),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow  # seconds, not minutes, but the quick suite leaves it out
@pytest.mark.parametrize('index', range(len(PYTHON_BLOCKS)))
def test_python_block_runs_from_another_directory(index, user_dir):
    if 'model.onnx' in PYTHON_BLOCKS[index]:
        export_as_the_readme_says(user_dir)
    script = user_dir / 'my_script.py'
    script.write_text(PYTHON_BLOCKS[index])
    env = dict(os.environ, PYTHONPATH=ROOT, MPLBACKEND='Agg')
    result = subprocess.run([sys.executable, str(script)], cwd=str(user_dir),
                            env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    if "savefig('my_detections.png')" in PYTHON_BLOCKS[index]:
        assert os.path.getsize(str(user_dir / 'my_detections.png')) > 0


def test_without_the_path_a_script_elsewhere_cannot_import(user_dir):
    # what the README's PYTHONPATH line is for
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    result = subprocess.run([sys.executable, '-c', 'import model'],
                            cwd=str(user_dir), env=env, capture_output=True,
                            text=True)
    assert "No module named 'model'" in result.stderr


def test_python_modules_and_scripts_of_shell_blocks_exist():
    for line in SHELL_LINES:
        for words in commands(line):
            if words[0] not in ('python', 'python3', 'torchrun'):
                continue
            if words[1:2] == ['-m']:
                module = words[2]
                if module not in ('venv', 'pip', 'pytest', 'visdom.server'):
                    assert find_spec(module) is not None, line
            else:
                script = next(w for w in words[1:] if not w.startswith('-'))
                if script != 'my_script.py':
                    assert os.path.isfile(os.path.join(ROOT, script)), line


def test_train_commands_use_only_real_options():
    options = Config()._state_dict()
    seen = 0
    for line in SHELL_LINES:
        for words in commands(line):
            if 'train.py' not in words:
                continue
            args = words[words.index('train.py') + 1:]
            assert args[0] in COMMANDS, line  # train, evaluate
            for arg in args[1:]:
                name = arg.lstrip('-').split('=')[0].replace('-', '_')
                assert name in options, (line, name)
            seen += 1
    assert seen >= 2


@pytest.mark.slow  # seconds, not minutes, but the quick suite leaves it out
def test_caffe_converter_command_runs(tmp_path):
    line = next(line for line in SHELL_LINES if 'convert_caffe_vgg16' in line)
    words = next(commands(line))
    src = next(w.split('=', 1)[1] for w in words if w.startswith('--src='))
    state = torchvision.models.vgg16().state_dict()
    moved = {k.replace('classifier.0.', 'classifier.1.')
              .replace('classifier.3.', 'classifier.4.'): v
             for k, v in state.items()}
    torch.save(moved, str(tmp_path / src))
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable] + words[1:], cwd=str(tmp_path),
                            env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    dst = next(w.split('=', 1)[1] for w in words if w.startswith('--dst='))
    torchvision.models.vgg16().load_state_dict(torch.load(
        str(tmp_path / dst)))
