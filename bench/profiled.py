"""``run.py`` with a cProfile that signals switch on and off (bench/price_cpu.py --cprofile).

    python bench/profiled.py OUT.prof     serve as run.py does; SIGUSR1 starts the profile,
                                          SIGUSR2 stops it and writes OUT.prof (pstats)

py-spy under uvloop puts waiting into ``run_app`` and aiohttp's frames; a deterministic
profile of the measured phase only gives call counts and relative costs instead (it
slows Python calls down, so read shares, not absolute times).
"""

from __future__ import annotations

import cProfile
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    out = sys.argv.pop(1)
    profile = cProfile.Profile()

    def start(*_: object) -> None:
        profile.enable()

    def stop(*_: object) -> None:
        profile.disable()
        profile.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    from bff.cli import main as serve

    return serve(prog="run.py")


if __name__ == "__main__":
    sys.exit(main())
