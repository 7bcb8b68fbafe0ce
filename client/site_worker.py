"""The site's warm worker: one long-lived process per site that holds torch, the model code and the site's
prepared data, and does each round's training and evaluation for Flower's per-message ClientApp (which starts a
fresh process for every message and hands the round over through client/worker_channel.py).

It keeps no global model: every request carries the round's global weights, and a model is built for it and
dropped after. The site's prepared data is forgotten whenever a request comes from another Flower run, so no
study sees anything another study left. It exits when the process that started it (client/site_node.py) is gone.

    python -m client.site_worker --site-config FILE [--threads N] [--parent-pid PID]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import traceback
from multiprocessing import AuthenticationError

from client.worker_channel import WorkerAddress, listen


def _exit_with_parent(parent_pid: int) -> None:
    """A worker never outlives its launcher (also when the launcher was killed and could not stop it)."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(0)


def serve(site_config: str, threads: int | None = None) -> None:
    import torch

    from client import site_round
    from sitedata.site_config import load_site_config

    if threads:
        torch.set_num_threads(threads)
    address = WorkerAddress.in_state_dir(load_site_config(site_config).state_dir)
    listener = listen(address)
    print(f"site worker ready on {address.socket_path} (pid {os.getpid()})", flush=True)
    current_run = None
    while True:
        try:
            connection = listener.accept()
        except AuthenticationError:
            print("refused a connection that did not hold the worker key", flush=True)
            continue
        except (OSError, EOFError):  # a peer that left during the handshake: a liveness probe, a killed ClientApp
            continue
        with connection:
            try:
                request = connection.recv()
            except EOFError:
                continue
            if request["run"] != current_run:  # a new study: nothing of the previous run's data stays
                site_round.forget_prepared_sites()
                current_run = request["run"]
            started = time.perf_counter()
            try:
                if request["op"] == "overlap":
                    reply = ("ok", site_round.overlap(site_config, request["fingerprints"]))
                elif request["op"] == "admission":
                    reply = ("ok", site_round.admission(site_config, request["round"]))
                else:
                    reply = ("ok", site_round.work(request["op"], site_config, request["arrays"], request["round"]))
            except Exception as err:  # the round fails for this site; the worker stays up for the next one
                traceback.print_exc()
                reply = ("error", f"{type(err).__name__}: {err}")
            where = f"round {request['round'].server_round}" if "round" in request else "before the study"
            print(f"run {current_run}: {request['op']} {where} "
                  f"{reply[0]} in {time.perf_counter() - started:.1f} s", flush=True)
            try:
                connection.send(reply)
            except OSError:  # the ClientApp was stopped while this site worked (Flower's timeout, `flwr stop`)
                print(f"run {current_run}: the ClientApp left before the reply; the worker stays up", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="The site's warm worker (started by client/site_node.py).")
    parser.add_argument("--site-config", required=True)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="exit when this process is gone (default: the process that started this one)")
    args = parser.parse_args()
    # Given explicitly, a launcher that died before this line still counts (getppid would already name its reaper).
    threading.Thread(target=_exit_with_parent, args=(args.parent_pid or os.getppid(),), daemon=True).start()
    serve(args.site_config, args.threads)


if __name__ == "__main__":
    main()
