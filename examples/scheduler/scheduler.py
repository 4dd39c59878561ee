"""Run a Marathon-style app spec on a Mesos cluster, with mesos-secrets-executor.

    python examples/scheduler/scheduler.py --master zk://…/mesos app.json

The scheduler mints a one-time bootstrap for the executor (a response-wrapped
Vault/OpenBao token with the policies you name), accepts the first offer large enough,
and launches the app's task with ``mesos-secrets-executor``, which unwraps the
bootstrap, resolves the task's secrets and delivers them. It exits with the task's
result. See README.md beside this file for the agent's flags.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import hvac
from pymesos import MesosSchedulerDriver, Scheduler

from mesos_secrets.framework import executor_info, launch_json, mint_bootstrap
from mesos_secrets.marathon import App, load_spec
from mesos_secrets.secret import Secret

log = logging.getLogger("example-scheduler")
TERMINAL = {
    "TASK_FINISHED",
    "TASK_FAILED",
    "TASK_KILLED",
    "TASK_LOST",
    "TASK_ERROR",
    "TASK_DROPPED",
}


def scalar(offer: dict[str, Any], name: str) -> float:
    return sum(
        r["scalar"]["value"]
        for r in offer.get("resources", [])
        if r["name"] == name and r["type"] == "SCALAR"
    )


def build_launch(
    offer: dict[str, Any],
    app: App,
    *,
    framework_id: str,
    bootstrap: Secret,
    environment: dict[str, str],
    executor_cpus: float = 0.1,
    executor_mem: float = 64,
) -> dict[str, Any] | None:
    """The task to launch on ``offer``, or None when the offer is too small."""
    if (
        scalar(offer, "cpus") < app.cpus + executor_cpus
        or scalar(offer, "mem") < app.mem + executor_mem
    ):
        return None
    resources = [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": executor_cpus}},
        {"name": "mem", "type": "SCALAR", "scalar": {"value": executor_mem}},
    ]
    executor = executor_info(
        f"mesos-secrets-{uuid.uuid4()}",
        framework_id=framework_id,
        bootstrap=bootstrap,
        environment=environment,
        resources=resources,
    )
    return launch_json(app.to_task_info(), executor, agent_id=offer["agent_id"]["value"])


class AppScheduler(Scheduler):  # type: ignore[misc]
    def __init__(self, app: App, bootstrap: Secret, environment: dict[str, str]) -> None:
        self.app = app
        self.bootstrap = bootstrap
        self.environment = environment
        self.launched = False
        self.result = 1

    def registered(self, driver: Any, framework_id: Any, master_info: Any) -> None:
        self.framework_id = framework_id["value"]
        log.info("registered as framework %s", self.framework_id)

    def resourceOffers(self, driver: Any, offers: Any) -> None:
        for offer in offers:
            task = (
                None
                if self.launched
                else build_launch(
                    offer,
                    self.app,
                    framework_id=self.framework_id,
                    bootstrap=self.bootstrap,
                    environment=self.environment,
                )
            )
            if task is None:
                driver.declineOffer(offer["id"])
                continue
            driver.launchTasks(offer["id"], [task])
            self.launched = True
            log.info("launching %s on %s", task["task_id"]["value"], offer["hostname"])

    def statusUpdate(self, driver: Any, update: Any) -> None:
        log.info(
            "task %s: %s %s", update["task_id"]["value"], update["state"], update.get("message", "")
        )
        if update["state"] in TERMINAL:
            self.result = 0 if update["state"] == "TASK_FINISHED" else 1
            driver.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path, help="a Marathon-style app spec")
    parser.add_argument("--master", required=True, help="host:port or zk://… of the Mesos master")
    parser.add_argument(
        "--policy", action="append", default=[], help="Vault policy for the executor (repeat)"
    )
    parser.add_argument("--principal", help="the framework's principal")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    app = load_spec(args.spec.read_bytes())
    if not isinstance(app, App):
        parser.error(f"{args.spec}: this scheduler launches one app, not a pod or a group")
    vault = hvac.Client()  # VAULT_ADDR, VAULT_TOKEN, VAULT_CACERT from the environment
    bootstrap = mint_bootstrap(vault, policies=args.policy or ["default"])
    environment = {"MESOS_SECRETS_RESOLVER": "vault", "VAULT_ADDR": os.environ["VAULT_ADDR"]}
    framework = {"user": app.user or "root", "name": f"mesos-secrets example: {app.id}"}
    if args.principal:
        framework["principal"] = args.principal
    scheduler = AppScheduler(app, bootstrap, environment)
    driver = MesosSchedulerDriver(
        scheduler, framework, args.master, use_addict=True, principal=args.principal
    )
    driver.run()
    print(json.dumps({"app": app.id, "result": "finished" if scheduler.result == 0 else "failed"}))
    return scheduler.result


if __name__ == "__main__":
    sys.exit(main())
