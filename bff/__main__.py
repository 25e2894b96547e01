"""``python -m bff``: the command line of bff/cli.py (serve, --demo, token, migrate)."""

import sys

from bff.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m bff"))
