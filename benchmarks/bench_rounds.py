"""Round time of the real deployment (SuperLink + one SuperNode per site, TLS + site authentication, on
loopback): plain FedAvg rounds vs SecAgg+ rounds, for each number of sites, in one run; with the slowest site's
local compute per round and the peak memory of all study processes together.

    .venv/bin/python benchmarks/bench_rounds.py [--sites 3 5 10 20] [--rounds 3] [--preset small]
        [--clientapp warm cold] [--json rounds.json]

--clientapp: how each site starts Flower's per-message ClientApp process: `warm`, forked from the site's warm
launcher (client/warm_clientapp.py, the default), or `cold`, as Flower starts it (a new interpreter); both
measure the two in the same run. --json writes one row per line of the table: {"sites", "mode", "clientapp",
"round_s" (mean of the rounds after the first), "compute_s" (the slowest site's compute)}.

Each configuration is a one-phase DP study (linear-probe fine-tuning: about a second of local compute) on a
small synthetic cohort written for the benchmark. Round time = configure_fit -> aggregated (run database).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.procfs import tree_rss_bytes
from rundb.reader import open_readonly
from rundb.schema import Round, SiteMetric
from protocol.site_metrics import MetricKey as K

REPO = Path(__file__).resolve().parents[1]


def study_toml(path: Path, sites: list[Path], secagg: bool, rounds: int, preset: str) -> None:
    site_list = ", ".join(f'"{s}"' for s in sites)
    path.write_text(f"""[study]
name = "bench-{'secagg' if secagg else 'plain'}-{len(sites)}"
preset = "{preset}"
sites = [{site_list}]
dp = true

[secagg]
enabled = {str(secagg).lower()}
timeout_s = {max(120, 20 * len(sites))}

[[phase]]
name = "finetune"
rounds = {rounds}
local_epochs = 1
finetune_mode = "linear"
min_sites = {len(sites)}
""")


def run_config(work: Path, study: Path, clientapp: str = "warm") -> dict:
    peak = [0]
    env = dict(os.environ, CARDIACFL_WARM_CLIENTAPP="1" if clientapp == "warm" else "0")
    process = subprocess.Popen([str(REPO / ".venv/bin/cardiacfl"), "study", "run", "--study", str(study), "--work", str(work)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], tree_rss_bytes(process.pid))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    process.wait()
    sampler.join()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"study {study} failed; logs in {work / 'logs'}")
    with Session(open_readonly(str(work / "study.db"))) as s:
        rounds = list(s.scalars(select(Round.seconds).order_by(Round.server_round)))
        fits = s.execute(select(SiteMetric.server_round, *(SiteMetric.metrics[k].as_float() for k in
                                                            (K.SECONDS, K.STARTUP_S, K.WORK_S, K.PREPARE_S)))
                         .where(SiteMetric.kind == "fit")).all()
    compute, site_time, startup, work, prepare = {}, {}, [], [], []
    for server_round, seconds, start_s, work_s, prep_s in fits:
        compute[server_round] = max(compute.get(server_round, 0.0), seconds or 0.0)
        # the training message at the slowest site: ClientApp start + the site's whole work
        site_time[server_round] = max(site_time.get(server_round, 0.0), (start_s or 0.0) + (work_s or 0.0))
        startup.append(start_s or 0.0)
        work.append(work_s or 0.0)
        prepare.append(prep_s or 0.0)
    n = len(rounds)
    return {"round_s": rounds, "slowest_compute_s": [compute.get(i + 1, 0.0) for i in range(n)],
            "slowest_site_s": [site_time.get(i + 1, 0.0) for i in range(n)],
            "peak_rss_gib": peak[0] / 2 ** 30, "wall_s": wall,
            K.STARTUP_S: sum(startup) / max(len(startup), 1), K.WORK_S: sum(work) / max(len(work), 1),
            K.PREPARE_S: sum(prepare) / max(len(prepare), 1)}


def after_first(values: list) -> list:
    """The rounds that count: all but the first, which also pays for start-up (all of them when there is one)."""
    return values[1:] or values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--keep", type=Path, default=None, help="keep the studies' work folders (logs, run DBs) here")
    parser.add_argument("--clientapp", nargs="+", choices=["warm", "cold"], default=["warm"],
                        help="warm: ClientApps forked from each site's warm launcher; cold: Flower's own start")
    parser.add_argument("--modes", nargs="+", choices=["plain", "secagg"], default=["plain", "secagg"])
    parser.add_argument("--json", type=Path, default=None, help="write the table's rows here as JSON")
    args = parser.parse_args()
    from synthetic.cohort import generate_cohort

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        configs = generate_cohort(tmp / "cohort", n_sites=max(args.sites), subjects=24, seed=5)
        for config in configs:
            subprocess.run([str(REPO / ".venv/bin/cardiacfl"), "data", "check", "--site-config", str(config)],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"{'sites':>5} {'mode':>7} {'clientapp':>9} {'round s (each)':>24} {'mean':>6} {'slowest compute':>16} "
              f"{'peak GiB':>9}")
        results, rows = {}, []
        for n in args.sites:
            for secagg in [mode == "secagg" for mode in args.modes]:
                for clientapp in args.clientapp:
                    mode = "secagg" if secagg else "plain"
                    study = tmp / f"study-{n}-{mode}-{clientapp}.toml"
                    # A fresh copy of the cohort for every configuration: each site's privacy ledger is for life.
                    cohort = shutil.copytree(tmp / "cohort", tmp / f"cohort-{n}-{mode}-{clientapp}")
                    study_toml(study, [cohort / c.relative_to(tmp / "cohort") for c in configs[:n]], secagg, args.rounds,
                               args.preset)
                    r = run_config((args.keep or tmp) / f"work-{n}-{mode}-{clientapp}", study, clientapp)
                    results[(n, secagg, clientapp)] = r
                    rounds = after_first(r["round_s"])
                    mean = sum(rounds) / len(rounds)
                    compute = max(after_first(r["slowest_compute_s"]))
                    rows.append({"sites": n, "mode": mode, "clientapp": clientapp, "round_s": round(mean, 2),
                                 "compute_s": round(compute, 2), "peak_rss_gib": round(r["peak_rss_gib"], 2)})
                    print(f"{n:>5} {mode:>7} {clientapp:>9} {' '.join(f'{s:.1f}' for s in r['round_s']):>24} "
                          f"{mean:>6.1f} {compute:>16.2f} {r['peak_rss_gib']:>9.2f}", flush=True)
                    routing = [t - site for t, site in zip(rounds, after_first(r["slowest_site_s"]))]
                    print(f"      training message, per site (mean): ClientApp process start -> handler "
                          f"{r[K.STARTUP_S]:.1f} s, the site's work {r[K.WORK_S]:.1f} s (of it: set-up {r[K.PREPARE_S]:.1f} s); "
                          f"Flower's routing (round minus the slowest site's ClientApp start + work) "
                          f"{sum(routing) / len(routing):.1f} s per round", flush=True)
                    if args.json:  # after every line: a long run stopped midway keeps what it measured
                        args.json.write_text(json.dumps(rows, indent=1))
            for clientapp in args.clientapp if len(args.modes) == 2 else ():
                plain = after_first(results[(n, False, clientapp)]["round_s"])
                secure = after_first(results[(n, True, clientapp)]["round_s"])
                print(f"{n} sites, {clientapp}: SecAgg+ / plain round time = "
                      f"{(sum(secure) / len(secure)) / (sum(plain) / len(plain)):.2f}", flush=True)


if __name__ == "__main__":
    main()
