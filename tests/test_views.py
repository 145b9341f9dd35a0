"""What the pages show, without Streamlit: budget segments, stats lines, the export."""

from __future__ import annotations

from sparkdocs.client import Capabilities, ServerMetrics
from sparkdocs.store import Session, Turn, TurnStatus
from sparkdocs.tokens import Budget
from sparkdocs.views import (
    budget_segments,
    budget_summary,
    kv_fit,
    session_markdown,
    stats_line,
    turn_status,
)


def test_budget_segments_add_up_to_the_context():
    budget = Budget(context=65_536, answer_reserve=1024, prompt_overhead=400, used=50_000)
    segments = budget_segments(budget)
    assert [s.label for s in segments] == ["document", "prompt overhead", "answer reserve", "free"]
    assert sum(s.tokens for s in segments) == 65_536
    over = Budget(context=1000, answer_reserve=100, prompt_overhead=100, used=1200)
    assert budget_segments(over)[-1].label == "over budget" and budget_segments(over)[-1].tokens == 400
    assert "Over budget by 400 tokens" in budget_summary(over)


def test_stats_line_says_what_the_server_did_not_report():
    line = stats_line(Turn("q", "a", ttft_s=0.25, decode_tokens_per_s=3.1, finish_reason="length",
                           status=TurnStatus.CUT))
    assert "first token 0.25 s" in line and "cached tokens not reported by this server" in line
    assert "cut off" in line
    vllm = stats_line(Turn("q", "a", prompt_tokens=5000, cached_tokens=4992, finish_reason="stop"))
    assert "prompt 5,000 tokens" in vllm and "cached 4,992" in vllm


def test_export_holds_questions_answers_stats_and_interruptions():
    session = Session("s1", "abc123def456", "contract.pdf", "contract.pdf", turns=(
        Turn("Who pays?", "The customer.", ttft_s=1.0, finish_reason="stop"),
        Turn("And when?", "Within 45", status=TurnStatus.STOPPED, error="stopped by the user"),
        Turn("And where?", "", status=TurnStatus.FAILED, error="HTTP 503: engine draining")))
    text = session_markdown(session)
    assert text.startswith("# contract.pdf") and "## Q1. Who pays?" in text and "The customer." in text
    assert "## Q2. And when?" in text and "Stopped by the user. The partial answer is kept." in text
    assert "## Q3. And where?" in text and "Failed: HTTP 503: engine draining." in text
    assert turn_status(session.turns[0]) is None


def test_kv_fit_from_vllm_metrics():
    caps = Capabilities("u", True, metrics=ServerMetrics(block_size=16, num_gpu_blocks=12_000))
    assert "4 documents of 48,000 tokens" in kv_fit(caps, 48_000)
    assert kv_fit(Capabilities("u", True), 1000) is None


def test_parts_are_numbered_from_one_and_auto_fit_says_what_it_does():
    from builders import make_contract_pdf, make_many_file_codebase

    from sparkdocs.ingest import ingest_bytes
    from sparkdocs.tokens import count_document
    from sparkdocs.views import fit_button_label, kept_summary, section_rows

    pdf = count_document(ingest_bytes("c.pdf", make_contract_pdf(5)))
    rows = section_rows(pdf, (0, 1))
    assert [r["#"] for r in rows] == [1, 2, 3, 4, 5] and rows[0]["part"] == "page 1"
    assert [r["keep"] for r in rows] == [True, True, False, False, False]
    assert "keep pages from the start" in fit_button_label(pdf)
    assert kept_summary(pdf, (0, 1)).startswith("Keeping pages 1-2 of 5; 3 left out (3-5).")
    code = count_document(ingest_bytes("r.zip", make_many_file_codebase(5)))
    assert "largest files" in fit_button_label(code)
    assert min(r["#"] for r in section_rows(code)) == 1


def test_a_session_reads_as_its_first_question_date_and_count():
    from sparkdocs.views import session_label, session_title

    empty = Session("abc123", "k", "contract.pdf", "contract.pdf", created_at=1.7e9, updated_at=1.7e9)
    assert session_title(empty) == "no questions yet"
    asked = empty.with_turn(Turn("What is the   payment term?", "45 days.", asked_at=1.7e9))
    label = session_label(asked)
    assert label.startswith("What is the payment term? · 20") and label.endswith("1 question(s)")
    assert "abc123" not in label
    renamed = Session("abc123", "k", "contract.pdf", "Payment terms", turns=asked.turns)
    assert session_title(renamed) == "Payment terms"
    assert session_title(empty.with_turn(Turn("x" * 200, ""))).endswith("…")


def test_skipped_file_names_render_literally_one_item_each_with_no_link_or_markup():
    """A file name in an archive is anyone's text: the skipped list must show it as written
    (no link to click, no bold, no HTML), one list item per file. markdown-it, a CommonMark
    renderer with raw HTML on, is the judge."""
    from markdown_it import MarkdownIt

    from sparkdocs.views import skipped_markdown

    names = ["x`[log in again](http://evil.example/)`.bin: binary",
             "**BIG**.dat: binary", "<img src=http://evil.example/p.png>.so: binary",
             "![p](http://evil.example/p.png).bin: binary", "``.bin: binary",
             "a\n- injected item\n# heading.bin: binary", "plain/ok.bin: binary"]
    tokens = MarkdownIt("commonmark", {"html": True}).parse(skipped_markdown(names))
    items = [t for t in tokens if t.type == "list_item_open"]
    assert len(items) == len(names)
    inline = [t for t in tokens if t.type == "inline"]
    kinds = {child.type for t in inline for child in t.children or []}
    assert kinds <= {"code_inline", "text"}, kinds
    shown = ["".join(child.content for child in t.children or []) for t in inline]
    for name, text in zip(names, shown, strict=True):
        assert text.replace("\ufffd", "\n") == name or text == name.replace("\n", " "), (name, text)


def test_a_page_lists_at_most_500_skipped_files_and_says_how_many_more():
    from sparkdocs.safe_text import safe_markdown
    from sparkdocs.views import skipped_markdown

    names = [f"<b{i}>x`[a](http://e/{i})`.png: binary" for i in range(10_000)]
    text = safe_markdown(skipped_markdown(names))
    assert text.count("\n- ") == 500  # 499 more names and the "more" line after the first
    assert "… and 9,500 more (`sparkdocs count --json` lists every one)" in text
