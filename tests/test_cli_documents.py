"""Several documents from the command line (issue #19): `--documents`, `--add`, a follow-up
that reopens every document from the store, citations that name the document. Judged by the
requests the server received, the SQLite rows and the CLI's JSON."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from test_cli import run

pytestmark = pytest.mark.integration

OLD = ("The supplier shall deliver the goods within thirty days of each written order.\n\n"
       "Either party may end this agreement with ninety days written notice to the other.")
NEW = ("The supplier shall deliver the goods within fourteen days of each written order.\n\n"
       "Either party may end this agreement with sixty days written notice to the other.")


def _contracts(tmp_path: Path) -> tuple[Path, Path, Path]:
    (tmp_path / "2024").mkdir()
    (tmp_path / "2025").mkdir()
    old, new = tmp_path / "2024" / "contract.txt", tmp_path / "2025" / "contract.txt"
    old.write_text(OLD)
    new.write_text(NEW)
    third = tmp_path / "annex.txt"
    third.write_text("Annex A lists the goods covered: pumps, valves and the spare parts for them.")
    return old, new, third


def _user_text(request: dict) -> str:
    return request["messages"][1]["content"]


def test_ask_documents_then_add_then_reopen_from_the_store(tmp_path: Path):
    from fakeserver import FakeServer

    old, new, third = _contracts(tmp_path)
    cache = tmp_path / "cache"
    with FakeServer() as server:
        server.behaviour.answer = (
            'The new one says "The supplier shall deliver the goods within fourteen days of '
            'each written order" (2025/contract.txt, section "lines 1-3").')
        env = {"SPARKDOCS_BASE_URL": server.base_url}
        first = json.loads(run("ask", str(old), str(new), "What changed?", "--documents",
                               "--json", cache=cache, **env).stdout)
        blocks = _user_text(server.behaviour.requests[-1]).split("</document>\n\n")
        assert [b.split("\n")[1] for b in blocks[:2]] == ["<name>2024/contract.txt</name>",
                                                          "<name>2025/contract.txt</name>"]
        assert [d["name"] for d in first["documents"]] == ["2024/contract.txt",
                                                            "2025/contract.txt"]
        assert all(d["tokens"] > 0 for d in first["documents"])
        (citation,) = first["citations"]
        assert citation["document"] == "2025/contract.txt"
        first_prompt = _user_text(server.behaviour.requests[-1])

        added = json.loads(run("ask", "And the annex?", "--follow-up-of", first["session"],
                               "--add", str(third), "--json", cache=cache, **env).stdout)
        second_prompt = _user_text(server.behaviour.requests[-1])
        # the earlier documents' blocks are the start of the new prompt, byte for byte
        earlier = first_prompt[:first_prompt.rindex("</document>\n\n") + len("</document>\n\n")]
        assert second_prompt.startswith(earlier)
        assert "<name>annex.txt</name>" in second_prompt[len(earlier):]
        assert [d["name"] for d in added["documents"]] == ["2024/contract.txt",
                                                            "2025/contract.txt", "annex.txt"]

        again = run("ask", str(third), "Once more?", "--follow-up-of", first["session"],
                    "--json", cache=cache, check=False, **env)
        assert again.returncode == 2 and "missing from the paths" in again.stderr

        twice = run("ask", "Twice?", "--follow-up-of", first["session"], "--add", str(new),
                    "--json", cache=cache, **env)
        assert "already in this session" in twice.stderr
        assert _user_text(server.behaviour.requests[-1]).count("<document>") == 3

    with sqlite3.connect(cache / "sparkdocs.sqlite3") as db:
        rows = db.execute("SELECT position, name FROM session_documents WHERE session_id = ? "
                          "ORDER BY position", (first["session"],)).fetchall()
        turns = db.execute("SELECT COUNT(*) FROM turns WHERE session_id = ?",
                           (first["session"],)).fetchone()[0]
    assert rows == [(0, "2024/contract.txt"), (1, "2025/contract.txt"), (2, "annex.txt")]
    assert turns == 3


def test_count_and_prompt_with_documents(tmp_path: Path):
    old, new, third = _contracts(tmp_path)
    cache = tmp_path / "cache"
    report = json.loads(run("count", str(old), str(third), "--documents", "--json",
                            cache=cache).stdout)
    assert [d["name"] for d in report["documents"]] == ["contract.txt", "annex.txt"]
    assert sum(d["tokens"] for d in report["documents"]) == report["tokens"]
    built = json.loads(run("prompt", str(old), str(old), str(third), "--documents", "-q", "Q?",
                           "--json", cache=cache).stdout)
    assert built["messages"][1]["content"].count("<document>") == 2
    plain = json.loads(run("prompt", str(old), str(third), "-q", "Q?", "--json",
                           cache=cache).stdout)
    assert plain["messages"][1]["content"].count("<document>") == 1


def test_a_session_whose_document_left_the_store_opens_with_the_others(tmp_path: Path):
    from fakeserver import FakeServer

    old, new, third = _contracts(tmp_path)
    cache = tmp_path / "cache"
    with FakeServer() as server:
        env = {"SPARKDOCS_BASE_URL": server.base_url}
        first = json.loads(run("ask", str(old), str(third), "Q?", "--documents", "--json",
                               cache=cache, **env).stdout)
        with sqlite3.connect(cache / "sparkdocs.sqlite3") as db:
            (key,) = db.execute("SELECT document_key FROM session_documents WHERE "
                                "name = 'contract.txt'").fetchone()
            db.execute("DELETE FROM document_owners WHERE key = ?", (key,))
            db.execute("DELETE FROM documents WHERE key = ?", (key,))
        result = run("ask", "Still there?", "--follow-up-of", first["session"], "--json",
                     cache=cache, **env)
        assert "contract.txt is no longer in the store" in result.stderr
        prompt = _user_text(server.behaviour.requests[-1])
        assert prompt.count("<document>") == 1 and "<name>annex.txt</name>" in prompt
        back = run("ask", "Both again?", "--follow-up-of", first["session"], "--add", str(old),
                   "--json", cache=cache, **env)
        assert "contract.txt is back" in back.stderr
        prompt = _user_text(server.behaviour.requests[-1])
        assert prompt.index("<name>contract.txt</name>") < prompt.index("<name>annex.txt</name>")


def test_two_versions_are_sent_with_what_changed(tmp_path: Path):
    from fakeserver import FakeServer

    clauses = [f"Clause {n}. The parties agree to term number {n} of this supply agreement."
               for n in range(1, 13)]
    old, new = tmp_path / "v1.txt", tmp_path / "v2.txt"
    old.write_text("\n\n".join(clauses))
    changed = list(clauses)
    changed[6] = "Clause 7. The parties agree to pay within 45 days of each invoice."
    new.write_text("\n\n".join(changed))
    with FakeServer() as server:
        result = run("ask", str(old), str(new), "What changed?", "--documents", "--json",
                     cache=tmp_path / "cache", SPARKDOCS_BASE_URL=server.base_url)
        user = _user_text(server.behaviour.requests[-1])
    report = json.loads(result.stdout)
    assert "versions of one" in result.stderr
    assert report["changes"] and "from v1.txt to v2.txt" in report["changes"]
    blocks = user.split("</document>\n\n")
    assert len(blocks) == 3 and blocks[2].startswith("<changes>\n")
    assert "45 days" in blocks[2] and "term number 7" in blocks[2]


def test_adding_a_document_that_does_not_fit_says_what_a_follow_up_can_do(tmp_path: Path):
    from fakeserver import FakeServer

    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    small.write_text("A short note about the deposit.")
    large.write_text("\n\n".join(f"Clause {n}. The supplier shall deliver item {n} on time."
                                 for n in range(400)))
    cache = tmp_path / "cache"
    with FakeServer() as server:
        server.behaviour.max_model_len = 2048
        env = {"SPARKDOCS_BASE_URL": server.base_url, "SPARKDOCS_ANSWER_TOKENS": "200"}
        first = json.loads(run("ask", str(small), "Deposit?", "--json", cache=cache,
                               **env).stdout)
        added = run("ask", "And this?", "--follow-up-of", first["session"], "--add", str(large),
                    cache=cache, check=False, **env)
        empty = run("ask", "And this?", "--follow-up-of", first["session"], "--add", "",
                    cache=cache, check=False, **env)
    assert added.returncode == 2 and "--whole" in added.stderr
    assert "with large.txt added" in added.stderr and "--pages" not in added.stderr
    assert empty.returncode == 2 and "--add needs a path" in empty.stderr
