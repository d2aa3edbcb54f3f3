# What every GC ViT config adds to any tool that runs it (mmdet's and
# mmseg's own tools/train.py and tools/test.py included); the README's
# "What our configs add" table says why. The checkpoint hook, the train and
# test loops are set where mmdet's / mmseg's bases define them (they would
# clash here): default_hooks.checkpoint = mmgcvit.AtomicCheckpointHook with
# backend_args=dict(backend='mmgcvit_atomic'), train_cfg =
# mmgcvit.Resumable*TrainLoop, test_cfg = mmgcvit.CheckedTestLoop.
#
# mmgcvit registers GCViT into mmdet's / mmseg's MODELS; mmgcvit.engine the
# hooks, loops and the atomic file backend.
custom_imports = dict(
    imports=['mmgcvit', 'mmgcvit.engine'], allow_failed_imports=False)
custom_hooks = [
    dict(type='mmgcvit.RNGStateHook'),
    dict(type='mmgcvit.PlainCheckpointHook'),
    dict(type='mmgcvit.LoadReportHook'),
]
