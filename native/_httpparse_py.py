"""HTTP/1.1 heads and chunked bodies, pure Python: the reference that `_httpparse_c` must match.

Written for clarity, not speed; the equivalence and fuzz tests treat it as the oracle.
Requests are parsed strictly (RFC 9112, request-smuggling defence); every lenient deviation
carries a comment saying why. Errors in a response head are the upstream's fault: status 502.
"""
import re

from native.errors import HttpParseError

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_REQUEST_TARGET = re.compile(rb"[\x21-\x7e]+\Z")  # 1*VCHAR; clients percent-encode the rest
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*\Z")  # field-vchar, SP, HTAB: no CTL at all
_HTTP_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]\Z")
_CHUNK_SIZE_LINE = re.compile(
    # 1-16 hex digits (no sign, no 0x, fits 64 bits), then optional extensions, which we skip.
    # Lenient where RFC 9112 7.1.1 is too: BWS before ";".
    rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[\t\x20-\x7e\x80-\xff]*)?\Z"
)
_OWS = b" \t"

MAX_CONTENT_LENGTH_DIGITS = 18  # keeps Content-Length inside a signed 64-bit integer
MAX_CHUNK_LINE = 4096  # chunk-size line with its extensions and CRLF
MAX_TRAILER_SECTION = 8192  # every trailer line with its CRLF, and the final CRLF

BAD_GATEWAY = 502


class RequestHead:
    """A parsed request head. Attributes are read-only by convention."""

    __slots__ = ("method", "target", "version", "headers", "content_length", "chunked",
                 "keep_alive", "upgrade")

    def __init__(self, method, target, version, headers, content_length, chunked, keep_alive,
                 upgrade):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.upgrade = upgrade

    def __repr__(self) -> str:
        return f"RequestHead({self.method!r}, {self.target!r}, HTTP/{self.version.decode()})"


class ResponseHead:
    """A parsed response head. `no_body` is True for 1xx, 204 and 304; the caller adds HEAD."""

    __slots__ = ("status", "reason", "version", "headers", "content_length", "chunked",
                 "keep_alive", "upgrade", "no_body")

    def __init__(self, status, reason, version, headers, content_length, chunked, keep_alive,
                 upgrade, no_body):
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.no_body = no_body

    def __repr__(self) -> str:
        return f"ResponseHead({self.status}, {self.reason!r}, HTTP/{self.version.decode()})"


class _Fields:
    """What the framing rules need from a field section, gathered in one pass."""

    def __init__(self, headers):
        self.content_lengths = []
        self.transfer_encodings = []
        self.hosts = 0
        self.connection = set()
        self.upgrades = []
        for name, value in headers:
            if name == b"content-length":
                self.content_lengths.append(value)
            elif name == b"transfer-encoding":
                self.transfer_encodings.append(value)
            elif name == b"host":
                self.hosts += 1
            elif name == b"connection":
                self.connection.update(t.strip(_OWS).lower() for t in value.split(b","))
            elif name == b"upgrade":
                self.upgrades.append(value)

    def keep_alive(self, version: bytes) -> bool:
        if b"close" in self.connection:
            return False
        return version == b"1.1" or b"keep-alive" in self.connection

    def upgrade(self):
        if b"upgrade" in self.connection and self.upgrades:
            return b", ".join(self.upgrades).lower()
        return None


def _content_length(value: bytes, status: int) -> int:
    if not (value.isdigit() and len(value) <= MAX_CONTENT_LENGTH_DIGITS):
        raise HttpParseError(status, "invalid Content-Length")
    return int(value)


def _check_incomplete(buf, start: int, max_line, max_head: int, status: int,
                      too_large_status: int) -> None:
    """Refuse a head that is not complete yet but can already never be accepted."""
    n = len(buf)
    pending_cr = buf.endswith(b"\r")  # may still become a CRLF
    if max_line is not None and buf.find(b"\r\n", start) < 0 and n - start - pending_cr > max_line:
        raise HttpParseError(414, "request line too long")
    if n >= max_head:
        raise HttpParseError(too_large_status, "message head too large")
    tail = bytes(buf[start:n - pending_cr])
    crlf = tail.count(b"\r\n")
    if tail.count(b"\r") != crlf or tail.count(b"\n") != crlf:
        raise HttpParseError(status, "bare CR or LF")


def _field_lines(lines, status: int):
    headers = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise HttpParseError(status, "obsolete line folding")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name):
            raise HttpParseError(status, "invalid header name")
        value = value.strip(_OWS)
        if not _FIELD_VALUE.match(value):
            raise HttpParseError(status, "invalid header value")
        headers.append((name.lower(), value))
    return headers


def _version(token: bytes, status: int, unsupported_status: int) -> bytes:
    if not _HTTP_VERSION.match(token):
        raise HttpParseError(status, "malformed HTTP version")
    if token not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise HttpParseError(unsupported_status, "HTTP version not supported")
    return token[5:]


def _skip_empty_lines(buf) -> int:
    # Lenient as RFC 9112 2.2 asks: empty lines before a request-line are ignored (some clients
    # send an extra CRLF after a body). They count towards max_head.
    start = 0
    while buf.startswith(b"\r\n", start):
        start += 2
    return start


def parse_request_head(buf, max_line: int = 8192, max_head: int = 65536):
    """(RequestHead, bytes consumed) from the start of buf, or None while the head is incomplete."""
    start = _skip_empty_lines(buf)
    end = buf.find(b"\r\n\r\n", start)
    if end < 0:
        _check_incomplete(buf, start, max_line, max_head, 400, 431)
        return None
    if buf.find(b"\r\n", start) - start > max_line:
        raise HttpParseError(414, "request line too long")
    if end + 4 > max_head:
        raise HttpParseError(431, "message head too large")
    request_line, *lines = bytes(buf[start:end]).split(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise HttpParseError(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.match(method):
        raise HttpParseError(400, "invalid method")
    if not _REQUEST_TARGET.match(target):
        raise HttpParseError(400, "invalid request target")
    version = _version(version, 400, 505)
    headers = _field_lines(lines, 400)
    fields = _Fields(headers)

    content_length = None
    chunked = False
    if fields.transfer_encodings:
        if version == b"1.0":
            raise HttpParseError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if fields.content_lengths:
            raise HttpParseError(400, "both Content-Length and Transfer-Encoding")
        if len(fields.transfer_encodings) != 1 or fields.transfer_encodings[0].lower() != b"chunked":
            raise HttpParseError(501, "unsupported Transfer-Encoding")
        chunked = True
    elif fields.content_lengths:
        if len(fields.content_lengths) != 1:
            raise HttpParseError(400, "more than one Content-Length")
        content_length = _content_length(fields.content_lengths[0], 400)
    if fields.hosts > 1 or (fields.hosts == 0 and version == b"1.1"):
        raise HttpParseError(400, "missing or repeated Host")

    head = RequestHead(method, target, version, headers, content_length, chunked,
                       fields.keep_alive(version), fields.upgrade())
    return head, end + 4


def parse_response_head(buf, max_head: int = 262144):
    """(ResponseHead, bytes consumed) from the start of buf, or None while the head is incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        _check_incomplete(buf, 0, None, max_head, BAD_GATEWAY, BAD_GATEWAY)
        return None
    if end + 4 > max_head:
        raise HttpParseError(BAD_GATEWAY, "response head too large")
    status_line, *lines = bytes(buf[:end]).split(b"\r\n")
    version, _, rest = status_line.partition(b" ")
    version = _version(version, BAD_GATEWAY, BAD_GATEWAY)
    # Lenient: "HTTP/1.1 200" without the SP before an empty reason is accepted; a client
    # ignores the reason-phrase anyway (RFC 9112 4).
    code, _, reason = rest.partition(b" ")
    if not (len(code) == 3 and code.isdigit() and b"100" <= code <= b"599"):
        raise HttpParseError(BAD_GATEWAY, "invalid status code")
    if not _FIELD_VALUE.match(reason):
        raise HttpParseError(BAD_GATEWAY, "invalid reason phrase")
    status = int(code)
    headers = _field_lines(lines, BAD_GATEWAY)
    fields = _Fields(headers)

    no_body = status < 200 or status in (204, 304)
    content_length = None
    chunked = False
    if fields.transfer_encodings:
        if version == b"1.0":
            raise HttpParseError(BAD_GATEWAY, "Transfer-Encoding in an HTTP/1.0 response")
        if fields.content_lengths:
            raise HttpParseError(BAD_GATEWAY, "both Content-Length and Transfer-Encoding")
        if len(fields.transfer_encodings) != 1 or fields.transfer_encodings[0].lower() != b"chunked":
            raise HttpParseError(BAD_GATEWAY, "unsupported Transfer-Encoding")
        chunked = True
    elif fields.content_lengths:
        # Lenient as RFC 9110 8.6 allows: repeated Content-Length lines with one value are
        # that value. Different values stay an error.
        content_length = _content_length(fields.content_lengths[0], BAD_GATEWAY)
        for other in fields.content_lengths[1:]:
            if _content_length(other, BAD_GATEWAY) != content_length:
                raise HttpParseError(BAD_GATEWAY, "conflicting Content-Length")
    # A body delimited by the end of the connection leaves nothing to keep alive.
    until_close = not (no_body or chunked or content_length is not None)
    keep_alive = fields.keep_alive(version) and not until_close

    head = ResponseHead(status, reason, version, headers, content_length, chunked, keep_alive,
                        fields.upgrade(), no_body)
    return head, end + 4


_SIZE, _DATA, _DATA_CR, _DATA_LF, _TRAILER, _DONE = range(6)


class ChunkedDecoder:
    """Decodes a chunked body fed in pieces of any size. Unusable after it raised."""

    def __init__(self) -> None:
        self.done = False
        self._state = _SIZE
        self._line = bytearray()  # the partial size or trailer line, until its LF arrives
        self._remaining = 0  # data bytes left in the current chunk
        self._trailer_bytes = 0
        self._rest = bytearray()  # bytes after the body

    def unconsumed(self) -> bytes:
        """The bytes fed after the end of the body (the next pipelined message)."""
        return bytes(self._rest)

    def feed(self, data) -> list:
        data = bytes(data)
        if self._state == _DONE:
            self._rest += data
            return []
        pieces = []
        pos, n = 0, len(data)
        while pos < n:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, n - pos)
                pieces.append(data[pos:pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _DATA_CR
            elif state == _DATA_CR or state == _DATA_LF:
                if data[pos] != (13 if state == _DATA_CR else 10):
                    raise HttpParseError(400, "chunk data not followed by CRLF")
                pos += 1
                self._state = _DATA_LF if state == _DATA_CR else _SIZE
            elif state == _DONE:
                self._rest += data[pos:]
                break
            else:
                lf = data.find(b"\n", pos)
                if lf < 0:
                    self._line += data[pos:]
                    self._check_line_bound(len(self._line))
                    break
                self._line += data[pos:lf]
                pos = lf + 1
                line = bytes(self._line)
                self._line.clear()
                self._check_line_bound(len(line))
                self._end_of_line(line)
        return pieces

    def _check_line_bound(self, length: int) -> None:
        # Counting the LF not seen yet keeps the verdict the same however the data is split.
        if self._state == _SIZE:
            if length + 1 > MAX_CHUNK_LINE:
                raise HttpParseError(400, "chunk size line too long")
        elif self._trailer_bytes + length + 1 > MAX_TRAILER_SECTION:
            raise HttpParseError(400, "trailer section too large")

    def _end_of_line(self, line: bytes) -> None:
        if not line.endswith(b"\r"):
            raise HttpParseError(400, "bare LF in chunked body")
        line = line[:-1]
        if self._state == _SIZE:
            match = _CHUNK_SIZE_LINE.match(line)
            if not match:
                raise HttpParseError(400, "invalid chunk size")
            self._remaining = int(match.group(1), 16)
            self._state = _DATA if self._remaining else _TRAILER
            return
        self._trailer_bytes += len(line) + 2
        if line:
            _field_lines([line], 400)  # trailers are checked like headers, then discarded
        else:
            self._state = _DONE
            self.done = True
