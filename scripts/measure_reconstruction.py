"""The continuation evaluation's ``codec_reconstruction`` row for one or more codecs,
without generating anything: for comparing decoders (e.g. checkpoints of a decoder
fine-tune) in a few minutes instead of a whole `tokgen eval continuation`.

Same held-out pieces, reference clips, embeddings, classifier and seed as that
evaluation; each real continuation is encoded and decoded from the top ``--levels``
levels (2: what the generator decodes with the shipped priors) in its prime's timbre.
real_vs_real is scored too, for the bars (FAD <= 1.3 x real_vs_real's).

``--teacher-forced PRIOR_DIR`` (an upsampler, e.g. the shipped ``priors/level1``) adds a row per
codec whose upsampled level is teacher-forced samples of that prior
(``tokgen.prior.teacher_forcing``): prime and continuation encoded together, every continuation
frame of that level drawn given the real frames before it and the prime's codes as the
reference prompt. Between the reconstruction and the model's continuations from the real
top codes, it tells how much of their distance the prior's single steps make.

    python scripts/measure_reconstruction.py MODEL_DIR [MODEL_DIR ...] [--n 128] [--levels 2] \
        [--teacher-forced PRIOR_DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from tokgen.cli.common import held_out_corpus
from tokgen.codec import load_codec
from tokgen.codec.base import Codec
from tokgen.codec.top_levels import TopLevels
from tokgen.eval import baselines
from tokgen.eval.classifier import load_classifier
from tokgen.eval.continuation import HELD_OUT_HOURS, HELD_OUT_MAX_SECONDS, Piece, held_out, score
from tokgen.eval.embeddings import load_embedding
from tokgen.prior.teacher_forcing import Upsampler, load_upsampler, teacher_forced_sequence


def teacher_forced(codec: Codec, piece: Piece, up: Upsampler, generator: torch.Generator) -> np.ndarray:
    """The real continuation decoded with its upsampled level teacher-force sampled."""
    codes = codec.encode(np.concatenate([piece.prime, piece.real]))
    hops = [lv.hop for lv in codec.levels]
    starts = [piece.prime.size // h for h in hops]
    own = codes[up.level]
    reference = own[: starts[up.level]][-up.reference_tokens :] if up.reference_tokens else None
    codes[up.level] = teacher_forced_sequence(
        up.model,
        up.layout,
        up.level,
        codes[up.level - 1],
        own,
        starts[up.level],
        up.n_ctx,
        up.ratio,
        reference,
        generator=generator,
    )
    tail = [c[s:] for c, s in zip(codes, starts, strict=True)]
    return codec.decode_levels(tail, piece.prime)[: piece.real.size].astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="codec model directories")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--levels", type=int, default=2, help="decode from this many top levels (default 2)")
    ap.add_argument("--prime-seconds", type=float, default=4.0)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--bootstrap", type=int, default=0, help="resamples for FAD intervals (default 0)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--teacher-forced", default=None, help="an upsampler directory: add teacher-forced rows")
    args = ap.parse_args()
    codecs = {m: TopLevels(load_codec(m), args.levels) for m in args.models}
    sample_rate = next(iter(codecs.values())).sample_rate
    data = held_out_corpus(sample_rate, HELD_OUT_HOURS, HELD_OUT_MAX_SECONDS)
    items, others = held_out(data, "test", args.n, args.prime_seconds, args.seconds, sample_rate)
    outputs = {
        Path(m).name or m: [baselines.reconstruction(c, p.real, reference=p.prime) for p in items]
        for m, c in codecs.items()
    }
    if args.teacher_forced:
        up = load_upsampler(Path(args.teacher_forced))
        for m, c in codecs.items():
            generator = torch.Generator().manual_seed(args.seed)
            name = f"{Path(m).name or m}+teacher_forced"
            outputs[name] = [teacher_forced(c, p, up, generator) for p in items]
    embeddings = {name: load_embedding(name) for name in ("aisfx", "classic")}
    classifier = load_classifier(None)
    results, accuracy = score(
        outputs, items, others, embeddings, classifier, sample_rate, None, args.bootstrap, args.seed
    )
    print(json.dumps({"levels": args.levels, "classifier_accuracy_on_real": accuracy, **results}))


if __name__ == "__main__":
    main()
