"""Serve the scheduled deployments from this process (no work pool needed).

    prefect server start --host 127.0.0.1            # terminal 1 (or use an existing server)
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python flows/serve.py                              # terminal 2: nightly retrain + weekly champion check

`--every 60` replaces the cron schedules by an interval (for trying it out) and starts one run of
each deployment right away instead of waiting a full interval for the first. Scheduled retrain runs
commit their DVC record to git (params `flows.git_commit`). For a work pool instead
(`prefect deploy --all` with prefect.yaml, then `prefect worker start --pool vt-local`), see
the README.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect import serve  # noqa: E402
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy  # noqa: E402

from flows.detect import detect  # noqa: E402
from flows.heartbeats import crash_silent_runs  # noqa: E402
from flows.pipeline import evaluate_champion, preprocess  # noqa: E402
from flows.retrain import retrain  # noqa: E402
from vt_models.config import FlowsConfig, load_config  # noqa: E402

FLOWS = {"retrain": retrain, "evaluate-champion": evaluate_champion, "preprocess": preprocess, "detect": detect}


def deployments(params: str, flows_cfg: FlowsConfig, every: float | None, names: list[str]) -> list:
    """The deployments of ``names``: ``flows_cfg``'s cron schedules (or an interval of ``every`` seconds), each
    run reading its params from ``params``."""
    crons = {
        "retrain": flows_cfg.retrain_cron,
        "evaluate-champion": flows_cfg.champion_eval_cron,
        "preprocess": None,
        "detect": flows_cfg.retrain_cron,
    }
    # one run of a deployment at a time, enforced by the server (a deployment concurrency limit of 1)
    strategy = {"skip": ConcurrencyLimitStrategy.CANCEL_NEW, "wait": ConcurrencyLimitStrategy.ENQUEUE}
    limit = None
    if flows_cfg.overlap in strategy:
        limit = ConcurrencyLimitConfig(limit=1, collision_strategy=strategy[flows_cfg.overlap])
    out = []
    for name in names:
        schedule = {"interval": timedelta(seconds=every)} if every else {"cron": crons[name] or flows_cfg.retrain_cron}
        parameters = {"params": params, **({"git_commit": flows_cfg.git_commit} if name == "retrain" else {})}
        out.append(
            FLOWS[name].to_deployment(name=f"vt-{name}", parameters=parameters, concurrency_limit=limit, **schedule)
        )
    return out


def run_now(names: list[str], timeout_s: float = 300.0) -> None:
    """Once the served deployments exist, create one run of each now (the interval's first run waits
    a full interval otherwise). Runs in a daemon thread next to `serve`."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    pending = {f"{FLOWS[n].name}/vt-{n}" for n in names}
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while pending and time.monotonic() < deadline:
            for full in sorted(pending):
                try:
                    deployment = client.read_deployment_by_name(full)
                except ObjectNotFound:
                    continue
                client.create_flow_run_from_deployment(deployment.id)
                print(f"started a first run of {full} now", flush=True)
                pending.discard(full)
            time.sleep(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--every", type=float, default=None, help="interval in seconds instead of the cron schedules")
    parser.add_argument("--flows", nargs="+", default=["retrain", "evaluate-champion"], choices=sorted(FLOWS))
    parser.add_argument("--no-run-now", action="store_true", help="with --every: wait for the first interval run")
    args = parser.parse_args(argv)
    flows_cfg = load_config(args.params).flows
    if args.every and not args.no_run_now:
        threading.Thread(target=run_now, args=(args.flows,), daemon=True, name="run-now").start()
    print(crash_silent_runs(flows_cfg.heartbeat_s, flows_cfg.crash_after_s), flush=True)
    # pause_on_shutdown=False: stopping this process must not silently pause the schedules
    serve(*deployments(args.params, flows_cfg, args.every, args.flows), pause_on_shutdown=False)


if __name__ == "__main__":
    main()
