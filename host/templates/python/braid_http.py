"""Outbound HTTP for a braid step in Python: blocking calls over wasi:http,
JSON in and out. Shipped by `braid new` beside app.py; yours to change.

    status, answer = braid_http.post_json("http://127.0.0.1:8080/x", {"a": 1})
    status, answer = braid_http.get_json("https://api.example.com/users/42",
                                         headers=[("authorization", "Bearer ...")])

The host sends only to the step's `allowed_hosts` (anything else is refused,
`HttpError`) and adds the run's `traceparent`/`tracestate` to every request:
a step never sets them. A URL needs its scheme: `http://` or `https://`
(`127.0.0.1:8080/x` is refused here rather than sent as HTTPS).
"""

import json
from typing import Any, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from componentize_py_types import Err, Ok
from wit_world.imports import outgoing_handler
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.wasi_http_types import (
    ErrorCode_HttpRequestDenied,
    Fields,
    IncomingBody,
    Method_Delete,
    Method_Get,
    Method_Patch,
    Method_Post,
    Method_Put,
    OutgoingBody,
    OutgoingRequest,
    Scheme_Http,
    Scheme_Https,
)

# Most bytes of a response body read (a larger one is an HttpError).
MAX_RESPONSE_BYTES = 4 << 20
_READ = 64 << 10
_WRITE = 4096  # what one blocking write may carry
_METHODS = {
    "GET": Method_Get,
    "POST": Method_Post,
    "PUT": Method_Put,
    "PATCH": Method_Patch,
    "DELETE": Method_Delete,
}


class HttpError(Exception):
    """The request was not sent or its answer not read: a refused host, a
    connection error, a timeout, a URL without a scheme, a body too large."""


class BadUrl(HttpError):
    """A URL this module cannot send to (no scheme, no host): retrying the
    same URL cannot help."""


class Denied(HttpError):
    """The host refused the request: its host is not in the step's
    `allowed_hosts` (the workflow file decides). Retrying cannot help."""


def _failed(method: str, url: str, host: str, code: Any) -> HttpError:
    """The error of a request that got no response: the host's refusal, or
    a transport error."""
    if isinstance(code, ErrorCode_HttpRequestDenied):
        return Denied(
            f"{method} {url}: refused by the host: {host} is not in this step's allowed_hosts "
            "(the workflow's allowed_hosts decides where a step may connect)"
        )
    return HttpError(f"{method} {url}: {code}")


def request(
    method: str,
    url: str,
    headers: Sequence[Tuple[str, str]] = (),
    body: Optional[bytes] = None,
) -> Tuple[int, List[Tuple[str, bytes]], bytes]:
    """Sends one request; returns (status, response headers, body)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadUrl(f"URL needs its scheme, http:// or https://: {url!r}")
    if method.upper() not in _METHODS:
        raise HttpError(f"unsupported method {method!r}")
    fields = Fields.from_list([(k.lower(), v.encode()) for k, v in headers])
    req = OutgoingRequest(fields)
    req.set_method(_METHODS[method.upper()]())
    req.set_scheme(Scheme_Https() if parts.scheme == "https" else Scheme_Http())
    req.set_authority(parts.netloc)
    req.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    outgoing = req.body()
    try:
        future = outgoing_handler.handle(req, None)
    except Err as e:
        raise _failed(method, url, parts.netloc, e.value) from None
    with outgoing.write() as stream:
        data = body or b""
        for start in range(0, len(data), _WRITE):
            stream.blocking_write_and_flush(data[start : start + _WRITE])
    OutgoingBody.finish(outgoing, None)

    with future.subscribe() as ready:
        ready.block()
    answer = future.get()
    if answer is None or isinstance(answer, Err):
        raise HttpError(f"{method} {url}: no response")
    if isinstance(answer.value, Err):
        raise _failed(method, url, parts.netloc, answer.value.value)
    response = answer.value.value
    status, response_headers = response.status(), response.headers().entries()
    incoming = response.consume()
    chunks, size = [], 0
    with incoming.stream() as stream:
        while True:
            try:
                chunk = stream.blocking_read(_READ)
            except Err as e:
                if isinstance(e.value, StreamError_Closed):
                    break
                raise HttpError(f"{method} {url}: reading the body failed") from None
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise HttpError(f"{method} {url}: body over {MAX_RESPONSE_BYTES} bytes")
            chunks.append(chunk)
    IncomingBody.finish(incoming)
    return status, response_headers, b"".join(chunks)


def _json_call(method: str, url: str, value: Any, headers: Sequence[Tuple[str, str]]) -> Tuple[int, Any]:
    sent = list(headers) + [("accept", "application/json")]
    body = None
    if value is not None:
        body = json.dumps(value).encode()
        sent.append(("content-type", "application/json"))
    status, _, raw = request(method, url, sent, body)
    try:
        return status, json.loads(raw) if raw.strip() else None
    except ValueError:
        raise HttpError(f"{method} {url}: answer {status} is not JSON: {raw[:200]!r}") from None


def get_json(url: str, headers: Sequence[Tuple[str, str]] = ()) -> Tuple[int, Any]:
    """GET `url`; returns (status, the JSON answer or None when empty)."""
    return _json_call("GET", url, None, headers)


def post_json(url: str, value: Any, headers: Sequence[Tuple[str, str]] = ()) -> Tuple[int, Any]:
    """POST `value` as JSON to `url`; returns (status, the JSON answer)."""
    return _json_call("POST", url, value, headers)
