"""The redaction property: a secret's value shows up in no repr, str, log or error.

For any canary value (random, 16+ characters) held in a secret.
"""

from __future__ import annotations

import base64
import io
import logging
import pickle
import traceback

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesos_secrets import (
    CommandInfo,
    ContainerInfo,
    Environment,
    MesosSecretsError,
    Secret,
    SecretValidationError,
    TaskInfo,
    Variable,
    Volume,
    get_resolver,
)
from mesos_secrets.testing import leaks

canaries = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=16).map(
    lambda s: "CANARY" + s
)


def task_holding(value: bytes) -> TaskInfo:
    secret = Secret.for_value(value)
    return TaskInfo(
        name="t",
        task_id="t",
        command=CommandInfo(environment=Environment(variables=(Variable.for_secret("S", secret),))),
        container=ContainerInfo(
            type=ContainerInfo.Type.MESOS, volumes=(Volume.for_secret("s", secret),)
        ),
    )


def log_of(*objects: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        for obj in objects:
            logger.debug("object %s %r", obj, obj)
            logger.info(f"f-string {obj} {obj!r}")
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


@given(canaries)
def test_models_never_show_values(value: str) -> None:
    """repr, str, attrs.asdict output and logs of any model hide the value."""
    data = value.encode()
    task = task_holding(data)
    secret = Secret.for_value(data)
    texts = [repr(task), str(task), repr(secret), str(attrs.asdict(task)), log_of(task, secret)]
    assert not leaks(data, *texts)
    assert not leaks(base64.b64encode(data), *texts)


@given(canaries)
def test_validation_errors_never_show_values(value: str) -> None:
    """A validation error about a secret does not quote it, even in a traceback."""
    data = value.encode() + b"\0"  # NUL: refused in the environment
    with pytest.raises(SecretValidationError) as caught:
        Variable.for_secret("X", Secret.for_value(data))
    text = "".join(traceback.format_exception(caught.value))
    assert not leaks(value, text, repr(caught.value))


@given(canaries)
def test_json_parse_errors_never_show_values(value: str) -> None:
    """Bad JSON that contains a value is reported by position only."""
    text = '{"type": "VALUE", "value": {"data": "' + value
    with pytest.raises(SecretValidationError) as caught:
        Secret.from_json(text)
    assert not leaks(value, str(caught.value))
    with pytest.raises(SecretValidationError) as caught:
        Secret.from_json({"type": "VALUE", "value": {"data": value + "!"}})
    assert not leaks(value, str(caught.value))


@given(canaries)
def test_serialization_refusals_never_show_values(value: str) -> None:
    """Pickling a model that holds a secret fails without quoting it."""
    with pytest.raises(TypeError) as caught:
        pickle.dumps(task_holding(value.encode()))
    assert not leaks(value, str(caught.value))


@given(canaries)
def test_store_errors_never_show_values(value: str) -> None:
    """Errors from the embedded store about a secret do not show its fields' values."""
    import tempfile

    with tempfile.TemporaryDirectory() as home, get_resolver("local", home=home) as resolver:
        resolver.store.put("/canary", {"a": value, "b": value})  # type: ignore[attr-defined]
        for reference in (Secret.for_reference("/canary"), Secret.for_reference("/canary", "c")):
            with pytest.raises(MesosSecretsError) as caught:
                resolver.resolve(reference)
            text = "".join(traceback.format_exception(caught.value))
            assert not leaks(value, text, repr(caught.value))
