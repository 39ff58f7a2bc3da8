"""Adversarial fine-tuning of the msvq decoder: the discriminator's losses, and a run that
trains the decoder only (codes unchanged), logs its critic and resumes exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.test_msvq import SMALL as TEST_MSVQ_SMALL
from tests.test_msvq import TINY, assert_decoder_only_changed
from tokgen.codec.discriminator import (
    MultiResolutionDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
)
from tokgen.codec.train_msvq import MSVQTrainConfig, keep_levels_for, train_msvq
from tokgen.errors import TokgenError

SMALL = {**TEST_MSVQ_SMALL, "log_every": 1}
ADVERSARIAL = {**SMALL, "freeze_codes": True, "adversarial_weight": 1.0, "discriminator_warmup_steps": 1}


def judged(logit: float, feature: float) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
    return [(torch.full((2, 1, 4, 4), logit), [torch.full((2, 3, 4, 4), feature)]) for _ in range(3)]


def test_hinge_losses_are_zero_past_the_margin_and_linear_inside_it():
    assert discriminator_loss(judged(1.5, 1), judged(-1.5, 1)).item() == 0.0
    assert discriminator_loss(judged(0.0, 1), judged(0.0, 1)).item() == pytest.approx(2.0)
    assert generator_loss(judged(1.5, 1)).item() == 0.0
    assert generator_loss(judged(-1.0, 1)).item() == pytest.approx(2.0)


def test_feature_matching_is_relative_to_the_real_features():
    assert feature_matching_loss(judged(0, 2.0), judged(0, 2.0)).item() == 0.0
    assert feature_matching_loss(judged(0, 2.0), judged(0, 1.0)).item() == pytest.approx(0.5, rel=1e-4)
    assert feature_matching_loss(judged(0, 20.0), judged(0, 10.0)).item() == pytest.approx(0.5, rel=1e-4)


def test_the_discriminator_judges_every_resolution_and_passes_gradients_to_the_audio():
    torch.manual_seed(0)
    d = MultiResolutionDiscriminator()
    audio = torch.randn(2, 1, 4096, requires_grad=True)
    out = d(audio)
    assert len(out) == 3 and all(logits.shape[:2] == (2, 1) for logits, _ in out)
    generator_loss(out).backward()
    assert audio.grad is not None and audio.grad.abs().sum() > 0


def test_partial_levels_fixes_how_many_levels_dropped_examples_keep():
    keep = keep_levels_for(np.random.default_rng(0), 1000, 3, 0.75, partial_levels=2)
    assert set(keep.tolist()) == {2, 3} and 0.7 < (keep == 2).float().mean() < 0.8


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("msvq")
    train_msvq(TINY, MSVQTrainConfig(steps=4, **SMALL), corpus, run, resume=False)
    return run / "best"


def test_adversarial_fine_tuning_changes_the_decoder_only(corpus, trained, tmp_path):
    cfg = MSVQTrainConfig(steps=3, **ADVERSARIAL)
    train_msvq(TINY, cfg, corpus, tmp_path / "gan", resume=False, init_from=trained)
    logged = [json.loads(line) for line in (tmp_path / "gan" / "train_log.jsonl").read_text().splitlines()]
    assert all("disc" in r for r in logged)
    assert "adversarial" not in logged[0] and "adversarial" in logged[1]  # the critic warms up first
    assert_decoder_only_changed(tmp_path / "gan", trained)


def test_an_adversarial_run_resumes_exactly_with_its_discriminator(corpus, trained, tmp_path):
    cfg = MSVQTrainConfig(steps=4, **ADVERSARIAL)
    straight = train_msvq(TINY, cfg, corpus, tmp_path / "a", False, trained)
    train_msvq(TINY, MSVQTrainConfig(steps=2, **ADVERSARIAL), corpus, tmp_path / "b", False, trained)
    resumed = train_msvq(TINY, MSVQTrainConfig(steps=4, **ADVERSARIAL), corpus, tmp_path / "b", True)
    assert resumed["valid_loss"] == pytest.approx(straight["valid_loss"], rel=1e-5)
    state = torch.load(tmp_path / "b" / "state.pt", weights_only=True)
    assert "discriminator" in state and "d_opt" in state


def test_a_plain_run_goes_on_adversarially_after_the_critic_warms_up(corpus, trained, tmp_path):
    plain = {k: v for k, v in ADVERSARIAL.items() if k != "adversarial_weight"}
    train_msvq(TINY, MSVQTrainConfig(steps=2, **plain), corpus, tmp_path / "c", False, trained)
    train_msvq(TINY, MSVQTrainConfig(steps=4, **ADVERSARIAL), corpus, tmp_path / "c", True)
    logged = [json.loads(line) for line in (tmp_path / "c" / "train_log.jsonl").read_text().splitlines()]
    assert ["adversarial" in r for r in logged] == [False, False, False, True]
    # resumed again, it remembers where its critic started
    warm = {**ADVERSARIAL, "discriminator_warmup_steps": 3}
    train_msvq(TINY, MSVQTrainConfig(steps=5, **plain), corpus, tmp_path / "e", False, trained)
    train_msvq(TINY, MSVQTrainConfig(steps=6, **warm), corpus, tmp_path / "e", True)
    train_msvq(TINY, MSVQTrainConfig(steps=9, **warm), corpus, tmp_path / "e", True)
    logged = [json.loads(line) for line in (tmp_path / "e" / "train_log.jsonl").read_text().splitlines()]
    assert ["adversarial" in r for r in logged[5:]] == [False, False, False, True]


def test_adversarial_training_needs_frozen_codes(corpus, trained, tmp_path):
    cfg = MSVQTrainConfig(steps=1, **{**ADVERSARIAL, "freeze_codes": False})
    with pytest.raises(TokgenError, match="frozen codes"):
        train_msvq(TINY, cfg, corpus, tmp_path / "d", False, trained)
