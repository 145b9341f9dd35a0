"""`sparkdocs count` budgeted as the app budgets: against the served model's context and in its
tokens when a model service is configured (SPARKDOCS_BASE_URL or --base-url) and answers, so
the CLI and the Ask page agree on what fits. Otherwise the report says it counts with Llama 3's
tokenizer, and why. Counting a file never waits on a server nobody configured."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from .documents import Document
from .literal import redact_url
from .tokens import TokenCounting
from .workspace import Workspace

log = logging.getLogger(__name__)


def count_as_served(workspace: Workspace, document: Document, *,
                    keep: Sequence[int] | None = None, context: int | None = None
                    ) -> dict[str, Any]:
    """`Workspace.count`'s report with the budget the app shows and `counted_with`, one line
    saying whose tokenizer and which context it used. `context` (the --context-length
    option) wins over the served one."""
    settings = workspace.settings
    if "base_url" not in settings.fields_set:
        report = workspace.count(document, keep=keep, context=context)
        report["counted_with"] = (
            "Counted with Llama 3's tokenizer against a context of "
            f"{report['budget']['context']:,}: no model service is configured "
            "(SPARKDOCS_BASE_URL or --base-url), so a served model that is not Llama 3 may "
            "count more; the app counts with the served model's tokenizer.")
        return report
    from .client import ModelClient  # the model client's libraries only for a server
    from .qa import QuestionAnswering
    from .served_tokens import effective_context

    client = ModelClient(settings)
    caps = client.capabilities()
    where = redact_url(settings.base_url)
    if not caps.reachable:
        report = workspace.count(document, keep=keep, context=context)
        report["counted_with"] = (
            "Counted with Llama 3's tokenizer against a context of "
            f"{report['budget']['context']:,}: the model service at {where} did not answer "
            f"({caps.error or 'unreachable'}), so its own tokenizer and context are unknown.")
        return report
    qa = QuestionAnswering(workspace, client)
    ratio = qa.served_count(document, keep).ratio
    served_context = context or caps.context_length
    answer = settings.answer_tokens
    report = workspace.count(document, keep=keep,
                             context=effective_context(served_context, answer, ratio))
    budget = workspace.budget(document, keep=keep, context=served_context).scaled(ratio)
    report["budget"] = budget.as_dict()
    model = caps.model or "the served model"
    report["counted_with"] = (
        f"Counted with the server's tokenizer ({model} at {where} is not Llama 3: "
        f"{ratio:.2f} of its tokens per Llama 3 token; the parts above are Llama 3 tokens)"
        if budget.counting is TokenCounting.SERVER else
        f"Counted with Llama 3's tokenizer, as {model} at {where} counts")
    report["counted_with"] += f", against its context of {served_context:,}, as the app does."
    return report
