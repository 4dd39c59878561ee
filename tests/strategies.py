"""Hypothesis strategies for the Mesos models: any *valid* message."""

from __future__ import annotations

import json

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


# --- hostile specs: for the readers of Marathon and Mesos JSON ------------------------------

_env = st.dictionaries(
    st.text(), hostile_json | st.fixed_dictionaries({"secret": hostile_json}), max_size=3
)
app_like = st.fixed_dictionaries(
    {"id": st.sampled_from(["/a", "a/b", "/", ""]) | hostile_json},
    optional={
        "cmd": st.text() | hostile_json,
        "args": st.lists(st.text(), max_size=3) | hostile_json,
        "user": st.text() | hostile_json,
        "env": _env | hostile_json,
        "secrets": st.dictionaries(
            st.text(), st.fixed_dictionaries({"source": st.text() | hostile_json}), max_size=3
        )
        | hostile_json,
        "container": st.fixed_dictionaries(
            {},
            optional={
                "type": st.sampled_from(["MESOS", "DOCKER"]) | hostile_json,
                "volumes": st.lists(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "containerPath": st.text() | hostile_json,
                            "secret": st.text() | hostile_json,
                            "hostPath": st.text() | hostile_json,
                            "mode": st.sampled_from(["RO", "RW"]) | hostile_json,
                        },
                    ),
                    max_size=2,
                )
                | hostile_json,
                "docker": hostile_json,
            },
        )
        | hostile_json,
        "cpus": hostile_json,
        "mem": hostile_json,
    },
)
pod_like = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["/p"]) | hostile_json,
        "containers": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["c", "d"]) | hostile_json},
                optional={
                    "exec": st.fixed_dictionaries(
                        {
                            "command": st.fixed_dictionaries({"shell": st.text()})
                            | st.fixed_dictionaries({"argv": st.lists(st.text(), max_size=3)})
                            | hostile_json
                        }
                    )
                    | hostile_json,
                    "resources": hostile_json,
                    "environment": _env,
                    "user": st.text() | hostile_json,
                    "volumeMounts": hostile_json,
                },
            ),
            max_size=2,
        )
        | hostile_json,
    },
    optional={"environment": _env | hostile_json, "volumes": hostile_json, "user": hostile_json},
)
#: JSON's edge cases, put where a spec has a number, a string, an object.
_edges = st.sampled_from(
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e999",
        "-1e999",
        "9" * 5000,
        "1" * 400,
        "0.1",
        "null",
        '"\\u0000"',
        '"\\ud800"',
        '"a\\n"',
        "[" * 2000 + "]" * 2000,
        '{"a": 1, "a": 2}',
    ]
)
edge_specs = st.builds(
    '{{"id": "/a", "cmd": {}, "cpus": {}, "env": {{"A": {}, "B": {{"secret": {}}}}}, '
    '"user": {}, "labels": {}}}'.format,
    _edges | st.just('"true"'),
    _edges | st.just("1"),
    _edges | st.just('"x"'),
    _edges | st.just('"s"'),
    _edges | st.just("null"),
    _edges | st.just("{}"),
).map(str.encode)
#: Bytes a spec reader may be handed: edge cases, garbage, JSON, app- and pod-like JSON.
spec_documents = (
    edge_specs
    | st.binary()
    | hostile_json.map(lambda v: json.dumps(v).encode())
    | st.one_of(app_like, pod_like).map(lambda v: json.dumps(v).encode())
    # Raw text around JSON's edge cases: NaN, huge numbers, escapes, duplicates.
    | st.lists(
        st.sampled_from(
            [
                '{"id":"/a","cmd":"x"',
                ",",
                '"cpus":',
                "NaN",
                "1e999",
                "9" * 50,
                '"\\u0000"',
                '"\\ud800"',
                '"env":{"A":"1","A":{"secret":"s"}}',
                "}",
                "[",
                "]",
                "-",
                "0",
            ]
        ),
        max_size=12,
    ).map(lambda parts: "".join(parts).encode())
)
