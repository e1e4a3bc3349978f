"""Why a request to an upstream (the Internet Archive, TMDB, a video site) could not be made, in a few words.

The HTTP libraries wrap the real cause several layers deep (requests -> urllib3 MaxRetryError -> NewConnectionError
-> ConnectionRefusedError; aiohttp -> ClientConnectorError -> OSError; yt-dlp -> DownloadError -> ExtractorError ->
TransportError -> URLError), and their messages repeat the full URL at every layer: about 900 characters that end
up in every plan note while the box is offline. `network_reason` digs out the cause and names it:
"connection refused", "cannot resolve the host name", "timed out", ...; the clients say
"<host> unreachable: <reason>" and keep the details for the log.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Iterator
from urllib.parse import urlsplit

_ERRNO_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ECONNABORTED: "connection aborted",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ETIMEDOUT: "timed out",
    errno.EPIPE: "connection closed",
}

# Exceptions the libraries raise for "no answer in time", by class name (not all of them subclass TimeoutError).
_TIMEOUT_NAMES = frozenset({"ConnectTimeout", "ReadTimeout", "Timeout", "ConnectTimeoutError", "ReadTimeoutError",
                            "TimeoutError", "ServerTimeoutError", "ConnectionTimeoutError", "SocketTimeoutError"})
_RESOLVE_NAMES = frozenset({"NameResolutionError", "ClientConnectorDNSError"})
_MAX_CHAIN = 32


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every exception it wraps: causes, contexts, and the attributes the libraries keep them in."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < _MAX_CHAIN:
        cur = todo.pop(0)
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        wrapped: list[object] = [cur.__cause__, cur.__context__, getattr(cur, "reason", None),
                                 getattr(cur, "os_error", None), getattr(cur, "cause", None),
                                 getattr(cur, "orig_error", None)]
        exc_info = getattr(cur, "exc_info", None)
        if isinstance(exc_info, tuple) and len(exc_info) > 1:
            wrapped.append(exc_info[1])
        wrapped.extend(cur.args)
        todo.extend(w for w in wrapped if isinstance(w, BaseException))


def network_reason(exc: BaseException) -> str | None:
    """A few words on why a connection failed, or None when `exc` is not a connection failure."""
    for cur in _chain(exc):
        name = type(cur).__name__
        if isinstance(cur, socket.gaierror) or name in _RESOLVE_NAMES:
            return "cannot resolve the host name"
        if isinstance(cur, ssl.SSLError):
            return f"TLS error ({cur.reason})" if getattr(cur, "reason", None) else "TLS error"
        if isinstance(cur, TimeoutError) or name in _TIMEOUT_NAMES:
            return "timed out"
        if isinstance(cur, OSError) and cur.errno in _ERRNO_REASONS:
            return _ERRNO_REASONS[cur.errno]
    for cur in _chain(exc):  # no known cause: the innermost operating-system error, if any
        if isinstance(cur, OSError) and cur.strerror:
            return cur.strerror[0].lower() + cur.strerror[1:]
    text = " ".join(str(exc).split()).lower()
    for needle, reason in (("connection refused", "connection refused"), ("name or service not known",
                           "cannot resolve the host name"), ("temporary failure in name resolution",
                           "cannot resolve the host name"), ("timed out", "timed out"),
                           ("connection reset", "connection reset"), ("network is unreachable",
                           "network unreachable")):
        if needle in text:
            return reason
    return None


def host_of(url: str) -> str:
    """"https://archive.org/x" -> "archive.org"; a bare host stays as it is."""
    return urlsplit(url if "://" in url else f"//{url}").netloc or url
