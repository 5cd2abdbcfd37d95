"""``python -m benchmarks [--quick] [--only NAME ...] [--out DIR]``: the whole benchmark suite, one report."""

import sys

from benchmarks._suite import main

if __name__ == "__main__":
    sys.exit(main())
