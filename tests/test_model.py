"""The Secret model and the Mesos messages around it: validation and Mesos v1 JSON."""

from __future__ import annotations

import base64
import json
from typing import Any, ClassVar

import attrs
import pytest
from hypothesis import given

from mesos_secrets import (
    Environment,
    Reference,
    Secret,
    SecretBytes,
    SecretValidationError,
    TaskGroupInfo,
    TaskInfo,
    Value,
    Variable,
    Volume,
)
from mesos_secrets.mesos import (
    CommandInfo,
    ContainerInfo,
    ExecutorInfo,
    SourceType,
    VariableType,
    VolumeMode,
    VolumeSource,
)
from mesos_secrets.secret import SecretType

from . import strategies

REF = {"type": "REFERENCE", "reference": {"name": "/app/db", "key": "password"}}
VAL = {"type": "VALUE", "value": {"data": base64.b64encode(b"password").decode()}}


def error_of(cls: Any, obj: Any) -> SecretValidationError:
    with pytest.raises(SecretValidationError) as caught:
        cls.from_json(obj)
    return caught.value


class TestSecretValidation:
    """Mesos' AgentValidationTest.Secret, message for message."""

    def test_value_without_value(self) -> None:
        """VALUE with no value is refused with Mesos' message."""
        assert error_of(Secret, {"type": "VALUE"}).message == (
            "Secret of type VALUE must have the 'value' field set"
        )

    def test_value_with_reference(self) -> None:
        """VALUE with both a value and a reference is refused."""
        obj = {**VAL, "reference": {"name": "SECRET_NAME"}}
        assert error_of(Secret, obj).message == (
            "Secret of type VALUE must not have the 'reference' field set"
        )

    def test_value_ok(self) -> None:
        """VALUE with a value only is accepted."""
        assert Secret.from_json(VAL).value == Value(b"password")

    def test_reference_without_reference(self) -> None:
        """REFERENCE with no reference is refused."""
        assert error_of(Secret, {"type": "REFERENCE"}).message == (
            "Secret of type REFERENCE must have the 'reference' field set"
        )

    def test_reference_with_value(self) -> None:
        """REFERENCE with a value is refused, naming the reference."""
        obj = {"type": "REFERENCE", "reference": {"name": "SECRET_NAME"}, "value": VAL["value"]}
        assert error_of(Secret, obj).message == (
            "Secret 'SECRET_NAME' of type REFERENCE must not have the 'value' field set"
        )

    def test_reference_ok(self) -> None:
        """REFERENCE with a reference only is accepted."""
        assert Secret.from_json(REF).reference == Reference("/app/db", "password")

    @pytest.mark.parametrize("obj", [{**VAL, "type": "UNKNOWN"}, {"value": VAL["value"]}, {}])
    def test_unknown_type_is_refused(self, obj: dict[str, Any]) -> None:
        """Stricter than Mesos: an UNKNOWN (or unset) type is refused, not waved through."""
        assert "UNKNOWN" in error_of(Secret, obj).message

    def test_unknown_type_in_python(self) -> None:
        """Python construction applies the same rule."""
        with pytest.raises(SecretValidationError, match="UNKNOWN"):
            Secret(reference=Reference("/x"))

    @pytest.mark.parametrize(
        ("reference", "message"),
        [
            ({"name": ""}, "Secret reference 'name' must not be empty"),
            ({}, "missing required field 'name'"),
            ({"name": 7}, "expected a string, got a number"),
            ({"name": "/x", "key": ""}, "Secret '/x' reference 'key' must not be empty"),
            ({"name": "a\0b"}, "Secret reference 'name' must not contain NUL"),
        ],
    )
    def test_bad_references(self, reference: dict[str, Any], message: str) -> None:
        """Empty, missing, mistyped or NUL-carrying names and keys are refused."""
        assert error_of(Secret, {"type": "REFERENCE", "reference": reference}).message == message

    def test_nested_aliases(self) -> None:
        """Secret.Type, Secret.Reference and Secret.Value mirror mesos.proto's nesting."""
        secret = Secret(type=Secret.Type.VALUE, value=Secret.Value(b"x"))
        assert secret == Secret.for_value(b"x")
        assert Secret.Reference is Reference


class TestSecretJSON:
    """The wire format is Mesos v1 JSON: enum names, proto field names, base64 bytes."""

    def test_reference_shape(self) -> None:
        """A reference serializes exactly as Mesos writes it."""
        assert Secret.for_reference("/app/db", "password").to_json() == REF

    def test_value_shape(self) -> None:
        """A value is base64 in `value.data`."""
        assert Secret.for_value(b"password").to_json() == VAL

    def test_text_input(self) -> None:
        """from_json also takes JSON text."""
        assert Secret.from_json(json.dumps(REF)) == Secret.from_json(REF)

    @pytest.mark.parametrize(
        ("obj", "path", "message"),
        [
            ({"type": "VALUE", "value": {"data": "***"}}, "/value/data", "is not valid base64"),
            ({"type": "VALUE", "value": {"data": 5}}, "/value/data", "expected a base64 string"),
            ({"type": "SOMETHING"}, "/type", "is not one of UNKNOWN, REFERENCE, VALUE"),
            ({"type": 2, "value": VAL["value"]}, "/type", "expected one of"),
            ({"type": "REFERENCE", "reference": "x"}, "/reference", "expected an object"),
            ([], "", "expected an object, got an array"),
        ],
    )
    def test_bad_json(self, obj: Any, path: str, message: str) -> None:
        """Wrong types, bad base64 and unknown enum names are located by JSON pointer."""
        error = error_of(Secret, obj)
        assert error.path == path
        assert message in error.message

    def test_malformed_json_text(self) -> None:
        """Malformed JSON text is an error naming the position, not the text."""
        error = error_of(Secret, '{"type": "VALUE", "value": {"data": "c2VjcmV0"')
        assert error.message.startswith("Invalid JSON:")
        assert "line 1" in error.message
        assert "c2VjcmV0" not in str(error)

    def test_enum_error_does_not_quote_the_input(self) -> None:
        """A secret pasted into an enum field is not echoed back."""
        error = error_of(Secret, {"type": "CANARYhunter2"})
        assert "CANARY" not in str(error)

    @given(strategies.secrets)
    def test_round_trip(self, secret: Secret) -> None:
        """Any valid secret survives to_json -> json text -> from_json."""
        assert Secret.from_json(json.dumps(secret.to_json())) == secret


class TestEnvironmentValidation:
    """Mesos' AgentValidationTest.Environment, plus our duplicate rule."""

    def var(self, **fields: Any) -> dict[str, Any]:
        return {"name": "ENV_VAR_KEY", **fields}

    def error(self, variable: dict[str, Any]) -> str:
        return error_of(Environment, {"variables": [variable]}).message

    def test_secret_without_secret(self) -> None:
        """A SECRET variable needs a secret."""
        assert self.error(self.var(type="SECRET")) == (
            "Environment variable 'ENV_VAR_KEY' of type 'SECRET' must have a secret set"
        )

    def test_secret_with_value(self) -> None:
        """A SECRET variable may not also have a value."""
        assert self.error(self.var(type="SECRET", secret=VAL, value="x")) == (
            "Environment variable 'ENV_VAR_KEY' of type 'SECRET' must not have a value set"
        )

    def test_secret_with_null_bytes(self) -> None:
        """An inline secret with NUL cannot go into the environment."""
        data = base64.b64encode(b"ab\0cd").decode()
        secret = {"type": "VALUE", "value": {"data": data}}
        assert self.error(self.var(type="SECRET", secret=secret)) == (
            "Environment variable 'ENV_VAR_KEY' specifies a secret containing null bytes, "
            "which is not allowed in the environment"
        )

    def test_invalid_secret(self) -> None:
        """An invalid secret is wrapped the way Mesos wraps it."""
        assert self.error(self.var(type="SECRET", secret={"type": "VALUE"})) == (
            "Environment variable 'ENV_VAR_KEY' specifies an invalid secret: "
            "Secret of type VALUE must have the 'value' field set"
        )

    def test_valid_secret(self) -> None:
        """A valid VALUE secret is accepted."""
        env = Environment.from_json({"variables": [self.var(type="SECRET", secret=VAL)]})
        assert env.secrets()[0].secret == Secret.for_value(b"password")

    def test_default_type_without_value(self) -> None:
        """The default type is VALUE, which needs a value."""
        assert self.error(self.var()) == (
            "Environment variable 'ENV_VAR_KEY' of type 'VALUE' must have a value set"
        )

    def test_value_with_secret(self) -> None:
        """A VALUE variable may not carry a secret."""
        assert self.error(self.var(type="VALUE", value="v", secret=VAL)) == (
            "Environment variable 'ENV_VAR_KEY' of type 'VALUE' must not have a secret set"
        )

    def test_value_ok(self) -> None:
        """A VALUE variable with a value is fine, and VALUE is the default type."""
        env = Environment.from_json({"variables": [self.var(value="v")]})
        assert env.variables[0].type is VariableType.VALUE

    def test_unknown_type(self) -> None:
        """UNKNOWN is refused, with Mesos' message (which has no name in it)."""
        assert self.error(self.var(type="UNKNOWN", value="v")) == (
            "Environment variable of type 'UNKNOWN' is not allowed"
        )

    def test_error_path_names_the_variable(self) -> None:
        """The error locates the bad variable by index."""
        error = error_of(Environment, {"variables": [self.var(value="ok"), {"name": "B"}]})
        assert error.path == "/variables/1"

    def test_secret_and_value_with_one_name(self) -> None:
        """Stricter than Mesos: a SECRET and a VALUE of one name is an error."""
        with pytest.raises(SecretValidationError, match="'DB' is defined more than once"):
            Environment(
                variables=(
                    Variable.for_secret("DB", Secret.for_reference("/db")),
                    Variable.for_value("DB", "plain"),
                )
            )

    def test_two_values_with_one_name(self) -> None:
        """Two VALUE definitions keep Mesos' behaviour (the later one wins at launch)."""
        env = Environment(variables=(Variable.for_value("A", "1"), Variable.for_value("A", "2")))
        assert len(env.variables) == 2

    @pytest.mark.parametrize("name", ["", "A=B", "A\0"])
    def test_bad_names(self, name: str) -> None:
        """Names that cannot exist in an environment are refused."""
        with pytest.raises(SecretValidationError, match="Environment variable name"):
            Variable.for_value(name, "v")

    @given(strategies.environments)
    def test_round_trip(self, env: Environment) -> None:
        """Any valid environment survives a JSON round trip."""
        assert Environment.from_json(json.dumps(env.to_json())) == env


def secret_volume(**fields: Any) -> dict[str, Any]:
    return {
        "container_path": "my_secret",
        "mode": "RO",
        "source": {"type": "SECRET", "secret": REF},
        **fields,
    }


class TestVolumeValidation:
    """Mesos' CommonValidationTest.Volume, plus container_path rules of ours."""

    def error(self, volume: dict[str, Any]) -> SecretValidationError:
        return error_of(ContainerInfo, {"type": "MESOS", "volumes": [volume]})

    @pytest.mark.parametrize(
        "volume",
        [
            {"container_path": "x", "mode": "RW"},
            {"container_path": "x", "mode": "RW", "host_path": "/h", "image": {"type": "APPC"}},
            secret_volume(host_path="/h"),
        ],
    )
    def test_exactly_one_source(self, volume: dict[str, Any]) -> None:
        """None or several of host_path/image/source is Mesos' error, wrapped as Mesos does."""
        assert self.error(volume).message == (
            "Invalid volume: Only one of them should be set: 'host_path', 'image' and 'source'"
        )

    def test_secret_source_without_secret(self) -> None:
        """A SECRET source needs its secret."""
        volume = {"container_path": "x", "mode": "RO", "source": {"type": "SECRET"}}
        assert self.error(volume).message == (
            "Invalid volume: 'source.secret' is not set for SECRET volume"
        )

    def test_unknown_source_type(self) -> None:
        """A source without a type is refused."""
        volume = {"container_path": "x", "mode": "RO", "source": {}}
        assert self.error(volume).message == "Invalid volume: 'source.type' is unknown"

    def test_invalid_volume_secret(self) -> None:
        """An invalid secret in a volume is reported like the volume isolator does."""
        volume = secret_volume(source={"type": "SECRET", "secret": {"type": "REFERENCE"}})
        assert self.error(volume).message == (
            "Invalid volume: Invalid secret specified in volume: "
            "Secret of type REFERENCE must have the 'reference' field set"
        )

    @pytest.mark.parametrize(
        ("path", "reason"),
        [
            ("../escape", "'..'"),
            ("a/../../b", "'..'"),
            ("/etc/../../x", "'..'"),
            ("a//b", "empty components"),
            ("dir/", "empty components"),
            ("", "non-empty"),
            ("a\0b", "NUL"),
        ],
    )
    def test_container_path_escapes(self, path: str, reason: str) -> None:
        """Stricter than Mesos: a secret's container_path cannot escape or be ambiguous."""
        error = self.error(secret_volume(container_path=path))
        assert reason in error.message
        assert error.path == "/volumes/0"

    @pytest.mark.parametrize("path", ["my_secret", "some/my_secret", "/etc/my_secret", "a/.b"])
    def test_container_path_ok(self, path: str) -> None:
        """Mesos' own test paths are accepted, relative and absolute."""
        info = ContainerInfo.from_json(
            {"type": "MESOS", "volumes": [secret_volume(container_path=path)]}
        )
        assert info.secret_volumes()[0].container_path == path

    def test_mode_is_required_in_json(self) -> None:
        """`mode` is a required proto field."""
        volume = {"container_path": "x", "source": {"type": "SECRET", "secret": REF}}
        assert "missing required field 'mode'" in self.error(volume).message

    def test_other_sources_are_kept(self) -> None:
        """Volumes of other kinds pass through untouched."""
        volume = {
            "container_path": "data",
            "mode": "RW",
            "source": {"type": "SANDBOX_PATH", "sandbox_path": {"type": "PARENT", "path": "p"}},
        }
        info = ContainerInfo.from_json({"type": "MESOS", "volumes": [volume]})
        assert info.volumes[0].source == VolumeSource(
            type=SourceType.SANDBOX_PATH, extra={"sandbox_path": {"type": "PARENT", "path": "p"}}
        )
        assert info.to_json()["volumes"][0] == volume

    @given(strategies.secret_volumes)
    def test_round_trip(self, volume: Volume) -> None:
        """Any valid secret volume survives a JSON round trip."""
        assert Volume.from_json(json.dumps(volume.to_json())) == volume


class TestTaskInfo:
    """TaskInfo and friends: Mesos' master-side wrapping, unknown fields kept."""

    TASK: ClassVar[dict[str, Any]] = {
        "name": "web",
        "task_id": {"value": "web.1"},
        "agent_id": {"value": "agent-1"},
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}],
        "command": {
            "value": "./run",
            "environment": {
                "variables": [
                    {"name": "DB_PASSWORD", "type": "SECRET", "secret": REF},
                    {"name": "MODE", "type": "VALUE", "value": "prod"},
                ]
            },
            "uris": [{"value": "http://example/x.tgz"}],
        },
        "container": {
            "type": "MESOS",
            "volumes": [secret_volume()],
            "mesos": {
                "image": {
                    "type": "DOCKER",
                    "docker": {
                        "name": "registry.example/app:1",
                        "config": {"type": "REFERENCE", "reference": {"name": "/app/pull"}},
                    },
                }
            },
        },
    }

    def test_round_trip_keeps_everything(self) -> None:
        """A full TaskInfo comes back out byte for byte, resources and uris included."""
        assert TaskInfo.from_json(self.TASK).to_json() == self.TASK

    def test_secrets_in_launch_order(self) -> None:
        """The pull secret comes first, then the environment's, then the volumes'."""
        task = TaskInfo.from_json(self.TASK)
        assert task.references() == ("/app/pull", "/app/db", "/app/db")

    def test_command_errors_are_wrapped(self) -> None:
        """Errors under `command` read as the master reports them."""
        bad = {**self.TASK, "command": {"environment": {"variables": [{"name": "X"}]}}}
        error = error_of(TaskInfo, bad)
        assert error.message == (
            "Task's `CommandInfo` is invalid: "
            "Environment variable 'X' of type 'VALUE' must have a value set"
        )
        assert error.path == "/command/environment/variables/0"

    def test_container_errors_are_wrapped(self) -> None:
        """Errors under `container` read as the master reports them."""
        bad = {
            **self.TASK,
            "container": {"type": "MESOS", "volumes": [{"container_path": "x", "mode": "RO"}]},
        }
        assert error_of(TaskInfo, bad).message.startswith(
            "Task's `ContainerInfo` is invalid: Invalid volume: Only one of them"
        )

    def test_executor_errors_are_wrapped(self) -> None:
        """An ExecutorInfo's command errors are the executor's."""
        bad = {
            "executor_id": {"value": "e"},
            "command": {"environment": {"variables": [{"name": "X", "type": "SECRET"}]}},
        }
        assert error_of(ExecutorInfo, bad).message.startswith(
            "Executor's `CommandInfo` is invalid:"
        )

    def test_missing_task_id(self) -> None:
        """Required fields are reported as missing."""
        assert error_of(TaskInfo, {"name": "x"}).message == "missing required field 'task_id'"

    def test_task_group(self) -> None:
        """A TaskGroupInfo holds tasks and round-trips."""
        group = TaskGroupInfo.from_json({"tasks": [self.TASK, {**self.TASK, "name": "b"}]})
        assert [t.name for t in group.tasks] == ["web", "b"]
        assert group.to_json() == {"tasks": [self.TASK, {**self.TASK, "name": "b"}]}

    def test_models_are_frozen(self) -> None:
        """Models cannot be changed after validation."""
        task = TaskInfo.from_json(self.TASK)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            task.name = "other"  # type: ignore[misc]

    def test_extra_is_a_copy(self) -> None:
        """Changing the input afterwards does not change the model."""
        raw = json.loads(json.dumps(self.TASK))
        task = TaskInfo.from_json(raw)
        raw["resources"][0]["scalar"]["value"] = 99
        assert task.to_json()["resources"][0]["scalar"]["value"] == 0.1

    def test_build_in_python(self) -> None:
        """Framework authors build tasks with the helpers, and get Mesos JSON."""
        task = TaskInfo(
            name="t",
            task_id="t1",
            command=CommandInfo(
                value="env",
                environment=Environment(
                    variables=(Variable.for_secret("PW", Secret.for_reference("/db", "pw")),)
                ),
            ),
            container=ContainerInfo(
                type=ContainerInfo.Type.MESOS,
                volumes=(Volume.for_secret("secrets/pw", Secret.for_reference("/db", "pw")),),
            ),
        )
        out = task.to_json()
        assert out["command"]["environment"]["variables"][0]["secret"]["reference"] == {
            "name": "/db",
            "key": "pw",
        }
        assert out["container"]["volumes"][0]["mode"] == "RO"
        assert TaskInfo.from_json(out) == task

    def test_wrong_item_types(self) -> None:
        """Python callers passing the wrong kind of item get a clear error."""
        with pytest.raises(SecretValidationError, match="expected Variable items"):
            Environment(variables=("A=1",))  # type: ignore[arg-type]
        with pytest.raises(SecretValidationError, match="must be a Reference"):
            Secret(type=SecretType.REFERENCE, reference="/x")  # type: ignore[arg-type]

    @given(strategies.tasks)
    def test_round_trip(self, task: TaskInfo) -> None:
        """Any valid TaskInfo survives a JSON round trip."""
        assert TaskInfo.from_json(json.dumps(task.to_json())) == task


def test_volume_default_mode_is_read_only() -> None:
    """A secret volume built in Python is read-only unless asked otherwise."""
    assert Volume.for_secret("x", Secret.for_reference("/x")).mode is VolumeMode.RO


def test_secret_bytes_in_value() -> None:
    """Value.data is always SecretBytes, whatever was passed."""
    assert isinstance(Value("text").data, SecretBytes)
    assert Value("text").data == SecretBytes(b"text")
