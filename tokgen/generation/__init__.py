"""Generation: ``Generator`` owns a codec, its priors and their engines (see generator.py)."""

from tokgen.generation.generator import Generator

__all__ = ["Generator"]
