"""Generated gRPC code for the ``tokgen.v1`` API (``proto/tokgen/v1/``): regenerate with
``scripts/proto.sh gen``; never edit by hand (a test checks it matches the protos)."""
