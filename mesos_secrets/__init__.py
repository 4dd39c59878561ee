"""mesos-secrets: deliver secrets to Mesos tasks the way Mesos does natively, and further.

The model speaks Mesos v1 JSON::

    >>> from mesos_secrets import Secret
    >>> Secret.for_reference("/myapp/db", key="password").to_json()
    {'type': 'REFERENCE', 'reference': {'name': '/myapp/db', 'key': 'password'}}

and resolvers turn secrets into values, held as :class:`SecretBytes`::

    resolver = get_resolver()          # local, unless configured otherwise
    password = resolver.resolve(Secret.for_reference("/myapp/db", key="password"))
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (3 ms)
if TYPE_CHECKING:  # what type checkers see; at run time each name loads on first use
    from typing import Any

    from .errors import ConfigError as ConfigError
    from .errors import IsolatorError as IsolatorError
    from .errors import LaunchError as LaunchError
    from .errors import MesosSecretsError as MesosSecretsError
    from .errors import PluginError as PluginError
    from .errors import ProvisionerError as ProvisionerError
    from .errors import ResolverError as ResolverError
    from .errors import ResolverUnavailableError as ResolverUnavailableError
    from .errors import SecretAccessDeniedError as SecretAccessDeniedError
    from .errors import SecretNotFoundError as SecretNotFoundError
    from .errors import SecretValidationError as SecretValidationError
    from .errors import StoreError as StoreError
    from .mesos import CommandInfo as CommandInfo
    from .mesos import ContainerInfo as ContainerInfo
    from .mesos import Environment as Environment
    from .mesos import ExecutorInfo as ExecutorInfo
    from .mesos import Image as Image
    from .mesos import TaskGroupInfo as TaskGroupInfo
    from .mesos import TaskInfo as TaskInfo
    from .mesos import Variable as Variable
    from .mesos import Volume as Volume
    from .registry import get_resolver as get_resolver
    from .registry import register as register_resolver
    from .resolver import ResolveContext as ResolveContext
    from .resolver import SecretResolver as SecretResolver
    from .secret import Reference as Reference
    from .secret import Secret as Secret
    from .secret import Value as Value
    from .secretbytes import SecretBytes as SecretBytes

__version__ = "0.1.0"

#: Each public name: the module that defines it, and its name there. Importing the
#: package loads none of them (``mesos-secrets --version`` and a plain ``run`` pay only
#: for what they use); ``from mesos_secrets import Secret`` loads ``.secret`` then.
_LAZY: dict[str, tuple[str, str]] = {
    "CommandInfo": ("mesos", "CommandInfo"),
    "ConfigError": ("errors", "ConfigError"),
    "ContainerInfo": ("mesos", "ContainerInfo"),
    "Environment": ("mesos", "Environment"),
    "ExecutorInfo": ("mesos", "ExecutorInfo"),
    "Image": ("mesos", "Image"),
    "IsolatorError": ("errors", "IsolatorError"),
    "LaunchError": ("errors", "LaunchError"),
    "MesosSecretsError": ("errors", "MesosSecretsError"),
    "PluginError": ("errors", "PluginError"),
    "ProvisionerError": ("errors", "ProvisionerError"),
    "Reference": ("secret", "Reference"),
    "ResolveContext": ("resolver", "ResolveContext"),
    "ResolverError": ("errors", "ResolverError"),
    "ResolverUnavailableError": ("errors", "ResolverUnavailableError"),
    "Secret": ("secret", "Secret"),
    "SecretAccessDeniedError": ("errors", "SecretAccessDeniedError"),
    "SecretBytes": ("secretbytes", "SecretBytes"),
    "SecretNotFoundError": ("errors", "SecretNotFoundError"),
    "SecretResolver": ("resolver", "SecretResolver"),
    "SecretValidationError": ("errors", "SecretValidationError"),
    "StoreError": ("errors", "StoreError"),
    "TaskGroupInfo": ("mesos", "TaskGroupInfo"),
    "TaskInfo": ("mesos", "TaskInfo"),
    "Value": ("secret", "Value"),
    "Variable": ("mesos", "Variable"),
    "Volume": ("mesos", "Volume"),
    "get_resolver": ("registry", "get_resolver"),
    "register_resolver": ("registry", "register"),
}

__all__ = [
    "CommandInfo",
    "ConfigError",
    "ContainerInfo",
    "Environment",
    "ExecutorInfo",
    "Image",
    "IsolatorError",
    "LaunchError",
    "MesosSecretsError",
    "PluginError",
    "ProvisionerError",
    "Reference",
    "ResolveContext",
    "ResolverError",
    "ResolverUnavailableError",
    "Secret",
    "SecretAccessDeniedError",
    "SecretBytes",
    "SecretNotFoundError",
    "SecretResolver",
    "SecretValidationError",
    "StoreError",
    "TaskGroupInfo",
    "TaskInfo",
    "Value",
    "Variable",
    "Volume",
    "get_resolver",
    "register_resolver",
]


if not TYPE_CHECKING:  # hidden from type checkers, for which a module __getattr__ makes
    # every name, misspelt or not, exist (as Any)

    def __getattr__(name: str) -> Any:
        try:
            module, attribute = _LAZY[name]
        except KeyError:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(f".{module}", __name__), attribute)
        globals()[name] = value  # once: later lookups do not come here
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
