"""The continuation evaluation's ``codec_reconstruction`` row for one or more codecs,
without generating anything: for comparing decoders (e.g. checkpoints of a decoder
fine-tune) in a few minutes instead of a whole `tokgen eval continuation`.

Same held-out pieces, reference clips, embeddings, classifier and seed as that
evaluation; each real continuation is encoded and decoded from the top ``--levels``
levels (2: what the generator decodes with the shipped priors) in its prime's timbre.
real_vs_real is scored too, for the bars (FAD <= 1.3 x real_vs_real's).

    python scripts/measure_reconstruction.py MODEL_DIR [MODEL_DIR ...] [--n 128] [--levels 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokgen.cli.common import held_out_corpus
from tokgen.codec import load_codec
from tokgen.codec.top_levels import TopLevels
from tokgen.eval import baselines
from tokgen.eval.classifier import load_classifier
from tokgen.eval.continuation import HELD_OUT_HOURS, HELD_OUT_MAX_SECONDS, held_out, score
from tokgen.eval.embeddings import load_embedding


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="codec model directories")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--levels", type=int, default=2, help="decode from this many top levels (default 2)")
    ap.add_argument("--prime-seconds", type=float, default=4.0)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--bootstrap", type=int, default=0, help="resamples for FAD intervals (default 0)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    codecs = {m: TopLevels(load_codec(m), args.levels) for m in args.models}
    sample_rate = next(iter(codecs.values())).sample_rate
    data = held_out_corpus(sample_rate, HELD_OUT_HOURS, HELD_OUT_MAX_SECONDS)
    items, others = held_out(data, "test", args.n, args.prime_seconds, args.seconds, sample_rate)
    outputs = {
        Path(m).name or m: [baselines.reconstruction(c, p.real, reference=p.prime) for p in items]
        for m, c in codecs.items()
    }
    embeddings = {name: load_embedding(name) for name in ("aisfx", "classic")}
    classifier = load_classifier(None)
    results, accuracy = score(
        outputs, items, others, embeddings, classifier, sample_rate, None, args.bootstrap, args.seed
    )
    print(json.dumps({"levels": args.levels, "classifier_accuracy_on_real": accuracy, **results}))


if __name__ == "__main__":
    main()
