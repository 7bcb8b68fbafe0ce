"""Run a command and print the peak resident memory of its whole process tree (sampled every 0.5 s), e.g.
the default study with every SuperLink, SuperNode and ClientApp process it starts:

    .venv/bin/python benchmarks/peak_memory.py -- .venv/bin/cardiacfl study run --study studies/demo.toml
"""

from __future__ import annotations

import subprocess
import sys
import time

from bench_rounds import tree_rss_bytes


def main() -> None:
    command = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    if not command:
        raise SystemExit(__doc__)
    process = subprocess.Popen(command)
    peak, start = 0, time.perf_counter()
    while process.poll() is None:
        peak = max(peak, tree_rss_bytes(process.pid))
        time.sleep(0.5)
    print(f"exit {process.returncode}; wall {time.perf_counter() - start:.0f} s; peak RSS of the process tree "
          f"{peak / 2 ** 30:.2f} GiB", flush=True)
    raise SystemExit(process.returncode)


if __name__ == "__main__":
    main()
