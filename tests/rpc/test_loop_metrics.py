"""``loop_metrics``: the Route path's series expose what prometheus-client's own would, and a
scrape on another thread while the loop writes sees consistent, growing counts."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.loop_metrics import LoopCounter, LoopHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0)
# On a bound, between bounds, below the first and above the last.
VALUES = (0.001, 0.0005, 0.05, 0.1, 0.7, 1.0, 3.0, 0.0, 0.01, 0.2)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(registry: CollectorRegistry) -> Samples:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")  # prometheus-client's own extra series
    }


def test_a_histogram_exposes_the_buckets_count_and_sum_prometheus_client_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    loop = LoopHistogram("rpc_seconds", "doc", ["method"], buckets=BUCKETS, registry=ours)
    reference = Histogram("rpc_seconds", "doc", ["method"], buckets=BUCKETS, registry=theirs)
    for value in VALUES:
        loop.labels("Route").observe(value)
        reference.labels("Route").observe(value)
    loop.labels("Release").observe(0.02)
    reference.labels("Release").observe(0.02)
    assert samples(ours) == samples(theirs)


def test_a_counter_exposes_what_prometheus_client_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    loop = LoopCounter("decisions", "doc", ["outcome", "cluster"], registry=ours)
    reference = Counter("decisions", "doc", ["outcome", "cluster"], registry=theirs)
    for labels in (("ROUTED", "eu-1"), ("ROUTED", "eu-1"), ("FALLBACK", "us-2")):
        loop.labels(*labels).inc()
        reference.labels(*labels).inc()
    assert samples(ours) == samples(theirs)
    assert ("decisions_total", (("cluster", "eu-1"), ("outcome", "ROUTED"))) in samples(ours)


def test_the_wrong_number_of_labels_is_refused_naming_the_series() -> None:
    histogram = LoopHistogram("rpc_seconds", "doc", ["method", "code"], buckets=BUCKETS,
                              registry=CollectorRegistry())  # fmt: skip
    with pytest.raises(ValueError, match="rpc_seconds: expected labels"):
        histogram.labels("Route")


def test_scrapes_on_another_thread_while_the_writer_observes_see_growing_counts() -> None:
    registry = CollectorRegistry()
    histogram = LoopHistogram("t_seconds", "doc", ["k"], buckets=BUCKETS, registry=registry)
    writes, seen, errors = 50_000, [], []
    done = threading.Event()

    def scrape() -> None:
        try:
            while not done.is_set():
                counts = samples(registry)
                seen.append(counts.get(("t_seconds_count", (("k", "a"),)), 0.0))
                for key in ("a", "b"):
                    buckets = [
                        v
                        for (name, labels), v in counts.items()
                        if name == "t_seconds_bucket" and ("k", key) in labels
                    ]  # in the order of their bounds, as exposed
                    assert buckets == sorted(buckets)  # cumulative, so never decreasing
        except Exception as exc:  # reported below: an assert in a thread would be lost
            errors.append(exc)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        for n in range(writes):
            histogram.labels("a" if n % 2 else "b").observe(VALUES[n % len(VALUES)])
    finally:
        done.set()
        scraper.join()
    assert errors == []
    assert len(seen) > 1, "no scrape ran while the writer did"
    assert seen == sorted(seen)
    assert samples(registry)[("t_seconds_count", (("k", "a"),))] == writes // 2
