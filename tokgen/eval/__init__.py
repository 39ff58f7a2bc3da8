"""Objective evaluation of continuations: distribution distances between sets of audio
embeddings (``distances``: FAD, KID, IS) and the embeddings themselves (``embeddings``)."""
