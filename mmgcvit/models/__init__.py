from .backbones import GCViT

__all__ = ['GCViT']
