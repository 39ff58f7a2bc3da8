"""Measurements recorded in docs/MODELS.md for a codec (default: the shipped one):
encode/decode speed as a real-time factor, and the round trip of a held-out file.

    python scripts/measure_codec.py [--model DIR] FILE.flac
"""

import argparse
import json
import time

import torch

from tokgen.audio import load_audio
from tokgen.codec import load_codec
from tokgen.codec.metrics import mel_distance, spectral_convergence_db

torch.set_num_threads(1)
parser = argparse.ArgumentParser()
parser.add_argument("file")
parser.add_argument("--model", default=None)
args = parser.parse_args()

codec = load_codec(args.model)
audio = load_audio(args.file, codec.sample_rate)
seconds = audio.size / codec.sample_rate
t0 = time.perf_counter()
codes = codec.encode(audio)
encode_s = time.perf_counter() - t0
levels = []
for level, c in enumerate(codes):
    t0 = time.perf_counter()
    recon = codec.decode(c, level)
    decode_s = time.perf_counter() - t0
    levels.append(
        {
            "level": level,
            "frames": int(c.size),
            "decoded_seconds": round(recon.size / codec.sample_rate, 3),
            "decode_realtime_factor": round(seconds / decode_s, 1),
            "spectral_convergence_db": round(spectral_convergence_db(audio, recon[: audio.size]), 3),
            "mel_distance": round(mel_distance(audio, recon[: audio.size], codec.sample_rate), 4),
        }
    )
print(
    json.dumps(
        {
            "file": args.file,
            "seconds": round(seconds, 3),
            "encode_all_levels_realtime_factor": round(seconds / encode_s, 1),
            "levels": levels,
        }
    )
)
