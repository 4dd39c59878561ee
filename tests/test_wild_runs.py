"""Specs of the ``marathon-wild`` corpus, run end to end with ``mesos-secrets run`` as
published: command-only apps on the host, and container apps whose image (named as on
Docker Hub) a registry of the test's own serves, as a node's mirror would
(``[images] registry``, Mesos' ``--docker_registry``)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import requires_root
from .registry import Registry, build_busybox
from .test_marathon_wild import WILD
from .test_run import BIN

pytestmark = [
    requires_root,
    pytest.mark.skipif(not WILD.exists(), reason="the marathon-wild corpus is not here"),
]


def run(spec: str, tmp_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            str(BIN),
            *extra,
            "-v",
            "run",
            str(WILD / spec),
            "--work-dir",
            str(tmp_path / "work"),
            "--runtime-dir",
            str(tmp_path / "runtime"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(process: subprocess.Popen[bytes]) -> tuple[int, bytes, bytes]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def test_echo_app(tmp_path: Path) -> None:
    """``{"id": "hello", "cmd": "echo 'hello'"}`` (minimesos)."""
    status, out, err = finish(run("165_tp_minimesos_app-it.json", tmp_path))
    assert status == 0, err.decode()
    assert out == b"hello\n"


def test_sleep_app_completes(tmp_path: Path) -> None:
    status, _, err = finish(run("048_dcoscli_apps_sleep-completed.json", tmp_path))
    assert status == 0, err.decode()


def test_http_server_on_its_assigned_port(tmp_path: Path) -> None:
    """``python3 -m http.server $PORT0`` (Marathon's docs): it serves on the host port
    ``run`` gave it, and stops on SIGTERM."""
    process = run("031_mar_docs_app-check-http-example.json", tmp_path)
    assert process.stderr is not None
    port = None
    deadline = time.monotonic() + 30
    while port is None and time.monotonic() < deadline:
        line = process.stderr.readline().decode()
        found = re.search(r"has host ports (\d+)", line)
        port = int(found.group(1)) if found else None
    assert port is not None, "run did not say which host port the task has"
    body = b""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
                body = answer.read()
            break
        except OSError:
            time.sleep(0.2)
    assert b"Directory listing" in body
    process.send_signal(signal.SIGTERM)
    status, _, _ = finish(process)
    assert status == 128 + signal.SIGTERM


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """An anonymous registry serving busybox as ``library/alpine``."""
    layout = tmp_path_factory.mktemp("image") / "layout"
    build_busybox(layout)
    server = Registry(tmp_path_factory.mktemp("mirror"), {})
    server.push(layout, "latest", "library/alpine:latest")
    yield server
    server.stop()


@pytest.mark.parametrize(
    "spec", ["074_dcoscli_tasks_sh-app.json", "071_dcoscli_tasks_cat-app.json"]
)
def test_image_app_from_a_mirror(spec: str, tmp_path: Path, mirror: Registry) -> None:
    """``library/alpine`` with ``sh`` / ``cat`` (dcos-core-cli): pulled from the node's
    registry mirror, run in the image, done when stdin ends."""
    config = tmp_path / "config.toml"
    config.write_text(
        "[images]\n"
        f'store = "{tmp_path / "images"}"\n'
        f'ca_bundle = "{mirror.ca.ca.cert}"\n'
        f'registry = "{mirror.host}"\n'
    )
    status, _, err = finish(run(spec, tmp_path, "--config", str(config)))
    assert status == 0, err.decode()
    assert f"pulled {mirror.host}/library/alpine:latest".encode() in err


def test_registry_setting_is_checked(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[images]\nregistry = "https://mirror/"\n')
    status, _, err = finish(run("074_dcoscli_tasks_sh-app.json", tmp_path, "--config", str(config)))
    assert status != 0
    assert b"mesos-secrets: error: [images] 'registry' must be a registry's host[:port]" in err


def test_wild_specs_named_here_are_valid() -> None:
    for name in (
        "165_tp_minimesos_app-it.json",
        "048_dcoscli_apps_sleep-completed.json",
        "031_mar_docs_app-check-http-example.json",
        "074_dcoscli_tasks_sh-app.json",
        "071_dcoscli_tasks_cat-app.json",
    ):
        assert json.loads((WILD / "expect.json").read_text())[name]["valid"]
