"""``tokgen codec eval``: per-level reconstruction metrics on held-out renders.

Each test file is encoded to every level and decoded from each level alone (levels 0..l
for a codec whose levels are residuals, ``msvq``), so a level's numbers describe what that
level's codes can carry. Metrics are averaged over files
(weighted by duration); codebook usage is computed over all codes of the set. Besides
spectral measures, ``key_consistency`` says how much pitch a level alone keeps: the
correlation of the reconstruction's pitch-class profile with the input's, per 5 s clip
(``tokgen.codec.pitch``; 1 when every clip keeps its pitch classes in proportion).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tokgen.audio import load_audio
from tokgen.codec.base import Codec
from tokgen.codec.metrics import codebook_usage, mel_distance, si_sdr_db, spectral_convergence_db
from tokgen.codec.pitch import clipwise_correlation
from tokgen.data.render import split_files
from tokgen.errors import TokgenError

KEY_CLIP_SECONDS = 5.0  # as the continuations' key consistency is judged (tokgen eval continuation)


def evaluate_codec(codec: Codec, files: list[Path], max_seconds: float | None = None) -> dict:
    if not files:
        raise TokgenError("no audio files to evaluate")
    n_levels = len(codec.levels)
    per_level: list[dict[str, list[float]]] = [
        {"sc": [], "si_sdr": [], "mel": [], "key": [], "weight": []} for _ in range(n_levels)
    ]
    all_codes: list[list[np.ndarray]] = [[] for _ in range(n_levels)]
    for path in tqdm(files, desc="codec eval", unit="file", file=sys.stderr, dynamic_ncols=True):
        audio = load_audio(path, codec.sample_rate)
        if max_seconds:
            audio = audio[: int(max_seconds * codec.sample_rate)]
        codes = codec.encode(audio)
        for lv in range(n_levels):
            # A codec whose levels are residuals decodes level l from levels 0..l (and
            # keeps the timbre of the file itself, as it keeps the prime's in generation).
            recon = codec.decode_levels(codes[: lv + 1], audio)[: audio.size]
            stats = per_level[lv]
            stats["sc"].append(spectral_convergence_db(audio, recon))
            stats["si_sdr"].append(si_sdr_db(audio, recon))
            stats["mel"].append(mel_distance(audio, recon, codec.sample_rate))
            stats["key"].append(clipwise_correlation(audio, recon, codec.sample_rate, KEY_CLIP_SECONDS))
            stats["weight"].append(audio.size)
            all_codes[lv].append(codes[lv].ravel())
    levels = []
    for lv, spec in enumerate(codec.levels):
        stats = per_level[lv]
        w = np.asarray(stats["weight"], dtype=np.float64)
        perplexity, dead = codebook_usage(np.concatenate(all_codes[lv]), spec.codebook_size)
        levels.append(
            {
                "level": lv,
                "hop": spec.hop,
                "codebook_size": spec.codebook_size,
                "n_codebooks": spec.n_codebooks,
                "bitrate_bps": round(spec.bitrate(codec.sample_rate), 2),
                "spectral_convergence_db": round(float(np.average(stats["sc"], weights=w)), 3),
                "si_sdr_db": round(float(np.average(stats["si_sdr"], weights=w)), 3),
                "mel_distance": round(float(np.average(stats["mel"], weights=w)), 4),
                "key_consistency": round(float(np.average(stats["key"], weights=w)), 4),
                # Files differ (a sustained string pad vs a plucked guitar): the 10th-90th
                # percentile range tells whether one file's round trip is typical.
                "spectral_convergence_db_p10_p90": _spread(stats["sc"], 3),
                "mel_distance_p10_p90": _spread(stats["mel"], 4),
                "key_consistency_p10_p90": _spread(stats["key"], 4),
                "perplexity": round(perplexity, 2),
                "dead_code_fraction": round(dead, 4),
            }
        )
    return {
        "model": codec.name,
        "sample_rate": codec.sample_rate,
        "files": len(files),
        "seconds": round(sum(per_level[0]["weight"]) / codec.sample_rate, 1),
        "levels": levels,
    }


def _spread(values: list[float], digits: int) -> list[float]:
    return [round(float(v), digits) for v in np.percentile(values, [10, 90])]


def evaluate_on_split(
    codec: Codec,
    data_dir: Path,
    split: str = "test",
    max_files: int | None = None,
    max_seconds: float | None = None,
) -> dict:
    files = split_files(data_dir, split)
    return evaluate_codec(codec, files[:max_files] if max_files else files, max_seconds)
