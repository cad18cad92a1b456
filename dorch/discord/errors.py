"""Typed errors of the Discord client, decided by HTTP status and Discord's JSON ``code``.

Callers match on the class or on ``code`` (never on the message text: Discord rewords it).
``exit_code`` says how a worker should end when the error reaches it: 78 (configuration: the
token or a permission is wrong, restarting cannot help) or 75 (temporary: try again later).
"""

from __future__ import annotations

from typing import Any

from dorch.errors import DorchError, ExitCode

# Discord's JSON error codes dorch acts on.
UNKNOWN_CHANNEL = 10003
UNKNOWN_GUILD = 10004
UNKNOWN_MESSAGE = 10008
UNKNOWN_MEMBER = 10007
MISSING_ACCESS = 50001
CANNOT_EDIT_OTHERS = 50005
MISSING_PERMISSIONS = 50013
INVALID_FORM_BODY = 50035
ARCHIVED_THREAD = 50083
MAX_REACTIONS = 30010
THREAD_ALREADY_EXISTS = 160004
THREAD_LOCKED = 160005
MAX_ACTIVE_THREADS = 160006


class DiscordError(DorchError):
    """Anything the Discord client gives up on. Temporary unless a subclass says otherwise."""


class DiscordHTTPError(DiscordError):
    """Discord answered with an error status.

    ``status``: the HTTP status; ``code``: Discord's JSON error code (0 when the body had none);
    ``text``: Discord's message; ``errors``: the form-error tree of a 50035, if any;
    ``ambiguous``: an earlier attempt of the same call may have reached Discord (a dropped
    connection or a 5xx before this answer), so e.g. a 160004 or 10008 may be our own doing.
    """

    def __init__(self, status: int, code: int = 0, text: str = "", *, method: str = "",
                 path: str = "", errors: Any = None, ambiguous: bool = False) -> None:
        self.status = status
        self.code = code
        self.text = text
        self.method = method
        self.path = path
        self.errors = errors
        self.ambiguous = ambiguous
        where = f"{method} {path}: " if method else ""
        coded = f" (code {code})" if code else ""
        super().__init__(f"{where}HTTP {status}{coded}: {text or 'no message'}")


class BadRequest(DiscordHTTPError):
    """400: the request was wrong (a form error, an archived thread, too many threads ...)."""


class ThreadAlreadyExists(BadRequest):
    """400 / 160004: the message already has a thread. For a claim: another worker won the race
    (unless ``ambiguous``: then our own earlier attempt may have created it)."""


class Unauthorized(DiscordHTTPError):
    """401: the token is wrong, revoked or reset. Restarting cannot help."""

    exit_code = ExitCode.CONFIG


class Forbidden(DiscordHTTPError):
    """403: missing access (50001) or a missing permission (50013): fix the bot's permissions."""

    exit_code = ExitCode.CONFIG


class NotFound(DiscordHTTPError):
    """404: unknown channel (10003), message (10008), ... A deleted message is normal; an
    unknown channel or guild is a configuration error."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.code in (UNKNOWN_CHANNEL, UNKNOWN_GUILD):
            self.exit_code = ExitCode.CONFIG


class UnknownRoute(DiscordHTTPError):
    """404 without a Discord error code (``{"message": "404: Not Found", "code": 0}``, or no JSON
    at all): the route itself is unknown, not a message or channel. ``api_base`` points at
    something that is not Discord's API v10 (a proxy that does not forward this route), or the
    API changed. Restarting cannot help. Not a ``NotFound``: "already deleted" must not hide it."""

    exit_code = ExitCode.CONFIG

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.args = (f"{self.method} {self.path}: HTTP 404 without a Discord error code: no such "
                     "route. [discord] api_base must point at Discord's API v10 (or a proxy that "
                     "forwards every route)",)


class RateLimited(DiscordHTTPError):
    """429 that the client did not wait out: its tries ran out, or the wait (``retry_after``
    seconds) is longer than the client's ``max_wait``. ``scope``: user, global or shared."""

    def __init__(self, retry_after: float, scope: str = "", *, method: str = "", path: str = "",
                 text: str = "You are being rate limited.") -> None:
        self.retry_after = retry_after
        self.scope = scope
        super().__init__(429, 0, f"{text} (retry after {retry_after:.2f} s, scope {scope or '?'})",
                         method=method, path=path)


class ServerError(DiscordHTTPError):
    """5xx that persisted through every retry: Discord (or its proxy) is having trouble."""


class DiscordConnectionError(DiscordError):
    """Discord could not be reached (refused, reset, timed out) on every try."""


class CloudflareBan(DiscordError):
    """A 429 without Discord's JSON body or ``Via`` header: Cloudflare has banned this host's IP,
    almost always for too many invalid requests (401/403/429). Every dorch process on the host
    stops sending for ``retry_after`` seconds; more requests would only lengthen the ban."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(
            f"Discord's Cloudflare front has banned this host for {retry_after:.0f} s (too many "
            "invalid requests: 401/403/429). Requests from every dorch process on this host are "
            "paused; find what keeps failing (a revoked token, a missing permission) in the logs"
        )


class TooManyInvalidRequests(DiscordError):
    """This host's count of invalid requests (401/403/429) in the last 10 minutes reached the
    configured limit, kept far below Discord's 10,000 that ends in a Cloudflare ban. The client
    refuses to send until the count falls (``retry_after`` seconds at most)."""

    def __init__(self, count: int, limit: int, retry_after: float) -> None:
        self.count = count
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(
            f"{count} invalid Discord requests (401/403/429) from this host in the last 10 minutes "
            f"reached dorch's limit of {limit}; requests are refused for up to {retry_after:.0f} s "
            "to avoid a Cloudflare ban. Fix what keeps failing (token, permissions) first"
        )


def from_response(status: int, body: Any, *, method: str = "", path: str = "",
                  ambiguous: bool = False) -> DiscordHTTPError:
    """The exception for an error answer: by JSON ``code`` first, then by HTTP status."""
    data = body if isinstance(body, dict) else {}
    raw_code = data.get("code", 0)
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else 0
    text = str(data.get("message") or "")
    kwargs: dict[str, Any] = {"method": method, "path": path, "errors": data.get("errors"),
                              "ambiguous": ambiguous}
    cls: type[DiscordHTTPError]
    if code == THREAD_ALREADY_EXISTS:
        cls = ThreadAlreadyExists
    elif status == 400:
        cls = BadRequest
    elif status == 401:
        cls = Unauthorized
    elif status == 403:
        cls = Forbidden
    elif status == 404:
        cls = NotFound if code else UnknownRoute
    elif status >= 500:
        cls = ServerError
    else:
        cls = DiscordHTTPError
    return cls(status, code, text, **kwargs)
