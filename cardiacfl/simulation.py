"""`cardiacfl study simulate`: the same ServerApp and ClientApp on Flower's Simulation Engine (the Ray backend), so
that many virtual sites run on one machine: a SuperLink started in simulation mode on loopback, the study
submitted with `flwr run` with the number of virtual sites as federation config, progress read from the same run
database, and every started process stopped on exit or Ctrl-C.

In simulation a ClientApp's node config holds only `partition-id` and `num-partitions`; the run config key
`simulation-site-configs` (the site configs, comma-separated) says which site each partition is. A SuperNode of a
real deployment always has its own `site-config`, which wins, so a server cannot point a real site elsewhere.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

from cardiacfl.cross_site import MAX_SITES, fill_cross_site_matrix
from cardiacfl.deployment import (Processes, StudyPaths, flower_bin, study_started_after, wait_for_port, flower_environment,
                                  follow_study, free_port, study_run_config, submit)
from protocol.simulated_site import SITE_CONFIGS_KEY
from server.study_config import StudyConfig


def simulate_study(study: StudyConfig, work: Path, *, site_configs: list[Path] | None = None,
                   reference_panel: Path | None = None, cpus_per_site: int = 1,
                   status: Callable[[str], None] = print, progress: Callable[[dict], None] | None = None) -> StudyPaths:
    """Run `study` with one virtual SuperNode per site config (the study's own sites unless given)."""
    paths = StudyPaths.under(work)
    configs = [Path(p).resolve() for p in (site_configs or study.sites)]
    if len(configs) < 2:
        raise ValueError(f"a federated study needs at least 2 sites, got {len(configs)}")
    if any("," in str(p) for p in configs):
        raise ValueError("site config paths must not contain commas (they travel as one comma-separated value)")
    env = flower_environment(paths.flwr_home)
    env["OMP_NUM_THREADS"] = str(cpus_per_site)  # one torch thread per CPU a virtual site gets
    port = free_port()
    paths.flwr_home.mkdir(parents=True, exist_ok=True)
    # Everything runs on this machine: the SuperLink listens on loopback only, and no site connects over a network.
    (paths.flwr_home / "config.toml").write_text(f'[superlink.study]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')
    with ExitStack() as stack:
        processes = Processes()
        stack.callback(processes.stop)
        processes.start("superlink", [flower_bin("flower-superlink"), "--simulation", "--insecure", "--host", "127.0.0.1",
                                      "--port", str(port), "--disable-runtime-dependency-installation"],
                        env, paths.logs / "superlink.log")
        wait_for_port(port, processes)
        status(f"simulation SuperLink on 127.0.0.1:{port}; {len(configs)} virtual sites, {cpus_per_site} CPU each")
        run_config = study_run_config(study, paths, reference_panel,
                                      extra=f'{SITE_CONFIGS_KEY}="{",".join(str(p) for p in configs)}"')
        federation = f"num-supernodes={len(configs)} client-resources-num-cpus={cpus_per_site}"
        submitted = time.time()
        run_id = submit(run_config, env, federation_config=federation)
        status(f"study submitted as Flower run {run_id}")
        follow_study(paths, processes, run_id, env, after=submitted, status=status, progress=progress)
    if any(plan.name == "finetune" for plan in study.phases):  # the lab holds every site's data here
        written = fill_cross_site_matrix(paths.db, study_started_after(paths.db, submitted), configs)
        status(f"cross-site matrix: {written} (model, site) scores" if written else
               f"cross-site matrix skipped: more than {MAX_SITES} sites" if len(configs) > MAX_SITES else
               "cross-site matrix: no site kept a fine-tuned model")
    return paths
