"""tokgen: autoregressive, token-based music continuation.

The package reads like the architecture: ``codec`` turns audio into discrete codes at
several time resolutions and back, ``data`` makes the offline training corpus, and the
CLI (``tokgen.cli``) wires them to commands.
"""

__version__ = "0.1.0"
