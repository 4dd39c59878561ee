"""The node agent's metrics, in Prometheus' format (prometheus-client), on ``/metrics``.

Every series is named ``mesos_secrets_agent_*``; none carries a secret's name (an
unbounded label set, and a list of what the node holds for anyone who can scrape), only
the resolver and the outcome.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from ..resolver import SecretResolver

__all__ = ["AgentMetrics"]

_PREFIX = "mesos_secrets_agent"


class AgentMetrics:
    """The agent's counters, gauges and latency histogram, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)

        def counter(name: str, what: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(f"{_PREFIX}_{name}", what, labels, registry=self.registry)

        self.resolutions = counter(
            "resolutions", "References answered, by resolver and outcome", ("resolver", "outcome")
        )
        self.latency = Histogram(
            f"{_PREFIX}_resolution_seconds",
            "Time to answer one resolve request",
            ("resolver",),
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.cache_hits = counter("cache_hits", "Answers from the node's cache")
        self.cache_misses = counter("cache_misses", "Answers that needed the store")
        self.store_requests = counter("store_requests", "Resolutions asked of the resolver")
        self.coalesced = counter("coalesced_requests", "Callers that waited for another's read")
        self.stale = counter("stale_answers", "Values served past their TTL, the store down")
        self.denied = counter("denied_requests", "References refused to their caller")
        self.unauthenticated = counter("unauthenticated_requests", "Requests with a bad token")
        self.releases = counter("lease_releases", "Secrets given up once no holder needed them")
        self.release_failures = counter("lease_release_failures", "Releases that failed")
        self.refreshes = counter("refreshes", "Held secrets read again (polls and pushes)")
        self.containers = Gauge(
            f"{_PREFIX}_active_containers", "Callers holding secrets", registry=self.registry
        )
        self._events = {
            "hit": self.cache_hits,
            "miss": self.cache_misses,
            "store_read": self.store_requests,
            "coalesced": self.coalesced,
            "stale": self.stale,
            "refresh": self.refreshes,
        }
        self._resolved: dict[tuple[str, str], Any] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def watch(self, resolver: SecretResolver) -> None:
        """Report ``resolver``'s lease renewals and their failures."""
        self.registry.register(_Renewals(resolver))

    def resolved(self, resolver: str, outcomes: dict[str, int]) -> None:
        """References answered: how many of each outcome (each labelled counter looked
        up once)."""
        for outcome, count in outcomes.items():
            child = self._resolved.get((resolver, outcome))
            if child is None:
                child = self._resolved[(resolver, outcome)] = self.resolutions.labels(
                    resolver, outcome
                )
            child.inc(count)

    def event(self, name: str) -> None:
        """A cache event (:class:`~.cache.NodeCache`'s ``on_event``)."""
        self._events[name].inc()

    def serve(self, host: str, port: int) -> tuple[str, int]:
        """Serve ``/metrics`` on ``host:port`` (0: any free port) in a thread; the address."""
        self._server, self._thread = start_http_server(port, host, registry=self.registry)
        address = self._server.server_address
        return str(address[0]), int(address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Renewals(Collector):
    """The resolver's own count of lease renewals, read at each scrape."""

    def __init__(self, resolver: SecretResolver) -> None:
        self.resolver = resolver

    def collect(self) -> Iterator[CounterMetricFamily]:
        made, failed = self.resolver.lease_renewals()
        yield CounterMetricFamily(
            f"{_PREFIX}_lease_renewals", "Lease renewals the resolver made", value=made
        )
        yield CounterMetricFamily(
            f"{_PREFIX}_lease_renewal_failures", "Lease renewals that failed", value=failed
        )
