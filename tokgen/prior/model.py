"""Prior architectures: a plain ``LlamaForCausalLM`` per codec level.

A prior directory is what ``save_pretrained`` writes (``config.json`` + safetensors), which
vLLM and transformers both load unchanged, plus ``tokgen_prior.json`` saying which level it
models, its window length and the codec layout it was trained on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from tokgen.errors import CheckpointError, TokgenError
from tokgen.prior.layout import BOS, PAD, TokenLayout

PRIOR_META = "tokgen_prior.json"


class PriorConfig(BaseModel):
    n_ctx: int = Field(default=512, ge=8, description="own-level tokens per window")
    hidden_size: int = Field(default=256, ge=32)
    num_layers: int = Field(default=4, ge=1)
    num_heads: int = Field(default=4, ge=1)
    reference_tokens: int = Field(
        default=0, ge=0, description="own-level codes of the prime in front of every upsampler window"
    )
    reference_dropout: float = Field(default=0.2, ge=0, le=1, description="examples trained without one")

    @model_validator(mode="after")
    def _head_dim(self) -> PriorConfig:
        if self.hidden_size % self.num_heads or self.hidden_size // self.num_heads < 32:
            raise ValueError("hidden_size / num_heads must be a whole number >= 32 (vLLM's CPU attention)")
        return self


# Per preset: (top prior, upsamplers). The top prior sees few tokens per second (31 with
# the default codec) and carries the long-range structure, so it gets the wider model and
# 8 s of context; the upsamplers see 4x and 16x more tokens, so they are narrower (trained
# for as long on 2 CPU cores they see more data) with 512 tokens of their own level.
PRESETS: dict[str, tuple[PriorConfig, PriorConfig]] = {
    "default": (
        PriorConfig(n_ctx=256, hidden_size=256, num_layers=4, num_heads=4),
        PriorConfig(n_ctx=512, hidden_size=128, num_layers=4, num_heads=2, reference_tokens=64),
    ),
    "tiny": (PriorConfig(n_ctx=16, hidden_size=64, num_layers=1, num_heads=2),) * 2,
}


def preset_config(name: str, level: int) -> PriorConfig:
    """The architecture preset ``name`` gives the prior of ``level``."""
    if name not in PRESETS:
        raise TokgenError(f"unknown prior preset {name!r}; choose one of {', '.join(PRESETS)}")
    top, upsampler = PRESETS[name]
    return top if level == 0 else upsampler


def sequence_length(level: int, n_ctx: int, ratio: int, reference_tokens: int = 0) -> int:
    """Tokens of a full window: BOS + window for the top prior; BOS + [reference + SEP] +
    aligned upper codes + SEP + window for an upsampler."""
    if level == 0:
        return 1 + n_ctx
    return 2 + (reference_tokens + 1 if reference_tokens else 0) + math.ceil(n_ctx / ratio) + n_ctx


def build_prior(cfg: PriorConfig, layout: TokenLayout, level: int, ratio: int):  # -> LlamaForCausalLM
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaConfig(
        vocab_size=layout.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=4 * cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=sequence_length(level, cfg.n_ctx, ratio, cfg.reference_tokens),
        bos_token_id=BOS,
        pad_token_id=PAD,
        eos_token_id=None,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(llama)


def grown_layer_sources(old_layers: int, new_layers: int) -> list[int | None]:
    """Where each layer of a prior grown from ``old_layers`` to ``new_layers`` comes from:
    the seed's layer index, or None for a new layer. The seed's layers keep their order,
    spread evenly (new layers sit after them, never before the first)."""
    if new_layers < old_layers:
        raise TokgenError(f"a prior can grow, not shrink: {old_layers} -> {new_layers} layers")
    positions = {i * new_layers // old_layers: i for i in range(old_layers)}
    return [positions.get(j) for j in range(new_layers)]


def grow_state(seed: dict, fresh: dict, old_layers: int, new_layers: int) -> dict:
    """The state of a deeper prior that computes exactly what ``seed`` does: the seed's
    layers copied to their places (``grown_layer_sources``), every new layer with the fresh
    model's initialisation except its two output projections (attention ``o_proj``, MLP
    ``down_proj``) at zero, so it adds nothing to the residual stream until trained (a
    pre-norm block with zero outputs is the identity; the zeros get gradients at once).
    Non-layer weights (embeddings, final norm) come from the seed."""
    out = {k: v for k, v in seed.items() if not k.startswith("model.layers.")}
    for j, source in enumerate(grown_layer_sources(old_layers, new_layers)):
        prefix = f"model.layers.{j}."
        for key, value in fresh.items():
            if not key.startswith(prefix):
                continue
            name = key[len(prefix) :]
            if source is not None:
                out[key] = seed[f"model.layers.{source}.{name}"]
            elif name in ("self_attn.o_proj.weight", "mlp.down_proj.weight"):
                out[key] = value.new_zeros(value.shape)
            else:
                out[key] = value
    return out


def save_prior(model, out_dir: Path, meta: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    (out_dir / PRIOR_META).write_text(json.dumps(meta, indent=2))


def read_prior_meta(prior_dir: Path) -> dict:
    path = Path(prior_dir) / PRIOR_META
    if not path.is_file():
        raise CheckpointError(f"{prior_dir} is not a tokgen prior ({PRIOR_META} is missing)")
    return json.loads(path.read_text())


def export_prior_set(run_dirs: list[Path], out_dir: Path, dtype: str = "bfloat16") -> list[dict]:
    """Assemble trained priors (one run per level, any order) into a prior set
    ``out_dir/level{N}/``: each run's ``best/`` checkpoint (lowest validation loss), else
    its latest ``model/``. Weights are stored as ``dtype`` (bf16 halves the size; both
    engines compute in float32 unless told otherwise)."""
    import torch
    from transformers import AutoModelForCausalLM

    metas = {}
    for run in run_dirs:
        model_dir = Path(run) / "best" if (Path(run) / "best").is_dir() else Path(run) / "model"
        meta = read_prior_meta(model_dir)
        if meta["level"] in metas:
            raise TokgenError(f"two runs hold level {meta['level']} priors")
        metas[meta["level"]] = (model_dir, meta)
    if sorted(metas) != list(range(len(metas))):
        raise TokgenError(f"a prior set needs levels 0..N-1; got levels {sorted(metas)}")
    if len({(m["codec"], tuple(m["codebook_sizes"])) for _, m in metas.values()}) != 1:
        raise TokgenError("the runs were trained on different codecs")
    for level, (model_dir, meta) in sorted(metas.items()):
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True)
        save_prior(model.to(getattr(torch, dtype)), Path(out_dir) / f"level{level}", meta)
    return [meta for _, (_, meta) in sorted(metas.items())]


def default_size_prior(out: Path, positions: int) -> Path:
    """A randomly initialised prior of the default upsampler's size, with room for
    ``positions`` tokens (speed does not depend on the weights)."""
    from tokgen.codec.base import LevelSpec
    from tokgen.codec.presets import PRESETS as CODECS

    layout = TokenLayout.for_levels([LevelSpec(lv.hop, lv.codebook_size) for lv in CODECS["default"].levels])
    cfg = preset_config("default", 1).model_copy(update={"n_ctx": positions})
    save_prior(build_prior(cfg, layout, 0, 1), out, {"level": 0, "n_ctx": positions})
    return out
