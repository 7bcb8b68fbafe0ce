"""Which site a virtual SuperNode of Flower's Simulation Engine is. Its node config holds only `partition-id` and
`num-partitions`; `cardiacfl study simulate` lists the site configs in the run config, one per partition."""

from __future__ import annotations

SITE_CONFIGS_KEY = "simulation-site-configs"


def simulated_site_configs(run_config: dict) -> list[str]:
    """The run's site configs, one per partition (empty outside `study simulate`)."""
    return [p for p in str(run_config.get(SITE_CONFIGS_KEY, "")).split(",") if p]


def site_config_for_partition(node_config: dict, run_config: dict) -> str | None:
    """The site config of a virtual site: the `partition-id`-th of the run's simulation site configs."""
    listed = simulated_site_configs(run_config)
    if "partition-id" not in node_config or not listed:
        return None
    partition = int(node_config["partition-id"])
    if not 0 <= partition < len(listed):
        raise ValueError(f"partition {partition} has no site config ({len(listed)} listed in {SITE_CONFIGS_KEY})")
    return listed[partition]
