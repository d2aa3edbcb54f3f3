"""Evaluate a checkpoint (a file or a URL): mmdet's or mmseg's own
``tools/test.py`` (the config's ``default_scope`` decides), with its flags,
plus ``--allow-partial-checkpoint``: evaluate even when the checkpoint does
not fit the model (``allow_partial_checkpoint=True`` in the config, read by
``mmgcvit.LoadReportHook``)."""
import sys

from _upstream import run_upstream_tool

FLAG = '--allow-partial-checkpoint'

if __name__ == '__main__':
    argv = [arg for arg in sys.argv[1:] if arg != FLAG]
    if len(argv) < len(sys.argv) - 1:
        argv += ['--cfg-options', 'allow_partial_checkpoint=True']
    run_upstream_tool('test.py', argv)
