"""The engines behind vLLM's router: the router lists them (`GET /list_workers`), and each is
asked itself for its model, context and figures (`/v1/models`, `/metrics`), since the router
forwards those to one engine only. What sparkdocs sizes by is their sum: the KV cache that holds
documents, and the requests kept in flight."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .config import Settings
from .literal import redact_url
from .metrics import ServerMetrics, parse_metrics


class Reply(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


class EngineReader(Protocol):
    """What the cluster view needs of the model client (`client.ModelClient`): its settings,
    its server's root URL and a GET of any URL with the API key."""

    settings: Settings

    @property
    def root_url(self) -> str: ...

    def get_url(self, url: str, *, timeout_s: float | None = None) -> Reply | None: ...

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Engine:
    """One engine as the router lists it, and what it says of itself (None: it did not say)."""

    url: str  # as the router lists it, credentials hidden
    up: bool
    model: str | None = None
    context_length: int | None = None
    metrics: ServerMetrics | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        metrics = self.metrics
        return {"url": self.url, "up": self.up, "model": self.model,
                "context_length": self.context_length,
                "kv_capacity_tokens": metrics.kv_capacity_tokens if metrics else None,
                "kv_cache_usage": metrics.kv_cache_usage if metrics else None,
                "running": metrics.running if metrics else None,
                "waiting": metrics.waiting if metrics else None,
                "prefix_hit_rate": metrics.prefix_hit_rate if metrics else None,
                "error": self.error}

    def summary(self) -> str:
        """One line for `doctor` and the Server page."""
        if not self.up:
            return f"down: {self.error or 'does not answer'}"
        metrics = self.metrics
        words = [f"model {self.model or 'unknown'}",
                 f"context {self.context_length:,} tokens" if self.context_length else "context not reported"]
        if metrics is not None:
            capacity = metrics.kv_capacity_tokens
            usage = metrics.kv_cache_usage
            words.append(f"KV cache {'—' if usage is None else f'{usage:.0%}'} used"
                         + (f" of {capacity:,} tokens" if capacity else ""))
            words.append(f"{metrics.running or 0:.0f} running, {metrics.waiting or 0:.0f} waiting")
        else:
            words.append("no vLLM metrics")
        return "; ".join(words)


def engine_row(engine: Engine) -> dict[str, str]:
    """One engine as a table row for the Server page (text: shown as written, never markup)."""
    metrics = engine.metrics
    usage = metrics.kv_cache_usage if metrics else None
    capacity = metrics.kv_capacity_tokens if metrics else None
    return {"engine": engine.url, "state": "serving" if engine.up else "down",
            "model": engine.model or "—",
            "context": f"{engine.context_length:,}" if engine.context_length else "—",
            "KV cache used": "—" if usage is None else f"{usage:.0%}",
            "KV tokens": f"{capacity:,}" if capacity else "—",
            "running": "—" if metrics is None else f"{metrics.running or 0:.0f}",
            "waiting": "—" if metrics is None else f"{metrics.waiting or 0:.0f}",
            "why down": engine.error or ""}


def combined_metrics(engines: Sequence[Engine]) -> ServerMetrics | None:
    """The figures of every engine that is up, as one server's: capacities, counters and queues
    summed, KV use weighted by capacity. None when no engine published metrics."""
    shown = [e.metrics for e in engines if e.up and e.metrics is not None]
    if not shown:
        return None

    def total(values: Sequence[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return sum(known) if known else None

    sizes = {m.block_size for m in shown if m.block_size}
    block = sizes.pop() if len(sizes) == 1 else None
    blocks = total([m.num_gpu_blocks for m in shown]) if block else None
    weighted = [(m.kv_cache_usage, m.kv_capacity_tokens) for m in shown
                if m.kv_cache_usage is not None and m.kv_capacity_tokens]
    capacity = sum(c for _, c in weighted)
    usage = (sum(u * c for u, c in weighted) / capacity if capacity
             else total([m.kv_cache_usage for m in shown]))
    enabled = {m.prefix_caching_enabled for m in shown} - {None}
    return ServerMetrics(
        prefix_cache_queries=total([m.prefix_cache_queries for m in shown]),
        prefix_cache_hits=total([m.prefix_cache_hits for m in shown]),
        kv_cache_usage=usage, block_size=block,
        num_gpu_blocks=int(blocks) if blocks else None,
        prefix_caching_enabled=all(enabled) if enabled else None,
        running=total([m.running for m in shown]), waiting=total([m.waiting for m in shown]))


def listed_workers(body: object) -> tuple[str, ...] | None:
    """The engine URLs of a `/list_workers` answer (`{"urls": [...]}`), or None if it is not one."""
    urls = body.get("urls") if isinstance(body, dict) else None
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        return None
    return tuple(u.rstrip("/") for u in urls if u.startswith(("http://", "https://")))


def engine_status(client: EngineReader, url: str) -> Engine:
    """One engine asked directly: its model list (with the API key) and its /metrics."""
    shown = redact_url(url)
    models = client.get_url(f"{url}/v1/models")
    if models is None or models.status != 200:
        why = "does not answer" if models is None else f"/v1/models answered HTTP {models.status}"
        return Engine(shown, False, error=why)
    try:
        data = [m for m in models.json().get("data", []) if isinstance(m, dict)]
    except (ValueError, AttributeError):
        return Engine(shown, False, error="/v1/models is not an OpenAI model list")
    wanted = client.settings.model
    entry = next((m for m in data if m.get("id") == wanted), data[0] if len(data) == 1 else {})
    context = entry.get("max_model_len")
    metrics_reply = client.get_url(f"{url}/metrics")
    metrics = None
    if metrics_reply is not None and metrics_reply.status == 200 and "vllm:" in metrics_reply.text:
        try:
            metrics = parse_metrics(metrics_reply.text)
        except ValueError as exc:
            log.warning("unreadable /metrics from %s: %s", shown, exc)
    return Engine(shown, True, model=entry.get("id") if isinstance(entry.get("id"), str) else None,
                  context_length=context if isinstance(context, int) and context > 0 else None,
                  metrics=metrics)


def discover_engines(client: EngineReader) -> tuple[Engine, ...]:
    """Every engine behind the router at the client's base URL; () when it is not a router
    (a vLLM or llama.cpp server answers /list_workers with 404)."""
    reply = client.get_url(f"{client.root_url}/list_workers")
    if reply is None or reply.status != 200:
        return ()
    try:
        urls = listed_workers(reply.json())
    except ValueError:
        return ()
    if not urls:
        return ()
    return tuple(engine_status(client, url) for url in urls)


def engines_up(engines: Sequence[Engine]) -> int:
    """How many engines serve now (1 for a single server, which lists none)."""
    return sum(1 for e in engines if e.up) if engines else 1
