"""The yardstick decode loop: a transformers Llama's weights decoded by ~60 lines of plain
torch (gpt-fast's ``generate.py`` in shape), on any device. It imports torch alone, so
``scripts/gpu_streams.py`` runs it on a machine with no tokgen dependencies but torch and
transformers; ``tokgen bench engine`` compares the engines with it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class ReferenceLoop:
    """A transformers ``LlamaForCausalLM``'s weights decoded by a bare loop: static K/V
    tensors for ``batch`` rows of ``max_len`` positions, every row at the same position."""

    def __init__(self, model: Any, batch: int, max_len: int):
        cfg, m = model.config, model.model
        if cfg.num_key_value_heads != cfg.num_attention_heads or cfg.attention_bias or cfg.mlp_bias:
            raise ValueError("the reference loop handles plain Llamas only (no GQA, no biases)")
        self.heads, self.head_dim = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
        self.eps, self.embed = cfg.rms_norm_eps, m.embed_tokens.weight
        self.layers = [
            (
                layer.input_layernorm.weight,
                torch.cat(
                    [
                        layer.self_attn.q_proj.weight,
                        layer.self_attn.k_proj.weight,
                        layer.self_attn.v_proj.weight,
                    ]
                ),
                layer.self_attn.o_proj.weight,
                layer.post_attention_layernorm.weight,
                torch.cat([layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight]),
                layer.mlp.down_proj.weight,
            )
            for layer in m.layers
        ]
        self.norm, self.head = m.norm.weight, model.lm_head.weight
        shape = (len(self.layers), batch, self.heads, max_len, self.head_dim)
        device = self.embed.device
        self.k, self.v = (
            torch.zeros(shape, dtype=self.embed.dtype, device=device),
            torch.zeros(shape, dtype=self.embed.dtype, device=device),
        )
        positions = torch.arange(max_len, device=device)[None]
        self.cos, self.sin = (t[0] for t in m.rotary_emb(self.embed, positions))

    def rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

    def rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin

    def forward(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        """Logits of the last position of ``ids`` (B, T), which sit at ``start``...; a
        prefill must start at 0 (causal attention), a decode step is one token."""
        b, t = ids.shape
        end = start + t
        x, cos, sin = self.embed[ids], self.cos[start:end], self.sin[start:end]
        for i, (w_in, w_qkv, w_o, w_post, w_gu, w_down) in enumerate(self.layers):
            qkv = F.linear(self.rms(x, w_in), w_qkv).view(b, t, 3, self.heads, self.head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            self.k[i, :, :, start:end], self.v[i, :, :, start:end] = self.rope(k, cos, sin), v
            attn = F.scaled_dot_product_attention(
                self.rope(q, cos, sin), self.k[i, :, :, :end], self.v[i, :, :, :end], is_causal=t > 1
            )
            x = x + F.linear(attn.transpose(1, 2).reshape(b, t, -1), w_o)
            gate, up = F.linear(self.rms(x, w_post), w_gu).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, w_down)
        return F.linear(self.rms(x[:, -1], self.norm), self.head)

    @torch.inference_mode()
    def generate(
        self, prompts: torch.Tensor, new_tokens: int, temperature: float = 1.0, seed: int = 0
    ) -> torch.Tensor:
        """``new_tokens`` ids per row of ``prompts`` (B, P): one prefill, then ``decode``."""
        prompts = prompts.to(self.embed.device)
        return self.decode(self.forward(prompts, 0), prompts.shape[1], new_tokens, temperature, seed)

    @torch.inference_mode()
    def decode(
        self, logits: torch.Tensor, start: int, new_tokens: int, temperature: float = 1.0, seed: int = 0
    ) -> torch.Tensor:
        """``new_tokens`` ids per row from the prefill's last ``logits``, the first new token
        at position ``start``: ``new_tokens - 1`` forward steps. Apart from ``generate`` so a
        benchmark can time the decode steps alone. Gumbel-max sampling (argmax of logits / T
        + Gumbel noise -log(-log U)), greedy at temperature 0. Uniform noise: ``exponential_``
        on CPU draws one sample at a time (~1 ms per step at batch 16)."""
        device = self.embed.device
        gen = torch.Generator(device).manual_seed(seed)
        out = torch.empty(logits.shape[0], new_tokens, dtype=torch.long, device=device)
        for i in range(new_tokens):
            if temperature > 0:
                gumbel = -torch.rand(logits.shape, generator=gen, device=device).log_().neg_().log_()
                out[:, i] = (logits.float() / temperature + gumbel).argmax(-1)
            else:
                out[:, i] = logits.argmax(-1)
            if i + 1 < new_tokens:
                logits = self.forward(out[:, i : i + 1], start + i)
        return out


def flops_per_token(config: Any, context: float) -> float:
    """2 x the weights every token multiplies (all linear layers and the output head; the
    embedding lookup is free) + attention: 4 x layers x hidden x context (scores and sum)."""
    h, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    per_layer = h * (h + 2 * kv) + h * h + 3 * h * inter
    return 2.0 * (layers * per_layer + h * config.vocab_size) + 4.0 * layers * h * context
