"""Executor tokens as a Mesos agent mints them (``reference/mesos.md`` §9), with PyJWT.

A Mesos agent started with ``--jwt_secret_key`` gives each executor container a token
in ``MESOS_EXECUTOR_AUTHENTICATION_TOKEN``: an HS256 JWT whose claims are exactly
``fid``, ``eid`` and ``cid`` (framework, executor and container ids), as strings, with
no ``exp``; header ``{"alg":"HS256","typ":"JWT"}``, compact JSON with sorted keys,
unpadded base64url. The executor sends it as ``Authorization: Bearer <token>`` on
every call; with ``--authenticate_http_executors`` the agent answers 401 to a missing
or bad token and 403 to claims that do not match the caller.

For agents (and the tests' agent) and for checking what an agent gave.
"""

from __future__ import annotations

from collections.abc import Mapping

import jwt

from .errors import SecretAccessDeniedError

__all__ = ["ExecutorClaims", "check_claims", "mint", "mint_executor_token", "verify"]

ExecutorClaims = Mapping[str, str]


def mint(claims: Mapping[str, object], key: bytes | str) -> str:
    """An HS256 JWT over ``claims`` exactly as libprocess writes one (sorted, compact)."""
    payload = {name: claims[name] for name in sorted(claims)}
    return jwt.encode(payload, key, algorithm="HS256", headers={"typ": "JWT"})


def mint_executor_token(
    key: bytes | str, framework_id: str, executor_id: str, container_id: str
) -> str:
    """The token a Mesos agent gives an executor: string claims fid, eid, cid."""
    return mint({"fid": framework_id, "eid": executor_id, "cid": container_id}, key)


def verify(token: str, key: bytes | str) -> dict[str, str]:
    """Check signature and algorithm (HS256 only), as the agent's JWT authenticator does.

    Returns the claims, every value as a string (the agent stringifies them).
    Raises :class:`SecretAccessDeniedError` with libprocess' reason.
    """
    try:
        header = jwt.get_unverified_header(token)
        if "crit" in header:
            raise SecretAccessDeniedError("Invalid JWT: Token 'crit' field is unsupported")
        claims = jwt.decode(
            token, key, algorithms=["HS256"], options={"require": [], "verify_aud": False}
        )
    except jwt.InvalidSignatureError:
        raise SecretAccessDeniedError("Invalid JWT: Token signature does not match") from None
    except jwt.ExpiredSignatureError:
        raise SecretAccessDeniedError("Invalid JWT: Token has expired") from None
    except jwt.InvalidTokenError as error:
        raise SecretAccessDeniedError(f"Invalid JWT: {type(error).__name__}") from None
    if not claims:
        raise SecretAccessDeniedError("JWT claims missing")
    return {k: v if isinstance(v, str) else str(v) for k, v in claims.items()}


def check_claims(
    claims: ExecutorClaims, framework_id: str, executor_id: str, container_id: str
) -> None:
    """The agent's ``verifyExecutorClaims``: each mismatch is a 403 with Mesos' words."""
    prefix = "Authenticated principal '{...}'"
    if claims.get("fid") != framework_id:
        raise SecretAccessDeniedError(
            f"{prefix} does not contain an 'fid' claim with the framework ID {framework_id}, "
            "which is set in the call"
        )
    if claims.get("eid") != executor_id:
        raise SecretAccessDeniedError(
            f"{prefix} does not contain an 'eid' claim with the executor ID {executor_id}, "
            "which is set in the call"
        )
    if claims.get("cid") != container_id:
        raise SecretAccessDeniedError(
            f"{prefix} does not contain a 'cid' claim with the correct active ContainerID"
        )
