"""`sparkdocs doctor`: each check with its finding and, when it fails, the fix.

A check passes only on evidence: the completion check reads a real one-token answer to the end
(a server that answers chat with an HTML page, a broken stream or an answer that never ends
fails it), and what is shown of the server's address never includes its credentials."""

from __future__ import annotations

from collections.abc import Sequence

from .checks import Check, CheckStatus
from .client import START_HINT, ModelClient, ServiceProblem, StreamEnd, chunk_bound
from .cluster import Engine
from .errors import SparkdocsError
from .literal import redact_url
from .salt_probe import cache_salt_check
from .tokens import ChatMessage

# A one-token probe takes seconds on any healthy server; the doctor does not wait for the
# answer deadline of a whole document.
PROBE_DEADLINE_S = 60.0

__all__ = ["PROBE_DEADLINE_S", "Check", "CheckStatus", "run_checks"]


def run_checks(client: ModelClient) -> list[Check]:
    settings = client.settings
    shown = redact_url(settings.base_url)
    caps = client.capabilities(refresh=True)
    checks: list[Check] = []
    if not caps.reachable:
        return [Check("reachable", CheckStatus.FAIL, caps.error or f"nothing answers at {shown}",
                      START_HINT)]
    checks.append(Check("reachable", CheckStatus.OK, f"{shown} answers ({caps.server_kind.value} server)"))
    checks.extend(engine_checks(caps.engines))
    if caps.problem is ServiceProblem.KEY_REFUSED:
        checks.append(Check("api key", CheckStatus.FAIL, caps.error or "the key was refused",
                            "set SPARKDOCS_API_KEY to the server's key (VLLM_API_KEY in compose)"))
        return checks
    checks.append(Check("api key", CheckStatus.OK, "accepted"))
    if caps.problem is ServiceProblem.NOT_OPENAI:
        checks.append(Check("models endpoint", CheckStatus.FAIL, caps.error or "not a model list",
                            "point SPARKDOCS_BASE_URL at the server's OpenAI API (…/v1)"))
        return checks
    if caps.problem is ServiceProblem.FAILING:
        checks.append(Check("models endpoint", CheckStatus.FAIL, caps.error or "failing",
                            "wait for the model to load, or read the server's logs"))
        return checks
    if caps.model is None:
        checks.append(Check("model", CheckStatus.FAIL, caps.model_note or "no model served",
                            "set SPARKDOCS_MODEL to a served id"))
        return checks
    checks.append(Check("model", CheckStatus.WARN if caps.model_note else CheckStatus.OK,
                        caps.model_note or f"{caps.model} is served",
                        "set SPARKDOCS_MODEL to silence this" if caps.model_note else ""))
    checks.append(_context_check(caps.context_from_server, caps.context_length, caps.notes))
    checks.append(_prefix_caching_check(caps.metrics))
    checks.extend(_completion_checks(client, caps.model))
    checks.append(cache_salt_check(client))  # team mode: is the prefix cache private?
    tokenize = client.tokenize_path()
    checks.append(Check("tokenize endpoint", CheckStatus.OK if tokenize else CheckStatus.WARN,
                        tokenize or "none: counts use the built-in Llama 3 tokenizer",
                        "" if tokenize else "vLLM offers /tokenize; other servers may not"))
    health = client.health()
    checks.append(Check("health endpoint",
                        {True: CheckStatus.OK, False: CheckStatus.FAIL, None: CheckStatus.UNKNOWN}[health],
                        {True: "/health answers 200", False: "/health does not answer 200",
                         None: "this server has no /health"}[health],
                        "" if health else "vLLM serves /health; compose uses it to gate the app"))
    return checks


def engine_checks(engines: Sequence[Engine]) -> list[Check]:
    """One check per engine behind a router (none for a single server): a down engine fails,
    since its share of the requests waits for the router's retries."""
    if not engines:
        return []
    up = sum(1 for e in engines if e.up)
    checks = [Check("engines", CheckStatus.OK if up == len(engines) else CheckStatus.FAIL,
                    f"{up} of {len(engines)} engines behind the router serve",
                    "" if up == len(engines) else "start the engines that are down (on their Spark: "
                    "`docker compose -f deploy/cluster/compose.engine.yaml up -d`), or check the link")]
    for engine in engines:
        checks.append(Check(f"engine {engine.url}", CheckStatus.OK if engine.up else CheckStatus.FAIL,
                            engine.summary(), "" if engine.up else "read that engine's logs "
                            "(`docker compose logs vllm` on its Spark)", engine=engine.as_dict()))
    return checks


def _context_check(from_server: bool, context: int, notes: tuple[str, ...]) -> Check:
    if from_server:
        return Check("context length", CheckStatus.OK, f"{context:,} tokens (from the server)")
    said = " ".join(notes) or "the server does not report it"
    return Check("context length", CheckStatus.WARN,
                 f"{said}; budgeting with {context:,} from configuration" if not notes else said,
                 "set SPARKDOCS_CONTEXT_LENGTH to the server's real context")


def _prefix_caching_check(metrics: object) -> Check:
    enabled = getattr(metrics, "prefix_caching_enabled", None)
    if metrics is None or enabled is None:
        return Check("prefix caching", CheckStatus.UNKNOWN,
                     "the server publishes no vLLM metrics, so it cannot be checked",
                     "on vLLM, pass --enable-prefix-caching (the default since 0.8)")
    if enabled:
        rate = getattr(metrics, "prefix_hit_rate", None)
        return Check("prefix caching", CheckStatus.OK,
                     "on" + (f"; hit rate {rate:.0%}" if rate is not None else ""))
    return Check("prefix caching", CheckStatus.FAIL, "off: every question re-reads the whole document",
                 "add --enable-prefix-caching to `vllm serve`")


def _completion_checks(client: ModelClient, model: str) -> list[Check]:
    """One tiny answer, read to its end: it must finish, within max_tokens and in time."""
    try:
        probe = client.stream(
            [ChatMessage("user", "Say OK.")], max_tokens=1, model=model,
            deadline_s=min(PROBE_DEADLINE_S, client.settings.answer_deadline_s),
            deadline_fix="a one-token answer takes seconds on a healthy server: it is stuck, "
                         "overloaded or ignoring max_tokens").run()
    except SparkdocsError as exc:
        return [Check("completion", CheckStatus.FAIL, str(exc), "see the message")]
    if probe.end is not StreamEnd.FINISHED:
        fix = {StreamEnd.TOO_LONG: "the server must honour max_tokens; check its version and flags",
               StreamEnd.INVALID: "point SPARKDOCS_BASE_URL at an OpenAI-compatible server (…/v1)",
               }.get(probe.end, "check the server's logs (`docker compose logs vllm`)")
        detail = probe.error or f"the answer did not finish ({probe.end.value})"
        if probe.end is StreamEnd.TOO_LONG:
            detail += f" (a probe with max_tokens=1 may take {chunk_bound(1)} chunks)"
        return [Check("completion", CheckStatus.FAIL, detail, fix)]
    checks = [Check("completion", CheckStatus.OK,
                    f"a one-token answer finished ({probe.finish_reason}) in {probe.total_s:.2f} s")]
    if probe.cached_tokens is not None:
        checks.append(Check("cached-token reporting", CheckStatus.OK,
                            "the server reports cached prompt tokens"))
    else:
        checks.append(Check("cached-token reporting", CheckStatus.WARN,
                            "the server does not report cached prompt tokens; answers show "
                            "'not reported by this server'",
                            "on vLLM, add --enable-prompt-tokens-details"))
    return checks
