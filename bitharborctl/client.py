"""A small blocking client for bitharbord: HTTP over the Unix socket (default) or TCP (--host)."""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

DEFAULT_SOCKET = "/run/bitharbor/bitharbord.sock"
CHUNK = 1 << 20  # bytes per send of a streamed body


class Readable(Protocol):
    """A request body streamed in chunks: a file opened "rb", or anything that reads like one."""

    def read(self, n: int = -1, /) -> bytes: ...


class ClientError(Exception):
    """A one-line, user-facing reason the call failed."""


@dataclass
class ApiError(ClientError):
    status: int
    code: str
    message: str
    body: dict[str, Any]

    def __str__(self) -> str:
        return self.message


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class Client:
    def __init__(self, *, socket_path: str | None = None, host: str | None = None, token: str | None = None,
                 timeout: float = 900.0) -> None:
        self.socket_path = socket_path or DEFAULT_SOCKET
        self.host = host
        self.token = token
        self.timeout = timeout

    @property
    def where(self) -> str:
        return self.host or self.socket_path

    def _connection(self) -> http.client.HTTPConnection:
        if self.host:
            url = urlsplit(self.host if "://" in self.host else f"http://{self.host}")
            if url.scheme == "https":
                return http.client.HTTPSConnection(url.netloc, timeout=self.timeout)
            return http.client.HTTPConnection(url.netloc, timeout=self.timeout)
        return _UnixConnection(self.socket_path, self.timeout)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                data: bytes | Readable | None = None, size: int | None = None,
                content_type: str = "application/octet-stream") -> Any:
        """One call: `body` is sent as JSON; or `data` (bytes, or a file streamed in chunks; `size` bytes) as
        `content_type`. Returns the JSON answer (text for other answers); raises ClientError / ApiError."""
        conn = self._connection()
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode()
            content_type = "application/json"
        if data is not None:
            headers["Content-Type"] = content_type
            headers["Content-Length"] = str(len(data) if isinstance(data, bytes) else size)
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders()
            try:
                if isinstance(data, bytes):
                    conn.send(data)
                elif data is not None:
                    while chunk := data.read(CHUNK):
                        conn.send(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon answered before reading it all (too large, no space): read its answer
            response = conn.getresponse()
            raw = response.read()
        except FileNotFoundError:
            raise ClientError(f"bitharbord is not running: no socket at {self.socket_path} "
                              "(start it, or pass --socket / --host)") from None
        except ConnectionRefusedError:
            raise ClientError(f"bitharbord is not running: nothing is listening at {self.where}") from None
        except PermissionError:
            raise ClientError(f"permission denied on {self.socket_path}: run as root or as a member of "
                              "the socket's group (server.socket.group in harbor.yaml)") from None
        except TimeoutError:
            raise ClientError(f"bitharbord at {self.where} did not answer within {self.timeout:.0f}s") from None
        except (BrokenPipeError, ConnectionResetError):
            raise ClientError(f"bitharbord at {self.where} closed the connection while the request was being "
                              "sent (too large, or the daemon stopped)") from None
        except OSError as exc:
            raise ClientError(f"cannot reach bitharbord at {self.where}: {exc.strerror or exc}") from None
        finally:
            conn.close()
        ctype = response.getheader("Content-Type", "")
        if "json" not in ctype:
            if response.status >= 400:
                raise ApiError(response.status, "http_error", f"HTTP {response.status}: {raw[:200]!r}", {})
            return raw.decode(errors="replace")
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            raise ClientError(f"HTTP {response.status}: not JSON: {raw[:200]!r}") from None
        if response.status >= 400:
            err = answer.get("error", {}) if isinstance(answer, dict) else {}
            raise ApiError(response.status, str(err.get("code", "error")),
                           str(err.get("message", f"HTTP {response.status}")), answer)
        return answer
