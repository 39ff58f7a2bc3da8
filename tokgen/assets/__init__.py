"""Where the shipped models and the example prime live inside the package: defined once
here, beside the files themselves, for every layer that needs a default."""

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
DEFAULT_CODEC_DIR = ASSETS_DIR / "models" / "codec"
DEFAULT_PRIORS_DIR = ASSETS_DIR / "models" / "priors"  # level0/, level1/, ...
DEFAULT_CLASSIFIER_DIR = ASSETS_DIR / "models" / "classifier"
EXAMPLE_PRIME = ASSETS_DIR / "examples" / "prime.flac"  # 12 s of a held-out piano folk tune
