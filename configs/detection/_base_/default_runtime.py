# mmdet's runtime (hooks, logging, visualiser) plus what every GC ViT
# detection config adds (configs/mmgcvit_runtime.py).
_base_ = [
    'mmdet::_base_/default_runtime.py', '../../mmgcvit_runtime.py'
]
default_scope = 'mmdet'
default_hooks = dict(
    checkpoint=dict(
        type='mmgcvit.AtomicCheckpointHook',
        backend_args=dict(backend='mmgcvit_atomic')))
