"""What a registry returns, read defensively: manifests and indexes (issue 11, item 5).

A hostile or broken registry gets a one-line :class:`ProvisionerError` saying what is
wrong and where (a JSON pointer into the manifest), never a traceback.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesos_secrets import MesosSecretsError, ProvisionerError
from mesos_secrets.errors import printable
from mesos_secrets.images import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    ImageReference,
    Index,
    Manifest,
    _as_oci,
    _choose_platform,
    parse_manifest,
)

from .strategies import deeply_nested, hostile_json

IMAGE = ImageReference.parse("reg.example/x:1")
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_GZ = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def manifest(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": D1, "size": 10},
        "layers": [{"mediaType": GZ, "digest": D2, "size": 20}],
    }
    return {key: value for key, value in (base | changes).items() if value is not None}


def layer(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"mediaType": GZ, "digest": D2, "size": 20}
    return {key: value for key, value in (base | changes).items() if value is not None}


def index(*entries: Any, **changes: Any) -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(entries)} | changes


def entry(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "mediaType": OCI_MANIFEST,
        "digest": D1,
        "size": 100,
        "platform": {"os": "linux", "architecture": "s390x"},
    }
    return {key: value for key, value in (base | changes).items() if value is not None}


M = "image 'reg.example/x:1': manifest"
I = "image 'reg.example/x:1': index"  # noqa: E741

# (what the registry returns, the whole error message)
HOSTILE: list[tuple[str, bytes | dict[str, Any], str]] = [
    ("no config", manifest(config=None), f"{M}: 'config' is missing"),
    ("neither config nor kind", {"layers": []}, f"{M}: no 'mediaType', 'config' or 'manifests': not a manifest"),
    ("config a string", manifest(config="x"), f"{M} /config: must be an object"),
    ("layer without digest", manifest(layers=[layer(digest=None)]), f"{M} /layers/0: 'digest' is missing"),
    ("layer without size", manifest(layers=[layer(size=None)]), f"{M} /layers/0: 'size' is missing"),
    ("layer without kind", manifest(layers=[layer(mediaType=None)]), f"{M} /layers/0: 'mediaType' is missing"),
    ("size huge", manifest(layers=[layer(size="huge")]), f"{M} /layers/0: 'size' must be a non-negative integer"),
    ("size negative", manifest(layers=[layer(), layer(size=-1)]), f"{M} /layers/1: 'size' must be a non-negative integer"),
    ("size a boolean", manifest(layers=[layer(size=True)]), f"{M} /layers/0: 'size' must be a non-negative integer"),
    ("size a float", manifest(layers=[layer(size=1.5)]), f"{M} /layers/0: 'size' must be a non-negative integer"),
    ("size NaN", b'{"mediaType": "%s", "config": {"mediaType": "c", "digest": "%s", "size": NaN}, "layers": []}' % (OCI_MANIFEST.encode(), D1.encode()), f"{M}: Invalid JSON: NaN is not a JSON number"),
    ("size beyond int64", manifest(layers=[layer(size=1 << 63)]), f"{M} /layers/0: 'size' is larger than 2^63-1"),
    ("layers a string", manifest(layers="sha256:x"), f"{M}: 'layers' must be an array"),
    ("layers missing", manifest(layers=None), f"{M}: 'layers' is missing"),
    ("layer a number", manifest(layers=[5]), f"{M} /layers/0: must be an object"),
    ("digest a number", manifest(layers=[layer(digest=5)]), f"{M} /layers/0: 'digest' must be a string"),
    ("digest short", manifest(layers=[layer(digest="sha256:abc")]), f"{M} /layers/0: 'digest' must be sha256:<64 hex digits> or sha512:<128 hex digits>"),
    ("digest a path", manifest(layers=[layer(digest="sha256:../../" + "0" * 58)]), f"{M} /layers/0: 'digest' must be sha256:<64 hex digits> or sha512:<128 hex digits>"),
    ("digest with a newline", manifest(layers=[layer(digest=D2 + "\n")]), f"{M} /layers/0: 'digest' must be sha256:<64 hex digits> or sha512:<128 hex digits>"),
    ("sha512", manifest(layers=[layer(digest="sha512:" + "a" * 128)]), f"{M} /layers/0: sha512 digests are not supported (sha256 only)"),
    ("layer kind a number", manifest(layers=[layer(mediaType=7)]), f"{M} /layers/0: 'mediaType' must be a string"),
    ("docker layer of another kind", manifest(mediaType=DOCKER_MANIFEST, layers=[layer(mediaType="text/x\x1b[31m")]), f"{M} /layers/0: unsupported layer kind 'text/x\\x1b[31m'"),
    ("kind a number", manifest(mediaType=1), f"{M}: 'mediaType' must be a string"),
    ("kind unknown", manifest(mediaType="text/html\n<b>"), f"{M}: unsupported kind 'text/html\\n<b>' (not Docker schema 2 or OCI)"),
    ("schema 1", manifest(schemaVersion=1), f"{M}: 'schemaVersion' must be 2"),
    ("schema true", manifest(schemaVersion=True), f"{M}: 'schemaVersion' must be 2"),
    ("index entry without digest", index(entry(digest=None)), f"{I} /manifests/0: 'digest' is missing"),
    ("index entry size huge", index(entry(), entry(size="huge")), f"{I} /manifests/1: 'size' must be a non-negative integer"),
    ("index entry a string", index("x"), f"{I} /manifests/0: must be an object"),
    ("manifests a string", index() | {"manifests": "x"}, f"{I}: 'manifests' must be an array"),
    ("manifests missing", {"mediaType": DOCKER_LIST}, f"{I}: 'manifests' is missing"),
    ("platform a string", index(entry(platform="linux")), f"{I} /manifests/0/platform: must be an object"),
    ("platform os a number", index(entry(platform={"os": 1})), f"{I} /manifests/0/platform: 'os' must be a string"),
    ("not JSON", b"{", f"{M}: Invalid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
    ("nested 100 000 deep", b"[" * 100_000 + b"]" * 100_000, f"{M}: Invalid JSON: nested deeper than 100 levels"),
    ("nested in a member", b'{"annotations": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", f"{M}: Invalid JSON: nested deeper than 100 levels"),
    ("a 5 000-digit number", b'{"schemaVersion": ' + b"9" * 5000 + b"}", f"{M}: Invalid JSON: a number has more than 4300 digits"),
    ("not UTF-8", b'{"mediaType": "\xff"}', f"{M}: Invalid JSON: JSON is not UTF-8 text"),
    ("an array", b"[]", f"{M}: not a JSON object"),
    ("empty", b"", f"{M}: Invalid JSON: Expecting value at line 1 column 1"),
]  # fmt: skip


def content(document: bytes | dict[str, Any]) -> bytes:
    return document if isinstance(document, bytes) else json.dumps(document).encode()


@pytest.mark.parametrize(
    ("document", "message"), [(d, m) for _, d, m in HOSTILE], ids=[n for n, _, _ in HOSTILE]
)
def test_hostile_manifests(document: bytes | dict[str, Any], message: str) -> None:
    with pytest.raises(ProvisionerError) as caught:
        parse_manifest(content(document), IMAGE)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


def test_index_inside_an_index() -> None:
    with pytest.raises(ProvisionerError) as caught:
        parse_manifest(content(index(entry())), IMAGE, index=False)
    assert str(caught.value) == f"{I}: an index may name manifests only, not another index"


def test_valid_manifests() -> None:
    parsed = parse_manifest(content(manifest()), IMAGE)
    assert isinstance(parsed, Manifest)
    assert [b.digest for b in parsed.blobs] == [D1, D2]
    docker = parse_manifest(
        content(manifest(mediaType=DOCKER_MANIFEST, layers=[layer(mediaType=DOCKER_GZ)])), IMAGE
    )
    assert isinstance(docker, Manifest)
    assert _as_oci(docker)["layers"] == [{"mediaType": GZ, "digest": D2, "size": 20}]
    listed = parse_manifest(content(index(entry(), entry(platform=None))), IMAGE)
    assert isinstance(listed, Index)
    assert len(listed.manifests) == 2


def test_what_umoci_reads_is_what_was_checked() -> None:
    """Go's JSON would read `Layers` (case-insensitively, the last key wins): the OCI
    manifest handed to umoci is written from the checked fields, never passed through."""
    other = json.dumps([{"mediaType": GZ, "digest": D1, "size": 1}])
    text = json.dumps(manifest())[:-1] + f', "Layers": {other}}}'
    parsed = parse_manifest(text.encode(), IMAGE)
    assert isinstance(parsed, Manifest)
    assert _as_oci(parsed) == {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": D1, "size": 10},
        "layers": [{"mediaType": GZ, "digest": D2, "size": 20}],
    }


def test_no_variant_for_this_platform_escapes_what_it_lists() -> None:
    entries = [entry(platform={"os": "linux\n", "architecture": "s390x\x1b"})] * 20
    parsed = parse_manifest(content(index(*entries)), IMAGE)
    assert isinstance(parsed, Index)
    with pytest.raises(ProvisionerError) as caught:
        _choose_platform(parsed, IMAGE)
    message = str(caught.value)
    assert "(it has: linux\\n/s390x\\x1b, " in message
    assert message.endswith(", and 12 more)")
    assert message.isprintable()


def test_printable() -> None:
    assert printable("a\nb\\c\x7f\u2028\U000e0001") == "a\\nb\\c\\x7f\\u2028\\U000e0001"
    assert printable("x" * 100, 5) == "xxxxx…"


# --- whatever comes back: a valid parse or a typed error --------------------------------

digests = st.sampled_from(
    [D1, D2, "sha512:" + "a" * 128, "sha256:" + "A" * 64, ""]
) | st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True)
kinds = st.sampled_from(
    [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST, GZ, DOCKER_GZ, OCI_CONFIG]
)
platforms = st.fixed_dictionaries(
    {},
    optional={
        "os": st.just("linux") | hostile_json,
        "architecture": st.sampled_from(["amd64", "arm64", "s390x"]) | hostile_json,
    },
)
descriptors = st.fixed_dictionaries(
    {},
    optional={
        "digest": digests | hostile_json,
        "size": st.integers(-2, 1 << 64) | hostile_json,
        "mediaType": kinds | hostile_json,
        "platform": platforms | hostile_json,
    },
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "schemaVersion": st.just(2) | hostile_json,
        "mediaType": kinds | hostile_json,
        "config": descriptors | hostile_json,
        "layers": st.lists(descriptors | hostile_json, max_size=4) | hostile_json,
        "manifests": st.lists(descriptors | hostile_json, max_size=4) | hostile_json,
    },
)
answers = (
    documents.map(lambda d: json.dumps(d).encode())
    | hostile_json.map(lambda v: json.dumps(v).encode())
    | (st.binary(max_size=64) | deeply_nested)
)  # fmt: skip


@given(answers)
def test_any_answer_parses_or_is_a_typed_error(answer: bytes) -> None:
    try:
        parsed = parse_manifest(answer, IMAGE)
        if isinstance(parsed, Index):
            _choose_platform(parsed, IMAGE)
        else:
            json.dumps(_as_oci(parsed), allow_nan=False)
    except MesosSecretsError as error:
        caught: MesosSecretsError = error
    else:
        return
    assert isinstance(caught, ProvisionerError)
    assert str(caught).startswith("image 'reg.example/x:1'")
    assert str(caught).isprintable()  # one line, nothing that moves a terminal's cursor
