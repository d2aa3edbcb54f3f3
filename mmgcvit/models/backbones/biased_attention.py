"""Window attention with a learned additive bias on CPU, on the flash kernel.

With an ``attn_mask`` that requires grad, ``F.scaled_dot_product_attention``
on CPU leaves its flash kernel for the math path, which keeps every window's
attention matrix for backward. Training GC ViT always has that case (the
relative-position bias is learned), so this function runs the flash kernel
forward, keeping only the output and the rows' log-sum-exp, and computes the
backward itself a few windows at a time: memory stays at one chunk of
attention matrices.

The backward recomputes each chunk's probabilities from the log-sum-exp and
derives every gradient from one ``d(logits)``: five matmuls and one ``exp``
per element, where torch's flash backward followed by a separate pass for
the bias gradient takes seven matmuls and two (docs/speed.md).
"""
from typing import Tuple

import torch

from .torch_compat import aten_op, cpu_autocast_enabled

# None before torch 2.2: the callers keep SDPA.
CPU_FLASH = aten_op('_scaled_dot_product_flash_attention_for_cpu')
# Elements of one recomputed block of attention matrices (8 MiB in fp32):
# large enough for efficient matmuls, small beside the activations.
_CHUNK_ELEMENTS = 2**21


def use_biased_flash(q, bias, dropout_p):
    """Whether :func:`biased_flash_attention` serves this call: fp32 on CPU,
    a bias that needs its gradient, no attention dropout (autocast and GPUs
    keep SDPA, whose kernels there handle the case)."""
    return (CPU_FLASH is not None and q.device.type == 'cpu'
            and q.dtype == torch.float32 and bias.requires_grad
            and torch.is_grad_enabled() and dropout_p == 0.
            and not cpu_autocast_enabled())


def _chunked_backward(
    grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
    v: torch.Tensor, bias: torch.Tensor, out: torch.Tensor,
    lse: torch.Tensor, scale: float
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of q, k, v and the bias, a chunk of windows at a time."""
    num_windows, heads, queries, head_dim = q.shape
    keys = k.shape[2]
    grad_out = grad_out.contiguous()
    # Batched matrices of (window, head) pairs; q and k pre-scaled once so
    # no pass over a block of attention matrices is spent on the scale.
    q_scaled = (q * scale).reshape(-1, queries, head_dim)
    k_scaled = (k * scale).reshape(-1, keys, head_dim)
    k, v = (t.reshape(-1, keys, head_dim) for t in (k, v))
    flat_grad_out = grad_out.view(-1, queries, head_dim)
    # -rowsum(dO * O): the softmax-backward term shared by a row's keys.
    neg_delta = (grad_out * out).sum(-1, keepdim=True).neg_()
    neg_delta = neg_delta.view(-1, queries, 1)
    lse = lse.reshape(num_windows, heads, queries, 1)
    grad_q = q.new_empty(q.shape)
    grad_k, grad_v = (k.new_empty(num_windows, heads, keys, head_dim)
                      for _ in range(2))
    flat_grad_q, flat_grad_k, flat_grad_v = (
        t.view(-1, *t.shape[2:]) for t in (grad_q, grad_k, grad_v))
    grad_bias = bias.new_zeros(bias.shape)
    chunk = max(1, _CHUNK_ELEMENTS // (heads * queries * keys))
    # Reused across chunks: fresh pages would be faulted in each time.
    probs_buf = bias.new_empty(chunk * heads, queries, keys)
    grad_logits_buf = torch.empty_like(probs_buf)
    for start in range(0, num_windows, chunk):
        size = min(chunk, num_windows - start)
        rows = slice(start * heads, (start + size) * heads)
        probs = probs_buf[:size * heads]
        grad_logits = grad_logits_buf[:size * heads]
        # P = exp(q k^T * scale + bias - lse), the forward's softmax.
        torch.sub(bias, lse[start:start + size],
                  out=probs.view(size, heads, queries, keys))
        probs.baddbmm_(q_scaled[rows], k[rows].transpose(1, 2)).exp_()
        torch.bmm(probs.transpose(1, 2), flat_grad_out[rows],
                  out=flat_grad_v[rows])
        # d(logits) = P * (dO v^T - rowsum(dO * O))
        torch.baddbmm(neg_delta[rows], flat_grad_out[rows],
                      v[rows].transpose(1, 2), out=grad_logits)
        grad_logits.mul_(probs)
        # The bias is shared by all windows: its gradient sums over them.
        grad_bias += grad_logits.view(size, heads, queries,
                                      keys).sum(0, keepdim=True)
        torch.bmm(grad_logits, k_scaled[rows], out=flat_grad_q[rows])
        torch.bmm(grad_logits.transpose(1, 2), q_scaled[rows],
                  out=flat_grad_k[rows])
    return grad_q, grad_k, grad_v, grad_bias


if hasattr(torch.library, 'custom_op'):
    # An operator (torch 2.4 on) that torch.compile calls whole: tracing its
    # loop would bake in the trip count, i.e. the number of windows.
    _chunked_backward = torch.library.custom_op(
        'mmgcvit::biased_flash_attention_backward',
        mutates_args=())(_chunked_backward)

    @_chunked_backward.register_fake
    def _(grad_out, q, k, v, bias, out, lse, scale):
        return tuple(t.new_empty(t.shape) for t in (q, k, v, bias))


class _BiasedFlashAttention(torch.autograd.Function):

    @staticmethod
    def forward(ctx, q, k, v, bias, scale):
        out, lse = CPU_FLASH(q, k, v, 0., False, attn_mask=bias, scale=scale)
        ctx.save_for_backward(q, k, v, bias, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        grad_q, grad_k, grad_v, grad_bias = _chunked_backward(
            grad_out, *ctx.saved_tensors, ctx.scale)
        return (grad_q, grad_k, grad_v,
                grad_bias if ctx.needs_input_grad[3] else None, None)


def biased_flash_attention(q, k, v, bias, scale):
    """``softmax(q k^T * scale + bias) v`` for ``(B, heads, queries,
    head_dim)`` q, ``(B, heads, keys, head_dim)`` k and v and a ``(1, heads,
    queries, keys)`` bias shared by the batch."""
    return _BiasedFlashAttention.apply(q, k, v, bias, scale)
