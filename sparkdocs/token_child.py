"""The tokenizer built beside a one-shot command, in a forked child.

Building tiktoken's Llama 3 encoding takes ~0.1 s of Rust that holds the GIL the whole time, so a
thread cannot overlap it with reading files; on a short `sparkdocs count` it is a third of the
command. A child forked when the command starts (sparkdocs.launch, before the command line,
settings and store are imported) builds it on another core while this process imports, reads
and ingests, then counts and encodes for it over a socket (marshal frames: the two ends are the
same program). If the child cannot start or dies, the encoding is built here instead: the answer is
the same, only slower.

Only a process with one thread forks (a fork copies no other thread, and may copy a lock one of
them held); the app, which builds the tokenizer once for its lifetime, never needs this.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import marshal
import os
import signal
import socket
import struct
import sys
import threading
from typing import Any

from .tokens import Encoding, Llama3Tokenizer, RanksLoader, llama3_encoding

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!Q")


def tokenizer_beside(load_ranks: RanksLoader) -> Llama3Tokenizer:
    """A tokenizer whose encoding is being built in a child process now (or, where a fork is
    not safe, is built here when first used)."""
    encoding = ChildEncoding(load_ranks)
    return Llama3Tokenizer(encoding=encoding, counter=encoding.count_batch)


def close_children() -> None:
    """End every tokenizer child this process started and reap it (at exit, or before a
    command's process ends at once: sparkdocs.launch)."""
    while _RUNNING:
        _RUNNING.pop().close()


_RUNNING: list[ChildEncoding] = []


def _can_fork() -> bool:
    return sys.platform == "linux" and threading.active_count() == 1


class ChildEncoding:
    """An `Encoding` that runs in a forked child; built here if the child is not there."""

    def __init__(self, load_ranks: RanksLoader) -> None:
        self._load_ranks = load_ranks
        self._lock = threading.Lock()
        self._local: Encoding | None = None
        self._socket: socket.socket | None = None
        self._pid: int | None = None
        if _can_fork():
            self._fork()

    def _fork(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            pid = os.fork()
        except OSError as exc:
            log.info("the tokenizer is built in this process: fork failed (%s)", exc)
            ours.close()
            theirs.close()
            return
        if pid == 0:  # the child: never returns
            ours.close()
            _serve(theirs, self._load_ranks)
        theirs.close()
        self._socket, self._pid = ours, pid
        if not _RUNNING:
            atexit.register(close_children)
        _RUNNING.append(self)
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        """In a process forked from this one: the socket and the child are the parent's (a
        reply read here would be another process's), so this process builds its own."""
        if self._socket is not None:
            self._socket.close()
        self._socket, self._pid = None, None
        self._lock = threading.Lock()  # another thread may have held it at the fork

    def close(self) -> None:
        """End the child (it exits when its socket closes) and reap it."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._pid is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._pid, 0)
            self._pid = None

    def _call(self, operation: str, argument: Any) -> Any:
        with self._lock:
            if self._socket is not None:
                try:
                    ok, value = _exchange(self._socket, (operation, argument))
                except (OSError, EOFError, ValueError) as exc:
                    log.warning("the tokenizer child stopped (%s); building it here", exc)
                    self.close()
                else:
                    if ok:
                        return value
                    # it raised: raise the same here, from the same encoding
                    log.debug("the tokenizer child could not %s: %s", operation, value)
            if self._local is None:
                self._local = llama3_encoding(self._load_ranks())
        return _apply(self._local, operation, argument)

    def encode(self, text: str, *, allowed_special: set[str],
               disallowed_special: tuple[str, ...]) -> list[int]:
        assert not allowed_special and not disallowed_special  # document text: none allowed
        return list(self._call("encode", text))

    def encode_batch(self, text: list[str], *, num_threads: int, allowed_special: set[str],
                     disallowed_special: tuple[str, ...]) -> list[list[int]]:
        assert not allowed_special and not disallowed_special
        return [list(ids) for ids in self._call("encode_batch", list(text))]

    def decode(self, tokens: list[int]) -> str:
        return str(self._call("decode", list(tokens)))

    def count_batch(self, texts: list[str]) -> list[int]:
        """The texts' token counts, counted where the encoding is (ids stay there)."""
        return list(self._call("count_batch", list(texts)))


def _apply(encoding: Encoding, operation: str, argument: Any) -> Any:
    if operation == "encode":
        return encoding.encode(argument, allowed_special=set(), disallowed_special=())
    if operation == "encode_batch":
        return encoding.encode_batch(argument, num_threads=2, allowed_special=set(),
                                     disallowed_special=())
    if operation == "decode":
        return encoding.decode(argument)
    if operation == "count_batch":
        return [len(ids) for ids in encoding.encode_batch(
            argument, num_threads=2, allowed_special=set(), disallowed_special=())]
    raise ValueError(f"unknown tokenizer operation {operation!r}")


def _serve(connection: socket.socket, load_ranks: RanksLoader) -> None:
    """The child: build the encoding, answer until the parent closes its end, exit without
    running the parent's exit handlers or flushing its buffers."""
    status = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the command's: this ends with it
        logging.disable(logging.CRITICAL)  # the command says what is wrong, once, not a copy here
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)  # a reader of the command's output waits for no copy of it here
        encoding = llama3_encoding(load_ranks())
        while True:
            try:
                operation, argument = _receive(connection)
            except EOFError:
                status = 0
                break
            try:
                reply: tuple[bool, Any] = (True, _apply(encoding, operation, argument))
            except Exception as exc:  # sent back: the parent raises it
                reply = (False, f"{exc.__class__.__name__}: {exc}")
            _send(connection, reply)
    except BaseException:  # the parent sees the socket close and builds it itself
        status = 1
    finally:
        os._exit(status)


def _exchange(connection: socket.socket, request: tuple[str, Any]) -> tuple[bool, Any]:
    _send(connection, request)
    ok, value = _receive(connection)
    return bool(ok), value


def _send(connection: socket.socket, value: Any) -> None:
    payload = marshal.dumps(value)
    connection.sendall(_HEADER.pack(len(payload)) + payload)


def _receive(connection: socket.socket) -> Any:
    (size,) = _HEADER.unpack(_read_exactly(connection, _HEADER.size))
    return marshal.loads(_read_exactly(connection, size))


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = connection.recv(min(left, 1 << 20))
        if not chunk:
            raise EOFError("the other end closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
