# mmdet's runtime (hooks, logging, visualiser) plus what every GC ViT
# detection config needs.
_base_ = 'mmdet::_base_/default_runtime.py'
# Registers GCViT into mmdet's MODELS, also for mmdet's own tools/train.py.
custom_imports = dict(imports=['mmgcvit'], allow_failed_imports=False)
default_scope = 'mmdet'
