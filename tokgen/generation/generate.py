"""Continuations end to end: prime -> codes -> priors (through the engines) -> audio.

A prior set is a directory with one prior per level (``level0/``, ``level1/``, ...), each
as written by ``tokgen prior train`` (``model/``). The prime is trimmed to whole top-level
frames (at most one top hop, 32 ms with the default codec, is dropped from its end) so that
every level's codes line up; the continuation starts right after the trimmed prime.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tokgen.assets import DEFAULT_PRIORS_DIR
from tokgen.codec.base import Codec
from tokgen.codec.codes import REFERENCE_SECONDS
from tokgen.codec.top_levels import TopLevels
from tokgen.engine.base import Engine
from tokgen.engine.factory import Backend, engine_class, engine_options
from tokgen.errors import TokgenError
from tokgen.generation.instrument import INSTRUMENT_GUIDED_LEVELS, instrument_biases
from tokgen.generation.key import add_biases, key_bias
from tokgen.generation.sampler import LevelPrior, OnChange, SamplingSettings, level_frames, sample_hierarchy
from tokgen.generation.windows import plan_windows, window_hop
from tokgen.names import Mode
from tokgen.prior.corpus import encode_file
from tokgen.prior.layout import TokenLayout
from tokgen.prior.model import read_prior_meta, sequence_length

MAX_SECONDS = 600.0  # longest continuation one request may ask for
MAX_PRIME_SECONDS = 60.0
# Prime audio a job keeps as the timbre reference of codecs that have one (``msvq``): what a
# codes file carries (``REFERENCE_SECONDS`` of ``tokgen.codec.codes``, 2 s).
# Default segment seconds of the upsamplers, from `tokgen bench generate` and the seam
# measurement in docs/PERFORMANCE.md: the bottom level takes 76% of the tokens and its
# seams matter least (the level above carries the notes), so it gets the short segments.
DEFAULT_SEGMENT_SECONDS = 2.0
DEFAULT_BOTTOM_SEGMENT_SECONDS = 0.5
FAST_LEVEL_RATE = 250.0  # frames per second above which a level is "the bottom": short segments
# The first window of every level generates only enough for the first audio piece, this
# long, plus the decoder's lookahead (the frames after a piece that its decode reads: 0.23 s
# for the msvq codec, 34 ms for the VQ-VAE), in whole top frames; then windows double.
# The level below starts after it, so the first audio is out after one short window per
# level. A lead shorter than the lookahead makes the first piece wait for every level's
# second, full window (0.13 s leads with the msvq codec: 0.8 s to first audio alone, 1.8 s
# at 8 streams; docs/PERFORMANCE.md, time to first audio).
DEFAULT_FIRST_PIECE_SECONDS = 0.032  # msvq: a 5-frame top lead, a 48 ms first piece
# ... but the first piece's decode reads only this far after it, not the decoder's whole
# lookahead (``StreamDecoder.first_lookahead``; 0.23 s for the msvq codec, 29 middle
# frames): the lead windows need 5 top frames instead of 9. The first piece is then within
# 46.9 dB of the exact decode (the example prime; scripts/measure_first_piece.py) and fades
# into the exact audio after it; everything after that is exact.
DEFAULT_FIRST_LOOKAHEAD_SECONDS = 0.112
# Every later segment of an upsampler first samples this much before its start and drops
# it, so it does not start cold at the seam (``generation.windows``; docs/MODELS.md, seams).
DEFAULT_OVERLAP_SECONDS = 0.064  # 2 top frames: 32 bottom frames, 12.5% more bottom tokens
# Where the shipped default priors live (level0/, level1/, ...), beside the default codec.


@dataclass
class Continuation:
    codes: list[np.ndarray]  # every level, prime included
    audio: np.ndarray  # decoded from the bottom level, prime included
    prime_samples: int  # where the continuation starts in ``audio``

    def new_audio(self, samples: int | None = None) -> np.ndarray:
        """The audio after the prime, cut to ``samples`` (whole top frames are generated,
        the caller gets what it asked for); None: all of it."""
        new = self.audio[self.prime_samples :]
        return new if samples is None else new[:samples]


def load_priors(
    prior_dir: str | Path | None,
    codec: Codec,
    backend: Backend = "auto",
    hop_fraction: float = 0.5,
    segment_seconds: Sequence[float] | float | None = None,
    first_piece_seconds: float | None = DEFAULT_FIRST_PIECE_SECONDS,
    overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
    first_lookahead_seconds: float | None = DEFAULT_FIRST_LOOKAHEAD_SECONDS,
    **engine_settings: object,
) -> list[LevelPrior]:
    """One engine per level's prior (``start_engines``: levels that share weights share one).

    ``segment_seconds`` splits what each upsampler generates into segments sampled in
    parallel (see ``prior.windows`` and ``segment_frames``); 0 or None keeps one segment
    per level (Jukebox's order, no seams, but one window at a time per level).
    ``first_piece_seconds`` shortens the first window of each level to what the first
    audio piece of that length needs (None: full windows), decoded from the codes up to
    ``first_lookahead_seconds`` after it (None: the decoder's whole lookahead, exact);
    ``overlap_seconds`` is each later segment's warm-up (rounded to whole top frames,
    at most half a segment)."""
    prior_dir = Path(prior_dir) if prior_dir is not None else DEFAULT_PRIORS_DIR
    if not prior_dir.is_dir():
        raise TokgenError(
            f"no prior set at {prior_dir}: train one with `tokgen prior train` or pass --priors"
        )
    segments = segment_frames(codec, segment_seconds)
    # Settings are checked before any engine starts, like the priors below (a refusal then
    # leaves none running). Leads span the same whole top frames at every level: a level's
    # lead window then reads only codes from the lead window above it (one frame more would
    # wait for a full window).
    top_hop = codec.levels[0].hop
    first_lookahead = first_lookahead_frames(codec, first_lookahead_seconds)
    lead_top = lead_top_frames(codec, first_piece_seconds, first_lookahead) if first_piece_seconds else None
    if not 0 <= overlap_seconds <= MAX_SECONDS:
        raise TokgenError(f"overlap seconds must be in [0, {MAX_SECONDS:g}], got {overlap_seconds}")
    # Priors of a codec's top levels were trained on the whole codec's token layout (the
    # same ids for those levels): check them against the whole codec.
    full = codec.inner if isinstance(codec, TopLevels) else codec
    dirs = []
    for level in range(len(codec.levels)):
        d = prior_dir / f"level{level}"
        meta = read_prior_meta(d)
        if meta.get("level") != level or meta.get("codebook_sizes") != [
            lv.codebook_size for lv in full.levels
        ]:
            raise TokgenError(f"prior {d} was not trained for level {level} of codec {codec.name!r}")
        n_ctx, reference = int(meta["n_ctx"]), int(meta.get("config", {}).get("reference_tokens", 0))
        ratio = full.levels[level - 1].hop // full.levels[level].hop if level else 1
        check_positions(d, sequence_length(level, n_ctx, ratio, reference))
        dirs.append((d, n_ctx, reference))
    engines = start_engines([d for d, _, _ in dirs], backend, **engine_settings)
    priors = []
    overlap_top = round(overlap_seconds * codec.sample_rate / top_hop)
    for level, (engine, (_, n_ctx, reference), segment) in enumerate(
        zip(engines, dirs, segments, strict=True)
    ):
        per_top = top_hop // codec.levels[level].hop
        lead = lead_top * per_top if lead_top else None
        overlap = min(overlap_top * per_top, segment // 2) if segment else 0
        lead_lookahead = first_lookahead if lead else None
        priors.append(
            LevelPrior(engine, n_ctx, hop_fraction, segment, lead, reference, overlap, lead_lookahead)
        )
    return priors


def check_positions(prior_dir: Path, tokens: int) -> None:
    """Refuse a prior whose model has fewer positions than its level's windows need (a
    model shared by levels must have room for the longest), before any engine starts."""
    try:
        positions = int(json.loads((prior_dir / "config.json").read_text())["max_position_embeddings"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TokgenError(f"prior {prior_dir}: cannot read its model's config.json ({exc})") from exc
    if tokens > positions:
        raise TokgenError(
            f"prior {prior_dir}: its windows need {tokens} positions; its model has {positions}"
        )


def start_engines(
    level_dirs: Sequence[Path], backend: Backend = "auto", **engine_settings: object
) -> list[Engine]:
    """The engine of every level, started side by side. Levels whose weights are one file
    (a model trained for several levels, its level directories linking to it) share one
    engine, so their windows are batched together in its steps."""
    groups: dict[Path, list[int]] = {}
    for level, d in enumerate(level_dirs):
        groups.setdefault((Path(d) / "model.safetensors").resolve(), []).append(level)
    cls = engine_class(backend)
    options = engine_options(backend, **engine_settings)

    def start(levels: list[int]) -> Engine:
        label = "+".join(str(lv) for lv in levels)
        return cls(level_dirs[levels[0]], metrics_label=label, **options)  # type: ignore[call-arg]

    with ThreadPoolExecutor(len(groups) if cls.thread_safe_start else 1) as pool:
        started = list(pool.map(start, groups.values()))
    engine_of = {lv: engine for engine, levels in zip(started, groups.values(), strict=True) for lv in levels}
    return [engine_of[lv] for lv in range(len(level_dirs))]


def lead_top_frames(codec: Codec, first_piece_seconds: float, first_lookahead: int | None = None) -> int:
    """Top frames in every level's lead window: the bottom level's lead must cover the
    first piece and what its decode reads after it: ``first_lookahead`` bottom frames
    (``first_lookahead_frames``; None: the decoder's whole ``decode_lookahead``, which
    ``StreamDecoder`` waits for before any later frame)."""
    bottom = codec.levels[-1]
    frames = codec.decode_lookahead(len(codec.levels) - 1) if first_lookahead is None else first_lookahead
    return math.ceil((first_piece_seconds * codec.sample_rate + frames * bottom.hop) / codec.levels[0].hop)


def first_lookahead_frames(codec: Codec, seconds: float | None) -> int:
    """Bottom frames after the first piece that its decode reads: ``seconds``' worth, at
    most the decoder's whole lookahead (None: all of it, an exact first piece)."""
    bottom = len(codec.levels) - 1
    full = codec.decode_lookahead(bottom)
    if seconds is None:
        return full
    return max(0, min(full, math.ceil(seconds * codec.sample_rate / codec.levels[bottom].hop)))


def prior_levels(prior_dir: str | Path | None) -> int:
    """Levels of a prior set (``level0/``, ``level1/``, ... without a gap)."""
    prior_dir = Path(prior_dir) if prior_dir is not None else DEFAULT_PRIORS_DIR
    n = 0
    while (prior_dir / f"level{n}").is_dir():
        n += 1
    return n


def codec_for_priors(codec: Codec, prior_dir: str | Path | None) -> Codec:
    """``codec``, or its top levels (``TopLevels``) when the prior set stops above its
    bottom level: what the generator encodes primes with and decodes codes from."""
    n = prior_levels(prior_dir)
    return TopLevels(codec, n) if 0 < n < len(codec.levels) else codec


def segment_frames(codec: Codec, seconds: Sequence[float] | float | None) -> list[int | None]:
    """Segment length in frames per level from seconds: one value for every upsampler, or
    one per upsampler (levels 1, 2, ...), 0 meaning one segment; None: the defaults above.
    The top level is never split: it carries the long-range structure and is cheap."""
    n_up = len(codec.levels) - 1
    if seconds is None:
        values = [
            DEFAULT_BOTTOM_SEGMENT_SECONDS
            if codec.sample_rate / lv.hop > FAST_LEVEL_RATE
            else DEFAULT_SEGMENT_SECONDS
            for lv in codec.levels[1:]
        ]
    elif isinstance(seconds, int | float):
        values = [seconds] * n_up
    else:
        values = list(seconds)
    if len(values) != n_up:
        raise TokgenError(f"give one segment length, or one per upsampler ({n_up}); got {len(values)}")
    frames: list[int | None] = [None]
    for level, value in enumerate(values, start=1):
        if value is not None and not 0 <= value <= MAX_SECONDS:
            raise TokgenError(
                f"segment seconds must be in [0, {MAX_SECONDS:g}] (0: no segments), got {value}"
            )
        # Whole top frames: every window then starts on the grid of every level above it,
        # as in training (an upsampler's prompt is the upper codes under its window).
        per_top = codec.levels[0].hop // codec.levels[level].hop
        top_frames = max(1, round(value * codec.sample_rate / codec.levels[0].hop))
        frames.append(top_frames * per_top if value else None)
    return frames


def check_settings(codec: Codec, settings: SamplingSettings) -> None:
    """Sampling settings against the vocabulary of ``codec``'s priors, before engines start."""
    settings.check(TokenLayout.for_levels(codec.levels).vocab_size)


def known_codes(
    codec: Codec, mode: Mode, prime: np.ndarray | None, codes: list[np.ndarray] | None
) -> list[np.ndarray]:
    """What each mode already knows, per level."""
    empty = [np.zeros(0, dtype=np.int64) for _ in codec.levels]
    if mode == "ancestral":
        return empty
    if mode == "primed":
        if prime is None:
            raise TokgenError("mode 'primed' needs prime audio")
        if prime.size > MAX_PRIME_SECONDS * codec.sample_rate:
            raise TokgenError(f"the prime is longer than the {MAX_PRIME_SECONDS:g} s limit")
        known = encode_file(codec, prime)
        if known is None:
            raise TokgenError(short_prime_message(codec))
        return known
    if mode not in ("continue", "upsample"):
        raise TokgenError(f"unknown mode {mode!r}; use primed, ancestral, continue or upsample")
    if codes is None:
        raise TokgenError(f"mode {mode!r} needs saved codes")
    if len(codes) != len(codec.levels) or codes[0].size == 0:
        raise TokgenError(f"mode {mode!r} needs saved codes of all {len(codec.levels)} levels, top not empty")
    if mode == "upsample":
        return [codes[0], *empty[1:]]
    return codes


@dataclass(frozen=True)
class Job:
    """A checked request: what is known per level and how long the result will be."""

    known: list[np.ndarray]
    top_frames: int  # length of the result, in top-level frames
    start_top: int  # top frame where the new audio starts
    # The end of the prime's audio: codecs with a timbre encoder decode in its timbre.
    reference: np.ndarray | None = None


def prepare(
    codec: Codec,
    mode: Mode,
    seconds: float,
    prime: np.ndarray | None = None,
    codes: list[np.ndarray] | None = None,
    reference: np.ndarray | None = None,
) -> Job:
    """Check a request and encode its prime; cheap, so call it before starting engines.

    ``seconds`` is new audio after the prime (primed), after the saved top level
    (continue; saved lower levels that stop short are completed first, which is how a cut
    render is resumed), or from nothing (ancestral). In upsample mode the saved top level's
    length decides the output's and ``seconds`` is not used."""
    if not 0 < seconds <= MAX_SECONDS:
        raise TokgenError(f"seconds must be in (0, {MAX_SECONDS:g}], got {seconds}")
    known = known_codes(codec, mode, prime, codes)
    hops = [lv.hop for lv in codec.levels]
    if reference is None and prime is not None:
        reference = prime
    if reference is not None:
        reference = reference[-int(REFERENCE_SECONDS * codec.sample_rate) :].astype(np.float32)
    if mode == "upsample":
        return Job(known, known[0].size, 0, reference)
    known = whole_top_frames(known, hops)
    top_frames = known[0].size + math.ceil(seconds * codec.sample_rate / hops[0])
    for level, (k, hop) in enumerate(zip(known, hops, strict=True)):
        if k.size * hop > known[0].size * hops[0]:
            raise TokgenError(f"saved level {level} is longer than the top level; the codes are inconsistent")
    return Job(known, top_frames, known[0].size, reference)


def whole_top_frames(known: list[np.ndarray], hops: list[int]) -> list[np.ndarray]:
    """Each level's known codes cut back to its last whole top frame. Saved lower levels
    that stop short are resumed from there, so that every window starts on the grid of
    the levels above it (as in training; see segment_frames): an upsampler window that
    does not reads one upper frame more than its prior's context holds."""
    return [k[: k.size // (hops[0] // hop) * (hops[0] // hop)] for k, hop in zip(known, hops, strict=True)]


def level_tokens(codec: Codec, job: Job) -> list[int]:
    """Codes each level samples for ``job`` (its total frames minus what is known)."""
    totals = level_frames(job.top_frames, [lv.hop for lv in codec.levels])
    return [t - k.size for t, k in zip(totals, job.known, strict=True)]


def context_kept(codec: Codec, priors: list[LevelPrior], job: Job) -> list[float]:
    """Seconds of the known audio that the first window of each level sees as context.
    A prime longer than a prior's context only contributes its end (see
    ``prior.windows``); callers report this rather than let the start drop silently."""
    kept = []
    totals = level_frames(job.top_frames, [lv.hop for lv in codec.levels])
    for prior, spec, k, total in zip(priors, codec.levels, job.known, totals, strict=True):
        plan = plan_windows(k.size, total, prior.n_ctx, prior.hop_fraction)
        frames = plan.windows[0].context if plan.windows else min(k.size, prior.n_ctx)
        kept.append(round(frames * spec.hop / codec.sample_rate, 3))
    return kept


ENCODE_MARGIN_SECONDS = 0.25  # more than an encoder's receptive field (0.18 s for the VQ-VAE)


def samples_seen(codec: Codec, priors: list[LevelPrior]) -> list[int]:
    """Per level, how many samples at the end of a prime its first window keeps as context."""
    return [
        (p.n_ctx - window_hop(p.n_ctx, p.hop_fraction)) * lv.hop
        for p, lv in zip(priors, codec.levels, strict=True)
    ]


def prime_tail_seconds(codec: Codec, priors: list[LevelPrior], margin_seconds: float = 0.5) -> float:
    """Seconds at the end of a prime that a stream uses: what the priors see (see
    ``encode_prime_context``, with its margin), the timbre reference, the top
    frame the prime is cut back to, and ``margin_seconds`` for the resampler's start-up
    (``load_audio(tail_seconds=...)``)."""
    seen = max(
        max(samples_seen(codec, priors)) / codec.sample_rate + ENCODE_MARGIN_SECONDS, REFERENCE_SECONDS
    )
    return seen + codec.levels[0].hop / codec.sample_rate + margin_seconds


def encode_prime_context(
    codec: Codec, priors: list[LevelPrior], prime: np.ndarray, margin_seconds: float = ENCODE_MARGIN_SECONDS
) -> list[np.ndarray]:
    """Codes of ``prime`` as far as the priors can see them, for a service: every level
    encodes only the end of the prime that the longest first window sees (a level's own,
    the levels below it read it as conditioning, and guidance reads that span at every
    level: ``guidance_biases``), plus ``margin_seconds``, more than the encoder's
    receptive field (0.18 s for the shipped codec), so those codes are exactly the whole
    prime's. Earlier frames are filler (code 0) that no window reads. So a 60 s
    prime costs what a 5 s one does. Continue them in mode "continue"."""
    top_hop = codec.levels[0].hop
    whole = prime[: prime.size - prime.size % top_hop]
    if whole.size == 0:
        raise TokgenError(short_prime_message(codec))
    seen = samples_seen(codec, priors)
    codes = []
    for level, spec in enumerate(codec.levels):
        # Every level as far as the longest first window sees: what guidance reads.
        samples = max(seen) + margin_seconds * codec.sample_rate
        keep = min(whole.size, math.ceil(samples / top_hop) * top_hop)
        tail = codec.encode_level(whole[-keep:], level)
        filler = np.zeros((*tail.shape[:-1], whole.size // spec.hop - tail.shape[-1]), dtype=np.int64)
        codes.append(np.concatenate([filler, tail.astype(np.int64)], axis=-1))
    return codes


def short_prime_message(codec: Codec) -> str:
    top_hop = codec.levels[0].hop
    return (
        f"the prime is shorter than one top-level frame ({top_hop} samples, "
        f"{top_hop / codec.sample_rate * 1000:.0f} ms)"
    )


def guidance_biases(
    codec: Codec, known: list[np.ndarray], span: int, settings: SamplingSettings
) -> list[np.ndarray | None]:
    """Per level, the logit bias of key and instrument guidance (None: none). Both read the
    codes of the prime's last ``span`` samples at every level (``samples_seen``' longest:
    what the first windows see): the same codes whether the whole prime was encoded
    (``tokgen generate``, batch jobs) or only its end (``encode_prime_context``, streams,
    whose earlier frames are filler), and the key of the music just before the
    continuation rather than of a long prime's start."""
    recent = [k[..., -math.ceil(span / lv.hop) :] for k, lv in zip(known, codec.levels, strict=True)]
    instrument = instrument_biases(
        codec.instruments(), recent, settings.instrument_guidance, INSTRUMENT_GUIDED_LEVELS
    )
    return [
        add_biases(key_bias(codec.pitch_classes(level), codes, settings.key_guidance), instrument[level])
        for level, codes in enumerate(recent)
    ]


async def sample_job(
    codec: Codec,
    priors: list[LevelPrior],
    job: Job,
    settings: SamplingSettings,
    request_id: str | None = None,
    on_change: OnChange | None = None,
) -> list[np.ndarray]:
    """The codes of every level of ``job``. Engine request ids start with ``request_id``
    (default: a fresh unique one), so they must not be shared by concurrent requests."""
    layout = TokenLayout.for_levels(codec.levels)
    settings.check(layout.vocab_size)
    hops = [lv.hop for lv in codec.levels]
    biases = guidance_biases(codec, job.known, max(samples_seen(codec, priors)), settings)
    return await sample_hierarchy(
        priors,
        layout,
        hops,
        job.known,
        job.top_frames,
        settings,
        request_id or uuid.uuid4().hex,
        codec.sample_rate,
        on_change,
        biases,
    )
