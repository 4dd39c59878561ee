"""An image's own runtime configuration, and how it shapes the task's launch.

An image's config blob (Docker's image JSON, OCI's image config) names what the image
runs (``config.Entrypoint``, ``config.Cmd``), with what environment (``config.Env``),
where (``config.WorkingDir``) and as whom (``config.User``). Mesos' containerizer
applies it through its ``docker/runtime`` isolator, and so do we:

- the command: a CommandInfo with ``shell`` true, or with a ``value``, runs as it is,
  the image's Entrypoint and Cmd ignored; with ``shell`` false and no value, the image's
  Entrypoint is the program, followed by the command's arguments if it has any, else by
  the image's Cmd; without an Entrypoint, ``Cmd[0]`` is the program, followed by the
  command's arguments if it has any, else by the rest of Cmd; with neither, there is
  nothing to run (:func:`launch_command`);
- the environment: the image's Env comes under the task's (its secrets and its own
  variables win), over the few variables every task gets;
- the working directory: the image's WorkingDir, when it names one, instead of the
  sandbox;
- the user: not taken from the image (Mesos only warns about it), the task runs as its
  CommandInfo's user, or as the front end's.

The blob comes from a registry: it is read as strictly as a manifest (``images``), every
field used is checked for its type, and an error names the image and where in the blob,
as a JSON pointer, never what is there.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._codec import loads
from .errors import LaunchError, ProvisionerError, SecretValidationError, printable
from .mesos import CommandInfo

__all__ = ["MAX_CONFIG_BYTES", "ImageConfig", "launch_command", "parse_image_config"]

#: The largest image config read (Docker's own image configs are a few KiB).
MAX_CONFIG_BYTES = 16 << 20


@attrs.frozen
class ImageConfig:
    """What an image says about running it. ``image`` names it, for messages; ``env``
    holds its Env entries in order, as (name, value) pairs (the last of a name wins)."""

    image: str
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = attrs.field(default=(), repr=False)
    working_dir: str | None = None
    user: str | None = None


def parse_image_config(content: bytes, image: str) -> ImageConfig:
    """Read the config blob of ``image``; a :class:`ProvisionerError` says what is wrong,
    and where: ``image 'reg/x:1': config /config/Cmd/0: must be a string``.

    As Docker writes them, absent, ``null`` and empty fields mean none. An Env entry
    without ``=`` is skipped, as Mesos skips it; so is one with nothing before its
    ``=``, which Mesos would pass on as a variable without a name.
    """

    def fail(where: str, reason: str) -> ProvisionerError:
        return ProvisionerError(f"image '{image}': config{' ' + where if where else ''}: {reason}")

    if len(content) > MAX_CONFIG_BYTES:
        raise fail("", f"larger than {MAX_CONFIG_BYTES >> 20} MiB: refused")
    try:
        document = loads(content)
    except SecretValidationError as error:  # where, never what (a key is the blob's)
        raise fail(printable(error.path, 80), error.message) from None
    if not isinstance(document, dict):
        raise fail("", "not a JSON object")
    config = document.get("config")
    if config is None:
        return ImageConfig(image)
    if not isinstance(config, dict):
        raise fail("/config", "must be an object")
    env = []
    for entry in _strings(config, "Env", fail):
        name, equals, value = entry.partition("=")
        if equals and name:
            env.append((name, value))
    return ImageConfig(
        image,
        entrypoint=_strings(config, "Entrypoint", fail),
        cmd=_strings(config, "Cmd", fail),
        env=tuple(env),
        working_dir=_working_dir(config, fail),
        user=_string(config, "User", fail) or None,
    )


_Fail = Callable[[str, str], ProvisionerError]


def _string(config: Mapping[str, Any], key: str, fail: _Fail) -> str:
    value = config.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise fail(f"/config/{key}", "must be a string")
    if "\0" in value:
        raise fail(f"/config/{key}", "holds a NUL character, which no program can be given")
    return value


def _strings(config: Mapping[str, Any], key: str, fail: _Fail) -> tuple[str, ...]:
    value = config.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise fail(f"/config/{key}", "must be an array of strings")
    for number, item in enumerate(value):
        if not isinstance(item, str):
            raise fail(f"/config/{key}/{number}", "must be a string")
        if "\0" in item:
            raise fail(
                f"/config/{key}/{number}", "holds a NUL character, which no program can be given"
            )
    return tuple(value)


def _working_dir(config: Mapping[str, Any], fail: _Fail) -> str | None:
    directory = _string(config, "WorkingDir", fail)
    if not directory:
        return None
    if not posixpath.isabs(directory):
        # Docker refuses it too: a container's working directory is an absolute path.
        raise fail("/config/WorkingDir", "must be an absolute path")
    return directory


def launch_command(command: CommandInfo | None, image: ImageConfig | None) -> CommandInfo | None:
    """The command a task in ``image`` runs, as Mesos' docker/runtime isolator merges it
    (``getLaunchCommand``): ``command`` itself when it runs with a shell or has a value
    (or when there is no image); else the image's Entrypoint, or ``Cmd[0]``, as the
    program and the first argument, followed by the command's arguments, or by the rest
    of the image's command when the command has none.

    A :class:`LaunchError` when a shell command has no value, or when there is nothing
    to run: no value, and an image with neither Entrypoint nor Cmd.
    """
    if image is None:
        return command
    command = command or CommandInfo()  # Mesos' default: shell true, and no value
    if command.shell:
        if not command.value:
            raise LaunchError(
                "the task has no command to run: CommandInfo.shell is true and its value "
                f"is empty (with shell false, the Entrypoint and Cmd of image '{image.image}' "
                "would run)"
            )
        return command
    if command.value:
        return command
    if image.entrypoint:
        program, defaults = image.entrypoint[0], image.entrypoint + image.cmd
        arguments = image.entrypoint + command.arguments
    elif image.cmd:
        program, defaults = image.cmd[0], image.cmd
        arguments = (image.cmd[0], *command.arguments)
    else:
        raise LaunchError(
            f"the task has no command to run: image '{image.image}' has neither Entrypoint "
            "nor Cmd, and CommandInfo has no value"
        )
    return attrs.evolve(
        command, value=program, arguments=arguments if command.arguments else defaults
    )
