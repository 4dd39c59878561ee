"""The containerizer: how a task becomes a sealed container, and how it is cleaned up.

- :mod:`.pipeline`: authorize → provision → isolators.prepare → launch → isolate → wait →
  cleanup, and recovery after a crash (:class:`Containerizer`, :class:`Container`);
- :mod:`.launcher`: start a prepared container on the host's filesystem, and wait for it;
- :mod:`.runc`: the launcher for tasks with an image.
"""

from .pipeline import (
    Authorizer as Authorizer,
)
from .pipeline import (
    Container as Container,
)
from .pipeline import (
    Containerizer as Containerizer,
)
from .pipeline import (
    Fetching as Fetching,
)
from .pipeline import (
    NoImages as NoImages,
)
from .pipeline import (
    Provisioner as Provisioner,
)
from .pipeline import (
    default_runtime_dir as default_runtime_dir,
)

__all__ = [
    "Authorizer",
    "Container",
    "Containerizer",
    "Fetching",
    "NoImages",
    "Provisioner",
    "default_runtime_dir",
]
