"""Per-level pitch and spectral fidelity of a codec on a few held-out test files: the key
consistency (pitch-class profile correlation with the input) and the log-mel distance of
the audio decoded from the top level, the top two, and all levels (each level alone for a
codec whose levels stand alone); for a semantic top level, also how well its codes'
centroids keep the input's chroma. A quick look while a codec trains (5 s of 12 files by
default); `tokgen codec eval` is the full measurement.

    python scripts/measure_level_pitch.py MODEL_DIR [--files 12] [--data data/corpus]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from tokgen.audio import load_audio
from tokgen.codec import load_codec
from tokgen.codec.msvq import MSVQCodec, semitone_features
from tokgen.codec.pitch import pitch_class_profile, profile_correlation
from tokgen.codec.spectral import log_mel_from_magnitude, stft_magnitude
from tokgen.data.render import split_files


def log_mel(audio: np.ndarray, sample_rate: int) -> torch.Tensor:
    return log_mel_from_magnitude(stft_magnitude(torch.from_numpy(audio), 1024), sample_rate, 80)


def chroma_of_semitones(features: np.ndarray) -> np.ndarray:
    """12 pitch classes from 84 scaled semitone log energies (see ``semitone_features``)."""
    return np.exp(features * 4 - 4).reshape(7, 12, -1).sum(axis=(0, 2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--files", type=int, default=12)
    ap.add_argument("--data", default="data/corpus")
    args = ap.parse_args()
    torch.set_num_threads(1)
    codec = load_codec(args.model)
    sr = codec.sample_rate
    n_levels = len(codec.levels)
    key: list[list[float]] = [[] for _ in range(n_levels)]
    mel: list[list[float]] = [[] for _ in range(n_levels)]
    centroid_chroma = []
    for path in split_files(Path(args.data), "test")[: args.files]:
        audio = load_audio(path, sr)[sr : sr * 6]
        codes = codec.encode(audio)
        profile = pitch_class_profile(audio, sr)
        for lv in range(n_levels):
            if codec.uses_all_levels:
                recon = codec.decode_levels(codes[: lv + 1], audio)[: audio.size]
            else:
                recon = codec.decode(codes[lv], lv)[: audio.size]
            key[lv].append(profile_correlation(pitch_class_profile(recon, sr), profile))
            mel[lv].append(float((log_mel(audio, sr) - log_mel(recon, sr)).abs().mean()))
        if isinstance(codec, MSVQCodec) and codec.model.cfg.pitch_features:
            feats = semitone_features(torch.from_numpy(audio)[None, None], sr, codec.levels[0].hop)[0].numpy()
            centroids = codec.model.quantizers[0].codebook[torch.from_numpy(codes[0])].T.numpy()
            n = min(feats.shape[1], centroids.shape[1])
            centroid_chroma.append(
                np.corrcoef(chroma_of_semitones(feats[:, :n]), chroma_of_semitones(centroids[:, :n]))[0, 1]
            )
    result = {
        "model": codec.name,
        "files": len(key[0]),
        "key_consistency": [round(float(np.mean(k)), 3) for k in key],
        "mel_distance": [round(float(np.mean(m)), 3) for m in mel],
    }
    if centroid_chroma:
        result["top_centroid_chroma_correlation"] = round(float(np.mean(centroid_chroma)), 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
