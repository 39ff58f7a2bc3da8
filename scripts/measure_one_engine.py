"""What one engine for all levels would gain in speed, before anyone trains a model for it.

Issue 18 asks whether the top prior and the middle upsampler should share one engine (one
model conditioned on the level: the token layout already gives every level its own ids),
so their windows share batches instead of two engines competing for two cores. Quality
needs a trained joint model; speed does not: this builds prior sets whose two level
directories link to *one* model (``start_engines`` then starts one engine for both) and
measures `tokgen bench generate` on them beside the shipped set of two engines,
alternating, in one process:

- ``one_engine_top_width``: the top prior's model (hidden 256) for both levels, its
  ``max_position_embeddings`` raised to the upsampler's windows (RoPE: no weights
  change). A joint model at least as wide as today's top prior runs this fast at best.
- ``one_engine_middle_width``: the upsampler's model (hidden 128) for both levels: what a
  joint model of the upsampler's size would run at.

The one-engine sets generate nonsense on the level whose model is not its own: the
figures are speed only (the same windows, tokens and sampling work).

    python scripts/measure_one_engine.py [--rounds 2] [--seconds 10] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from tokgen.assets import DEFAULT_PRIORS_DIR
from tokgen.bench.engine import cpu_info
from tokgen.bench.generate import bench_generate

MODEL_FILES = ("config.json", "model.safetensors", "generation_config.json")


def one_engine_set(root: Path, model_level: int) -> Path:
    """A copy of the shipped set's metadata whose levels all link to level ``model_level``'s
    model, with room for every level's windows."""
    model = root / "model"
    shutil.copytree(DEFAULT_PRIORS_DIR / f"level{model_level}", model)
    config = json.loads((model / "config.json").read_text())
    longest = max(
        json.loads((DEFAULT_PRIORS_DIR / d.name / "config.json").read_text())["max_position_embeddings"]
        for d in DEFAULT_PRIORS_DIR.glob("level*")
    )
    config["max_position_embeddings"] = max(config["max_position_embeddings"], longest)
    (model / "config.json").write_text(json.dumps(config))
    for level_dir in sorted(DEFAULT_PRIORS_DIR.glob("level*")):
        out = root / "set" / level_dir.name
        out.mkdir(parents=True)
        shutil.copyfile(level_dir / "tokgen_prior.json", out / "tokgen_prior.json")
        for name in MODEL_FILES:
            (out / name).symlink_to(model / name)
    return root / "set"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--backend", default="vllm")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sets = {
            "two_engines_shipped": DEFAULT_PRIORS_DIR,
            "one_engine_top_width": one_engine_set(Path(tmp) / "top", 0),
            "one_engine_middle_width": one_engine_set(Path(tmp) / "middle", 1),
        }
        runs: dict[str, list[dict]] = {name: [] for name in sets}
        for _ in range(args.rounds):
            for name, prior_dir in sets.items():
                r = bench_generate(None, prior_dir, args.backend, args.seconds, (1, args.concurrency), None)
                runs[name].append({k: v for k, v in r.items() if k.startswith("rtf_")})
                print(json.dumps({"set": name, **runs[name][-1]}), flush=True)
    print(json.dumps({"cpu": cpu_info(), "cores": os.cpu_count(), "runs": runs}))


if __name__ == "__main__":
    main()
