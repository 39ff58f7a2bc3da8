"""``tokgen eval continuation``: continuations of held-out primes against the real ones.

For 2N held-out pieces of the test split (never seen in training; one clip per piece),
the prime is P seconds cut 1 s into the piece and the real continuation the S seconds
that follow. Every system makes S seconds from the first N primes; each is compared with
the same reference, the real continuations of those N primes, at the same N:

- FAD in the aiSFX and the classic embedding, with a bootstrap interval (clips resampled)
  and FAD-infinity (extrapolated over subsets of the clips); KID in the timbre
  classifier's features and in aiSFX's; the classifier's Inception Score;
- timbre consistency (the fraction of clips classified in the same GM family as their
  prime) and key consistency (the mean correlation of a clip's pitch-class profile with
  its prime's, ``pitch``);
- seam_flux_ratio (spectral flux at the bottom level's segment seams over flux elsewhere,
  ``structure``), seam_flux_excess (that ratio over the real continuations' at the same
  positions: seams fall on the corpus's beats, where real music has onsets too) and, for
  systems that sample codes, distinct_code_ratio (distinct bottom codes per clip over the
  real continuation's).

``real_vs_real`` is the noise floor: the real continuations of the N *other* pieces
against the same reference (the same distribution, other pieces, the same N); its
consistencies are those of these continuations with their own primes. ``repeat_prime``
(the prime played again) copies the reference pieces' exact timbre and key: a copy
ceiling, not a bar.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tokgen.audio import load_audio
from tokgen.codec.base import Codec
from tokgen.codec.pitch import pitch_class_profile, profile_correlation
from tokgen.data.plan import split_of
from tokgen.data.render import load_manifest
from tokgen.errors import TokgenError
from tokgen.eval import baselines
from tokgen.eval.classifier import TimbreClassifier
from tokgen.eval.distances import clip_fad, fad_bootstrap, fad_infinity, inception_score, kid
from tokgen.eval.embeddings import Embedding
from tokgen.eval.structure import distinct_code_ratio, seam_flux_excess, seam_flux_ratio, seam_positions
from tokgen.generation.generator import Generator
from tokgen.generation.sampler import SamplingSettings

# The held-out renders the command uses by default (tokgen.cli.common.held_out_corpus): the test
# split of a 48 h plan (about 380 pieces, 364 of them 10 s or longer: 2 x 128 clips and to
# spare), each render cut at 30 s (a clip needs 1 + P + S seconds).
HELD_OUT_HOURS = 48.0
HELD_OUT_MAX_SECONDS = 30.0
DEFAULT_N = 128
BOOTSTRAP_RESAMPLES = 200
PLOT_CLIPS = 4
FAD_NOTE = (
    "fad, fad_classic: at n, the same n and reference for every system (not FAD-infinity). "
    "aiSFX gives 3 frames per 5 s clip, so 128 clips are 384 frames in 512 dimensions: FAD "
    "is biased upwards (about as c/n from 96 clips on, much the same for every system at "
    "one n). FAD-infinity, extrapolated over subsets of these clips, was tried on real clips "
    "and is not usable at this n: real_vs_real came out at 8 to 16 and the primes against "
    "their own continuations at -1 to 13 (aiSFX), -57 to 10 (classic), depending on the "
    "subsets drawn; --fad-inf adds it anyway (fad_inf, fad_classic_inf). *_ci95: 95% "
    "bootstrap interval (the clips of both sets resampled), centred on the estimate."
)


@dataclass(frozen=True)
class Piece:
    name: str
    family: str  # GM program family of the melody (the corpus' label)
    prime: np.ndarray
    real: np.ndarray  # what followed the prime
    piece_id: str = ""


def pieces(
    data_dir: Path, split: str, n: int, prime_seconds: float, seconds: float, sample_rate: int
) -> list[Piece]:
    """The first ``n`` renders of ``split`` long enough for a prime and a continuation, cut
    1 s in (past any silent lead-in), one per piece (other renders of a piece are skipped).
    Each piece's split is checked against the hash of its id, the split that training
    corpora use, so held-out pieces are never in train or valid."""
    out: list[Piece] = []
    seen: set[str] = set()
    start, p, s = sample_rate, round(prime_seconds * sample_rate), round(seconds * sample_rate)
    items = [i for i in load_manifest(data_dir)["items"] if i["split"] == split]
    if not items:
        raise TokgenError(f"split {split!r} of {data_dir} is empty")
    for item in items:
        piece_id = item.get("piece_id", item["path"])
        if "piece_id" in item and split_of(piece_id) != split:
            raise TokgenError(
                f"{item['path']} is listed in {split!r} but its piece is in {split_of(piece_id)!r}"
            )
        if piece_id in seen:
            continue
        path = Path(data_dir) / item["path"]
        audio = load_audio(path, sample_rate)
        if audio.size >= start + p + s:
            prime, real = audio[start : start + p], audio[start + p : start + p + s]
            out.append(Piece(path.stem, item["program_family"], prime, real, piece_id))
            seen.add(piece_id)
        if len(out) == n:
            return out
    raise TokgenError(
        f"only {len(out)} held-out pieces are {prime_seconds + seconds + 1:g} s long; wanted {n}"
    )


def held_out(
    data_dir: Path, split: str, n: int, prime_seconds: float, seconds: float, sample_rate: int
) -> tuple[list[Piece], list[Piece]]:
    """``n`` pieces whose primes every system continues, and ``n`` other pieces whose real
    continuations are real_vs_real's clips: 2n distinct pieces."""
    try:
        both = pieces(data_dir, split, 2 * n, prime_seconds, seconds, sample_rate)
    except TokgenError as exc:
        raise TokgenError(f"{exc} ({n} to continue and {n} others for real_vs_real); lower --n") from None
    return both[:n], both[n:]


@dataclass(frozen=True)
class Generated:
    audio: np.ndarray  # the continuation, as long as the real one
    codes: np.ndarray  # its bottom-level codes
    seam_offset: int  # samples from where the bottom level's first segment starts to the clip


async def model_continuations(
    g: Generator,
    items: list[Piece],
    seconds: float,
    sampling: SamplingSettings,
    real_levels: int = 0,
) -> list[Generated]:
    """All at once, so the engines batch them; piece ``i`` is sampled with seed ``seed + i``.

    ``real_levels`` > 0 is an ablation: the top ``real_levels`` levels are the real
    continuation's codes and only the levels below are sampled (from the prime's codes as
    context), which shows where a hierarchy loses what the codec keeps."""
    codec = g.codec
    top_hop, bottom_hop = codec.levels[0].hop, codec.levels[-1].hop

    async def one(i: int, piece: Piece) -> Generated:
        settings = dataclasses.replace(sampling, seed=sampling.seed + i)
        if real_levels == 0:
            result = await g.render(g.job("primed", seconds, piece.prime), settings)
            start = result.prime_samples
            offset = 0  # the bottom level starts sampling where the continuation starts
        else:
            codes = codec.encode(np.concatenate([piece.prime, piece.real]))
            known = [
                c if lv < real_levels else c[..., : piece.prime.size // codec.levels[lv].hop]
                for lv, c in enumerate(codes)
            ]
            one_frame = codec.levels[0].hop / codec.sample_rate  # continue needs some new audio
            job = g.job("continue", one_frame, codes=known, reference=piece.prime)
            result = await g.render(job, settings)
            start = piece.prime.size
            offset = piece.prime.size % top_hop  # known codes are cut back to whole top frames
        frames = -(-piece.real.size // bottom_hop)
        bottom = result.codes[-1][..., start // bottom_hop : start // bottom_hop + frames]
        return Generated(result.audio[start : start + piece.real.size], bottom, offset)

    return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(items))))


def systems(
    codec: Codec,
    items: list[Piece],
    model: list[np.ndarray],
    seed: int,
    real_codes: list[list[np.ndarray]] | None = None,
) -> dict[str, list[np.ndarray]]:
    """The model's clips and the baselines'. ``real_codes``: the real continuations'
    codes (every level), if already encoded."""
    rng = np.random.default_rng(seed)
    encoded = real_codes if real_codes is not None else [codec.encode(p.real) for p in items]
    levels = range(len(codec.levels)) if codec.uses_all_levels else [len(codec.levels) - 1]
    probs = [
        baselines.code_histogram([c[lv] for c in encoded], codec.levels[lv].codebook_size) for lv in levels
    ]
    return {
        "model": model,
        "noise": [baselines.noise(p.real, rng) for p in items],
        "repeat_prime": [baselines.repeat_prime(p.prime, p.real.size) for p in items],
        "unigram_codes": [baselines.unigram_codes(codec, probs, p.real.size, rng) for p in items],
        "codec_reconstruction": [
            baselines.reconstruction(codec, p.real, codes, p.prime)
            for p, codes in zip(items, encoded, strict=True)
        ],
    }


def metrics(
    mine: dict[str, list[np.ndarray]],
    reference: dict[str, list[np.ndarray]],
    families: np.ndarray,
    prime_families: np.ndarray,
    profiles: np.ndarray | None = None,
    prime_profiles: np.ndarray | None = None,
) -> dict[str, float]:
    """One system's numbers: ``mine`` and ``reference`` are frames per clip per embedding
    (``aisfx``, ``classic``, ``timbre``), ``families`` the classifier's family
    probabilities per clip, ``prime_families`` per prime; ``profiles`` the clips'
    pitch-class profiles (12 per row) and ``prime_profiles`` their primes'."""
    if min(sum(len(c) for c in clips) for clips in (*mine.values(), *reference.values())) < 2:
        raise TokgenError("too little audio to compare: use more pieces (--n) or longer continuations")

    def pooled(clips: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(clips)

    out = {
        "n": len(families),
        "fad": round(clip_fad(mine["aisfx"], reference["aisfx"]), 4),
        "fad_classic": round(clip_fad(mine["classic"], reference["classic"]), 4),
        "kid": round(
            kid(pooled(mine["timbre"]), pooled(reference["timbre"]), subsets=50, subset_size=200)[0], 5
        ),
        "kid_aisfx": round(
            kid(pooled(mine["aisfx"]), pooled(reference["aisfx"]), subsets=50, subset_size=200)[0], 5
        ),
        "is": round(inception_score(families)[0], 4),
        "timbre_consistency": round(float(np.mean(families.argmax(1) == prime_families.argmax(1))), 4),
        # The same question without the argmax's all-or-nothing: the classifier's mean
        # probability of the prime's family (steadier at n = 128 than one clip in 128).
        "timbre_probability": round(
            float(np.mean(families[np.arange(len(families)), prime_families.argmax(1)])), 4
        ),
    }
    if profiles is not None and prime_profiles is not None:
        key = [profile_correlation(a, b) for a, b in zip(profiles, prime_profiles, strict=True)]
        out["key_consistency"] = round(float(np.mean(key)), 4)
    return out


def score(
    outputs: dict[str, list[np.ndarray]],
    items: list[Piece],
    others: list[Piece],
    embeddings: dict[str, Embedding],
    classifier: TimbreClassifier,
    sample_rate: int,
    seams: dict[str, list[list[int]] | None] | None = None,
    bootstrap: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    with_fad_inf: bool = False,
) -> tuple[dict[str, dict], float]:
    """Each system's clips against the reference (the real continuations of ``items``),
    and real_vs_real: the real continuations of ``others`` against the same reference.
    Embeddings: ``aisfx`` and ``classic``, plus the classifier's features (``timbre``).
    ``seams``: for the systems to measure seam_flux_ratio of, the seam positions in each
    clip (None: no seams, the ratio is null). ``bootstrap``: resamples for the FAD
    intervals (0: none); ``with_fad_inf`` adds FAD-infinity (see FAD_NOTE). Also returns
    the classifier's accuracy on all 2n real continuations (against the corpus labels),
    which bounds what its numbers mean."""
    views: dict[str, Embedding] = {**embeddings, "timbre": classifier}

    def frames(clips: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
        return {name: [e.frames(c, sample_rate) for c in clips] for name, e in views.items()}

    def families(clips: list[np.ndarray]) -> np.ndarray:
        return np.stack([classifier.probabilities(c, sample_rate) for c in clips])

    def profiles(clips: list[np.ndarray]) -> np.ndarray:
        return np.stack([pitch_class_profile(c, sample_rate) for c in clips])

    reference = frames([p.real for p in items])
    primes = {
        group: (families([p.prime for p in pieces]), profiles([p.prime for p in pieces]))
        for group, pieces in (("items", items), ("others", others))
    }
    clip_sets = {"real_vs_real": ([p.real for p in others], "others")}
    clip_sets |= {name: (clips, "items") for name, clips in outputs.items()}
    results: dict[str, dict] = {}
    per_system: dict[str, dict[str, list[np.ndarray]]] = {}
    for system, (clips, group) in tqdm(
        clip_sets.items(), desc="scoring", file=sys.stderr, dynamic_ncols=True
    ):
        per_system[system] = frames(clips)
        prime_families, prime_profiles = primes[group]
        results[system] = metrics(
            per_system[system], reference, families(clips), prime_families, profiles(clips), prime_profiles
        )
    for view, suffix in (("aisfx", ""), ("classic", "_classic")):
        by_system = {system: f[view] for system, f in per_system.items()}
        intervals = fad_bootstrap(by_system, reference[view], bootstrap, seed) if bootstrap else {}
        for system, clips in by_system.items():
            if system in intervals:
                lo, hi = intervals[system]
                results[system][f"fad{suffix}_ci95"] = [round(max(lo, 0.0), 4), round(hi, 4)]
            if with_fad_inf:
                fit = fad_infinity(clips, reference[view], seed=seed)
                results[system][f"fad{suffix}_inf"] = None if fit is None else round(fit[0], 4)
    real_items = [p.real for p in items]
    for system, positions in (seams or {}).items():
        ratio = excess = None
        if positions is not None:
            ratio = seam_flux_ratio(clip_sets[system][0], sample_rate, positions)
            excess = seam_flux_excess(ratio, seam_flux_ratio(real_items, sample_rate, positions))
        results[system]["seam_flux_ratio"] = None if ratio is None else round(ratio, 4)
        results[system]["seam_flux_excess"] = None if excess is None else round(excess, 4)
    labels = np.array(
        [
            classifier.cfg.families.index(p.family) if p.family in classifier.cfg.families else -1
            for p in (*items, *others)
        ]
    )
    real_families = families([p.real for p in (*items, *others)])
    return results, float(np.mean(real_families.argmax(1) == labels))


def evaluate_continuations(
    g: Generator,
    data_dir: Path,
    split: str,
    n: int,
    prime_seconds: float,
    seconds: float,
    embeddings: dict[str, Embedding],
    classifier: TimbreClassifier,
    sampling: SamplingSettings,
    ablations: bool = False,
    bootstrap: int = BOOTSTRAP_RESAMPLES,
    plots: Path | None = None,
    plot_clips: int = PLOT_CLIPS,
    fad_inf: bool = False,
) -> dict:
    """The whole evaluation; closes the generator's engines when the model is done. ``sampling``
    is the model's; its seed also seeds the baselines and the bootstrap. ``ablations`` adds
    the systems ``model_real_levels_K``: the top K levels real, the rest sampled
    (K = 1 .. levels - 1). ``plots``: a folder for spectrograms of the first
    ``plot_clips`` primes and their continuations. ``fad_inf``: add FAD-infinity."""
    codec = g.codec
    items, others = held_out(data_dir, split, n, prime_seconds, seconds, codec.sample_rate)
    real_levels = range(1, len(codec.levels)) if ablations else range(0)

    async def generate() -> list[list[Generated]]:
        async with g:
            return [await model_continuations(g, items, seconds, sampling, k) for k in (0, *real_levels)]

    model, *ablated = asyncio.run(generate())
    real_all = [codec.encode(p.real) for p in items]
    real_codes = [c[-1] for c in real_all]
    outputs = systems(codec, items, [g.audio for g in model], sampling.seed, real_all)
    sampled = {"model": model} | {
        f"model_real_levels_{k}": g for k, g in zip(real_levels, ablated, strict=True)
    }
    outputs |= {name: [g.audio for g in gen] for name, gen in sampled.items() if name != "model"}
    segment = g.priors[-1].segment_frames
    segment_samples = segment * codec.levels[-1].hop if segment else None
    clip_samples = items[0].real.size
    seams: dict[str, list[list[int]] | None] = {
        name: [seam_positions(clip_samples, segment_samples, g.seam_offset) for g in gen]
        if segment_samples
        else None
        for name, gen in sampled.items()
    }
    at_model = seams["model"]  # controls without seams, measured where the model's are
    seams |= {"real_vs_real": at_model, "codec_reconstruction": at_model}
    results, accuracy = score(
        outputs,
        items,
        others,
        embeddings,
        classifier,
        codec.sample_rate,
        seams,
        bootstrap,
        sampling.seed,
        fad_inf,
    )
    for name, gen in sampled.items():
        results[name]["distinct_code_ratio"] = round(
            distinct_code_ratio([g.codes for g in gen], real_codes), 4
        )
    if plots is not None:
        from tokgen.eval.plots import plot_continuation

        shown = {"real": [p.real for p in items], "codec_reconstruction": outputs["codec_reconstruction"]}
        shown |= {name: outputs[name] for name in sampled}
        for i, piece in enumerate(items[:plot_clips]):
            rows = [(name, clips[i]) for name, clips in shown.items()]
            title = f"{piece.name} ({piece.family})"
            plot_continuation(plots / f"clip{i:02d}.png", piece.prime, rows, codec.sample_rate, title)
    return {
        "n": len(items),
        "prime_seconds": prime_seconds,
        "seconds": seconds,
        "sampling": dataclasses.asdict(sampling),
        "reference": f"the real continuations of the n primes ({len(items)} held-out pieces)",
        "real_vs_real": f"the real continuations of {len(others)} other held-out pieces vs the reference",
        "fad_method": FAD_NOTE,
        "bootstrap_resamples": bootstrap,
        "seams": {
            "bottom_segment_samples": segment_samples,
            "per_clip": len(seams["model"][0]) if seams["model"] else 0,
            "measured_in": [name for name, s in seams.items() if s is not None],
        },
        "reference_distinct_bottom_codes": round(float(np.mean([len(np.unique(c)) for c in real_codes])), 1),
        "embedding": {name: e.dim for name, e in embeddings.items()} | {"timbre": classifier.dim},
        "classifier": {"families": classifier.cfg.families, "accuracy_on_real": round(accuracy, 4)},
        "systems": results,
    }
