"""Window attention with a learned additive bias on CPU, on the flash kernel.

With an ``attn_mask`` that requires grad, ``F.scaled_dot_product_attention``
on CPU leaves its flash kernel for the math path, which keeps every window's
attention matrix for backward. Training GC ViT always has that case (the
relative-position bias is learned), so this function runs the flash kernel
forward and backward and recomputes the bias gradient itself, a few windows
at a time, keeping memory at one chunk of attention matrices.
"""
import torch

_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_flash_backward = \
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
# Elements of one recomputed block of attention matrices (8 MiB in fp32):
# large enough for efficient matmuls, small beside the activations.
_CHUNK_ELEMENTS = 2**21


def use_biased_flash(q, bias, dropout_p):
    """Whether :func:`biased_flash_attention` serves this call: fp32 on CPU,
    a bias that needs its gradient, no attention dropout (autocast and GPUs
    keep SDPA, whose kernels there handle the case)."""
    return (q.device.type == 'cpu' and q.dtype == torch.float32
            and bias.requires_grad and torch.is_grad_enabled()
            and dropout_p == 0. and not torch.is_autocast_enabled('cpu'))


class _BiasedFlashAttention(torch.autograd.Function):

    @staticmethod
    def forward(ctx, q, k, v, bias, scale):
        out, lse = _flash(q, k, v, 0., False, attn_mask=bias, scale=scale)
        ctx.save_for_backward(q, k, v, bias, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, bias, out, lse = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_q, grad_k, grad_v = _flash_backward(
            grad_out, q, k, v, out, lse, 0., False, attn_mask=bias,
            scale=ctx.scale)
        grad_bias = None
        if ctx.needs_input_grad[3]:
            # d(logits) = P * (dO V^T - rowsum(dO * O)); the bias is shared
            # by all windows, so its gradient sums over them.
            grad_bias = torch.zeros_like(bias)
            delta = (grad_out * out).sum(-1, keepdim=True)
            num_windows, heads, n, _ = q.shape
            chunk = max(1, _CHUNK_ELEMENTS // (heads * n * n))
            for start in range(0, num_windows, chunk):
                part = slice(start, start + chunk)
                probs = (q[part] @ k[part].transpose(-2, -1)).mul_(ctx.scale)
                probs.add_(bias).sub_(lse[part].unsqueeze(-1)).exp_()
                grad_logits = grad_out[part] @ v[part].transpose(-2, -1)
                grad_logits.sub_(delta[part]).mul_(probs)
                grad_bias += grad_logits.sum(0, keepdim=True)
        return grad_q, grad_k, grad_v, grad_bias, None


def biased_flash_attention(q, k, v, bias, scale):
    """``softmax(q k^T * scale + bias) v`` for ``(B, heads, N, head_dim)``
    operands and a ``(1, heads, N, N)`` bias shared by the batch."""
    return _BiasedFlashAttention.apply(q, k, v, bias, scale)
