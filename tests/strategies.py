"""Hypothesis strategies for the Mesos models: any *valid* message."""

from __future__ import annotations

from hypothesis import strategies as st

from mesos_secrets import Secret
from mesos_secrets.mesos import (
    CommandInfo,
    ContainerInfo,
    ContainerType,
    Environment,
    Image,
    MesosInfo,
    TaskInfo,
    Variable,
    Volume,
    VolumeMode,
)

_PATH_CHARS = st.characters(codec="utf-8", exclude_characters="/\0", exclude_categories=("Cs",))

texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1)
names = st.lists(
    st.text(_PATH_CHARS, min_size=1).filter(lambda s: s not in (".", "..")), min_size=1, max_size=4
).map(lambda parts: "/" + "/".join(parts))
keys = st.none() | st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=1)

references = st.builds(Secret.for_reference, names, keys)
values = st.builds(Secret.for_value, st.binary())
secrets = references | values
# The environment refuses NUL in inline values (Mesos' rule).
env_secrets = references | st.builds(Secret.for_value, st.binary().filter(lambda b: b"\0" not in b))

# A command, its arguments, its user and environment values become C strings: no NUL.
c_strings = st.text(st.characters(exclude_characters="\0", exclude_categories=("Cs",)))
env_names = st.text(
    st.characters(codec="utf-8", exclude_characters="=\0", exclude_categories=("Cs",)), min_size=1
)
variables = st.one_of(
    st.builds(Variable.for_value, env_names, c_strings),
    st.builds(Variable.for_secret, env_names, env_secrets),
)
environments = st.lists(variables, max_size=6, unique_by=lambda v: v.name).map(
    lambda vs: Environment(variables=tuple(vs))
)
container_paths = st.lists(
    st.text(_PATH_CHARS, min_size=1).filter(lambda s: s != ".."), min_size=1, max_size=4
).flatmap(lambda parts: st.sampled_from(["", "/"]).map(lambda lead: lead + "/".join(parts)))
secret_volumes = st.builds(
    Volume.for_secret, container_paths, secrets, st.sampled_from(list(VolumeMode))
)
images = st.builds(Image.for_docker, c_strings.filter(bool), st.none() | references)
containers = st.builds(
    ContainerInfo,
    type=st.just(ContainerType.MESOS),
    volumes=st.lists(secret_volumes, max_size=3).map(tuple),
    mesos=st.none() | st.builds(MesosInfo, image=images),
)
commands = st.builds(
    CommandInfo,
    value=st.none() | c_strings,
    shell=st.booleans(),
    arguments=st.lists(c_strings, max_size=3).map(tuple),
    environment=st.none() | environments,
    user=st.none() | c_strings.filter(bool),
)
tasks = st.builds(
    TaskInfo,
    name=st.text(),
    task_id=st.text(min_size=1),
    agent_id=st.none() | st.text(min_size=1),
    command=st.none() | commands,
    container=st.none() | containers,
)


# --- hostile JSON: for the readers of specs, manifests and pull secrets ------------------

# Any text, lone surrogates and control characters included, and a few that matter.
any_text = st.text(st.characters(exclude_categories=()), max_size=8) | st.sampled_from(
    [":", "a:b", "\ud800", "\n", "\x1b[2J", "sha256:" + "0" * 64]
)
deeply_nested = st.integers(1_000, 60_000).map(lambda n: b"[" * n + b"]" * n)


def json_trees(
    scalars: st.SearchStrategy[object], keys: st.SearchStrategy[str] = any_text
) -> st.SearchStrategy[object]:
    """JSON-shaped values: ``scalars`` in lists and objects, a few levels deep."""
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=12,
    )


#: NaN and infinities included: ``json.dumps`` writes them, strict readers refuse them.
hostile_json = json_trees(st.none() | st.booleans() | st.integers() | st.floats() | any_text)
