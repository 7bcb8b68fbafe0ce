"""Flower ClientApp: one hospital. It only converts between Flower messages and `client.site_round`
(which holds the training and evaluation); heavy libraries are imported inside the handlers, because every
message starts a fresh ClientApp process and the SecAgg+ stages need none of them.

Site identity comes from the SuperNode's node config: `site-config="<path to the site's TOML>"` (in simulation, from
the partition id: shared_models/simulated_site.py).
Outgoing: model arrays (encoded for part-weighted averaging) and aggregate metrics only.
"""

from __future__ import annotations

import importlib

from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import Context, Message

from shared_models.simulated_site import site_config_for_partition
from shared_models.round_contract import RoundConfig
from shared_models import mask_prg
from shared_models.site_metrics import MetricKey

# ChaCha20 masks, as the server's workflow uses (the package re-exports the mod function under the module's name)
mask_prg.install(importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod"))


def _seconds_since_process_start() -> float:
    """Time this ClientApp process has lived (Linux): start-up cost that Flower's per-message process adds."""
    import os
    import time

    try:
        ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
        return time.time() - (boot + ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, StopIteration):
        return float("nan")


class SiteClient(NumPyClient):
    def __init__(self, site_config: str):
        self.site_config = site_config

    def fit(self, parameters, config):
        startup = _seconds_since_process_start()
        from client.site_round import train_round  # torch and the model code

        imports = _seconds_since_process_start() - startup
        rc = RoundConfig.from_record(dict(config))
        arrays, metrics = train_round(self.site_config, _state(rc.preset, parameters), rc)
        metrics[MetricKey.STARTUP_S] = startup
        metrics[MetricKey.IMPORT_S] = imports
        return arrays, 1, metrics  # weight 1: the arrays carry their own per-part example weights

    def evaluate(self, parameters, config):
        from client.site_round import evaluate_round

        rc = RoundConfig.from_record(dict(config))
        return evaluate_round(self.site_config, _state(rc.preset, parameters), rc)


def _state(preset: str, parameters: list) -> dict:
    from shared_models.model_arrays import state_names

    names = state_names(preset)
    if len(names) != len(parameters):
        raise ValueError(f"received {len(parameters)} arrays, the {preset!r} model has {len(names)}")
    return dict(zip(names, parameters))


def client_fn(context: Context):
    # A real SuperNode names its own site config; only a virtual one (simulation) takes it from the run config.
    site_config = context.node_config.get("site-config") or site_config_for_partition(context.node_config,
                                                                                       context.run_config)
    if not site_config:
        raise ValueError("SuperNode started without node config 'site-config' (the path to the site's TOML)")
    return SiteClient(str(site_config)).to_client()


def secaggplus_when_asked(message: Message, context: Context, call_next):
    """SecAgg+ for SecAgg+ messages; plain train/evaluate messages pass straight through (the stock mod
    fails on messages without its config record)."""
    if "secaggplus_configs" in message.content.config_records:
        return secaggplus_mod(message, context, call_next)
    return call_next(message, context)


app = ClientApp(client_fn=client_fn, mods=[secaggplus_when_asked])
