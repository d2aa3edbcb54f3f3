"""Train a detector or segmentor from an mmdet 3.x / mmseg 1.x config:
mmdet's or mmseg's own ``tools/train.py`` (the config's ``default_scope``
decides), with its flags (``--work-dir``, ``--amp``, ``--resume [CKPT]``,
``--auto-scale-lr``, ``--cfg-options``, ``--launcher``)."""
import sys

from _upstream import run_upstream_tool
from mmengine.device import get_device

if __name__ == '__main__':
    if '--amp' in sys.argv and get_device() == 'cpu':
        # mmengine's AmpOptimWrapper asserts an accelerator (a traceback).
        sys.exit('tools/train.py: error: --amp trains with mmengine\'s '
                 'AmpOptimWrapper, which needs a GPU (or NPU, MLU, MUSA); '
                 'on a CPU train without --amp (the configs are fp32).')
    run_upstream_tool('train.py')
