"""A transformers Llama's weights run by a gpt-fast-style forward over a static KV cache.

The cache holds one row per running sequence (``rows``, grown by doubling up to
``max_rows``) of ``max_len`` positions; the running sequences are always rows
``0 .. n-1`` (a finished row's place is taken by the last one, ``move_row``). Prefill
writes new sequences' prompts (right-padded) into their rows; a decode step writes one
token per row at that row's own position and attends over the real context only
(``max(lengths)`` positions, masked per row where lengths differ). No ``nn.Module`` calls:
plain tensor ops over the same weights (q/k/v and gate/up fused into one matmul each).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def supports(model: Any) -> bool:
    """Whether ``model`` is a Llama this forward reproduces (RoPE of any transformers
    type, grouped-query attention, no biases, SiLU MLP)."""
    cfg = getattr(model, "config", None)
    return (
        cfg is not None
        and getattr(cfg, "model_type", None) == "llama"
        and not getattr(cfg, "attention_bias", False)
        and not getattr(cfg, "mlp_bias", False)
        and getattr(cfg, "hidden_act", None) == "silu"
        and getattr(cfg, "head_dim", None) in (None, cfg.hidden_size // cfg.num_attention_heads)
    )


class StaticLlama:
    def __init__(self, model: Any, max_rows: int, first_rows: int = 8):
        cfg, m = model.config, model.model
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = cfg.hidden_size // self.heads
        self.eps, self.embed = cfg.rms_norm_eps, m.embed_tokens.weight.detach()
        self.dtype = self.embed.dtype
        self.max_len, self.max_rows = int(cfg.max_position_embeddings), max_rows
        self.layers = [self._layer_weights(layer) for layer in m.layers]
        self.norm, self.head = m.norm.weight.detach(), model.lm_head.weight.detach()
        with torch.no_grad():
            cos, sin = m.rotary_emb(self.embed, torch.arange(self.max_len)[None])
        self.cos, self.sin = cos[0], sin[0]  # (max_len, head_dim)
        self.rows = 0
        self.k = self.v = torch.empty(0)
        self._grow(min(first_rows, max_rows))

    @staticmethod
    def _layer_weights(layer: Any) -> tuple[torch.Tensor, ...]:
        attn, mlp = layer.self_attn, layer.mlp
        return tuple(
            w.detach().contiguous()
            for w in (
                layer.input_layernorm.weight,
                torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]),
                attn.o_proj.weight,
                layer.post_attention_layernorm.weight,
                torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]),
                mlp.down_proj.weight,
            )
        )

    def _grow(self, rows: int) -> None:
        shape = (len(self.layers), rows, self.kv_heads, self.max_len, self.head_dim)
        k, v = torch.zeros(shape, dtype=self.dtype), torch.zeros(shape, dtype=self.dtype)
        if self.rows:
            k[:, : self.rows], v[:, : self.rows] = self.k, self.v
        self.k, self.v, self.rows = k, v, rows

    def reserve(self, rows: int) -> None:
        """Room for ``rows`` sequences (at most ``max_rows``)."""
        if rows > self.rows:
            self._grow(min(self.max_rows, max(rows, 2 * self.rows)))

    def move_row(self, src: int, dst: int, length: int) -> None:
        self.k[:, dst, :, :length] = self.k[:, src, :, :length]
        self.v[:, dst, :, :length] = self.v[:, src, :, :length]

    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

    @staticmethod
    def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin

    def _layers(self, x: torch.Tensor, attend: Any) -> torch.Tensor:
        b, t = x.shape[:2]
        q_size, kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
        for i, (w_in, w_qkv, w_o, w_post, w_gu, w_down) in enumerate(self.layers):
            q, k, v = F.linear(self._rms(x, w_in), w_qkv).split([q_size, kv_size, kv_size], dim=-1)
            q = q.view(b, t, self.heads, self.head_dim).transpose(1, 2)
            k = k.view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
            v = v.view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
            attn = attend(i, q, k, v)
            x = x + F.linear(attn.transpose(1, 2).reshape(b, t, q_size), w_o)
            gate, up = F.linear(self._rms(x, w_post), w_gu).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, w_down)
        return x

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._rms(x, self.norm), self.head)

    @torch.inference_mode()
    def prefill(self, first_row: int, prompts: list[list[int]]) -> torch.Tensor:
        """Write ``prompts`` into rows ``first_row ...`` (from position 0); the logits (B, V)
        of each prompt's last token."""
        b, t = len(prompts), max(len(p) for p in prompts)
        ids = torch.tensor([p + [0] * (t - len(p)) for p in prompts])  # right-padded
        rows = slice(first_row, first_row + b)
        cos, sin = self.cos[:t], self.sin[:t]
        gqa = self.kv_heads != self.heads

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            k = self._rope(k, cos, sin)
            # Pad positions are written too: they lie past each row's length, are masked in
            # decode steps and overwritten as the row grows.
            self.k[i, rows, :, :t], self.v[i, rows, :, :t] = k, v
            return F.scaled_dot_product_attention(
                self._rope(q, cos, sin), k, v, is_causal=True, enable_gqa=gqa
            )

        x = self._layers(self.embed[ids], attend)
        last = torch.tensor([len(p) - 1 for p in prompts])
        return self._logits(x[torch.arange(b), last])

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, positions: torch.Tensor, context: int) -> torch.Tensor:
        """One token for each of rows ``0 .. B-1`` (``tokens`` (B,), at ``positions`` (B,));
        ``context`` = max(positions) + 1. The next logits (B, V)."""
        b = tokens.shape[0]
        rows = torch.arange(b)
        cos, sin = self.cos[positions][:, None, None], self.sin[positions][:, None, None]
        mask = None
        if int(positions.min()) + 1 != context:  # rows of different lengths
            mask = (torch.arange(context) <= positions[:, None])[:, None, None]
        gqa = self.kv_heads != self.heads

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            self.k[i, rows, :, positions] = self._rope(k, cos, sin)[:, :, 0]
            self.v[i, rows, :, positions] = v[:, :, 0]
            return F.scaled_dot_product_attention(
                self._rope(q, cos, sin),
                self.k[i, :b, :, :context],
                self.v[i, :b, :, :context],
                attn_mask=mask,
                enable_gqa=gqa,
            )

        x = self._layers(self.embed[tokens][:, None], attend)
        return self._logits(x[:, 0])
