"""An image's own runtime configuration: read defensively, merged as Mesos merges it.

The command follows the table of Mesos' docker/runtime isolator (``getLaunchCommand``),
row by row; the config blob, which a registry serves, is read like a manifest: a bad
field is one line naming the image and the field, never what it holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesos_secrets import MesosSecretsError, ProvisionerError
from mesos_secrets.containerizer.launcher import command_argv, task_environment
from mesos_secrets.errors import LaunchError
from mesos_secrets.image_config import (
    MAX_CONFIG_BYTES,
    ImageConfig,
    launch_command,
    parse_image_config,
)
from mesos_secrets.isolator import ContainerConfig, LaunchInfo, TaskUser
from mesos_secrets.mesos import CommandInfo, Environment, Variable
from mesos_secrets.secretbytes import SecretBytes

from .strategies import deeply_nested, hostile_json

IMAGE = "reg.example/x:1"
C = f"image '{IMAGE}': config"


def blob(**config: Any) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux", "config": config}).encode()


class TestParse:
    def test_fields(self) -> None:
        parsed = parse_image_config(
            blob(
                Entrypoint=["/bin/app", "--serve"],
                Cmd=["--port", "80"],
                Env=["A=1", "B=x=y", "A=2", "EMPTY=", "NO_EQUALS", "=nameless"],
                WorkingDir="/srv",
                User="app",
            ),
            IMAGE,
        )
        assert parsed == ImageConfig(
            IMAGE,
            entrypoint=("/bin/app", "--serve"),
            cmd=("--port", "80"),
            env=(("A", "1"), ("B", "x=y"), ("A", "2"), ("EMPTY", "")),
            working_dir="/srv",
            user="app",
        )

    @pytest.mark.parametrize(
        "document",
        [
            {},
            {"config": None},
            {"config": {}},
            {
                "config": {
                    "Entrypoint": None,
                    "Cmd": None,
                    "Env": None,
                    "WorkingDir": "",
                    "User": "",
                }
            },
        ],
    )
    def test_absent_null_and_empty_mean_none(self, document: dict[str, Any]) -> None:
        """As Docker writes them (``"Entrypoint": null``, ``"WorkingDir": ""``)."""
        assert parse_image_config(json.dumps(document).encode(), IMAGE) == ImageConfig(IMAGE)

    def test_env_values_are_not_in_repr(self) -> None:
        parsed = parse_image_config(blob(Env=["TOKEN=s3cr3t-baked-in"]), IMAGE)
        assert "s3cr3t" not in repr(parsed)

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            (b"[]", f"{C}: not a JSON object"),
            (b"{", f"{C}: Invalid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
            (b'{"config": {}, "config": {}}', f"{C} /config: Invalid JSON: a key appears more than once in this object"),
            (json.dumps({"config": []}).encode(), f"{C} /config: must be an object"),
            (blob(Entrypoint="/bin/app"), f"{C} /config/Entrypoint: must be an array of strings"),
            (blob(Cmd=["echo", 1]), f"{C} /config/Cmd/1: must be a string"),
            (blob(Cmd=["echo", "a\0b"]), f"{C} /config/Cmd/1: holds a NUL character, which no program can be given"),
            (blob(Env={"A": "1"}), f"{C} /config/Env: must be an array of strings"),
            (blob(Env=[None]), f"{C} /config/Env/0: must be a string"),
            (blob(Env=["A=\0"]), f"{C} /config/Env/0: holds a NUL character, which no program can be given"),
            (blob(WorkingDir=["/srv"]), f"{C} /config/WorkingDir: must be a string"),
            (blob(WorkingDir="srv"), f"{C} /config/WorkingDir: must be an absolute path"),
            (blob(User=0), f"{C} /config/User: must be a string"),
            (b" " * (MAX_CONFIG_BYTES + 1), f"{C}: larger than 16 MiB: refused"),
            (b"[" * 100_000 + b"]" * 100_000, f"{C}: Invalid JSON: nested deeper than 100 levels"),
        ],
    )  # fmt: skip
    def test_bad_fields(self, content: bytes, message: str) -> None:
        with pytest.raises(ProvisionerError) as caught:
            parse_image_config(content, IMAGE)
        assert str(caught.value) == message

    @given(
        st.fixed_dictionaries(
            {},
            optional={
                key: hostile_json | st.lists(hostile_json | st.text(), max_size=3)
                for key in ("Entrypoint", "Cmd", "Env", "WorkingDir", "User")
            },
        ).map(lambda c: json.dumps({"config": c}).encode())
        | hostile_json.map(lambda v: json.dumps(v).encode())
        | st.binary(max_size=64)
        | deeply_nested
    )
    def test_any_blob_parses_or_is_a_typed_error(self, content: bytes) -> None:
        try:
            parse_image_config(content, IMAGE)
        except MesosSecretsError as error:
            caught: MesosSecretsError = error
        else:
            return
        assert isinstance(caught, ProvisionerError)
        assert str(caught).startswith(C)
        assert str(caught).isprintable()  # one line, nothing that moves a terminal's cursor


def shell(value: str | None, *arguments: str) -> CommandInfo:
    return CommandInfo(value=value, shell=True, arguments=arguments)


def exec_(value: str | None, *arguments: str) -> CommandInfo:
    return CommandInfo(value=value, shell=False, arguments=arguments)


def image(entrypoint: tuple[str, ...] = (), cmd: tuple[str, ...] = ()) -> ImageConfig:
    return ImageConfig(IMAGE, entrypoint=entrypoint, cmd=cmd)


E, D = ("/ep", "e1"), ("/cmd", "c1")

#: Mesos' table (runtime.cpp), as (command, Entrypoint, Cmd, argv that runs, program).
TABLE = [
    # sh=0 value=0 argv=0
    (exec_(None), (), D, ["/cmd", "c1"], "/cmd"),
    (exec_(None), E, (), ["/ep", "e1"], "/ep"),
    (exec_(None), E, D, ["/ep", "e1", "/cmd", "c1"], "/ep"),
    # sh=0 value=0 argv=1
    (exec_(None, "a1", "a2"), (), D, ["/cmd", "a1", "a2"], "/cmd"),
    (exec_(None, "a1"), E, (), ["/ep", "e1", "a1"], "/ep"),
    (exec_(None, "a1"), E, D, ["/ep", "e1", "a1"], "/ep"),
    # sh=0 value=1: the value runs, the image's command does not
    (exec_("/v"), E, D, ["/v"], "/v"),
    (exec_("/v", "v0", "a1"), E, D, ["v0", "a1"], "/v"),
    (exec_("/v"), (), (), ["/v"], "/v"),
    # sh=1 value=1: a shell runs the value
    (shell("echo hi"), E, D, ["/bin/sh", "-c", "echo hi"], "/bin/sh"),
    (shell("echo hi", "ignored"), (), (), ["/bin/sh", "-c", "echo hi"], "/bin/sh"),
]  # fmt: skip


def config(command: CommandInfo | None, runtime: ImageConfig | None) -> ContainerConfig:
    return ContainerConfig(
        container_id="c",
        sandbox=Path("/sandbox"),
        user=TaskUser(name="root", uid=0, gid=0),
        command=command,
        image=runtime,
        rootfs=Path("/rootfs") if runtime else None,
    )


class TestCommand:
    @pytest.mark.parametrize(("command", "entrypoint", "cmd", "argv", "program"), TABLE)
    def test_mesos_table(
        self,
        command: CommandInfo,
        entrypoint: tuple[str, ...],
        cmd: tuple[str, ...],
        argv: list[str],
        program: str,
    ) -> None:
        assert command_argv(config(command, image(entrypoint, cmd))) == (argv, program)

    def test_the_commands_other_fields_stay(self) -> None:
        environment = Environment(variables=(Variable(name="A", value="1"),))
        command = CommandInfo(shell=False, environment=environment, user="nobody")
        merged = launch_command(command, image(E, D))
        assert merged is not None
        assert (merged.environment, merged.user) == (environment, "nobody")
        assert (merged.value, merged.arguments) == ("/ep", ("/ep", "e1", "/cmd", "c1"))

    @pytest.mark.parametrize(
        ("command", "runtime", "message"),
        [
            (exec_(None), image(), f"the task has no command to run: image '{IMAGE}' has neither Entrypoint nor Cmd, and CommandInfo has no value"),
            (exec_(None, "a1"), image(), f"the task has no command to run: image '{IMAGE}' has neither Entrypoint nor Cmd, and CommandInfo has no value"),
            (shell(None), image(E, D), f"the task has no command to run: CommandInfo.shell is true and its value is empty (with shell false, the Entrypoint and Cmd of image '{IMAGE}' would run)"),
            (None, image(E, D), f"the task has no command to run: CommandInfo.shell is true and its value is empty (with shell false, the Entrypoint and Cmd of image '{IMAGE}' would run)"),
            (exec_(None), None, "the task has no command to run: CommandInfo has no value (nor, without a shell, arguments), and the task has no image whose own Entrypoint or Cmd could run"),
            (shell(None, "a1"), None, "the task has no command to run: CommandInfo has no value (nor, without a shell, arguments), and the task has no image whose own Entrypoint or Cmd could run"),
        ],
    )  # fmt: skip
    def test_nothing_to_run(
        self, command: CommandInfo | None, runtime: ImageConfig | None, message: str
    ) -> None:
        with pytest.raises(LaunchError) as caught:
            command_argv(config(command, runtime))
        assert str(caught.value) == message

    def test_without_an_image_the_first_argument_is_the_program(self) -> None:
        assert command_argv(config(exec_(None, "/bin/echo", "x"), None)) == (
            ["/bin/echo", "x"],
            "/bin/echo",
        )


def test_environment_order() -> None:
    """Base < the image's Env (the last of a name wins) < secrets < the task's variables."""
    runtime = ImageConfig(
        IMAGE,
        env=(("PATH", "/image/bin"), ("IMG", "1"), ("IMG", "2"), ("SECRET", "i"), ("VAR", "i")),
    )
    environment = Environment(variables=(Variable(name="VAR", value="task"),))
    env = task_environment(
        config(CommandInfo(value="x", environment=environment), runtime),
        LaunchInfo(environment={"SECRET": SecretBytes(b"from-the-store")}),
    )
    assert env[b"PATH"] == b"/image/bin"
    assert env[b"IMG"] == b"2"
    assert env[b"SECRET"] == b"from-the-store"
    assert env[b"VAR"] == b"task"
    assert env[b"MESOS_SANDBOX"] == b"/sandbox"
