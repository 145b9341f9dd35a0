"""What the Ask page and the Library say, judged against real ingest output and a real store:
an encrypted PDF's message names the app's field (not the CLI flag), the follow-up choice
survives a reload, empty sessions are not listed."""

from __future__ import annotations

import pytest
from builders import make_pdf

from sparkdocs.errors import EncryptedDocumentError
from sparkdocs.ingest import Upload
from sparkdocs.notices import follow_up_default, upload_problem
from sparkdocs.store import Turn
from sparkdocs.views import library_entries


def test_an_encrypted_pdf_says_where_to_type_the_password_in_the_app(workspace):
    data = make_pdf(["Secret terms."], password="s3cret")
    with pytest.raises(EncryptedDocumentError) as caught:
        workspace.load_uploads([Upload("locked.pdf", data)], workspace.ingest_options())
    text = upload_problem(caught.value, names=["locked.pdf"], password_given=False)
    assert text.startswith("locked.pdf is encrypted") and "PDF password" in text
    assert "--password" not in text
    with pytest.raises(EncryptedDocumentError) as wrong:
        workspace.load_uploads([Upload("locked.pdf", data)],
                               workspace.ingest_options(password="nope"))
    assert "does not open it" in upload_problem(wrong.value, names=["locked.pdf"],
                                                password_given=True)


def _text(workspace, name: str, text: str):
    return workspace.load_uploads([Upload(name, text.encode())], workspace.ingest_options())


def test_the_follow_up_choice_comes_from_the_address_then_the_last_question(workspace):
    store = workspace.store
    session = store.new_session(_text(workspace, "n.md", "# N\nSome text."))
    assert follow_up_default(session) is False
    store.append_turn(session.id, Turn("Q?", "A.", follow_up=True))
    assert follow_up_default(store.get_session(session.id)) is True
    assert follow_up_default(session, "0") is False and follow_up_default(session, "1") is True


def test_the_library_lists_no_empty_session_and_no_document_only_counted(workspace):
    store = workspace.store
    asked = _text(workspace, "same.md", "# One\nThe first text.")
    variant = _text(workspace, "same.md", "# One\nThe first text, opened another way.")
    counted = _text(workspace, "counted.md", "# Counted\nOnly counted.")
    first = store.new_session(asked)
    store.append_turn(first.id, Turn("Q?", "A."))
    store.new_session(asked)  # opened again, nothing asked
    second = store.new_session(variant)
    store.append_turn(second.id, Turn("Q2?", "A2."))
    entries, counted_only = library_entries(store.list_documents(), store.list_sessions())
    assert [(e.name, len(e.variants), len(e.sessions)) for e in entries] == [("same.md", 2, 2)]
    assert all(s.turns for e in entries for s in e.sessions)
    assert [i.key for i in counted_only] == [counted.content_hash]


def test_the_heading_says_whose_tokens_it_counts_when_the_served_model_is_not_llama3(workspace):
    from sparkdocs.notices import document_heading

    document = workspace.load_uploads([Upload("note.md", b"# Note\nThe price is 12 euros.")],
                                      workspace.ingest_options())
    assert document_heading(document, llama3_served=True).endswith(
        f"· {document.section_tokens:,} tokens")
    assert f"{document.section_tokens:,} Llama 3 tokens" in document_heading(
        document, llama3_served=False)
