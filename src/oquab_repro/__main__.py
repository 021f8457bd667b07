"""Make ``python -m oquab_repro`` behave like the ``oquab-repro`` command."""

import sys

from oquab_repro.console import main

if __name__ == "__main__":
    sys.exit(main())
