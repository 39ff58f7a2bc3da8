"""Prior training on cached codes: it learns real structure, resumes, and its output is a
model directory the engines load."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tokgen.codec import load_codec
from tokgen.engine.base import SamplingParams
from tokgen.engine.hf import HFEngine
from tokgen.errors import TokgenError
from tokgen.prior.corpus import CodeCorpus, cached_splits, codes_cache_dir
from tokgen.prior.evaluate import evaluate_prior
from tokgen.prior.layout import TokenLayout
from tokgen.prior.model import grown_layer_sources, preset_config, read_prior_meta
from tokgen.prior.train import PriorTrainConfig, train_prior


def synthetic_corpus(rng: np.random.Generator, n_files: int) -> CodeCorpus:
    """Top codes cycle through 5 values (phase random per file); each bottom frame repeats
    its top code: a prior that learns gets far below the unigram entropy (log2 5 = 2.32)."""
    files = []
    for _ in range(n_files):
        top = (np.arange(40) + rng.integers(5)) % 5
        files.append([top, np.repeat(top, 2) + 10])
    return CodeCorpus(files)


@pytest.fixture
def synthetic_data(tmp_path, tiny_model_dir):
    codec = load_codec(tiny_model_dir)
    cache = codes_cache_dir(codec, tmp_path)
    rng = np.random.default_rng(0)
    synthetic_corpus(rng, 20).save(cache / "codes-train.npz")
    synthetic_corpus(rng, 4).save(cache / "codes-valid.npz")
    return codec, tmp_path


FAST = {"batch_size": 16, "log_every": 10, "checkpoint_every": 50, "lr": 3e-3, "warmup_steps": 10}


@pytest.mark.parametrize("level", [0, 1])
def test_prior_learns_structure_beyond_unigram(synthetic_data, tmp_path, level):
    codec, data = synthetic_data
    train_prior(
        codec, [data], tmp_path / "run", level, preset_config("tiny", 0), PriorTrainConfig(steps=150, **FAST)
    )
    result = evaluate_prior(codec, data, tmp_path / "run" / "model")
    assert result["unigram_bits_per_token"] > 2.0
    assert result["bits_per_token"] < 0.5 * result["unigram_bits_per_token"], result
    # best/ holds the checkpoint with the lowest validation loss seen.
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    valid = {r["step"]: r["valid_bits_per_token"] for r in log if "valid_bits_per_token" in r}
    best = read_prior_meta(tmp_path / "run" / "best")
    assert len(valid) == 3 and best["valid_bits_per_token"] == min(valid.values())
    assert valid[best["steps"]] == best["valid_bits_per_token"]


def test_several_corpora_train_as_one(synthetic_data, tmp_path):
    """``--data`` repeated: the splits of every corpus, one after the other, for training and
    validation alike."""
    codec, data = synthetic_data
    other = tmp_path / "other"
    cache = codes_cache_dir(codec, other)
    rng = np.random.default_rng(1)
    synthetic_corpus(rng, 3).save(cache / "codes-train.npz")
    synthetic_corpus(rng, 2).save(cache / "codes-valid.npz")
    union = cached_splits(codec, [data, other], "valid")
    parts = [cached_splits(codec, [d], "valid").files for d in (data, other)]
    assert len(union.files) == 4 + 2
    for got, want in zip(union.files, parts[0] + parts[1], strict=True):
        assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
    cfg = PriorTrainConfig(steps=10, **FAST)
    result = train_prior(codec, [data, other], tmp_path / "run", 1, preset_config("tiny", 0), cfg)
    assert result["step"] == 10 and np.isfinite(result["valid_bits_per_token"])


def test_resume_and_engine_loadable_output(synthetic_data, tmp_path, loop_thread):
    codec, data = synthetic_data
    run = tmp_path / "run"
    first = train_prior(codec, [data], run, 1, preset_config("tiny", 0), PriorTrainConfig(steps=20, **FAST))
    assert first["step"] == 20
    again = train_prior(
        codec, [data], run, 1, preset_config("tiny", 0), PriorTrainConfig(steps=30, **FAST), resume=True
    )
    assert again["step"] == 30
    meta = read_prior_meta(run / "model")
    assert meta["level"] == 1 and meta["ratio"] == 2 and meta["steps"] == 30

    layout = TokenLayout.for_levels(codec.levels)
    engine = HFEngine(run / "model")
    prompt = layout.upsampler_prompt(1, upper=np.array([0, 1]), context=np.array([10]))

    async def sample():
        out = []
        async for chunk in engine.generate(
            "p", prompt, SamplingParams(3, 1.0, seed=0, allowed=layout.level_range(1))
        ):
            out += chunk
        return out

    tokens = loop_thread.run(sample())
    loop_thread.run(engine.close())
    assert len(tokens) == 3 and all(layout.level_range(1)[0] <= t < layout.level_range(1)[1] for t in tokens)


def test_prior_cli_train_and_eval_json(synthetic_data, tmp_path, tiny_model_dir):
    _, data = synthetic_data
    run = [sys.executable, "-m", "tokgen", "prior"]
    common = ["--data", str(data), "--codec", str(tiny_model_dir)]
    r = subprocess.run(
        [
            *run,
            "train",
            "--level",
            "0",
            "--run",
            str(tmp_path / "r0"),
            "--preset",
            "tiny",
            "--steps",
            "5",
            *common,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [*run, "eval", "--json", "--prior", str(tmp_path / "r0" / "model"), *common],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    level = json.loads(r.stdout)["levels"][0]
    assert level["level"] == 0 and level["context_tokens"] == 16
    assert np.isfinite(level["bits_per_token"]) and np.isfinite(level["unigram_bits_per_token"])
    r = subprocess.run(
        [*run, "train", "--level", "7", "--run", str(tmp_path / "r7"), *common],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "--level must be in 0..1" in r.stderr


def test_export_a_prior_set(synthetic_data, tmp_path):
    import torch
    from safetensors import safe_open

    from tokgen.errors import TokgenError
    from tokgen.prior.model import export_prior_set

    codec, data = synthetic_data
    for level in (0, 1):
        cfg = PriorTrainConfig(steps=2, **FAST)
        train_prior(codec, [data], tmp_path / f"run{level}", level, preset_config("tiny", level), cfg)
    metas = export_prior_set([tmp_path / "run1", tmp_path / "run0"], tmp_path / "set")
    assert [m["level"] for m in metas] == [0, 1]
    for level in (0, 1):
        with safe_open(tmp_path / "set" / f"level{level}" / "model.safetensors", "pt") as f:
            assert all(f.get_tensor(k).dtype == torch.bfloat16 for k in f.keys())  # noqa: SIM118
        assert read_prior_meta(tmp_path / "set" / f"level{level}")["level"] == level
    with pytest.raises(TokgenError, match="needs levels"):
        export_prior_set([tmp_path / "run1"], tmp_path / "bad")
    with pytest.raises(TokgenError, match="two runs"):
        export_prior_set([tmp_path / "run0", tmp_path / "run0"], tmp_path / "bad")


def test_unigram_entropy_of_the_scored_tokens():
    from tokgen.codec.base import LevelSpec
    from tokgen.prior.evaluate import unigram_bits
    from tokgen.prior.examples import IGNORE, Example

    layout = TokenLayout.for_levels([LevelSpec(4, 8), LevelSpec(2, 8)])
    tokens = layout.to_tokens(np.array([0, 0, 1, 1, 2, 2, 3, 3]), 1)
    labels = tokens.copy()
    labels[:4] = IGNORE  # only the scored half counts: codes 2, 2, 3, 3 -> 1 bit
    assert unigram_bits([Example(tokens, labels)], layout, 1) == pytest.approx(1.0)
    assert unigram_bits([Example(tokens, tokens)], layout, 1) == pytest.approx(2.0)


def test_a_run_that_stops_between_checkpoints_keeps_its_end_if_best(synthetic_data, tmp_path):
    """--steps / --max-minutes may end a run between checkpoints: its last weights count for
    best/ too (they are validated at the end anyway)."""
    codec, data = synthetic_data
    run = tmp_path / "run"
    end = train_prior(codec, [data], run, 0, preset_config("tiny", 0), PriorTrainConfig(steps=80, **FAST))
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    at_50 = next(r["valid_bits_per_token"] for r in log if r["step"] == 50)
    best = read_prior_meta(run / "best")
    assert best["valid_bits_per_token"] == min(at_50, end["valid_bits_per_token"])
    assert end["valid_bits_per_token"] < at_50 and best["steps"] == 80  # still learning at step 80


def test_torchrun_trains_data_parallel_like_one_process_at_the_same_global_batch(
    synthetic_data, tmp_path, tiny_model_dir
):
    """Two processes over gloo at batch 8 each against one at batch 16: the same loss curve
    within noise; only rank 0 logs and checkpoints."""
    from pathlib import Path

    _, data = synthetic_data

    def train(run: Path, launcher: list[str], batch: int) -> list[dict]:
        args = ["prior", "train", "--level", "0", "--data", str(data), "--run-dir", str(run)]
        args += ["--preset", "tiny"]
        args += ["--steps", "100", "--checkpoint-every", "50", "--batch-size", str(batch), "--lr", "3e-3"]
        args += ["--codec", str(tiny_model_dir)]
        r = subprocess.run([*launcher, *args], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m"]
    two = train(tmp_path / "two", [*torchrun, "tokgen"], 8)
    one = train(tmp_path / "one", [sys.executable, "-m", "tokgen"], 16)
    assert [r["step"] for r in two] == [r["step"] for r in one] == [50, 100]  # rank 0 alone logs
    for a, b in zip(one, two, strict=True):
        assert abs(a["valid_bits_per_token"] - b["valid_bits_per_token"]) < 0.25
    assert two[-1]["valid_bits_per_token"] < 1.5  # learned: unigram entropy is log2(5) = 2.32
    assert (tmp_path / "two" / "best").is_dir() and (tmp_path / "two" / "state.pt").is_file()


def test_a_run_started_from_another_prior_keeps_its_weights_and_architecture(synthetic_data, tmp_path):
    """--init-from: step 0 of the new run validates like the prior it starts from (the
    warm-up LR barely moves it), with that prior's architecture, not the preset's; a prior
    of another level is refused."""
    codec, data = synthetic_data
    cfg = PriorTrainConfig(steps=100, **FAST)
    train_prior(codec, [data], tmp_path / "a", 1, preset_config("tiny", 0), cfg)
    trained = evaluate_prior(codec, data, tmp_path / "a" / "model")["bits_per_token"]
    fresh = evaluate_prior(codec, data, _one_step(codec, data, tmp_path / "fresh", None))["bits_per_token"]
    warm = evaluate_prior(codec, data, _one_step(codec, data, tmp_path / "warm", tmp_path / "a" / "model"))
    assert warm["bits_per_token"] == pytest.approx(trained, abs=0.05)
    assert fresh > trained + 0.5, (fresh, trained)
    assert read_prior_meta(tmp_path / "warm" / "model")["config"]["hidden_size"] == 64
    with pytest.raises(TokgenError, match="level 1 prior, not level 0"):
        train_prior(
            codec,
            [data],
            tmp_path / "b",
            0,
            preset_config("tiny", 0),
            PriorTrainConfig(steps=1),
            init_from=tmp_path / "a" / "model",
        )


def _one_step(codec, data, run, init_from):
    """One step at a negligible LR from ``init_from`` (or from scratch) with a preset whose
    architecture differs from the tiny one (the seed prior's must win)."""
    cfg = PriorTrainConfig(steps=1, batch_size=4, log_every=1, checkpoint_every=1, lr=1e-6, warmup_steps=0)
    preset = preset_config("tiny", 0).model_copy(update={"hidden_size": 64 if init_from is None else 128})
    train_prior(codec, [data], run, 1, preset, cfg, init_from=init_from)
    return run / "model"


def test_grown_layer_sources_keep_the_seed_in_order_and_refuse_to_shrink():
    assert grown_layer_sources(4, 8) == [0, None, 1, None, 2, None, 3, None]
    assert grown_layer_sources(4, 6) == [0, 1, None, 2, 3, None]
    assert grown_layer_sources(2, 2) == [0, 1]
    with pytest.raises(TokgenError, match="grow, not shrink"):
        grown_layer_sources(4, 3)


def test_a_grown_prior_computes_what_its_seed_did_and_then_trains(synthetic_data, tmp_path):
    """--grow-layers: the deeper prior's logits equal the seed's (new layers start as the
    identity), its new layers learn (their zero projections move), and a resumed run keeps
    the grown architecture without the flag."""
    import torch
    from safetensors.torch import load_file

    from tokgen.prior.model import build_prior
    from tokgen.prior.train import level_ratio, load_prior_weights

    codec, data = synthetic_data
    seed_cfg = preset_config("tiny", 0).model_copy(update={"num_layers": 2})
    train_prior(codec, [data], tmp_path / "a", 1, seed_cfg, PriorTrainConfig(steps=20, **FAST))
    layout, ratio = TokenLayout.for_levels(codec.levels), level_ratio(codec, 1)
    seed = build_prior(seed_cfg, layout, 1, ratio)
    load_prior_weights(seed, tmp_path / "a" / "model")
    grown = build_prior(seed_cfg.model_copy(update={"num_layers": 5}), layout, 1, ratio)
    load_prior_weights(grown, tmp_path / "a" / "model", seed_layers=2)
    ids = torch.randint(3, layout.vocab_size, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(grown(ids).logits, seed(ids).logits)

    cfg = PriorTrainConfig(steps=10, **FAST)
    train_prior(
        codec, [data], tmp_path / "g", 1, seed_cfg, cfg, init_from=tmp_path / "a" / "model", grow_layers=5
    )
    meta = read_prior_meta(tmp_path / "g" / "model")
    assert meta["config"]["num_layers"] == 5
    state = load_file(str(tmp_path / "g" / "model" / "model.safetensors"))
    new_layer = next(j for j, s in enumerate(grown_layer_sources(2, 5)) if s is None)
    assert state[f"model.layers.{new_layer}.mlp.down_proj.weight"].abs().sum() > 0
    train_prior(codec, [data], tmp_path / "g", 1, seed_cfg, PriorTrainConfig(steps=20, **FAST), resume=True)
    assert read_prior_meta(tmp_path / "g" / "model")["steps"] == 20
    with pytest.raises(TokgenError, match="needs --init-from"):
        train_prior(codec, [data], tmp_path / "h", 1, seed_cfg, cfg, grow_layers=5)


def test_an_upsampler_seeded_with_another_reference_length_trains_with_it(synthetic_data, tmp_path):
    """--reference-tokens: a seed trained with one reference length continues with another
    (rotary positions: the same weights fit), the run records it, a resumed run keeps it,
    and the top prior (which has no reference) refuses the flag."""
    from safetensors.torch import load_file

    codec, data = synthetic_data
    seed_cfg = preset_config("tiny", 1).model_copy(update={"reference_tokens": 4})
    train_prior(codec, [data], tmp_path / "a", 1, seed_cfg, PriorTrainConfig(steps=10, **FAST))
    cfg = PriorTrainConfig(steps=10, **FAST)
    seed = tmp_path / "a" / "model"
    train_prior(codec, [data], tmp_path / "r", 1, seed_cfg, cfg, init_from=seed, reference_tokens=12)
    assert read_prior_meta(tmp_path / "r" / "model")["config"]["reference_tokens"] == 12
    seed_state = load_file(str(seed / "model.safetensors"))
    assert set(load_file(str(tmp_path / "r" / "model" / "model.safetensors"))) == set(seed_state)
    train_prior(codec, [data], tmp_path / "r", 1, seed_cfg, PriorTrainConfig(steps=20, **FAST), resume=True)
    meta = read_prior_meta(tmp_path / "r" / "model")
    assert (meta["steps"], meta["config"]["reference_tokens"]) == (20, 12)
    with pytest.raises(TokgenError, match="--reference-tokens is for an upsampler"):
        train_prior(codec, [data], tmp_path / "t", 0, preset_config("tiny", 0), cfg, reference_tokens=8)


def test_scheduled_sampling_replaces_predicted_inputs_only_and_keeps_the_targets():
    """mix_own_draws: at fraction 1 every input token whose position is predicted becomes a
    draw of the level's codes; the conditioning prefix and the labels stay as they were."""
    import torch

    from tokgen.prior.examples import level_example
    from tokgen.prior.model import build_prior
    from tokgen.prior.train import collate, mix_own_draws

    layout = TokenLayout((8, 8))
    torch.manual_seed(0)
    model = build_prior(preset_config("tiny", 1), layout, 1, 2)
    rng = np.random.default_rng(0)
    codes = [rng.integers(0, 8, 8), rng.integers(0, 8, 16)]
    batch = collate([level_example(layout, 1, codes, 0, 16, 2) for _ in range(4)])
    same = mix_own_draws(model, batch, layout.level_range(1), 0.0)
    assert torch.equal(same, batch["input_ids"])
    mixed = mix_own_draws(model, batch, layout.level_range(1), 1.0, torch.Generator().manual_seed(1))
    predicted = batch["labels"] != -100
    start, stop = layout.level_range(1)
    assert torch.equal(mixed[~predicted], batch["input_ids"][~predicted])  # BOS, top codes, SEP
    assert bool(((mixed[predicted] >= start) & (mixed[predicted] < stop)).all())
    assert bool((mixed[predicted] != batch["input_ids"][predicted]).any())  # a random prior errs
    half = mix_own_draws(model, batch, layout.level_range(1), 0.5, torch.Generator().manual_seed(2))
    assert 0 < int((half != batch["input_ids"]).sum()) < int((mixed != batch["input_ids"]).sum())


def test_an_upsampler_trained_with_scheduled_sampling_still_learns(synthetic_data, tmp_path):
    codec, data = synthetic_data
    cfg = PriorTrainConfig(steps=150, **FAST, scheduled_sampling=0.25)
    train_prior(codec, [data], tmp_path / "run", 1, preset_config("tiny", 0), cfg)
    result = evaluate_prior(codec, data, tmp_path / "run" / "model")
    assert result["bits_per_token"] < 0.5 * result["unigram_bits_per_token"], result


def test_residual_dropout_acts_in_training_only_and_leaves_the_weights_alone():
    """add_residual_dropout: a model in eval mode computes exactly what it did without the
    hooks; in training mode two forward passes differ; the state dict keeps its keys."""
    import torch

    from tokgen.prior.model import build_prior
    from tokgen.prior.train import add_residual_dropout

    layout = TokenLayout((8, 8))
    torch.manual_seed(0)
    model = build_prior(preset_config("tiny", 0), layout, 0, 1)
    ids = torch.tensor([[1, 3, 4, 5, 6, 7, 8, 9]])
    model.eval()
    before = model(input_ids=ids).logits
    keys = set(model.state_dict())
    handles = add_residual_dropout(model, 0.3)
    assert len(handles) == 1 + 2 * len(model.model.layers)
    assert torch.equal(model(input_ids=ids).logits, before)
    model.train()
    first, second = model(input_ids=ids).logits, model(input_ids=ids).logits
    assert not torch.allclose(first, second)
    assert not torch.allclose(first, before)
    assert set(model.state_dict()) == keys
