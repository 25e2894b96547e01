"""Start the coupon BFF, or run a small CLI verb (the same as ``coupon-bff``, ``python -m bff``).

    python run.py                      serve (embedded SQLite + in-process gate by default)
    python run.py token --role merchant --shop s1 --sub m1
                                       print a signed token for local use
    python run.py migrate              apply the schema migrations and exit
    python run.py --demo               seed the demo shop, print its URLs and a token, serve
    python run.py --help               the verbs, the main BFF_* variables, the exit codes

Settings come from config/defaults.toml and BFF_* variables (config/loader.py). The
command line itself is bff/cli.py, so an installed package has it too.
"""

import sys

from bff.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="run.py"))
