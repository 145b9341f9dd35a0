"""Streamlit AppTest for every page: upload, budget, ask, follow-up, export, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from builders import make_contract_pdf, synthetic_document_text
from streamlit.testing.v1 import AppTest

from sparkdocs.config import Settings
from sparkdocs.ingest import Upload
from sparkdocs.store import Turn
from sparkdocs.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")


@pytest.fixture
def app_env(monkeypatch, tmp_path):
    def configure(base_url: str = "http://127.0.0.1:9/v1", context: int = 6000) -> Settings:
        monkeypatch.setenv("SPARKDOCS_BASE_URL", base_url)
        monkeypatch.setenv("SPARKDOCS_CACHE_DIR", str(tmp_path / "cache"))
        monkeypatch.setenv("SPARKDOCS_CONTEXT_LENGTH", str(context))
        monkeypatch.setenv("SPARKDOCS_ANSWER_TOKENS", "48")
        monkeypatch.setenv("SPARKDOCS_MAX_RETRIES", "0")
        st.cache_resource.clear()  # services are per process: rebuild them from this env
        # AppTest listens nowhere; say loopback, or single-user mode refuses an open address
        monkeypatch.setattr(st, "get_option", lambda key, real=st.get_option: (
            "127.0.0.1" if key == "server.address" else real(key)))
        return Settings()
    yield configure
    st.cache_resource.clear()


def upload(at: AppTest, name: str, data: bytes, mime: str = "application/pdf") -> AppTest:
    return at.sidebar.file_uploader[0].set_value((name, data, mime)).run()


@pytest.mark.integration
def test_ask_page_opens_with_guidance(app_env):
    app_env()
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert "Upload a contract" in at.info[0].value


@pytest.mark.integration
def test_upload_shows_tokens_budget_and_breakdown(app_env):
    app_env()
    at = upload(AppTest.from_file(APP, default_timeout=60).run(), "c.pdf", make_contract_pdf(3))
    assert not at.exception
    assert "c.pdf · pdf ·" in at.subheader[0].value and "tokens" in at.subheader[0].value
    assert any("document tokens of" in c.value and "free" in c.value for c in at.caption)
    assert at.query_params["session"]


@pytest.mark.integration
def test_over_budget_is_stated_and_parts_can_be_chosen(app_env):
    app_env(context=2048)
    text = synthetic_document_text(3000).encode()
    at = upload(AppTest.from_file(APP, default_timeout=60).run(), "long.md", text, "text/markdown")
    assert not at.exception
    assert any("left out" in i.value for i in at.info)  # fitted automatically, and said


@pytest.mark.integration
def test_over_budget_pages_are_typed_as_a_range_and_the_sent_prompt_holds_them(app_env):
    """A PDF over budget: auto-fit keeps pages from the start and says which (1-based); typing
    "2-5" in "Pages to keep" makes the next question carry exactly pages 2-5."""
    from fakeserver import FakeServer

    with FakeServer() as server:
        server.behaviour.max_model_len = 2048
        app_env(base_url=server.base_url, context=2048)
        at = upload(AppTest.from_file(APP, default_timeout=60).run(), "c.pdf", make_contract_pdf(40))
        assert not at.exception
        info = " ".join(i.value for i in at.info)
        assert "only pages 1-" in info and "of 40" in info, info  # asked when every page is off
        assert any(b.label.startswith("Fit automatically: keep pages from the start") for b in at.button)
        box = next(t for t in at.text_input if t.label.startswith("Pages to keep"))
        assert box.value.startswith("1-")
        box.set_value("2-5").run()
        assert not at.exception
        assert any("Keeping pages 2-5 of 40; 36 left out (1,6-40)" in i.value for i in at.info)
        at.chat_input[0].set_value("Who pays?").run()
        assert not at.exception
        sent = server.behaviour.requests[-1]["messages"][1]["content"]
    assert all(f"Clause {n}." in sent for n in (2, 3, 4, 5))
    assert "Clause 1." not in sent and "Clause 6." not in sent


@pytest.mark.integration
def test_bad_upload_is_a_readable_error_and_the_app_goes_on(app_env):
    app_env()
    at = upload(AppTest.from_file(APP, default_timeout=60).run(), "fake.docx", b"not a zip",
                "application/octet-stream")
    assert not at.exception
    assert any("not a valid .docx" in e.value for e in at.error)


@pytest.mark.integration
def test_service_down_is_a_readable_error_and_the_session_survives(app_env):
    app_env(base_url="http://127.0.0.1:9/v1")
    at = upload(AppTest.from_file(APP, default_timeout=60).run(), "c.pdf", make_contract_pdf(2))
    at.chat_input[0].set_value("What is the term?").run()
    assert not at.exception
    assert any("docker compose up -d vllm" in e.value for e in at.error)
    assert "c.pdf" in at.subheader[0].value  # still on the document


@pytest.mark.e2e
def test_ask_and_follow_up_stream_answers_with_stats(app_env, real_server):
    app_env(base_url=real_server.base_url)
    at = upload(AppTest.from_file(APP, default_timeout=120).run(), "c.pdf", make_contract_pdf(3))
    at.chat_input[0].set_value("What is the payment term?").run()
    assert not at.exception
    assert any("first token" in c.value for c in at.caption)
    at.toggle[0].set_value(True).run()
    at.chat_input[0].set_value("And the liability cap?").run()
    assert not at.exception
    stats = [c.value for c in at.caption if "first token" in c.value]
    assert len(stats) == 2 and "follow-up" in stats[-1]
    assert len([m for m in at.chat_message if m.name == "assistant"]) == 2


@pytest.mark.integration
def test_export_and_reload_find_the_session(app_env):
    settings = app_env()
    workspace = Workspace(settings)
    document = workspace.load_uploads([Upload("a.txt", b"Alpha beta gamma.")], workspace.ingest_options())
    session = workspace.store.new_session(document)
    workspace.store.append_turn(session.id, Turn("Q one?", "A one.", ttft_s=0.5))
    workspace.store.close()
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["session"] = session.id
    at.run()
    assert not at.exception
    assert [m.markdown[0].value for m in at.chat_message] == ["Q one?", "A one."]
    exported = at.get("download_button")
    assert exported, "export button missing"


@pytest.mark.integration
def test_library_page_lists_renames_and_deletes(app_env):
    settings = app_env()
    workspace = Workspace(settings)
    document = workspace.load_uploads([Upload("a.txt", b"Alpha.")], workspace.ingest_options())
    session = workspace.store.new_session(document)
    workspace.store.append_turn(session.id, Turn("What is it?", "Alpha."))
    workspace.store.close()
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/library.py").run()
    assert not at.exception
    assert "a.txt" in at.expander[0].label and "1 session" in at.expander[0].label
    session = Workspace(settings).store.list_sessions()[0]
    at.button(key=f"open-{session.id}").click().run()
    assert not at.exception
    assert at.query_params["session"] == session.id  # a reload after "Open" finds it again
    assert "a.txt" in at.subheader[0].value
    at.switch_page("pages/library.py").run()
    at.text_input(key=f"name-{document.content_hash}").set_value("Renamed doc").run()
    at.button(key=f"rename-{document.content_hash}").click().run()
    assert "Renamed doc" in at.expander[0].label
    at.button(key=f"del-{document.content_hash}").click().run()
    assert "Renamed doc" in at.expander[0].label  # one click only asks
    assert any("cannot be undone" in w.value for w in at.warning)
    at.button(key=f"yes-del-{document.content_hash}").click().run()
    assert "No documents with sessions" in at.info[0].value


@pytest.mark.integration
def test_library_groups_variants_hides_counted_documents_and_labels_sessions(app_env):
    """One entry for a codebase opened with two include patterns; a document only counted is
    not listed as if it had sessions; a session reads as its first question, date and count;
    a session delete asks first; reopening a document reuses its empty session."""
    from builders import make_zip

    settings = app_env()
    workspace = Workspace(settings)
    archive = make_zip({"r/src/a.py": b"a = 1\n", "r/docs/b.md": b"# b\n"})
    whole = workspace.load_uploads([Upload("r.zip", archive)], workspace.ingest_options())
    part = workspace.load_uploads([Upload("r.zip", archive)], workspace.ingest_options(include=["src/"]))
    assert whole.content_hash != part.content_hash
    asked = workspace.open_session(whole)
    workspace.store.append_turn(asked.id, Turn("Where is a defined?", "In src/a.py.", ttft_s=0.2))
    empty = workspace.open_session(part)
    assert workspace.open_session(part).id == empty.id  # no second empty session
    workspace.store.append_turn(empty.id, Turn("And in src?", "Only a.py."))
    blank = workspace.open_session(part)  # not listed: an empty session is nothing to go back to
    workspace.load_uploads([Upload("counted.txt", b"Only counted.")], workspace.ingest_options())
    workspace.store.close()
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/library.py").run()
    assert not at.exception
    labels = [e.label for e in at.expander]
    assert sum("r.zip" in label for label in labels) == 1, labels
    assert not any("counted.txt" in label for label in labels[:-1])
    assert "never asked about" in labels[-1]
    assert any("opened 2 ways" in c.value for c in at.caption)
    texts = [m.value for m in at.markdown]
    assert any("Where is a defined? · 20" in t and "1 question(s)" in t for t in texts), texts
    assert not any("no questions yet" in t for t in texts), texts
    at.button(key=f"dels-{asked.id}").click().run()
    assert len(Workspace(settings).store.list_sessions()) == 3
    at.button(key=f"yes-dels-{asked.id}").click().run()
    assert {s.id for s in Workspace(settings).store.list_sessions()} == {empty.id, blank.id}


@pytest.mark.integration
def test_server_page_reports_an_unreachable_service(app_env):
    app_env(base_url="http://127.0.0.1:9/v1")
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/server.py").run()
    assert not at.exception
    assert any("docker compose up -d vllm" in e.value for e in at.error)


@pytest.mark.integration
def test_server_page_with_vllm_metrics(app_env):
    from fakeserver import FakeServer

    with FakeServer() as server:
        app_env(base_url=server.base_url)
        at = AppTest.from_file(APP, default_timeout=60).run()
        at.switch_page("pages/server.py").run()
        assert not at.exception
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["Prefix-cache hit rate"] == "75%" and metrics["Context (tokens)"] == "65,536"


@pytest.mark.integration
def test_server_page_shows_a_model_name_with_backticks_as_written_not_as_a_link(app_env):
    """The model name is the server's text: one holding backticks broke out of its code span
    into a live link on the Server page. markdown-it (CommonMark) reads the page's Markdown."""
    from fakeserver import FakeServer
    from markdown_it import MarkdownIt

    name = "org/m`[log in again](https:evil.example)`"
    with FakeServer() as server:
        server.behaviour.model = name
        app_env(base_url=server.base_url)
        at = AppTest.from_file(APP, default_timeout=60).run()
        at.switch_page("pages/server.py").run()
        assert not at.exception
        shown = [m.value for m in at.markdown if "Model:" in m.value]
    assert shown, [m.value for m in at.markdown]
    tokens = [t for block in MarkdownIt("commonmark").parse(shown[0]) for t in block.children or []]
    assert not [t for t in tokens if t.type == "link_open"], shown[0]
    assert name in [t.content for t in tokens if t.type == "code_inline"], shown[0]

@pytest.mark.integration
def test_two_browser_sessions_do_not_see_each_other(app_env):
    app_env()
    first = upload(AppTest.from_file(APP, default_timeout=60).run(), "first.pdf", make_contract_pdf(2))
    second = upload(AppTest.from_file(APP, default_timeout=60).run(), "second.md",
                    b"# Second\nA different document.", "text/markdown")
    first.run()
    assert "first.pdf" in first.subheader[0].value and "second.md" in second.subheader[0].value
    assert first.query_params["session"] != second.query_params["session"]


@pytest.mark.integration
def test_codebase_upload_shows_files_and_tokens_per_directory(app_env):
    from builders import make_zip

    app_env()
    archive = make_zip({"r/src/a.py": b"a = 1\n", "r/src/b/c.py": b"c = 2\n", "r/docs/x.md": b"# x\n"})
    at = upload(AppTest.from_file(APP, default_timeout=60).run(), "r.zip", archive, "application/zip")
    assert not at.exception
    assert "r.zip · codebase ·" in at.subheader[0].value
    assert any("Tokens per directory" in c.value for c in at.caption)
    directories = at.dataframe[1].value  # [0] is the per-file editor
    assert set(directories["directory"]) == {".", "docs", "src", "src/b"}


@pytest.mark.integration
def test_the_demo_model_is_named_on_ask_and_its_log_on_the_server_page(app_env, monkeypatch, tmp_path):
    from fakeserver import FakeServer

    from sparkdocs.local_model import LOCAL_MODEL_ALIAS

    log = tmp_path / "local-model.log"
    log.write_text("".join(f"llama line {i}\n" for i in range(100)) + "ggml_abort: out of memory\n")
    monkeypatch.setenv("SPARKDOCS_LOCAL_MODEL_LOG", str(log))
    with FakeServer() as server:
        server.behaviour.model = LOCAL_MODEL_ALIAS
        app_env(base_url=server.base_url)
        at = AppTest.from_file(APP, default_timeout=60).run()
        assert not at.exception
        assert any("tiny demo model" in i.value and "poor" in i.value for i in at.info)
        at.switch_page("pages/server.py").run()
        assert not at.exception
        shown = at.code[0].value
    assert "ggml_abort: out of memory" in shown and "llama line 99" in shown
    assert "llama line 10\n" not in shown


@pytest.mark.integration
def test_a_llama_model_gets_no_demo_notice(app_env):
    from fakeserver import FakeServer

    with FakeServer() as server:
        app_env(base_url=server.base_url)
        at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception and not any("demo model" in i.value for i in at.info)
