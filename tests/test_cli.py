"""The CLI as a user runs it: a real subprocess, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from builders import make_contract_pdf, make_zip

pytestmark = pytest.mark.integration


def run(*args: str, cache: Path, check: bool = True, **env: str
        ) -> subprocess.CompletedProcess[str]:
    """The CLI as its own process, output to pipes (so never wrapped), nothing listening at
    the default service address unless `env` names one."""
    environment = {**os.environ, "SPARKDOCS_CACHE_DIR": str(cache),
                   "SPARKDOCS_BASE_URL": "http://127.0.0.1:9/v1", **env}
    result = subprocess.run([sys.executable, "-m", "sparkdocs", *args], capture_output=True,
                            text=True, env=environment, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_count_json_has_sections_budget_and_warnings(tmp_path: Path):
    pdf = tmp_path / "c.pdf"
    pdf.write_bytes(make_contract_pdf(3))
    report = json.loads(run("count", str(pdf), "--json", cache=tmp_path / "cache").stdout)
    assert report["kind"] == "pdf" and len(report["sections"]) == 3
    assert report["tokens"] == sum(s["tokens"] for s in report["sections"])
    assert report["budget"]["context"] == 65_536 and report["budget"]["fits"]
    assert set(report["budget"]) >= {"answer_reserve", "prompt_overhead", "available", "free"}


def test_count_codebase_with_include_and_directories(tmp_path: Path):
    archive = tmp_path / "repo.zip"
    archive.write_bytes(make_zip({"r/src/a.py": b"a = 1\n", "r/docs/b.md": b"# b\n"}))
    report = json.loads(run("count", str(archive), "--include", "src/", "--json",
                            cache=tmp_path / "cache").stdout)
    assert [s["title"] for s in report["sections"]] == ["files", "src/a.py"]
    assert set(report["directories"]) == {".", "src"}


def test_prompt_json_shape_and_many_paths_form_one_document(tmp_path: Path):
    (tmp_path / "a.txt").write_text("Alpha text.")
    (tmp_path / "b.md").write_text("# Beta\nbody")
    result = json.loads(run("prompt", str(tmp_path / "a.txt"), str(tmp_path / "b.md"), "-q",
                            "What is alpha?", "--json", cache=tmp_path / "cache").stdout)
    assert [m["role"] for m in result["messages"]] == ["system", "user"]
    user = result["messages"][1]["content"]
    assert user.index('<file path="a.txt">') < user.index('<file path="b.md">')
    assert user.endswith("Question: What is alpha?") and result["prompt_tokens"] > 100


def test_bad_input_is_one_clear_line_not_a_traceback(tmp_path: Path):
    bad = tmp_path / "fake.docx"
    bad.write_bytes(b"not a zip")
    result = run("count", str(bad), cache=tmp_path / "cache", check=False)
    assert result.returncode == 2
    assert "not a valid .docx" in result.stderr and "Traceback" not in result.stderr


def test_an_unknown_option_is_a_usage_message_and_exit_2_not_a_traceback(tmp_path: Path):
    result = run("count", "--bogus", "x.txt", cache=tmp_path / "cache", check=False)
    assert result.returncode == 2
    assert "No such option" in result.stderr and "--bogus" in result.stderr and "Traceback" not in result.stderr


# text from outside is printed as itself -------------------------------------------------------
def test_markup_in_file_names_and_headings_is_printed_literally(tmp_path: Path):
    doc = tmp_path / "notes [bold]b[red].md"  # a file name cannot hold the / of a closing tag
    doc.write_text("# Intro [/INST]\n\nSome text.\n\n# Colours [red]not red\n\nMore text.\n")
    result = run("count", str(doc), cache=tmp_path / "cache")
    assert "notes [bold]b[red].md" in result.stdout
    assert "Intro [/INST]" in result.stdout and "Colours [red]not red" in result.stdout


def test_markup_in_an_error_is_printed_literally_not_a_traceback(tmp_path: Path):
    bad = tmp_path / "[bold]contract[red].docx"
    bad.write_bytes(b"not a zip")
    result = run("count", str(bad), cache=tmp_path / "cache", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "[bold]contract[red].docx" in result.stderr and "error:" in result.stderr


def test_control_sequences_in_names_do_not_reach_the_terminal(tmp_path: Path):
    doc = tmp_path / "evil\x1b[2J\x1b]0;pwned\x07.md"
    doc.write_text("# Title \x1b[31mred\n\nBody.\n")
    result = run("count", str(doc), cache=tmp_path / "cache")
    assert "\x1b" not in result.stdout + result.stderr and "\x07" not in result.stdout
    assert "evil" in result.stdout


@pytest.mark.parametrize("args, env, named, fix", [
    (("count",), {"SPARKDOCS_CONTEXT_LENGTH": "abc"}, "SPARKDOCS_CONTEXT_LENGTH='abc'",
     "whole number of at least 512"),
    (("count", "--max-tokens", "0"), {}, "--max-tokens 0", "whole number of at least 1"),
    (("count", "--context-length", "100"), {}, "--context-length 100", "at least 512"),
    (("count",), {"SPARKDOCS_TEMPERATURE": "hot"}, "SPARKDOCS_TEMPERATURE='hot'", "a number"),
    (("summarize", "--out", "OUT", "--max-tokens", "0"), {}, "--max-tokens 0", "at least 1"),
    (("doctor",), {"SPARKDOCS_ANSWER_DEADLINE_S": "-1"}, "SPARKDOCS_ANSWER_DEADLINE_S='-1'",
     "above 0"),
])
def test_an_unusable_setting_is_one_line_naming_it_and_the_fix(tmp_path: Path, args, env, named, fix):
    doc = tmp_path / "a.txt"
    doc.write_text("Alpha.")
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    if argv[0] != "doctor":
        argv.insert(1, str(doc))
    result = run(*argv, cache=tmp_path / "cache", check=False, **env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "validation error" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and named in lines[0] and fix in lines[0], result.stderr


@pytest.mark.integration
def test_doctor_prints_server_text_literally_and_hides_credentials(tmp_path: Path):
    from fakeserver import FakeServer

    with FakeServer() as server:
        server.behaviour.model = "org/model[/x][bold]"
        url = server.base_url.replace("http://", "http://alice:s3cret@")
        result = run("doctor", "--base-url", url, "--model", "org/model[/x][bold]",
                          cache=tmp_path / "cache")
    assert "org/model[/x][bold] is served" in result.stdout and "Traceback" not in result.stderr
    assert "s3cret" not in result.stdout + result.stderr and "***@127.0.0.1" in result.stdout


@pytest.mark.integration
def test_doctor_against_a_models_list_fails_with_one_clear_finding(tmp_path: Path):
    from fakeserver import FakeServer

    with FakeServer() as server:
        server.behaviour.models_body = [{"id": "m"}]
        result = run("doctor", "--base-url", server.base_url, cache=tmp_path / "cache",
                          check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "/v1/models with a JSON list" in result.stdout


@pytest.mark.integration
def test_an_unreachable_server_with_credentials_in_its_url_is_reported_without_them(tmp_path: Path):
    doc = tmp_path / "a.txt"
    doc.write_text("Alpha.")
    result = run("summarize", str(doc), "--out", str(tmp_path / "out"), cache=tmp_path / "c",
                      check=False, SPARKDOCS_BASE_URL="http://alice:s3cret@127.0.0.1:9/v1")
    assert result.returncode == 2 and "s3cret" not in result.stderr and "***@127.0.0.1:9" in result.stderr


# commands that messages point to exist ---------------------------------------------------------
def test_every_command_a_message_names_exists():
    import re

    from sparkdocs.cli import app

    commands = set(app.commands)
    package = Path(__file__).resolve().parent.parent / "sparkdocs"
    named = {(path.name, name) for path in package.rglob("*.py")
             for name in re.findall(r"`sparkdocs ([a-z][a-z-]*)", path.read_text())}
    assert named and {name for _, name in named} <= commands, sorted(
        (f, n) for f, n in named if n not in commands)


def test_sessions_lists_what_follow_up_of_takes(tmp_path: Path):
    from sparkdocs.config import Settings
    from sparkdocs.ingest import ingest_bytes
    from sparkdocs.workspace import Workspace

    cache = tmp_path / "cache"
    store = Workspace(Settings(cache_dir=cache)).store
    session = store.new_session(ingest_bytes("contract [/x].txt", b"Alpha."))
    listed = json.loads(run("sessions", "--json", cache=cache).stdout)
    assert [s["id"] for s in listed] == [session.id] and listed[0]["document"] == "contract [/x].txt"
    table = run("sessions", cache=cache).stdout
    assert session.id in table and "contract [/x].txt" in table


def test_sessions_lists_only_the_cli_users_sessions(tmp_path: Path):
    from sparkdocs.config import Settings
    from sparkdocs.ingest import ingest_bytes
    from sparkdocs.workspace import Workspace

    cache = tmp_path / "cache"
    store = Workspace(Settings(cache_dir=cache)).store
    mine = store.new_session(ingest_bytes("alice.txt", b"Alpha."), owner="alice")
    store.new_session(ingest_bytes("local.txt", b"Beta."))
    listed = json.loads(run("--user", "alice", "sessions", "--json", cache=cache).stdout)
    assert [s["id"] for s in listed] == [mine.id]
    assert json.loads(run("--user", "bob", "sessions", "--json", cache=cache).stdout) == []


# Ctrl-C is the user's stop, whenever it comes ----------------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("latency_s, wait_s", [(8.0, 1.0), (0.0, 1.5)], ids=["prefill", "mid-answer"])
def test_ctrl_c_in_ask_is_stopped_by_the_user(tmp_path: Path, latency_s: float, wait_s: float):
    import signal
    import time

    from fakeserver import FakeServer

    doc = tmp_path / "a.txt"
    doc.write_text("Alpha text about forty-two.")
    with FakeServer() as server:
        server.behaviour.latency_s = latency_s
        server.behaviour.answer = " ".join(["word"] * 400)
        server.behaviour.token_delay_s = 0.05
        env = {**os.environ, "SPARKDOCS_BASE_URL": server.base_url, "SPARKDOCS_CACHE_DIR": str(tmp_path / "c")}
        process = subprocess.Popen([sys.executable, "-m", "sparkdocs", "ask", str(doc), "What?"],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not server.behaviour.requests and time.monotonic() < deadline:
            time.sleep(0.05)  # the request is out: now in its prefill (or streaming)
        time.sleep(wait_s)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert "Traceback" not in stderr and "broke off" not in stderr
    assert "stopped by the user" in stderr and process.returncode in (3, 130), stderr


@pytest.mark.integration
def test_a_server_message_with_markup_is_shown_literally_in_the_summary_table(tmp_path: Path):
    from fakeserver import FakeServer, StreamFault

    doc = tmp_path / "a.txt"
    doc.write_text("Alpha.")
    with FakeServer() as server:
        server.behaviour.stream_fault = StreamFault.ERROR_EVENT  # "… an issue [/INST]"
        result = run("summarize", str(doc), "--out", str(tmp_path / "out"),
                          cache=tmp_path / "c", check=False, SPARKDOCS_BASE_URL=server.base_url,
                          SPARKDOCS_MAX_RETRIES="0")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "EngineCore encountered an issue [/INST]" in result.stderr
    assert "index of this run:" in result.stderr and (tmp_path / "out" / "index.md").exists()


@pytest.mark.integration
def test_summarize_against_a_models_list_is_one_clear_line(tmp_path: Path):
    from fakeserver import FakeServer

    doc = tmp_path / "a.txt"
    doc.write_text("Alpha.")
    with FakeServer() as server:
        server.behaviour.models_body = None
        result = run("summarize", str(doc), "--out", str(tmp_path / "out"),
                          cache=tmp_path / "c", check=False, SPARKDOCS_BASE_URL=server.base_url)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "/v1/models with null" in lines[0] and "SPARKDOCS_BASE_URL" in lines[0]


@pytest.mark.parametrize("url, why", [("localhost:8000/v1", "http:// or https://"),
                                      ("http://", "no host"), ("http://u:s3cret@host:abc/v1", "port"),
                                      ("ftp://x/v1", "http:// or https://")])
def test_a_base_url_that_is_no_address_is_one_line_with_the_fix(tmp_path: Path, url, why):
    result = run("doctor", cache=tmp_path / "c", check=False, SPARKDOCS_BASE_URL=url)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "SPARKDOCS_BASE_URL" in lines[0] and why in lines[0]
    assert "like http://localhost:8000/v1" in lines[0] and "s3cret" not in lines[0]


@pytest.mark.parametrize("problem", ["missing instructions", "empty instructions", "out is a file"])
def test_summarize_inputs_it_cannot_use_are_one_line(tmp_path: Path, problem):
    doc = tmp_path / "a.txt"
    doc.write_text("Alpha.")
    out = tmp_path / "out"
    args = ["summarize", str(doc), "--out", str(out)]
    if problem == "missing instructions":
        args += ["--instructions", str(tmp_path / "nope.txt")]
    elif problem == "empty instructions":
        (tmp_path / "empty.txt").write_text("  \n")
        args += ["--instructions", str(tmp_path / "empty.txt")]
    else:
        out.write_text("I am a file")
    result = run(*args, cache=tmp_path / "c", check=False)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert ("--instructions" if "instructions" in problem else "--out") in lines[0]


@pytest.mark.integration
def test_ask_against_a_server_that_ignores_max_tokens_ends_saying_so(tmp_path: Path):
    from fakeserver import FakeServer, StreamFault

    doc = tmp_path / "a.txt"
    doc.write_text("Alpha.")
    with FakeServer() as server:
        server.behaviour.stream_fault = StreamFault.ENDLESS
        result = run("ask", str(doc), "What?", "--max-tokens", "16", cache=tmp_path / "c",
                          check=False, SPARKDOCS_BASE_URL=server.base_url)
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert "the server sent more than 48 tokens for max_tokens=16; stopped" in result.stderr
    assert result.stdout.startswith("The answer")  # the partial answer was shown


def test_count_over_budget_gives_a_pages_selection_that_fits_and_prompt_builds_that_count(tmp_path: Path):
    """A contract over budget: `count` numbers its parts, prints a --pages selection to paste,
    and with that selection its count is exactly the prompt `prompt --pages` builds."""
    from sparkdocs.prompts import QUESTION_LEAD
    from sparkdocs.tokens import llama3

    pdf = tmp_path / "contract.pdf"
    pdf.write_bytes(make_contract_pdf(40))
    cache = tmp_path / "cache"
    small = ("--context-length", "3000", "--max-tokens", "500")
    whole = json.loads(run("count", str(pdf), *small, "--json", cache=cache).stdout)
    assert not whole["budget"]["fits"] and [s["part"] for s in whole["sections"]] == list(range(1, 41))
    assert whole["fit"].startswith("--pages 1-")
    text = run("count", str(pdf), *small, cache=cache).stdout
    assert f"a selection that fits: {whole['fit']}" in text and "--include" not in text
    pages = whole["fit"].split()[1]
    chosen = json.loads(run("count", str(pdf), *small, "--pages", pages, "--json", cache=cache).stdout)
    assert chosen["budget"]["fits"] and chosen["selection"] == whole["fit"]
    assert [s["kept"] for s in chosen["sections"]].count(False) == 40 - int(pages.split("-")[1])
    built = json.loads(run("prompt", str(pdf), "-q", "Who pays?", "--pages", pages, *small, "--json",
                           cache=cache).stdout)
    assert built["fits"]
    tok = llama3()
    assert built["prompt_tokens"] == (chosen["prefix_tokens"] - tok.count(QUESTION_LEAD)
                                      + tok.count(f"{QUESTION_LEAD} Who pays?"))
    user = built["messages"][1]["content"]
    assert "Clause 1." in user and f"Clause {int(pages.split('-')[1]) + 1}." not in user
    parts = json.loads(run("count", str(pdf), *small, "--parts", "2-3", "--json", cache=cache).stdout)
    assert parts["selection"] == "--pages 2-3"


def test_prompt_over_the_context_says_so_and_exits_non_zero(tmp_path: Path):
    pdf = tmp_path / "contract.pdf"
    pdf.write_bytes(make_contract_pdf(40))
    result = run("prompt", str(pdf), "-q", "Who pays?", "--context-length", "3000", "--max-tokens",
                 "500", "--json", cache=tmp_path / "cache", check=False)
    assert result.returncode == 2
    assert json.loads(result.stdout)["fits"] is False
    assert "over the" in result.stderr and "--pages 1-" in result.stderr


def test_ask_with_pages_starts_a_session_of_those_pages_and_over_budget_names_the_fix(tmp_path: Path):
    from fakeserver import FakeServer

    pdf = tmp_path / "contract.pdf"
    pdf.write_bytes(make_contract_pdf(40))
    with FakeServer() as server:
        server.behaviour.max_model_len = 3000
        env_url = server.base_url
        over = _ask(tmp_path, env_url, str(pdf), "Who pays?")
        assert over.returncode == 2 and "--pages 1-" in over.stderr and "over the" in over.stderr
        fine = _ask(tmp_path, env_url, str(pdf), "--pages", "2-4", "Who pays?")
        assert fine.returncode == 0, fine.stderr
        sent = server.behaviour.requests[-1]["messages"][1]["content"]
    assert "Clause 2." in sent and "Clause 4." in sent and "Clause 1." not in sent
    assert "Clause 5." not in sent


def _ask(tmp_path: Path, base_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SPARKDOCS_CACHE_DIR": str(tmp_path / "cache"),
           "SPARKDOCS_BASE_URL": base_url, "SPARKDOCS_ANSWER_TOKENS": "500"}
    return subprocess.run([sys.executable, "-m", "sparkdocs", "ask", *args], capture_output=True,
                          text=True, env=env, timeout=300)


# everyday output: order, names, modes ----------------------------------------------------------
def test_files_named_on_the_command_line_keep_the_order_they_were_given(tmp_path: Path):
    for name, text in (("zeta.txt", "Zeta comes first."), ("alpha.txt", "Alpha comes second."),
                       ("mid.txt", "Mid comes last.")):
        (tmp_path / name).write_text(text)
    given = [str(tmp_path / n) for n in ("zeta.txt", "alpha.txt", "mid.txt")]
    report = json.loads(run("count", *given, "--json", cache=tmp_path / "c").stdout)
    assert [s["title"] for s in report["sections"]] == ["zeta.txt", "alpha.txt", "mid.txt"]
    prompt = run("prompt", *given, "-q", "Which comes first?", cache=tmp_path / "c").stdout
    assert prompt.index("Zeta comes first.") < prompt.index("Alpha comes second.") < prompt.index(
        "Mid comes last.")


def test_a_file_named_first_and_matched_again_by_a_glob_is_read_once_in_first_place(
        tmp_path: Path):
    """`sparkdocs ask intro.md '*.md' …`: the order given is kept so a file can go first; the
    glob then names it again, and the prompt must not hold it twice."""
    for name, text in (("intro.md", "Read me first."), ("b.md", "Bee."), ("a.md", "Ay.")):
        (tmp_path / name).write_text(text)
    given = [str(tmp_path / "intro.md"), str(tmp_path / "*.md"), f"{tmp_path}/./b.md"]
    report = json.loads(run("count", *given, "--json", cache=tmp_path / "c").stdout)
    assert [s["title"] for s in report["sections"]] == ["intro.md", "a.md", "b.md"]
    prompt = run("prompt", *given, "-q", "What first?", cache=tmp_path / "c").stdout
    assert prompt.count("Read me first.") == 1 and prompt.count("Bee.") == 1

def test_count_json_lists_every_skipped_file_whole(tmp_path: Path):
    tree = tmp_path / "repo"
    (tree / ".git").mkdir(parents=True)
    (tree / "main.py").write_text("print('hello')\n")
    binaries = {f"blob_{i:02d}_with_a_rather_long_name_to_see_it_whole.dat" for i in range(81)}
    for name in binaries:
        (tree / name).write_bytes(bytes(range(256)) * 2)
    report = json.loads(run("count", str(tree), "--json", cache=tmp_path / "c").stdout)
    assert {entry.split(":")[0] for entry in report["skipped"]} == binaries
    assert all("…" not in w and len(w) < 300 for w in report["warnings"]), report["warnings"]
    assert any("81 files skipped" in w for w in report["warnings"])
    text = run("count", str(tree), cache=tmp_path / "c")
    assert "81 files skipped" in text.stderr and "more" in text.stderr


def test_summaries_are_written_with_the_users_umask_and_named_whole_in_a_pipe(tmp_path: Path):
    from fakeserver import FakeServer

    folder = tmp_path / ("a folder with a long name, " * 4).strip(", ") / "sub"
    folder.mkdir(parents=True)
    doc = folder / "quarterly-report-for-the-board-of-directors-final-version.txt"
    doc.write_text("Revenue grew.")
    out = tmp_path / "summaries"
    old = os.umask(0o022)
    try:
        with FakeServer() as server:
            result = subprocess.run(
                [sys.executable, "-m", "sparkdocs", "summarize", str(doc), "--out", str(out)],
                capture_output=True, text=True, timeout=300,
                env={**{k: v for k, v in os.environ.items() if k != "COLUMNS"},
                     "SPARKDOCS_CACHE_DIR": str(tmp_path / "c"), "SPARKDOCS_BASE_URL": server.base_url,
                     "SPARKDOCS_MAX_RETRIES": "0"})
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    written = sorted(out.iterdir())
    assert written and all(p.stat().st_mode & 0o777 == 0o644 for p in written), [
        (p.name, oct(p.stat().st_mode)) for p in written]
    assert str(doc) in result.stderr, result.stderr  # whole, on one line, though stderr is a pipe


@pytest.mark.parametrize("args, says", [
    (("prompt", "README.md"), "--question"),  # a required option left out
    (("count", "--no-such-option", "x"), "--no-such-option"),
    (("no-such-command",), "no-such-command"),
    (("summarize", "x", "--out", "o", "--concurrency", "many"), "--concurrency"),
    (("ask", "What does it say?", "README.md"), "the question goes last"),
])
def test_a_usage_mistake_is_a_usage_message_not_a_traceback(tmp_path: Path, args, says):
    result = run(*args, cache=tmp_path / "c", check=False)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and says in result.stderr, result.stderr
    assert "--help" in result.stderr


def test_the_file_first_hint_keeps_every_word_of_an_unquoted_question(tmp_path: Path):
    """`sparkdocs ask what does it say notes.txt`: the suggested command, pasted into a shell,
    must ask the whole question, not only its first word."""
    import shlex

    (tmp_path / "notes.txt").write_text("some notes\n")
    result = subprocess.run([sys.executable, "-m", "sparkdocs", "ask", "what", "does", "it",
                             "say?", "notes.txt"], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "SPARKDOCS_CACHE_DIR": str(tmp_path / "c"),
                                 "PYTHONPATH": str(Path(__file__).parents[1])})
    assert result.returncode == 2, result.stderr
    suggested = result.stderr.split("question goes last:", 1)[1].split("\n", 1)[0]
    assert shlex.split(suggested) == ["sparkdocs", "ask", "notes.txt", "what does it say?"]


def test_prompt_in_a_pipe_draws_its_separator_rules_at_a_readable_width(tmp_path: Path):
    """A pipe has no width, so long paths are not wrapped there; the rules between the prompt's
    messages must not stretch to that width (10,000 '─' per rule in a saved prompt)."""
    (tmp_path / "a.txt").write_text("Alpha.\n")
    result = run("prompt", str(tmp_path / "a.txt"), "-q", "What?", cache=tmp_path / "c")
    rules = [line for line in result.stdout.splitlines() if line.count("─") > 10]
    assert len(rules) >= 3, result.stdout[:500]
    assert max(len(line) for line in rules) <= 120, max(len(line) for line in rules)


def test_a_question_given_before_a_folder_gets_the_question_goes_last_hint(tmp_path: Path):
    """A codebase is a folder: `sparkdocs ask "what does it do" repo/` said "what does it do:
    no such file or folder" instead of the hint it gives for a file."""
    import shlex

    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "main.py").write_text("print('hi')\n")
    result = subprocess.run([sys.executable, "-m", "sparkdocs", "ask", "what does it do", "repo/"],
                            capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "SPARKDOCS_CACHE_DIR": str(tmp_path / "c"),
                                 "PYTHONPATH": str(Path(__file__).parents[1])})
    assert result.returncode == 2, result.stderr
    assert "question goes last:" in result.stderr, result.stderr
    suggested = result.stderr.split("question goes last:", 1)[1].split("\n", 1)[0]
    assert shlex.split(suggested) == ["sparkdocs", "ask", "repo/", "what does it do"]


@pytest.mark.integration
def test_a_follow_up_naming_the_same_files_in_another_order_says_the_order_it_needs(
        tmp_path: Path):
    """Files keep the order given, so `a b` and `b a` are two documents: a follow-up given them
    the other way round must say which files, in which order, the session is about (it said
    only "about '2 files', not these paths" — the very paths the user gave)."""
    from fakeserver import FakeServer

    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text(f"Text of {name}.\n")
    a, b = str(tmp_path / "a.txt"), str(tmp_path / "b.txt")
    with FakeServer() as server:
        first = run("ask", b, a, "First?", "--json", "--base-url", server.base_url,
                    cache=tmp_path / "c")
        session = json.loads(first.stdout)["session"]
        again = run("ask", a, b, "Second?", "--follow-up-of", session, "--base-url",
                    server.base_url, cache=tmp_path / "c", check=False)
    assert again.returncode == 2, again.stderr
    said = " ".join(again.stderr.split())
    assert "b.txt, a.txt" in said and "order" in said, said


def test_summarize_format_is_case_insensitive(tmp_path: Path):
    from fakeserver import FakeServer

    doc = tmp_path / "a.txt"
    doc.write_text("Alpha.")
    with FakeServer() as server:
        result = run("summarize", str(doc), "--out", str(tmp_path / "out"), "--format",
                          "JSONL", cache=tmp_path / "c", check=False,
                          SPARKDOCS_BASE_URL=server.base_url, SPARKDOCS_MAX_RETRIES="0")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "summaries.jsonl").exists()
