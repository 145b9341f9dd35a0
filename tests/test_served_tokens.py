"""A served model that is not Llama 3 is budgeted in its own tokens; a Llama 3 server keeps the
exact local count with no request per question."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from builders import make_contract_pdf

from sparkdocs.client import ModelClient
from sparkdocs.config import Settings
from sparkdocs.ingest import Upload
from sparkdocs.qa import QuestionAnswering
from sparkdocs.tokens import TokenCounting
from sparkdocs.views import budget_summary
from sparkdocs.workspace import Workspace

pytestmark = pytest.mark.integration


def _qa(server, tmp_path: Path, *, answer_tokens: int = 500) -> QuestionAnswering:
    settings = Settings(base_url=server.base_url, cache_dir=tmp_path / "cache",  # type: ignore[call-arg]
                        answer_tokens=answer_tokens, max_retries=0)
    workspace = Workspace(settings)
    return QuestionAnswering(workspace, ModelClient(settings))


def _contract(qa: QuestionAnswering, pages: int):
    return qa.workspace.load_uploads([Upload("c.pdf", make_contract_pdf(pages))],
                                     qa.workspace.ingest_options())


def test_another_tokenizer_is_budgeted_in_its_own_tokens_and_the_sent_prompt_fits(tmp_path):
    from fakeserver import FakeServer

    with FakeServer() as server:
        server.behaviour.max_model_len = 3000
        server.behaviour.tokenize_scale = 1.2  # 20% more tokens than Llama 3, as the demo model
        qa = _qa(server, tmp_path)
        document = _contract(qa, 30)
        llama = qa.workspace.budget(document, context=3000)
        served = qa.budget(document)
        assert served.counting is TokenCounting.SERVER
        assert served.used == pytest.approx(llama.used * 1.2, abs=2)
        assert "Counted with the server's tokenizer" in budget_summary(served)
        keep = qa.fit(document)
        llama_keep = qa.workspace.fit(document, context=3000)
        assert keep is not None and llama_keep is not None and len(keep) < len(llama_keep)
        assert qa.budget(document, keep).fits
        session = qa.workspace.store.new_session(document, kept_sections=keep)
        pending = qa.ask(document, session, "Who pays?")
        pending.stream.run()
        sent = server.behaviour.requests[-1]
    text = "".join(m["content"] for m in sent["messages"])
    served_prompt = math.ceil(pending.prompt.prompt_tokens * 1.2)
    assert served_prompt + sent["max_tokens"] <= 3000, (served_prompt, len(text))


def test_a_llama3_server_keeps_the_local_count_without_requests_per_question(tmp_path):
    from fakeserver import FakeServer

    with FakeServer() as server:
        qa = _qa(server, tmp_path)
        document = _contract(qa, 3)
        budget = qa.budget(document)
        assert budget.counting is TokenCounting.LLAMA3
        assert budget == qa.workspace.budget(document, context=65_536)
        assert "server's tokenizer" not in budget_summary(budget)
        session = qa.workspace.store.new_session(document)
        for question in ("Who pays?", "When?", "Where?"):
            qa.ask(document, session, question).stream.run()
        assert server.behaviour.tokenize_requests == 1  # the one probe, never again
