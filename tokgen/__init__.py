"""tokgen: autoregressive, token-based music continuation.

The package reads like the architecture (docs/ARCHITECTURE.md): ``codec`` turns audio
into discrete codes at several time resolutions and back, ``prior`` models the codes,
``engine`` serves causal LMs, ``generation`` (``Generator``) owns all of them for the CLI,
the gRPC service, the job workers and Python callers.
"""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``from tokgen import Generator`` without importing torch for ``import tokgen``."""
    if name == "Generator":
        from tokgen.generation.generator import Generator

        return Generator
    raise AttributeError(f"module 'tokgen' has no attribute {name!r}")
