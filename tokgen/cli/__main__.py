"""``python -m tokgen.cli``: the same as ``python -m tokgen``."""

import sys

from tokgen.cli import main

# Guarded: vLLM's engine spawns worker processes that re-import the main module.
if __name__ == "__main__":
    sys.exit(main())
