"""mesos-secrets: deliver secrets to Mesos tasks the way Mesos does natively, and further.

The model speaks Mesos v1 JSON::

    >>> from mesos_secrets import Secret
    >>> Secret.for_reference("/myapp/db", key="password").to_json()
    {'type': 'REFERENCE', 'reference': {'name': '/myapp/db', 'key': 'password'}}

and resolvers turn secrets into values, held as :class:`SecretBytes`::

    resolver = get_resolver()          # local, unless configured otherwise
    password = resolver.resolve(Secret.for_reference("/myapp/db", key="password"))
"""

from .errors import (
    ConfigError as ConfigError,
)
from .errors import (
    IsolatorError as IsolatorError,
)
from .errors import (
    LaunchError as LaunchError,
)
from .errors import (
    MesosSecretsError as MesosSecretsError,
)
from .errors import (
    PluginError as PluginError,
)
from .errors import (
    ProvisionerError as ProvisionerError,
)
from .errors import (
    ResolverError as ResolverError,
)
from .errors import (
    ResolverUnavailableError as ResolverUnavailableError,
)
from .errors import (
    SecretAccessDeniedError as SecretAccessDeniedError,
)
from .errors import (
    SecretNotFoundError as SecretNotFoundError,
)
from .errors import (
    SecretValidationError as SecretValidationError,
)
from .errors import (
    StoreError as StoreError,
)
from .mesos import (
    CommandInfo as CommandInfo,
)
from .mesos import (
    ContainerInfo as ContainerInfo,
)
from .mesos import (
    Environment as Environment,
)
from .mesos import (
    ExecutorInfo as ExecutorInfo,
)
from .mesos import (
    Image as Image,
)
from .mesos import (
    TaskGroupInfo as TaskGroupInfo,
)
from .mesos import (
    TaskInfo as TaskInfo,
)
from .mesos import (
    Variable as Variable,
)
from .mesos import (
    Volume as Volume,
)
from .registry import get_resolver as get_resolver
from .registry import register as register_resolver
from .resolver import ResolveContext as ResolveContext
from .resolver import SecretResolver as SecretResolver
from .secret import Reference as Reference
from .secret import Secret as Secret
from .secret import Value as Value
from .secretbytes import SecretBytes as SecretBytes

__version__ = "0.1.0"

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
