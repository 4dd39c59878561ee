"""Start-up: what the command loads for what it is asked, and the index of plugins.

How fast is for `make bench`; here, what must not happen: a plain command run on the host
loading image pulls, the fetcher, HTTP libraries or an entry-point scan, and an index of
plugins that is stale, someone else's, or that names modules nobody installed.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from mesos_secrets import plugin_index
from mesos_secrets.registry import RESOLVER_GROUP, Registry
from mesos_secrets.resolver import SecretResolver
from resolvers.local import LocalResolver

from .conftest import requires_root
from .plugins import install_entry_point

BIN = Path(sys.executable).parent / "mesos-secrets"

#: Never loaded for a command run on the host (an app without image, URIs, checks).
NOT_FOR_A_PLAIN_APP = (
    "requests",
    "urllib3",
    "dxf",
    "charset_normalizer",
    "importlib.metadata",
    "tomllib",
    "mesos_secrets.images",
    "mesos_secrets.fetcher",
    "mesos_secrets.pods",
    "mesos_secrets.groups",
    "mesos_secrets.checks",
    "mesos_secrets.acls",
)


def imported(*args: str, env: dict[str, str] | None = None) -> tuple[set[str], str]:
    """The modules the real command imports (``python -X importtime`` names each one as
    it loads), and its standard error without those lines."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(BIN), *args],
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )
    modules, other = set(), []
    for line in result.stderr.decode().splitlines():
        if line.startswith("import time:"):
            modules.add(line.rpartition("|")[2].strip())
        else:
            other.append(line)
    assert result.returncode == 0, "\n".join(other)
    return modules, "\n".join(other)


class TestWhatLoads:
    def test_version_loads_almost_nothing(self) -> None:
        modules, _ = imported("--version")
        ours = {m for m in modules if m.split(".")[0] in ("mesos_secrets", "resolvers")}
        assert ours == {
            "mesos_secrets",
            "mesos_secrets.cli",
            "mesos_secrets.errors",
            "mesos_secrets.hardening",
            "mesos_secrets.linux",
        }
        assert not {"attrs", "logging", "json", *NOT_FOR_A_PLAIN_APP} & modules

    def test_help_loads_no_command(self) -> None:
        modules, _ = imported("run", "--help")
        assert not {"mesos_secrets.run", "mesos_secrets.registry", "attrs"} & modules

    @requires_root
    def test_a_plain_app_loads_nothing_it_does_not_use(self, tmp_path: Path, home: Path) -> None:
        """`run` of a command on the host: no images, fetcher, HTTP, checks, pods,
        groups, ACLs, configuration parser, nor (on a warm index) an entry-point scan."""
        spec = tmp_path / "app.json"
        spec.write_text(json.dumps({"id": "/plain", "cmd": "true"}))
        imported("resolvers")  # the index, written for this environment
        modules, _ = imported("run", str(spec), "--runtime-dir", str(tmp_path / "runtime"))
        assert "mesos_secrets.run" in modules  # it did run
        assert not {*NOT_FOR_A_PLAIN_APP, "cryptography"} & modules  # no secret: no store

    @requires_root
    def test_secrets_load_nothing_more(self, tmp_path: Path, home: Path) -> None:
        LocalResolver(home=home).store.put("/app/db", {"password": b"pw"})
        spec = tmp_path / "app.json"
        spec.write_text(
            json.dumps(
                {
                    "id": "/with/secrets",
                    "cmd": 'test "$PW" = pw && test "$(cat secrets/pw)" = pw',
                    "env": {"PW": {"secret": "pw"}},
                    "secrets": {"pw": {"source": "/app/db@password"}},
                    "container": {
                        "type": "MESOS",
                        "volumes": [{"containerPath": "secrets/pw", "secret": "pw"}],
                    },
                }
            )
        )
        imported("resolvers")
        modules, _ = imported("run", str(spec), "--runtime-dir", str(tmp_path / "runtime"))
        assert not set(NOT_FOR_A_PLAIN_APP) & modules

    def test_what_a_spec_needs_is_loaded(self, tmp_path: Path) -> None:
        """The test above is not vacuous: a pod's spec loads pods, a check's checks."""
        pod = tmp_path / "pod.json"
        pod.write_text(
            json.dumps(
                {
                    "id": "/pod",
                    "containers": [
                        {
                            "name": "c",
                            "exec": {"command": {"shell": "true"}},
                            "resources": {"cpus": 0.1, "mem": 32},
                        }
                    ],
                }
            )
        )
        assert "mesos_secrets.pods" in imported("task-info", str(pod))[0]
        app = tmp_path / "app.json"
        app.write_text(
            json.dumps(
                {
                    "id": "/checked",
                    "cmd": "sleep 1",
                    "healthChecks": [{"protocol": "COMMAND", "command": {"value": "true"}}],
                }
            )
        )
        modules = imported("task-info", str(app))[0]
        assert "mesos_secrets.checks" in modules
        assert "mesos_secrets.groups" not in modules


# --- the index ----------------------------------------------------------------------------


class Plugins:
    """A site directory on sys.path, whose distributions tests install and remove, and
    an index of the test's own. The index trusts nothing modified (or whose inode
    changed: ctime) within RACY_S seconds, which would make every index of a fresh
    directory wait: here RACY_S is 0, and what a test changes is given a distinct
    modification time instead, as if each change were made at its own tick."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.site = tmp_path / "site"
        self.site.mkdir()
        self.index = tmp_path / "cache" / "mesos-secrets" / "entry-points-test.json"
        monkeypatch.setattr(plugin_index, "index_path", lambda: self.index)
        monkeypatch.setattr(plugin_index, "RACY_S", 0.0)
        self.monkeypatch = monkeypatch
        monkeypatch.setattr(plugin_index, "_index", plugin_index._Index())
        monkeypatch.syspath_prepend(str(self.site))
        self._age = time.time_ns() - 3600 * 10**9
        self.scans = 0
        real = metadata.entry_points

        def counting(**params: Any) -> Any:
            self.scans += 1
            return real(**params)

        monkeypatch.setattr(metadata, "entry_points", counting)
        self.settle()

    def settle(self) -> None:
        """Give everything under the site (and the site) a new time, an hour ago."""
        for path in [self.site, *self.site.rglob("*")]:
            self._age += 10**9
            os.utime(path, ns=(self._age, self._age))

    def install(self, dist: str, name: str, value: str) -> Path:
        info = install_entry_point(self.site, dist, name, value)
        self.settle()
        return info

    def names(self) -> list[str]:
        return [e.name for e in plugin_index.entry_points(RESOLVER_GROUP)]


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Plugins:
    return Plugins(tmp_path, monkeypatch)


class TestIndex:
    def test_same_as_importlib_metadata(self, plugins: Plugins) -> None:
        plugins.install("extra", "extra", "extra_mod:Resolver")
        wanted = [(e.name, e.value) for e in metadata.entry_points(group=RESOLVER_GROUP)]
        assert [(e.name, e.value) for e in plugin_index.entry_points(RESOLVER_GROUP)] == wanted
        assert ("extra", "extra_mod:Resolver") in wanted

    def test_a_warm_index_scans_nothing(self, plugins: Plugins) -> None:
        first = plugins.names()
        assert plugins.scans == 1
        assert plugins.names() == first
        # A new process: the index on disk, not the one in memory.
        plugin_index._index = plugin_index._Index()
        assert plugins.names() == first
        assert plugins.scans == 1

    def test_installed_later_is_found_removed_is_forgotten(self, plugins: Plugins) -> None:
        assert "later" not in plugins.names()
        info = plugins.install("later", "later", "later_mod:Resolver")
        assert "later" in plugins.names()
        shutil.rmtree(info)
        plugins.settle()
        assert "later" not in plugins.names()

    def test_entry_points_rewritten_in_place(self, plugins: Plugins) -> None:
        info = plugins.install("moving", "moving", "old_mod:Resolver")
        assert "old_mod:Resolver" in [e.value for e in plugin_index.entry_points(RESOLVER_GROUP)]
        (info / "entry_points.txt").write_text(f"[{RESOLVER_GROUP}]\nmoving = new_mod:Resolver\n")
        plugins.settle()
        values = [e.value for e in plugin_index.entry_points(RESOLVER_GROUP)]
        assert "new_mod:Resolver" in values
        assert "old_mod:Resolver" not in values

    def test_another_sys_path_scans(
        self, plugins: Plugins, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        plugins.names()
        other = tmp_path / "other"
        install_entry_point(other, "elsewhere", "elsewhere", "elsewhere_mod:Resolver")
        monkeypatch.syspath_prepend(str(other))
        assert "elsewhere" in plugins.names()

    def test_just_modified_is_not_written(self, plugins: Plugins) -> None:
        """A change in the same tick of the file system's clock as the scan would leave
        the times as they were: what was modified within RACY_S is scanned again."""
        plugins.monkeypatch.setattr(plugin_index, "RACY_S", 2.0)
        install_entry_point(plugins.site, "fresh", "fresh", "fresh_mod:Resolver")
        assert "fresh" in plugins.names()
        assert not plugins.index.exists()
        assert "fresh" in plugins.names()
        assert plugins.scans == 2

    def test_written_privately(self, plugins: Plugins) -> None:
        plugins.names()
        assert stat.S_IMODE(plugins.index.stat().st_mode) == 0o600
        assert stat.S_IMODE(plugins.index.parent.stat().st_mode) == 0o700
        assert [p.name for p in plugins.index.parent.iterdir()] == [plugins.index.name]


class TestTamperedIndex:
    """Whatever is wrong with the index, the plugins are those really installed, and no
    module it names is imported unless a scan finds it too."""

    def poison(self, plugins: Plugins) -> None:
        """Make the index current in every respect, but mapping `local` to a module of
        the site's that no distribution names; then start as a new process would."""
        (plugins.site / "poison_mod.py").write_text("raise SystemExit('poisoned')\n")
        plugins.settle()
        plugins.names()
        index = json.loads(plugins.index.read_text())
        index["entry_points"] = [
            [group, name, "poison_mod:Resolver" if name == "local" else value]
            for group, name, value in index["entry_points"]
        ]
        plugins.index.write_text(json.dumps(index))
        plugins.index.chmod(0o600)
        plugin_index._index = plugin_index._Index()

    def local(self) -> type[Any]:
        """The `local` resolver, as a new process's registry loads it (importing the
        poison would raise SystemExit)."""
        return Registry(RESOLVER_GROUP, "resolver", SecretResolver).load("local")

    def test_the_poison_works_when_trusted(self, plugins: Plugins) -> None:
        """The tests below are not vacuous: this index, left as it is, is used."""
        self.poison(plugins)
        with pytest.raises(SystemExit, match="poisoned"):
            self.local()

    @pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
    def test_writable_by_others(self, plugins: Plugins, mode: int) -> None:
        self.poison(plugins)
        plugins.index.chmod(mode)
        assert self.local() is LocalResolver
        assert stat.S_IMODE(plugins.index.stat().st_mode) == 0o600  # rewritten

    @requires_root
    def test_someone_elses(self, plugins: Plugins) -> None:
        self.poison(plugins)
        os.chown(plugins.index, 65534, 65534)
        plugins.index.chmod(0o600)
        assert self.local() is LocalResolver

    def test_in_a_directory_others_can_write(self, plugins: Plugins) -> None:
        self.poison(plugins)
        plugins.index.parent.chmod(0o777)
        assert self.local() is LocalResolver

    def test_a_link(self, plugins: Plugins, tmp_path: Path) -> None:
        self.poison(plugins)
        elsewhere = tmp_path / "elsewhere.json"
        plugins.index.rename(elsewhere)
        plugins.index.symlink_to(elsewhere)
        assert self.local() is LocalResolver

    def test_stale(self, plugins: Plugins) -> None:
        """An index of other distributions than those installed now is not used."""
        self.poison(plugins)
        plugins.install("newer", "newer", "newer_mod:Resolver")
        assert self.local() is LocalResolver

    @pytest.mark.parametrize(
        "damage",
        [
            lambda text: text[: len(text) // 2],
            lambda text: "[]",
            lambda text: text.replace('"format":1', '"format":2'),
            lambda text: text.replace("resolvers.local:LocalResolver", "resolvers.local:L; x"),
            lambda text: text.replace(
                '"entry_points":[', '"entry_points":[["other.group","a","b:c"],'
            ),
        ],
        ids=["truncated", "not-an-index", "other-format", "bad-value", "other-group"],
    )
    def test_corrupt_is_rescanned_and_rewritten(self, plugins: Plugins, damage: Any) -> None:
        plugins.names()
        text = plugins.index.read_text()
        plugins.index.write_text(damage(text))
        plugin_index._index = plugin_index._Index()
        scans = plugins.scans
        assert "local" in plugins.names()
        assert plugins.scans == scans + 1
        assert json.loads(plugins.index.read_text()) == json.loads(text)


def test_where_the_index_lives(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert plugin_index.index_path().parent == Path("/var/cache/mesos-secrets")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert plugin_index.index_path().parent == tmp_path / "xdg" / "mesos-secrets"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert plugin_index.index_path().parent == Path.home() / ".cache" / "mesos-secrets"
    before = plugin_index.index_path()
    monkeypatch.syspath_prepend(str(tmp_path))
    assert plugin_index.index_path() != before  # each environment its own


def test_no_home_no_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """A user without a home directory (an arbitrary uid in a container) scans."""
    monkeypatch.setattr(os, "geteuid", lambda: 12345)
    monkeypatch.delenv("HOME")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(plugin_index, "_index", plugin_index._Index())
    monkeypatch.setattr("pwd.getpwuid", lambda uid: (_ for _ in ()).throw(KeyError(uid)))
    with pytest.raises((RuntimeError, KeyError)):
        plugin_index.index_path()
    assert "local" in [e.name for e in plugin_index.entry_points(RESOLVER_GROUP)]
