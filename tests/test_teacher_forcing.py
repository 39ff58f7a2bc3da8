"""Teacher-forced draws of an upsampler, and the decoder fine-tune that decodes them: each
drawn code sees the real codes before it (and only those), frames before the start stay
real, and the fine-tune trains the decoder on the draws with the codes frozen."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.test_msvq import SMALL, TINY, assert_decoder_only_changed
from tokgen.codec.train_msvq import MSVQTrainConfig, train_msvq
from tokgen.errors import TokgenError
from tokgen.prior.layout import TokenLayout
from tokgen.prior.model import build_prior, preset_config, save_prior
from tokgen.prior.teacher_forcing import (
    UpsamplerDraws,
    load_upsampler,
    teacher_forced_samples,
    teacher_forced_sequence,
)

LAYOUT = TokenLayout((32, 32))  # TINY's two levels
RATIO = 4
COLD = 1e-4  # a temperature this low draws the most likely code


def upsampler(n_ctx: int, reference_tokens: int = 0) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = preset_config("tiny", 1).model_copy(update={"n_ctx": n_ctx, "reference_tokens": reference_tokens})
    return build_prior(cfg, LAYOUT, 1, RATIO).eval()


def codes(rng: np.random.Generator, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    own = torch.from_numpy(rng.integers(0, 32, (2, frames)))
    upper = torch.from_numpy(rng.integers(0, 32, (2, frames // RATIO)))
    return upper, own


def test_each_draw_is_the_prior_s_prediction_for_its_position():
    """The most likely draws equal the argmax of the logits the layout's own prompt gives at
    the position before each code."""
    model = upsampler(32, reference_tokens=4)
    upper, own = codes(np.random.default_rng(0), 16)
    reference = torch.from_numpy(np.random.default_rng(1).integers(0, 32, (2, 4)))
    drawn = teacher_forced_samples(model, LAYOUT, 1, upper, own, reference, temperature=COLD)
    start, stop = LAYOUT.level_range(1)
    for b in range(2):
        prefix = LAYOUT.upsampler_prefix(1, upper[b].numpy(), reference[b].numpy())
        tokens = LAYOUT.upsampler_prompt(1, upper[b].numpy(), own[b].numpy(), reference[b].numpy())
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([tokens])).logits[0]
        expected = logits[len(prefix) - 1 : len(prefix) - 1 + 16, start:stop].argmax(-1)
        assert torch.equal(drawn[b], expected)


def test_a_draw_never_sees_its_own_code_or_later_ones():
    model = upsampler(32)
    upper, own = codes(np.random.default_rng(2), 16)
    before = teacher_forced_samples(model, LAYOUT, 1, upper, own, temperature=COLD)
    changed = own.clone()
    changed[:, 9:] = (changed[:, 9:] + 7) % 32
    after = teacher_forced_samples(model, LAYOUT, 1, upper, changed, temperature=COLD)
    assert torch.equal(before[:, :10], after[:, :10])


def test_draws_at_temperature_one_are_codes_of_the_level_and_follow_the_seed():
    model = upsampler(32)
    upper, own = codes(np.random.default_rng(3), 16)
    a = teacher_forced_samples(model, LAYOUT, 1, upper, own, generator=torch.Generator().manual_seed(5))
    b = teacher_forced_samples(model, LAYOUT, 1, upper, own, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == own.shape and int(a.min()) >= 0 and int(a.max()) < 32


def test_a_long_sequence_is_drawn_in_windows_from_its_start_on():
    model = upsampler(16)
    rng = np.random.default_rng(4)
    own = rng.integers(0, 32, 61)
    upper = rng.integers(0, 32, 16)
    out = teacher_forced_sequence(model, LAYOUT, 1, upper, own, 13, 16, RATIO, temperature=COLD)
    assert out.shape == own.shape and np.array_equal(out[:13], own[:13])
    # a frame's draw is its window's argmax given at least half a window of real history:
    # the same as drawing it in a window that starts at a whole upper frame up to 8 before it
    for t in (13, 30, 60):
        first = max(0, t - 8) // RATIO * RATIO
        window = torch.from_numpy(own[first : first + 16])[None]
        above = torch.from_numpy(upper[first // RATIO : -(-(first + window.shape[1]) // RATIO)])[None]
        alone = teacher_forced_samples(model, LAYOUT, 1, above, window, temperature=COLD)
        assert out[t] == int(alone[0, t - first])


@pytest.fixture(scope="module")
def prior_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("upsampler")
    meta = {
        "level": 1,
        "n_ctx": 256,
        "ratio": RATIO,
        "codebook_sizes": [32, 32],
        "config": {"reference_tokens": 8},
    }
    save_prior(upsampler(256, reference_tokens=8), root, meta)
    return root


def test_upsampler_draws_replace_only_the_upsampler_s_level(prior_dir):
    draws = UpsamplerDraws(load_upsampler(prior_dir))
    upper, own = codes(np.random.default_rng(6), 64)
    ref_upper, ref_own = codes(np.random.default_rng(7), 32)
    out = draws([upper, own], [ref_upper, ref_own], seed=1)
    assert out[0] is upper and out[1].shape == own.shape and not torch.equal(out[1], own)
    with pytest.raises(TokgenError, match="exceed the prior's window"):
        draws([*codes(np.random.default_rng(8), 512)], [ref_upper, ref_own], seed=1)


def test_later_passes_draw_given_the_earlier_draws(prior_dir):
    """passes=2: the second draw at each position follows the first pass's draws before it."""
    up = load_upsampler(prior_dir)
    upper, own = codes(np.random.default_rng(9), 64)
    ref_upper, ref_own = codes(np.random.default_rng(10), 32)
    ref = ref_own[:, -up.reference_tokens :]
    twice = UpsamplerDraws(up, temperature=COLD, passes=2)([upper, own], [ref_upper, ref_own], seed=1)[1]
    first = teacher_forced_samples(up.model, LAYOUT, 1, upper, own, ref, temperature=COLD)
    second = teacher_forced_samples(up.model, LAYOUT, 1, upper, first, ref, temperature=COLD)
    assert torch.equal(twice, second) and not torch.equal(twice, first)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("msvq-tf")
    train_msvq(TINY, MSVQTrainConfig(steps=4, **SMALL), corpus, run, resume=False)
    return run / "best"


def test_the_fine_tune_decodes_draws_and_changes_the_decoder_only(corpus, trained, prior_dir, tmp_path):
    # a reference crop of no whole number of top frames, as the defaults' (16,000 / 512) are
    small = {**SMALL, "log_every": 1, "reference_samples": 2000}
    cfg = MSVQTrainConfig(steps=2, **small, freeze_codes=True, teacher_forced_fraction=1.0)
    draws = UpsamplerDraws(load_upsampler(prior_dir))
    train_msvq(TINY, cfg, corpus, tmp_path / "tf", resume=False, init_from=trained, code_sampler=draws)
    logged = [json.loads(line) for line in (tmp_path / "tf" / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in logged if "teacher_forced" in r]
    assert steps and all(r["teacher_forced"] == 1.0 and 0 < r["drawn_changed"] <= 1 for r in steps)
    assert_decoder_only_changed(tmp_path / "tf", trained)


def test_the_fine_tune_needs_frozen_codes_and_a_prior(corpus, trained, prior_dir, tmp_path):
    draws = UpsamplerDraws(load_upsampler(prior_dir))
    with pytest.raises(TokgenError, match="frozen codes and a prior"):
        train_msvq(
            TINY,
            MSVQTrainConfig(steps=1, **SMALL, teacher_forced_fraction=0.5),
            corpus,
            tmp_path / "a",
            resume=False,
            init_from=trained,
            code_sampler=draws,
        )
    frozen = MSVQTrainConfig(steps=1, **SMALL, freeze_codes=True, teacher_forced_fraction=0.5)
    with pytest.raises(TokgenError, match="frozen codes and a prior"):
        train_msvq(TINY, frozen, corpus, tmp_path / "b", resume=False, init_from=trained)
