"""The Ask page's parts: upload and reopen, the budget and the choice of parts, the warm-up
status, the chat with its Stop protocol, and the export."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace

import streamlit as st

from ..client import Waiting
from ..documents import Document
from ..errors import SparkdocsError
from ..ingest import Upload
from ..ingest.code import directory_tokens
from ..notices import follow_up_default, upload_problem
from ..parts import (
    ASSUMED_PREFILL_TOKENS_PER_S,
    SHORTEST_QUESTION,
    PartAnswer,
    PartProgress,
    WholePlan,
    estimate_text,
    progress_text,
)
from ..qa import TurnOutcome
from ..safe_text import safe_markdown
from ..selection import SelectBy, select_by, select_typed, selection_text
from ..store import Session
from ..store.recovery import TurnNotStoredError, store_pending
from ..streams import StreamGroup
from ..views import (
    budget_segments,
    budget_summary,
    demo_model_note,
    fit_button_label,
    kept_summary,
    section_rows,
    session_export,
    skipped_markdown,
    stats_line,
    turn_status,
    whole_summary,
)
from ..waits import WARM_ICONS, WaitWatch, warm_caption
from ..warmup import WarmStatus
from . import team
from .common import friendly_errors, open_session_in_tab
from .services import Services
from .sources import marked_answer, show_sources

log = logging.getLogger(__name__)


def upload_panel(svc: Services) -> None:
    """Upload files (or an archive) and make them the active document."""
    limit_mb = svc.settings.max_upload_mb
    files = st.file_uploader(
        f"Upload a PDF, DOCX, text or source files, or a codebase .zip / .tar.gz (up to {limit_mb} MB each)",
        accept_multiple_files=True, key="uploads")
    with st.expander("Options: PDF password, codebase include/exclude"):
        password = st.text_input("PDF password", type="password") or None
        include = [p for p in st.text_input("Include (gitignore patterns, comma-separated)").split(",") if p.strip()]
        exclude = [p for p in st.text_input("Exclude (gitignore patterns, comma-separated)").split(",") if p.strip()]
    if not files:
        st.session_state.pop("upload_problem", None)
        return
    signature = (tuple((f.file_id, f.size) for f in files), password, tuple(include), tuple(exclude))
    if st.session_state.get("upload_signature") == signature:
        return  # already loaded on an earlier rerun
    too_big = [f.name for f in files if f.size > svc.settings.max_upload_bytes]
    if too_big:
        st.error(safe_markdown(f"{', '.join(too_big)}: over the {limit_mb} MB upload limit "
                 "(SPARKDOCS_MAX_UPLOAD_MB); split the file or raise the limit."))
        return
    with friendly_errors(), st.status(f"Reading {len(files)} file(s)…", expanded=False) as status:
        bar = st.progress(0.0)
        try:
            document = _load(svc, files, password=password, include=include, exclude=exclude,
                             status=status, bar=bar)
        except SparkdocsError as exc:  # said in the main area; the spinner ends as an error
            bar.empty()
            status.update(label="Could not read the upload (see the message on the right)",
                          state="error")
            st.session_state["upload_problem"] = upload_problem(
                exc, names=[f.name for f in files], password_given=password is not None)
            st.session_state["upload_signature"] = signature  # not read again on every rerun
            return
        st.session_state.pop("upload_problem", None)
        st.session_state["upload_signature"] = signature
        status.update(label=safe_markdown(f"{document.name}: {document.section_tokens:,} tokens"),
                      state="complete")


def _load(svc: Services, files, *, password: str | None, include: list[str],
          exclude: list[str], status, bar) -> Document:
    # name order: a file picker's order is arbitrary, and the same set must be the same document
    uploads = sorted((Upload(f.name, f.getvalue()) for f in files), key=lambda u: u.name)
    status.update(label="Extracting text and counting tokens…")
    options = svc.workspace.ingest_options(include=include, exclude=exclude, password=password)

    def show(done: int, total: int, what: str) -> None:
        bar.progress(done / max(total, 1), text=safe_markdown(f"Extracting {what}…"))

    def waiting(seconds: float) -> None:
        status.update(label=f"Waiting for another upload to finish ({seconds:.0f} s): at most "
                      f"{svc.settings.max_concurrent_ingests} are read at once, so that no "
                      "upload takes the others' memory or time.", state="running")

    document = svc.workspace.load_uploads(uploads, options, progress=show,
                                          owner=team.current_user(), waiting=waiting)
    team.remember_password(document.content_hash, password)
    bar.empty()
    session = svc.workspace.open_session(document, keep=svc.qa.fit(document),
                                         owner=team.current_user())
    st.session_state[_chosen_key(session)] = False  # the app's auto-fit, not the user's pages
    open_session_in_tab(session)
    return document


def upload_notice() -> None:
    """In the main area: why the last upload could not be read, and what to do in the app."""
    problem = st.session_state.get("upload_problem")
    if problem:
        st.error(safe_markdown(problem), icon=":material/lock:"
                 if "password" in problem else ":material/warning:")


def reopen_panel(svc: Services) -> None:
    infos = svc.workspace.store.list_documents(owner=team.current_user())
    if not infos:
        return
    labels = {f"{i.name} — {i.tokens:,} tokens": i.key for i in infos}
    choice = st.selectbox("…or reopen a stored document", ["—"] + list(labels))
    if choice != "—" and st.button("Open", key="reopen"):
        with friendly_errors():
            session = team.start_session(svc, labels[choice])
            st.session_state[_chosen_key(session)] = False  # fitted by the app
            open_session_in_tab(session)
            st.rerun()


def budget_view(svc: Services, document: Document, session: Session) -> Session:
    """The bar, the breakdown and, over budget, the choice of parts to keep."""
    context = svc.client.capabilities().context_length
    budget = svc.qa.budget(document, session.kept_sections)
    full = svc.qa.budget(document)
    st.altair_chart(_budget_bar(budget_segments(budget), context), width="stretch")
    (st.caption if budget.fits else st.error)(budget_summary(budget))
    for warning in document.warnings:
        st.warning(safe_markdown(warning))
    if document.skipped:  # 81 files in one paragraph cannot be read: a count, then the list
        with st.expander(f"Skipped: {len(document.skipped)} file(s), each with its reason"):
            st.markdown(safe_markdown(skipped_markdown(document.skipped)))
    whole = not full.fits and whole_toggle(svc, document, session)
    n_parts = len(document.sections)
    with st.expander(f"Breakdown by part ({n_parts} part{'' if n_parts == 1 else 's'})",
                     expanded=not full.fits):
        # The keys follow the saved choice, so the widgets restart from it after each change.
        keep = _pages_chosen_now(svc, document, session)
        if keep is not None:
            session = _keep_chosen(svc, document, session, keep)
    if whole:
        st.info(safe_markdown(whole_summary(document, session.kept_sections)))
    elif session.kept_sections is not None:
        st.info(safe_markdown(kept_summary(document, session.kept_sections)))
    return session


def _pages_chosen_now(svc: Services, document: Document,
                      session: Session) -> tuple[int, ...] | None:
    """The pages the user typed, ticked or had fitted on this run (None: no choice made)."""
    version = _version(session)
    unit = "Pages" if select_by(document) is SelectBy.PAGES else "Parts"
    shown = selection_text(document, session.kept_sections)
    typed = st.text_input(
        f"{unit} to keep (e.g. 1-40,90-120)", shown, key=f"typed-{session.id}-{version}",
        help="Page numbers as printed on the pages; parts numbered as in the # column.").strip()
    keep: tuple[int, ...] | None = None
    if typed and typed != shown:
        try:
            keep = select_typed(document, typed)
        except SparkdocsError as exc:
            st.error(safe_markdown(str(exc)))
    rows = section_rows(document, session.kept_sections)
    edited = st.data_editor(rows, disabled=["#", "document", "part", "tokens"], hide_index=True,
                            key=f"keep-{session.id}-{version}", width="stretch")
    ticked = tuple(sorted(r["#"] - 1 for r in edited if r["keep"]))
    if ticked != tuple(sorted(r["#"] - 1 for r in rows if r["keep"])):
        keep = ticked
    directories = directory_tokens(document.sections)
    if len(directories) > 1:
        st.caption("Tokens per directory (use Include/Exclude in the sidebar to choose):")
        st.dataframe([{"directory": d, "tokens": t} for d, t in directories.items()],
                     hide_index=True, width="stretch", height=min(400, 36 + 35 * len(directories)))
    if st.button(fit_button_label(document)):
        with friendly_errors():
            keep = svc.qa.fit(document) or tuple(range(len(document.sections)))
    return keep


def _keep_chosen(svc: Services, document: Document, session: Session,
                 keep: tuple[int, ...]) -> Session:
    """Save the user's pages, and that the user chose them (every page is no choice of pages),
    with the session, so a reload or another tab knows it too: the decision to answer from
    every page reads that fact, not the pages. Either change reruns the page, so the toggle
    above restarts from the new decision."""
    new_keep = None if len(keep) == len(document.sections) else keep
    key, chosen = _chosen_key(session), new_keep is not None
    recorded = st.session_state.get(key) is chosen
    st.session_state[key] = chosen
    if new_keep != session.kept_sections or session.pages_chosen is not chosen:
        session = svc.workspace.store.set_kept_sections(session.id, new_keep, owner=session.owner,
                                                        pages_chosen=chosen)
        st.rerun()
    if not recorded:
        st.rerun()
    return session


def _chosen_key(session: Session) -> str:
    """This tab's record of whether the user chose the session's pages (absent: not seen)."""
    return f"pages-chosen-{session.id}"


def _pages_chosen(session: Session) -> bool | None:
    """Whether the user chose the session's pages: as stored with the session (so a reload or
    another tab's later choice counts), else as this tab saw it; None: nobody recorded it."""
    if session.pages_chosen is not None:
        return session.pages_chosen
    return st.session_state.get(_chosen_key(session))


def _version(session: Session) -> str:
    return hashlib.sha1(repr(session.kept_sections).encode()).hexdigest()[:8]


def _whole_key(session: Session) -> str:
    """Per selection and who chose it: the toggle starts from the app's decision again when the
    pages change, or when the user chooses the pages the app had kept."""
    chosen = _pages_chosen(session)
    return f"whole-{session.id}-{_version(session)}-{'user' if chosen else 'app'}"


_SEGMENT_COLOURS = {"document": "#1f77b4", "prompt overhead": "#9467bd",
                    "answer reserve": "#ff7f0e", "free": "#d9d9d9", "over budget": "#d62728"}


def _budget_bar(segments, context: int):  # list[BudgetSegment]
    """One stacked bar, in context order: document, overhead, reserve, free (or over)."""
    import altair as alt
    import pandas  # noqa: F401  # altair reads sys.modules["pandas"] without the import lock:
    # while another session's thread is still importing it, it finds the module half made

    data = [{"part": s.label, "tokens": s.tokens, "order": i} for i, s in enumerate(segments)]
    return (alt.Chart(alt.Data(values=data)).mark_bar(height=28)
            .encode(x=alt.X("tokens:Q", stack="zero", title=f"tokens (context {context:,})"),
                    color=alt.Color("part:N", sort=[s.label for s in segments],
                                    scale=alt.Scale(domain=[s.label for s in segments],
                                                    range=[_SEGMENT_COLOURS[s.label] for s in segments]),
                                    legend=alt.Legend(orient="top", title=None)),
                    order=alt.Order("order:Q"), tooltip=["part:N", "tokens:Q"])
            .properties(height=70))


def warm_status(svc: Services, document: Document, session: Session) -> None:
    """The warm-up line; polls (a timer fragment) only while the warm-up runs. Answering from
    every page, or a document over the context whose pages the user has not chosen, warms the
    parts (as many as the KV cache holds); else the selection."""
    if not svc.settings.warm_up:
        st.caption("Cache warm-up is off (SPARKDOCS_WARM_UP): the first question reads the "
                   "whole document.")
        return
    owner = team.current_user()  # each user warms their own prefix (cache isolation)
    whole = answers_whole(svc, document, session)
    keep = session.kept_sections
    served = f"warm-up-{session.id}"  # the warm-up this tab's last decision asked for
    st.session_state[served], state = svc.warmups.serve(
        document, keep, owner=owner, whole=whole, tab=_tab(),
        replacing=st.session_state.get(served))
    if state.status is WarmStatus.WARMING:
        _warming(svc, document, keep, owner, whole)
    else:
        st.caption(f"{WARM_ICONS[state.status]} {safe_markdown(warm_caption(state))}")


def _tab() -> str:
    """This browser tab (its own session_state): a warm-up other tabs still want survives
    this tab's change of mind."""
    return st.session_state.setdefault("warm-up-tab", uuid.uuid4().hex)


def answers_whole(svc: Services, document: Document, session: Session) -> bool:
    """Whether the next question is answered from every page (and so its parts are warmed):
    the library decides, from the user's toggle for this selection if they set it, and from
    whether the user chose the session's pages (recorded when they did)."""
    return svc.warmups.warms_parts(document, session.kept_sections,
                                   whole_chosen=st.session_state.get(_whole_key(session)),
                                   pages_chosen=_pages_chosen(session))


@st.fragment(run_every=2.0)
def _warming(svc: Services, document: Document, keep: Sequence[int] | None,
             owner: str | None, whole: bool) -> None:
    """A timer fragment that fires during an answer runs right after it, and the chat input
    (submit_mode="disable") re-enables only when the last run to finish was a full one: so the
    timer must not outlive the warm-up. When it ends, a full rerun shows the result without
    this fragment, which stops the timer. Cancel closes the warm-up's request on the server."""
    state = svc.warmups.state(document, keep, owner=owner, whole=whole, tab=_tab())
    if state is None or state.status is not WarmStatus.WARMING:
        st.rerun()
    text, cancel = st.columns([5, 1], vertical_alignment="center")
    text.caption(f"{WARM_ICONS[state.status]} {safe_markdown(warm_caption(state))}")
    if cancel.button("Cancel", key="cancel-warm-up", icon=":material/cancel:",
                     help="Stops the warm-up on the server, for each of your tabs on this "
                          "document (they share it); the first question then reads the "
                          "document in full."):
        svc.warmups.cancel(document, keep, owner=owner, whole=whole)
        st.rerun()


def _warming_now(svc: Services, document: Document, session: Session):  # -> Callable[[], bool]
    """Whether this tab's warm-up still runs (a question then waits behind it)."""
    owner, keep = team.current_user(), session.kept_sections
    whole = answers_whole(svc, document, session)

    def warming() -> bool:
        state = svc.warmups.state(document, keep, owner=owner, whole=whole)
        return state is not None and state.status is WarmStatus.WARMING

    return warming


def show_turn(svc: Services, turn, *, prepared=None, key: str = "",
              session_id: str | None = None) -> None:  # a stored Turn
    with st.chat_message("user"):
        st.markdown(safe_markdown(turn.question))
    with st.chat_message("assistant"):
        citations = svc.qa.citations_of(turn, prepared)
        st.markdown(marked_answer(turn.answer, citations) if turn.answer else "_(no answer)_")
        show_sources(prepared, citations, key=key)
        status = turn_status(turn)
        if status:
            st.warning(safe_markdown(status))
        st.caption(safe_markdown(stats_line(turn)))
        if session_id is not None:
            _turn_actions(turn, key=key, session_id=session_id)


def _turn_actions(turn, *, key: str, session_id: str) -> None:
    """Copy (the answer as written, in a code block whose copy button puts it on the
    clipboard) and Regenerate (the same question asked again, as a new turn, by the chat's
    one turn runner)."""
    copy, again, _ = st.columns([1, 1, 6])
    if turn.answer:
        with copy.popover("Copy", icon=":material/content_copy:", key=f"copy-{key}"):
            st.caption("The answer as written; the icon at its top right copies it.")
            st.code(turn.answer, language="markdown", wrap_lines=True, height=300)
    again.button("Regenerate", key=f"again-{key}", icon=":material/refresh:",
                 help="Ask this question again; the new answer comes below.",
                 on_click=st.session_state.__setitem__,
                 args=(f"regenerate-{session_id}", turn.question))


def demo_model_notice(svc: Services) -> None:
    """On the Ask page: whether answers come from the tiny demo model."""
    caps = svc.client.capabilities()
    note = demo_model_note(caps.model)
    if note:
        st.info(safe_markdown(note), icon=":material/science:")
    if caps.busy_note:  # the figures below are the last the server gave, not defaults
        st.caption(f":material/hourglass_top: {safe_markdown(caps.busy_note)}")


KEPT_TURNS = "unstored_turns"  # st.session_state: answers shown but not yet stored


def kept_answers(svc: Services, session: Session) -> Session:
    """Answers the store did not take are kept in this tab's memory and stored as soon as the
    store takes writes again (this rerun, or the next); until then they are shown after the
    stored turns, with a warning that says so."""
    pending = list(st.session_state.get(KEPT_TURNS, []))
    if not pending:
        return session
    stored, left = store_pending(svc.workspace.store, pending)
    st.session_state[KEPT_TURNS] = left
    if stored:
        st.success(f"Stored {len(stored)} answer(s) kept in this tab while the store was "
                   "unavailable.", icon=":material/save:")
        if any(u.session_id == session.id for u in stored):
            session = svc.workspace.store.get_session(session.id, owner=session.owner)
    if left:
        st.warning(safe_markdown(
            f"{len(left)} answer(s) shown here are not stored yet ({left[0].reason}). They are "
            "kept in this browser tab and stored when the store takes writes again (on the next "
            "question or reload of this tab): keep the tab open until then."),
            icon=":material/hourglass_top:")
    mine = tuple(u.turn for u in left if u.session_id == session.id)
    return replace(session, turns=(*session.turns, *mine)) if mine else session


def _keep_unstored(exc: TurnNotStoredError) -> TurnOutcome:
    st.session_state[KEPT_TURNS] = [*st.session_state.get(KEPT_TURNS, []), exc.unstored]
    st.warning(safe_markdown(
        f"{exc} The answer is kept in this browser tab and stored when the store takes writes "
        "again (on the next question or reload of this tab): keep the tab open until then."),
        icon=":material/hourglass_top:")
    return TurnOutcome(exc.session, None)


def chat(svc: Services, document: Document, session: Session) -> Session:
    session = kept_answers(svc, session)
    prepared = svc.qa.prepared(document, session.kept_sections)
    for number, turn in enumerate(session.turns):
        show_turn(svc, turn, prepared=prepared, key=f"{session.id}-{number}",
                  session_id=session.id)
    key = f"follow-{session.id}"
    with st.bottom:  # by the input, not mid-conversation; kept in the address across reloads
        follow_up = st.toggle(
            "Follow-up: the model also sees the earlier questions and answers",
            value=follow_up_default(session, st.query_params.get("follow")), key=key,
            on_change=lambda: st.query_params.update(follow="1" if st.session_state[key] else "0"))
        # A question sent while an answer streams would rerun the page and cut that answer to
        # what had arrived: the input stays disabled until the answer ends (Stop or Esc sooner).
        question = st.chat_input("Ask about the document", submit_mode="disable")
    question = question or st.session_state.pop(f"regenerate-{session.id}", None)
    if not question:
        return session
    with st.chat_message("user"):
        st.markdown(safe_markdown(question))
    with friendly_errors(), st.chat_message("assistant"):
        saved = threading.Event()  # a rerun may start before this run has saved the answer
        st.session_state["answer_saved"] = saved
        stop_slot = st.empty()
        stop_slot.button("Stop", key=f"stop-{len(session.turns)}", shortcut="Esc",
                         help="Stops the answer (Esc); what arrived is kept.")
        live = _LiveAnswer(st.empty(), st.empty(), WaitWatch(
            svc.client.metrics, warming=_warming_now(svc, document, session)))
        try:  # a Stop click reruns the page: the runner records the partial answer as stopped
            if answers_whole(svc, document, session):
                outcome = _ask_whole(svc, document, session, question, st.empty())
                live.text(outcome.turn.answer)
            else:
                outcome = svc.qa.run_turn(document, session, question, follow_up=follow_up,
                                          on_text=live.text, on_wait=live.wait)
        except TurnNotStoredError as exc:  # shown, and kept until the store takes it
            outcome = _keep_unstored(exc)
        finally:
            saved.set()
        live.finish()
        stop_slot.empty()
        session, turn = outcome.session, outcome.turn
        st.caption(safe_markdown(stats_line(turn)))
        status = turn_status(turn)
        if status:
            st.warning(safe_markdown(status))
        show_sources(prepared, turn.citations or (), key=f"{session.id}-{len(session.turns) - 1}")
        if turn is not None and turn.answer:  # copy and regenerate the answer just given too
            _turn_actions(turn, key=f"{session.id}-{len(session.turns) - 1}",
                          session_id=session.id)
    return session


def whole_toggle(svc: Services, document: Document, session: Session) -> bool:
    """Over budget: answer from every page instead of a choice of pages, its cost said first.
    On unless the user chose pages (`answers_whole`); `value` counts on the first render only,
    then the toggle keeps the user's setting until the selection (its key) changes."""
    with friendly_errors():
        plan = svc.qa.plan_whole(document, SHORTEST_QUESTION)  # the cost before any question
        speed = svc.qa.prefill_speed(session.owner)
        seconds = plan.estimate_s(speed or ASSUMED_PREFILL_TOKENS_PER_S)
        return st.toggle(f"Answer from every page ({len(plan.parts)} parts, about "
                         f"{seconds:,.0f} s on this server)",
                         value=answers_whole(svc, document, session), key=_whole_key(session),
                         help=estimate_text(plan, speed))
    return False


def _ask_whole(svc: Services, document: Document, session: Session, question: str, slot):
    """Every part read on a worker thread (Streamlit calls belong to this one), its progress
    shown here; a Stop click (a rerun) cancels every part in flight, and the worker records
    the stopped turn before the next run reads the session."""
    streams = StreamGroup()
    done: list[PartAnswer] = []
    plans: list[WholePlan] = []
    box: dict[str, object] = {}
    progress = PartProgress()

    def work() -> None:
        try:
            box["outcome"] = svc.qa.run_whole(document, session, question, wait_turn=True,
                                              on_plan=plans.append, on_part=done.append,
                                              streams=streams, progress=progress)
        except BaseException as exc:  # handed to the page, raised there
            box["error"] = exc

    worker = threading.Thread(target=work, name="whole-answer", daemon=True)
    started = time.monotonic()
    worker.start()
    try:
        while worker.is_alive():
            states = progress.states(svc.qa.client.metrics()) if plans else ()
            slot.caption(safe_markdown(
                f"Reading every page, {time.monotonic() - started:.0f} s: "
                + (f"{len(states)} parts — {progress_text(states)} (from the server's own "
                   "queue)" if states else "planning the parts")
                + "; then their answers are combined."))
            worker.join(0.5)
    except BaseException:
        streams.cancel()
        worker.join(timeout=30)
        raise
    slot.empty()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["outcome"]


class _LiveAnswer:
    """The answer as it streams: the wait before the first token (elapsed time, queued or
    prefilling from the server's metrics), then the growing text, every render through
    safe_markdown (a half-written answer must not load an image either), at most every
    `every_s`. Touching the page on each heartbeat is what lets a Stop click interrupt a long
    prefill."""

    def __init__(self, wait_slot, text_slot, watch: WaitWatch, *, every_s: float = 0.15) -> None:
        self._wait_slot, self._text_slot, self._watch = wait_slot, text_slot, watch
        self._every_s = every_s
        self._text = ""
        self._shown = 0.0

    def wait(self, event: Waiting) -> None:
        if event.received_chunks:
            self._wait_slot.empty()
        else:
            self._wait_slot.caption(safe_markdown(self._watch.view(event).text))

    def text(self, chunk: str) -> None:
        if not self._text:
            self._wait_slot.empty()
        self._text += chunk
        if time.monotonic() - self._shown >= self._every_s:
            self._text_slot.markdown(safe_markdown(self._text))
            self._shown = time.monotonic()

    def finish(self) -> None:
        self._wait_slot.empty()
        self._text_slot.markdown(safe_markdown(self._text))


def export_button(svc: Services, session: Session, *, prepared=None) -> None:
    if session.turns:  # each answer's quotes with the verdicts stored with it
        text = session_export(session, [svc.qa.citations_of(t, prepared) for t in session.turns])
        st.download_button("Export session (Markdown)", text,
                           file_name=f"sparkdocs-{session.id}.md", mime="text/markdown")
