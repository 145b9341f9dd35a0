"""`sparkdocs doctor`: each check with its finding and, when it fails, the fix."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .client import ModelClient
from .errors import SparkdocsError
from .tokens import ChatMessage


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok", "warn", "fail", "unknown"
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def run_checks(client: ModelClient) -> list[Check]:
    settings = client.settings
    caps = client.capabilities(refresh=True)
    checks: list[Check] = []
    if not caps.reachable:
        return [Check("reachable", "fail", f"nothing answers at {settings.base_url}",
                      "start it with `docker compose up -d vllm` (or `sparkdocs local-model`), "
                      "or set SPARKDOCS_BASE_URL")]
    checks.append(Check("reachable", "ok", f"{settings.base_url} answers ({caps.server_kind} server)"))
    if caps.error and "API key" in caps.error:
        checks.append(Check("api key", "fail", caps.error,
                            "set SPARKDOCS_API_KEY to the server's key (VLLM_API_KEY in compose)"))
        return checks
    checks.append(Check("api key", "ok", "accepted"))
    if caps.model is None:
        checks.append(Check("model", "fail", caps.model_note or "no model served",
                            "set SPARKDOCS_MODEL to a served id"))
        return checks
    checks.append(Check("model", "warn" if caps.model_note else "ok",
                        caps.model_note or f"{caps.model} is served",
                        "set SPARKDOCS_MODEL to silence this" if caps.model_note else ""))
    if caps.context_from_server:
        checks.append(Check("context length", "ok", f"{caps.context_length:,} tokens (from the server)"))
    else:
        checks.append(Check("context length", "warn",
                            f"the server does not report it; budgeting with {caps.context_length:,} "
                            "from configuration",
                            "set SPARKDOCS_CONTEXT_LENGTH to the server's real context"))
    metrics = caps.metrics
    if metrics is None or metrics.prefix_caching_enabled is None:
        checks.append(Check("prefix caching", "unknown",
                            "the server publishes no vLLM metrics, so it cannot be checked",
                            "on vLLM, pass --enable-prefix-caching (the default since 0.8)"))
    elif metrics.prefix_caching_enabled:
        rate = metrics.prefix_hit_rate
        checks.append(Check("prefix caching", "ok", "on" + (f"; hit rate {rate:.0%}" if rate is not None else "")))
    else:
        checks.append(Check("prefix caching", "fail", "off: every question re-reads the whole document",
                            "add --enable-prefix-caching to `vllm serve`"))
    try:
        probe = client.stream([ChatMessage("user", "Say OK.")], max_tokens=1, model=caps.model).run()
        if probe.cached_tokens is not None:
            checks.append(Check("cached-token reporting", "ok", "the server reports cached prompt tokens"))
        else:
            checks.append(Check("cached-token reporting", "warn",
                                "the server does not report cached prompt tokens; answers show "
                                "'not reported by this server'",
                                "on vLLM, add --enable-prompt-tokens-details"))
    except SparkdocsError as exc:
        checks.append(Check("completion", "fail", str(exc), "see the message"))
    from .salt_probe import cache_salt_check  # team mode: is the prefix cache private?

    checks.append(cache_salt_check(client))
    checks.append(Check("tokenize endpoint", "ok" if caps.tokenize_path else "warn",
                        caps.tokenize_path or "none: counts use the built-in Llama 3 tokenizer",
                        "" if caps.tokenize_path else "vLLM offers /tokenize; other servers may not"))
    health = client.health()
    checks.append(Check("health endpoint", {True: "ok", False: "fail", None: "unknown"}[health],
                        {True: "/health answers 200", False: "/health does not answer 200",
                         None: "this server has no /health"}[health],
                        "" if health else "vLLM serves /health; compose uses it to gate the app"))
    return checks
