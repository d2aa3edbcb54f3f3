"""Window attention of GC ViT blocks: local (queries, keys and values from
the window) and global (queries from the stage's global query tokens), with
a learned relative-position bias, on any map size.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.experimental import symbolic_shapes
from torch.nn.init import trunc_normal_

from .biased_attention import biased_flash_attention, use_biased_flash

# Missing in older torch, which compiles the backbone with graph breaks.
_is_compiling = getattr(torch.compiler, 'is_compiling', lambda: False)
_statically_known_true = getattr(symbolic_shapes, 'statically_known_true',
                                 bool)


def relative_position_index(window_size):
    """Swin-style ``(w*w, w*w)`` index into a ``(2w-1)**2`` bias table."""
    coords = torch.stack(
        torch.meshgrid(
            torch.arange(window_size), torch.arange(window_size),
            indexing='ij')).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    rel = rel + (window_size - 1)
    return rel[..., 0] * (2 * window_size - 1) + rel[..., 1]


class _WindowAttention(nn.Module):
    """Multi-head attention inside the windows of a ``(B, H, W, C)`` map,
    with a learned relative-position bias; returns the ``(B, H, W, C)`` map.

    Any H x W: as in the official detection code, the (normalised) map is
    zero-padded bottom/right to whole windows and attended without a mask,
    so padded tokens are keys and values too; outputs at padded positions
    are cropped. Every path computes :meth:`_attend` and differs only in how
    it tiles the map into windows (:meth:`forward` chooses):

    - reference (``fused_attn=False``): the padded windows, explicit
      softmax(q k^T * scale + bias) v;
    - padded (``fused_attn=True`` off the CPU, and in graphs compiled for
      dynamic shapes): the padded windows in one
      ``F.scaled_dot_product_attention`` call;
    - valid (``fused_attn=True`` on the CPU): the valid tokens only, a
      rectangle of windows at a time (:meth:`_valid_windows`).
    """

    num_projections = 3

    def __init__(self, dim, num_heads, window_size, qkv_bias=True,
                 attn_drop=0., proj_drop=0., fused_attn=True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.window_size = window_size
        self.fused_attn = fused_attn
        self.relative_position_bias_table = nn.Parameter(
            torch.empty((2 * window_size - 1)**2, num_heads))
        trunc_normal_(self.relative_position_bias_table, std=.02)
        # Derived from the window size: not part of checkpoints.
        self.register_buffer(
            'relative_position_index',
            relative_position_index(window_size).flatten(),
            persistent=False)
        self.qkv = nn.Linear(dim, dim * self.num_projections, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self._bias_cache = None

    def train(self, mode=True):
        self._bias_cache = None
        return super().train(mode)

    def relative_position_bias(self):
        """``(heads, N, N)`` bias; cached for eager inference, keyed on the
        table's version so ``load_state_dict`` or in-place edits refresh it.
        A compiled graph computes it itself: the key's data pointer cannot
        be guarded on."""
        table = self.relative_position_bias_table
        cacheable = not (self.training or _is_compiling() or
                         (torch.is_grad_enabled() and table.requires_grad))
        if cacheable:
            key = (table._version, table.data_ptr(), table.device,
                   table.dtype)
            if self._bias_cache is not None and self._bias_cache[0] == key:
                return self._bias_cache[1]
        n = self.window_size**2
        # index_select along a head-major copy of the table: its backward
        # (index_add_) is faster on the CPU than advanced indexing's
        # accumulating index_put_, and no permuted copy of the bias is made.
        bias = table.t().contiguous().index_select(
            1, self.relative_position_index).view(-1, n, n)
        if cacheable:
            self._bias_cache = (key, bias)
        return bias

    def _qkv(self, windows, q_global, rows, cols):
        """q ``(B, 1 or n, heads, Q, d)``, k and v ``(B, n, heads, Q, d)`` of
        ``(B, n, Q, C)`` windows holding the top-left ``rows x cols`` tokens
        of each window (Q = rows * cols)."""
        raise NotImplementedError

    def forward(self, x, q_global=None):
        """Args:
            x: ``(B, H, W, C)`` map.
            q_global: the stage's global query (global attention only).
        """
        # Compute-bound CPUs skip the padding's FLOPs; launch-bound GPUs and
        # graphs compiled for any size attend all padded windows in one call.
        if self.fused_attn and x.device.type == 'cpu' and all(
                _is_static(size) for size in x.shape[1:3]):
            out = self._valid_windows(x, q_global)
        else:
            out = self._padded_windows(x, q_global)
        return self.proj_drop(self.proj(out))

    def _attend(self, q, k, v, bias):
        """``softmax(q k^T * scale + bias) v`` of window ``(B, 1 or n,
        heads, Q, d)`` q, ``(B, n, heads, K, d)`` k and v and a ``(heads, Q,
        K)`` bias shared by the windows; ``(B, n, heads, Q, d)``."""
        if not self.fused_attn:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            # Softmax in fp32 so fp16/bf16 autocast cannot overflow it.
            attn = (attn.float() + bias.float()).softmax(dim=-1)
            return self.attn_drop(attn).to(v.dtype) @ v
        B, n = k.shape[:2]
        # 4-D operands: 5-D ones (a query broadcast over windows) send CPU
        # SDPA to its math path, so the global query is materialised.
        q = q.expand(B, n, -1, -1, -1).flatten(0, 1)
        k, v = k.flatten(0, 1), v.flatten(0, 1)
        bias = bias.unsqueeze(0).to(q.dtype)
        if use_biased_flash(q, bias, self._dropout_p):
            out = biased_flash_attention(q, k, v, bias, self.scale)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias, dropout_p=self._dropout_p,
                scale=self.scale)
        return out.view(B, n, *out.shape[1:])

    def _padded_windows(self, x, q_global):
        """Attention over the map zero-padded to whole windows, cropped."""
        B, H, W, C = x.shape
        w = self.window_size
        # Ceil division on non-negative operands: ONNX's integer Div
        # truncates, so -(-H // w) would export as a floor.
        grid = ((H + w - 1) // w, (W + w - 1) // w)
        x = F.pad(x, (0, 0, 0, grid[1] * w - W, 0, grid[0] * w - H))
        q, k, v = self._qkv(_to_windows(x, grid, w, w), q_global, w, w)
        out = self._attend(q, k, v, self.relative_position_bias())
        out = _from_windows(out, grid, w, w).reshape(
            B, grid[0] * w, grid[1] * w, C)
        if _is_static(H) and _is_static(W):
            return out[:, :H, :W]
        # Cropped by negative padding into a new tensor: a cropped view's
        # strides make tracing ask whether the padding is zero, a guard on
        # symbolic sizes that recompiles for maps of whole windows.
        return F.pad(out, (0, 0, 0, W - grid[1] * w, 0, H - grid[0] * w))

    def _valid_windows(self, x, q_global):
        """Attention on the valid tokens only, over the windows a rectangle
        at a time (those sharing their valid rows and columns: at most 4).

        Queries at padded positions are skipped (their outputs would be
        cropped). A zero-padded token's key and value are the qkv bias
        whatever its position, so the padded keys of a window differ only in
        their relative-position bias b_j, and the softmax weighs their
        common value by sum_j exp(q k + b_j): one key with bias
        logsumexp_j b_j counts them all. Under attention dropout, which
        drops each key on its own, every padded key is kept instead.
        """
        B, H, W, C = x.shape
        w = self.window_size
        bias = self.relative_position_bias().view(-1, w, w, w * w)
        out = None
        for rows, n_rows, valid_rows in _window_spans(H, w):
            for cols, n_cols, valid_cols in _window_spans(W, w):
                grid = (n_rows, n_cols)
                q, k, v = self._qkv(
                    _to_windows(x[:, rows, cols], grid, valid_rows,
                                valid_cols), q_global, valid_rows, valid_cols)
                b = bias[:, :valid_rows, :valid_cols].flatten(1, 2)
                if valid_rows * valid_cols < w * w:
                    k, v, b = self._add_padding_keys(
                        k, v, b, valid_rows, valid_cols,
                        collapse=self._dropout_p == 0.)
                o = self._attend(q, k, v, b)
                if out is None:
                    # The attention's dtype: the projections' under autocast.
                    out = o.new_empty(B, H, W, C)
                out[:, rows, cols].view(
                    B, n_rows, valid_rows, n_cols, valid_cols, self.num_heads,
                    self.head_dim).copy_(
                        _from_windows(o, grid, valid_rows, valid_cols))
        return out

    def _add_padding_keys(self, k, v, bias, rows, cols, collapse):
        """``(B, n, heads, K, d)`` keys and values of the valid ``rows x
        cols`` tokens followed by the padded tokens' (one collapsed key, or
        each), with their ``(heads, rows * cols, K)`` bias."""
        w = self.window_size
        bias = bias.view(*bias.shape[:-1], w, w)
        padded_bias = torch.cat([bias[..., :rows, cols:].flatten(-2),
                                 bias[..., rows:, :].flatten(-2)], -1)
        if collapse:
            padded_bias = padded_bias.logsumexp(-1, keepdim=True)
        bias = torch.cat([bias[..., :rows, :cols].flatten(-2), padded_bias],
                         -1)
        # The projections of a zero token: k and v are the last two.
        zero_token = (
            self.qkv.bias if self.qkv.bias is not None else
            self.qkv.weight.new_zeros(self.qkv.out_features))
        pad_k, pad_v = zero_token.to(k.dtype).view(
            self.num_projections, self.num_heads, 1, self.head_dim)[-2:]
        num_padded = padded_bias.shape[-1]
        k, v = (torch.cat([t, p.expand(*t.shape[:2], -1, num_padded, -1)], 3)
                for t, p in ((k, pad_k), (v, pad_v)))
        return k, v, bias

    @property
    def _dropout_p(self):
        """The fused kernels' attention dropout: ``attn_drop``'s while
        training, none in eval (SDPA applies it whatever the mode)."""
        return self.attn_drop.p if self.training else 0.


def _to_windows(x, grid, rows, cols):
    """``(B, n, rows * cols, C)`` windows, row-major, of a ``(B, grid[0] *
    rows, grid[1] * cols, C)`` map."""
    B, C = x.shape[0], x.shape[-1]
    x = x.reshape(B, grid[0], rows, grid[1], cols, C).transpose(2, 3)
    return x.reshape(B, grid[0] * grid[1], rows * cols, C)


def _from_windows(out, grid, rows, cols):
    """The ``(B, grid[0], rows, grid[1], cols, heads, d)`` map view of
    ``(B, n, heads, rows * cols, d)`` window outputs (:func:`_to_windows`'
    inverse)."""
    B, _, heads, _, d = out.shape
    return out.view(B, *grid, heads, rows, cols, d).permute(
        0, 1, 4, 2, 5, 3, 6)


def _is_static(size):
    """Whether ``size`` is a plain int, not the symbolic size of a graph
    compiled for dynamic shapes (which tracing shows as an int too): its
    parity is known without adding a guard on it. Sizes traced by
    ``torch.jit.trace`` (ONNX's TorchScript exporter) are tensors: dynamic."""
    if isinstance(size, torch.Tensor):
        return False
    return _statically_known_true(size % 2 == 0) or _statically_known_true(
        size % 2 == 1)


def _window_spans(length, window_size):
    """``(token slice, windows, valid tokens in each)`` along one axis of a
    map of ``length`` tokens padded to whole windows: the full windows, then
    the partial last one. ``//`` and ``%`` rather than ``divmod``: they
    also take the symbolic sizes of a dynamic-shape compile."""
    full, rest = length // window_size, length % window_size
    spans = [(slice(0, full * window_size), full, window_size)] if full else []
    if rest:
        spans.append((slice(full * window_size, length), 1, rest))
    return spans


class LocalWindowAttention(_WindowAttention):
    """Queries, keys and values all from the window (qkv: C -> 3C)."""

    def _qkv(self, windows, q_global, rows, cols):
        B, n, Q, _ = windows.shape
        qkv = self.qkv(windows).view(B, n, Q, 3, self.num_heads,
                                     self.head_dim)
        return qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)


class GlobalWindowAttention(_WindowAttention):
    """Keys and values from the window (qkv: C -> 2C), queries from the
    stage's global query tokens, the same for every window of an image."""

    num_projections = 2

    def _qkv(self, windows, q_global, rows, cols):
        B, n, Q, _ = windows.shape
        kv = self.qkv(windows).view(B, n, Q, 2, self.num_heads,
                                    self.head_dim)
        k, v = kv.permute(3, 0, 1, 4, 2, 5).unbind(0)
        w = self.window_size
        q = q_global.view(B, 1, self.num_heads, w, w, self.head_dim)
        q = q[:, :, :, :rows, :cols].reshape(B, 1, self.num_heads, Q,
                                             self.head_dim)
        return q.to(k.dtype), k, v
