"""vLLM's own counters and gauges, read from its Prometheus `/metrics` text: what the Server
page, the waits and the cluster view show, apart from the HTTP client that fetches them."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerMetrics:
    prefix_cache_queries: float | None = None
    prefix_cache_hits: float | None = None
    kv_cache_usage: float | None = None
    block_size: int | None = None
    num_gpu_blocks: int | None = None
    prefix_caching_enabled: bool | None = None
    running: float | None = None
    waiting: float | None = None

    @property
    def kv_capacity_tokens(self) -> int | None:
        if self.block_size and self.num_gpu_blocks:
            return self.block_size * self.num_gpu_blocks
        return None

    @property
    def prefix_hit_rate(self) -> float | None:
        if self.prefix_cache_queries:
            return (self.prefix_cache_hits or 0.0) / self.prefix_cache_queries
        return None



def parse_metrics(text: str) -> ServerMetrics:
    """vLLM's Prometheus text → the figures sparkdocs shows (old and new metric names)."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    info: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if name == "vllm:cache_config_info":
                info = dict(sample.labels)
            elif name in {"vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
                          "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc",
                          "vllm:num_requests_running", "vllm:num_requests_waiting"}:
                values[name] = values.get(name, 0.0) + sample.value

    def as_int(key: str) -> int | None:
        try:
            return int(float(info[key]))
        except (KeyError, ValueError, OverflowError):  # absent, not a number, infinite
            return None

    # NaN and ±Inf are legal Prometheus text but no figure: such a name reads as unknown
    values = {name: value for name, value in values.items() if math.isfinite(value)}
    enabled = info.get("enable_prefix_caching")
    return ServerMetrics(
        prefix_cache_queries=values.get("vllm:prefix_cache_queries_total"),
        prefix_cache_hits=values.get("vllm:prefix_cache_hits_total"),
        kv_cache_usage=values.get("vllm:kv_cache_usage_perc", values.get("vllm:gpu_cache_usage_perc")),
        block_size=as_int("block_size"),
        num_gpu_blocks=as_int("num_gpu_blocks"),
        prefix_caching_enabled=None if enabled is None else enabled.lower() == "true",
        running=values.get("vllm:num_requests_running"),
        waiting=values.get("vllm:num_requests_waiting"),
    )
