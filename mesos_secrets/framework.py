"""For framework authors: executor and task messages, and one-time bootstrap secrets.

A scheduler (pymesos or any other) that runs tasks with ``mesos-secrets-executor``:

    bootstrap = mint_bootstrap(vault_client, policies=["myapp-read"])
    executor = executor_info("secrets-executor", framework_id=fid, bootstrap=bootstrap,
                             environment={"VAULT_ADDR": "https://vault:8200"})
    task = app.to_task_info()                 # from a Marathon-style spec
    offer_task = launch_json(task, executor, agent_id=offer["agent_id"]["value"])

The bootstrap is a VALUE secret holding a response-wrapped Vault/OpenBao token (the
wrapping is single-use and short-lived): the agent puts it in the executor's
environment (Mesos resolves VALUE secrets itself), the executor unwraps it once at
start and forgets it. A copy seen in transit is worthless once used, and using it first
makes the executor's unwrap fail loudly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .mesos import (
    CommandInfo,
    Environment,
    ExecutorInfo,
    ExecutorType,
    TaskInfo,
    Variable,
)
from .secret import Secret

__all__ = [
    "BOOTSTRAP_ENV",
    "EXECUTOR_COMMAND",
    "executor_info",
    "launch_json",
    "mint_bootstrap",
]

#: The executor's environment variable that carries the wrapped bootstrap token.
BOOTSTRAP_ENV = "MESOS_SECRETS_VAULT_WRAPPED_TOKEN"
EXECUTOR_COMMAND = "mesos-secrets-executor"


class _TokenAPI(Protocol):
    def create(self, **kwargs: Any) -> Any: ...


class _Auth(Protocol):
    token: _TokenAPI


class VaultClient(Protocol):
    """What :func:`mint_bootstrap` needs of an hvac client."""

    auth: _Auth


def mint_bootstrap(
    client: VaultClient,
    *,
    policies: Sequence[str],
    ttl: str = "1h",
    wrap_ttl: str = "60s",
    explicit_max_ttl: str | None = None,
) -> Secret:
    """A VALUE secret holding a new token for the executor, response-wrapped.

    The token has ``policies`` (what the framework's tasks may read), a renewable
    ``ttl``; the wrapping lives ``wrap_ttl`` and can be unwrapped once. ``client`` is an
    authenticated ``hvac.Client`` allowed to create such tokens.
    """
    if not policies:
        raise ValueError("a bootstrap token needs at least one policy")
    options: dict[str, Any] = {
        "policies": list(policies),
        "ttl": ttl,
        "renewable": True,
        "wrap_ttl": wrap_ttl,
    }
    if explicit_max_ttl is not None:
        options["explicit_max_ttl"] = explicit_max_ttl
    response = client.auth.token.create(**options)
    return Secret.for_value(response["wrap_info"]["token"])


def executor_info(
    executor_id: str,
    *,
    framework_id: str | None = None,
    bootstrap: Secret | None = None,
    environment: Mapping[str, str] | None = None,
    command: str = EXECUTOR_COMMAND,
    name: str | None = None,
    resources: Sequence[Mapping[str, Any]] | None = None,
) -> ExecutorInfo:
    """An ExecutorInfo that starts ``mesos-secrets-executor``.

    ``environment`` are plain variables (``VAULT_ADDR``, ``MESOS_SECRETS_RESOLVER``…);
    ``bootstrap`` (from :func:`mint_bootstrap`) becomes a SECRET variable.
    """
    variables = [Variable.for_value(k, v) for k, v in (environment or {}).items()]
    if bootstrap is not None:
        variables.append(Variable.for_secret(BOOTSTRAP_ENV, bootstrap))
    return ExecutorInfo(
        executor_id=executor_id,
        type=ExecutorType.CUSTOM,
        framework_id=framework_id,
        name=name or "mesos-secrets executor",
        command=CommandInfo(
            value=command, shell=True, environment=Environment(variables=tuple(variables))
        ),
        extra={"resources": list(resources)} if resources else {},
    )


def launch_json(task: TaskInfo, executor: ExecutorInfo, *, agent_id: str) -> dict[str, Any]:
    """The task, bound to ``executor`` and an agent, as Mesos v1 JSON for a LAUNCH."""
    out = task.to_json()
    out["agent_id"] = {"value": agent_id}
    out["executor"] = executor.to_json()
    return out
