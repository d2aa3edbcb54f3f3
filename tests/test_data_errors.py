"""Hostile data stops a training run in one line naming the file and the
fix, never a traceback (issue 23: a COCO json nested 100,000 deep, or with
``images`` that are integers). The pre-flight is a component of our configs
(``mmgcvit.engine``); the checker's side is in test_check_dataset.py."""
import json

import pytest
from helpers import (REPO, TRAIN, assert_one_line_error, run_tool,
                     small_detection_config)

from mmgcvit.dataset_tools import generate_coco


def nested(data):
    return '[' * 100_000 + ']' * 100_000


def images_as_integers(data):
    return json.dumps(dict(data, images=7))


@pytest.mark.parametrize('hostile', [nested, images_as_integers])
def test_train_on_a_hostile_json_is_one_line(tmp_path, hostile):
    root = generate_coco(tmp_path / 'coco', num_train=2, num_val=1,
                         img_size=64).data_root
    config = small_detection_config(tmp_path / 'tiny.py', root,
                                    arch='xxtiny', size=64, images=2,
                                    channels=16)
    ann_file = root / 'annotations' / 'instances_train2017.json'
    ann_file.write_text(hostile(json.loads(ann_file.read_text())))
    code, output = run_tool([TRAIN, config, '--work-dir', tmp_path / 'work'],
                            cwd=REPO, timeout=600)
    line = assert_one_line_error(code, output, str(ann_file))
    assert line.startswith('tools/train.py: error: '), line
