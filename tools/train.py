"""Train a detector or segmentor from an mmdet 3.x / mmseg 1.x config:
mmdet's or mmseg's own ``tools/train.py`` (the config's ``default_scope``
decides), with its flags (``--work-dir``, ``--amp``, ``--resume [CKPT]``,
``--auto-scale-lr``, ``--cfg-options``, ``--launcher``)."""
from _upstream import run_upstream_tool

if __name__ == '__main__':
    run_upstream_tool('train.py')
