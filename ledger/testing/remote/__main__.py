"""``python -m ledger.testing.remote``: the command line's entry point."""

import sys

from ledger.testing.remote.cli import main

if __name__ == "__main__":
    sys.exit(main())
