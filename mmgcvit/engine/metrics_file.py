"""``metrics.json`` for every test run, and no silent empty evaluation."""
import math
import numbers
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log

from mmgcvit.registry import HOOKS
from mmgcvit.utils.fileio import write_json_atomic
from .errors import EvaluationError


@HOOKS.register_module()
class TestMetricsHook(Hook):
    """Save the test results to ``<log dir>/metrics.json`` (atomically),
    and fail the run when the evaluation produced no number (an empty
    result used to exit 0)."""

    def after_test_epoch(self, runner, metrics=None):
        if is_main_process():
            path = osp.join(runner.log_dir, 'metrics.json')
            write_json_atomic(metrics or {}, path)
            print_log(f'metrics saved to {path}', logger='current')
        # mmseg's metrics are numpy float32, which is no float.
        if not any(isinstance(v, numbers.Real) and math.isfinite(v)
                   for v in (metrics or {}).values()):
            raise EvaluationError(
                f'the evaluation produced no metrics ({metrics!r}): the '
                'model predicted nothing the evaluator could score; check '
                'the checkpoint against the config (see the log above).')
