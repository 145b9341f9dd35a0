"""One small error tree. Every message names the thing, the limit and the fix, so the CLI and
the pages can show it to a user as-is, without a traceback."""

from __future__ import annotations


class SparkdocsError(Exception):
    """Root of every error sparkdocs raises on purpose."""


class IngestError(SparkdocsError):
    """A document could not be read into text."""


class UnsupportedFormatError(IngestError):
    """The bytes are not a format sparkdocs reads."""


class EncryptedDocumentError(IngestError):
    """The PDF needs a password (or the one given is wrong)."""


class FileTooLargeError(IngestError):
    """Refused from its size, before reading it."""


class UnsafeArchiveError(IngestError):
    """An archive that tries to escape its root or expands past the limits."""


class ConfigError(SparkdocsError):
    """A setting or option has a value sparkdocs cannot use; the message names it and the fix."""


class BudgetError(SparkdocsError):
    """The prompt cannot fit the served context."""


class ServiceError(SparkdocsError):
    """The model service failed; the message says how to fix it."""


class ServiceUnavailableError(ServiceError):
    """Nothing is listening, or the service keeps failing."""


class ServiceTimeoutError(ServiceError):
    """The service did not answer in time."""


class AuthenticationError(ServiceError):
    """The service refused the API key."""


class WarmUpCancelled(SparkdocsError):
    """The user cancelled a cache warm-up (its request was closed on the server)."""


class ModelNotFoundError(ServiceError):
    """The configured model is not served."""


class ProtocolError(ServiceError):
    """The service answered, but not as an OpenAI-compatible server does (HTML, a list, …)."""


class ContextOverflowError(ServiceError):
    """The server says the prompt plus answer exceed its context."""

    def __init__(self, message: str, *, prompt_tokens: int | None = None,
                 context_length: int | None = None) -> None:
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


class StoreError(SparkdocsError):
    """The on-disk cache could not be read or written."""


class SessionNotFoundError(StoreError):
    """A session id that the store does not hold."""


class SessionChangedError(StoreError):
    """A session changed by someone else between reading it and changing it."""


class StoreLockedError(StoreError):
    """Another process held the store's write lock past the busy timeout: worth trying again."""


class StoreFullError(StoreError):
    """The disk (or the database's page limit) is full: nothing more can be written there."""


class SelectionError(SparkdocsError):
    """A --pages/--parts choice that does not name parts of this document."""


class PasswordRequiredError(EncryptedDocumentError):
    """A stored encrypted document asked for without proving its password again."""


class TeamError(SparkdocsError):
    """Who is asking could not be established, or the app would be open to anyone."""


class LoginError(TeamError):
    """A login that failed or a proxy header that cannot be trusted."""


class OpenAppError(TeamError):
    """An app without logins bound beyond loopback, without saying that is wanted."""
