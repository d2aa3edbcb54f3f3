"""mmengine's default optim wrapper constructor, with an optimizer that
``torch.compile`` can trace (mmengine's ``compile=True`` compiles the whole
training step, the optimizer step included)."""
from mmengine.optim import DefaultOptimWrapperConstructor

from mmgcvit.registry import OPTIM_WRAPPER_CONSTRUCTORS


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class PlainDictOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` whose optimizer holds its param
    groups as plain dicts: with a ``paramwise_cfg`` the default one leaves
    them ConfigDicts, over which dynamo cannot trace an optimizer step
    (torch 2.14: ``'UserDefinedDictVariable' object has no attribute
    'items'``), so ``compile=True`` failed at the first step."""

    def __call__(self, model):
        optim_wrapper = super().__call__(model)
        groups = optim_wrapper.optimizer.param_groups
        groups[:] = [dict(group) for group in groups]
        return optim_wrapper
