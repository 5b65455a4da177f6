# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""HTTP/1.1 heads and chunked bodies, compiled. Same interface and verdicts as _httpparse_py.

The pure-Python twin is the reference: every rule here mirrors one there, in the same order, so
that both give the same head or the same error status (checked by the equivalence and fuzz
tests). Work happens on a `const unsigned char *` with lookup tables; Python objects are made
only for the results.
"""
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memchr, memcmp

from native.errors import HttpParseError

cdef enum:
    MAX_CONTENT_LENGTH_DIGITS = 18  # keeps Content-Length inside a signed 64-bit integer
    MAX_CHUNK_SIZE_DIGITS = 16  # fits 64 bits
    MAX_CHUNK_LINE = 4096  # chunk-size line with its extensions and CRLF
    MAX_TRAILER_SECTION = 8192  # every trailer line with its CRLF, and the final CRLF
    BAD_GATEWAY = 502
    CR = 13
    LF = 10
    SP = 32
    HTAB = 9

cdef unsigned char TCHAR[256]        # token characters (RFC 9110 5.6.2)
cdef unsigned char FIELD_CHAR[256]   # field-vchar, SP, HTAB: no CTL at all
cdef unsigned char LOWER[256]


cdef void _init_tables():
    cdef int c
    for c in range(256):
        TCHAR[c] = (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122
                    or c in b"!#$%&'*+-.^_`|~")
        FIELD_CHAR[c] = c == HTAB or (32 <= c <= 126) or c >= 128
        LOWER[c] = c + 32 if 65 <= c <= 90 else c


_init_tables()


cdef class RequestHead:
    """A parsed request head."""
    cdef readonly bytes method, target, version
    cdef readonly list headers
    cdef readonly object content_length, upgrade
    cdef readonly bint chunked, keep_alive

    def __repr__(self):
        return f"RequestHead({self.method!r}, {self.target!r}, HTTP/{self.version.decode()})"


cdef class ResponseHead:
    """A parsed response head. `no_body` is True for 1xx, 204 and 304; the caller adds HEAD."""
    cdef readonly int status
    cdef readonly bytes reason, version
    cdef readonly list headers
    cdef readonly object content_length, upgrade
    cdef readonly bint chunked, keep_alive, no_body

    def __repr__(self):
        return f"ResponseHead({self.status}, {self.reason!r}, HTTP/{self.version.decode()})"


cdef class _Fields:
    """What the framing rules need from a field section, gathered while it is parsed."""
    cdef list headers, content_lengths, transfer_encodings, upgrades, connections
    cdef int hosts

    def __cinit__(self):
        self.headers = []
        self.content_lengths = []
        self.transfer_encodings = []
        self.upgrades = []
        self.connections = []
        self.hosts = 0

    cdef int note(self, bytes name, bytes value) except -1:
        cdef const char *s = PyBytes_AS_STRING(name)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(name)
        if size == 14 and memcmp(s, b"content-length", 14) == 0:
            self.content_lengths.append(value)
        elif size == 17 and memcmp(s, b"transfer-encoding", 17) == 0:
            self.transfer_encodings.append(value)
        elif size == 4 and memcmp(s, b"host", 4) == 0:
            self.hosts += 1
        elif size == 10 and memcmp(s, b"connection", 10) == 0:
            self.connections.append(value)
        elif size == 7 and memcmp(s, b"upgrade", 7) == 0:
            self.upgrades.append(value)
        return 0

    cdef set connection_tokens(self):
        cdef set tokens = set()
        for value in self.connections:
            for token in value.split(b","):
                tokens.add(token.strip(b" \t").lower())
        return tokens

    cdef bint keep_alive(self, bytes version, set tokens):
        if b"close" in tokens:
            return False
        return version == b"1.1" or b"keep-alive" in tokens

    cdef object upgrade(self, set tokens):
        if b"upgrade" in tokens and self.upgrades:
            return b", ".join(self.upgrades).lower()
        return None

    cdef bint single_chunked(self):
        if len(self.transfer_encodings) != 1:
            return False
        cdef bytes te = self.transfer_encodings[0]
        cdef const unsigned char *s = <const unsigned char *>PyBytes_AS_STRING(te)
        cdef Py_ssize_t i
        if PyBytes_GET_SIZE(te) != 7:
            return False
        for i in range(7):
            if LOWER[s[i]] != b"chunked"[i]:
                return False
        return True


cdef inline const unsigned char *_view(object buf, Py_ssize_t *size) except NULL:
    """Pointer to the bytes of a bytes or bytearray (not copied) and its length."""
    if type(buf) is bytes:
        size[0] = PyBytes_GET_SIZE(buf)
        return <const unsigned char *>PyBytes_AS_STRING(buf)
    if type(buf) is bytearray:
        size[0] = PyByteArray_GET_SIZE(buf)
        return <const unsigned char *>PyByteArray_AS_STRING(buf)
    raise TypeError("expected bytes or bytearray")


cdef inline Py_ssize_t _find_crlf(const unsigned char *p, Py_ssize_t pos, Py_ssize_t end):
    """Index of the first CRLF starting in [pos, end - 1), or -1."""
    cdef const unsigned char *hit
    while pos < end - 1:
        hit = <const unsigned char *>memchr(p + pos, CR, end - 1 - pos)
        if hit == NULL:
            return -1
        pos = hit - p
        if p[pos + 1] == LF:
            return pos
        pos += 1
    return -1


cdef inline Py_ssize_t _find_head_end(const unsigned char *p, Py_ssize_t pos, Py_ssize_t n):
    """Index of the first CRLFCRLF at or after pos, or -1."""
    while True:
        pos = _find_crlf(p, pos, n)
        if pos < 0 or pos + 3 >= n:
            return -1
        if p[pos + 2] == CR and p[pos + 3] == LF:
            return pos
        pos += 2


cdef int _check_incomplete(const unsigned char *p, Py_ssize_t start, Py_ssize_t n,
                           Py_ssize_t max_line, Py_ssize_t max_head, int status,
                           int too_large_status) except -1:
    """Refuse a head that is not complete yet but can already never be accepted."""
    cdef Py_ssize_t i, pending_cr = n > 0 and p[n - 1] == CR  # may still become a CRLF
    if max_line >= 0 and _find_crlf(p, start, n) < 0 and n - start - pending_cr > max_line:
        raise HttpParseError(414, "request line too long")
    if n >= max_head:
        raise HttpParseError(too_large_status, "message head too large")
    for i in range(start, n - pending_cr):
        if p[i] == CR and (i + 1 >= n - pending_cr or p[i + 1] != LF):
            raise HttpParseError(status, "bare CR or LF")
        if p[i] == LF and (i == start or p[i - 1] != CR):
            raise HttpParseError(status, "bare CR or LF")
    return 0


cdef int _field_line(const unsigned char *p, Py_ssize_t a, Py_ssize_t b, int status,
                     _Fields fields) except -1:
    """Check the field line p[a:b]; record it in fields unless fields is None (trailers)."""
    cdef Py_ssize_t i, colon, vs, ve
    cdef bytes name
    cdef unsigned char *lowered
    if b > a and (p[a] == SP or p[a] == HTAB):
        raise HttpParseError(status, "obsolete line folding")
    colon = a
    while colon < b and TCHAR[p[colon]]:
        colon += 1
    if colon == a or colon == b or p[colon] != b":"[0]:
        raise HttpParseError(status, "invalid header name")
    vs, ve = colon + 1, b
    while vs < ve and (p[vs] == SP or p[vs] == HTAB):
        vs += 1
    while ve > vs and (p[ve - 1] == SP or p[ve - 1] == HTAB):
        ve -= 1
    for i in range(vs, ve):
        if not FIELD_CHAR[p[i]]:
            raise HttpParseError(status, "invalid header value")
    if fields is None:
        return 0
    name = PyBytes_FromStringAndSize(NULL, colon - a)
    lowered = <unsigned char *>PyBytes_AS_STRING(name)
    for i in range(colon - a):
        lowered[i] = LOWER[p[a + i]]
    value = PyBytes_FromStringAndSize(<const char *>p + vs, ve - vs)
    fields.headers.append((name, value))
    fields.note(name, value)
    return 0


cdef _Fields _field_lines(const unsigned char *p, Py_ssize_t pos, Py_ssize_t end, int status):
    """Parse the field lines in p[pos:end] (CRLF-separated, no final CRLF)."""
    cdef _Fields fields = _Fields()
    cdef Py_ssize_t line_end
    while pos < end:
        line_end = _find_crlf(p, pos, end + 2)  # the head's final CRLF ends the last line
        _field_line(p, pos, line_end, status, fields)
        pos = line_end + 2
    return fields


cdef bytes _version(const unsigned char *p, Py_ssize_t a, Py_ssize_t b, int status,
                    int unsupported_status):
    if not (b - a == 8 and memcmp(p + a, b"HTTP/", 5) == 0 and 48 <= p[a + 5] <= 57
            and p[a + 6] == b"."[0] and 48 <= p[a + 7] <= 57):
        raise HttpParseError(status, "malformed HTTP version")
    if p[a + 5] != b"1"[0] or (p[a + 7] != b"1"[0] and p[a + 7] != b"0"[0]):
        raise HttpParseError(unsupported_status, "HTTP version not supported")
    return b"1.1" if p[a + 7] == b"1"[0] else b"1.0"


cdef object _content_length(bytes value, int status):
    cdef const unsigned char *s = <const unsigned char *>PyBytes_AS_STRING(value)
    cdef Py_ssize_t i, size = PyBytes_GET_SIZE(value)
    cdef long long result = 0
    if size == 0 or size > MAX_CONTENT_LENGTH_DIGITS:
        raise HttpParseError(status, "invalid Content-Length")
    for i in range(size):
        if not 48 <= s[i] <= 57:
            raise HttpParseError(status, "invalid Content-Length")
        result = result * 10 + (s[i] - 48)
    return result


def parse_request_head(buf, Py_ssize_t max_line=8192, Py_ssize_t max_head=65536):
    """(RequestHead, bytes consumed) from the start of buf, or None while the head is incomplete."""
    cdef Py_ssize_t n = 0, start = 0, end, line_end, sp1, sp2, i
    cdef const unsigned char *p = _view(buf, &n)
    # Lenient as RFC 9112 2.2 asks: empty lines before a request-line are ignored (some clients
    # send an extra CRLF after a body). They count towards max_head.
    while start + 1 < n and p[start] == CR and p[start + 1] == LF:
        start += 2
    end = _find_head_end(p, start, n)
    if end < 0:
        _check_incomplete(p, start, n, max_line, max_head, 400, 431)
        return None
    line_end = _find_crlf(p, start, n)
    if line_end - start > max_line:
        raise HttpParseError(414, "request line too long")
    if end + 4 > max_head:
        raise HttpParseError(431, "message head too large")

    sp1 = start
    while sp1 < line_end and p[sp1] != SP:
        sp1 += 1
    sp2 = sp1 + 1
    while sp2 < line_end and p[sp2] != SP:
        sp2 += 1
    if sp2 >= line_end or memchr(p + sp2 + 1, SP, line_end - sp2 - 1) != NULL:
        raise HttpParseError(400, "malformed request line")
    if sp1 == start:
        raise HttpParseError(400, "invalid method")
    for i in range(start, sp1):
        if not TCHAR[p[i]]:
            raise HttpParseError(400, "invalid method")
    if sp2 == sp1 + 1:
        raise HttpParseError(400, "invalid request target")
    for i in range(sp1 + 1, sp2):
        if not 0x21 <= p[i] <= 0x7e:
            raise HttpParseError(400, "invalid request target")
    cdef bytes version = _version(p, sp2 + 1, line_end, 400, 505)
    cdef _Fields fields = _field_lines(p, line_end + 2, end, 400)

    content_length = None
    cdef bint chunked = False
    if fields.transfer_encodings:
        if version == b"1.0":
            raise HttpParseError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if fields.content_lengths:
            raise HttpParseError(400, "both Content-Length and Transfer-Encoding")
        if not fields.single_chunked():
            raise HttpParseError(501, "unsupported Transfer-Encoding")
        chunked = True
    elif fields.content_lengths:
        if len(fields.content_lengths) != 1:
            raise HttpParseError(400, "more than one Content-Length")
        content_length = _content_length(fields.content_lengths[0], 400)
    if fields.hosts > 1 or (fields.hosts == 0 and version == b"1.1"):
        raise HttpParseError(400, "missing or repeated Host")

    cdef RequestHead head = RequestHead.__new__(RequestHead)
    head.method = PyBytes_FromStringAndSize(<const char *>p + start, sp1 - start)
    head.target = PyBytes_FromStringAndSize(<const char *>p + sp1 + 1, sp2 - sp1 - 1)
    head.version = version
    head.headers = fields.headers
    head.content_length = content_length
    head.chunked = chunked
    if fields.connections:
        tokens = fields.connection_tokens()
        head.keep_alive = fields.keep_alive(version, tokens)
        head.upgrade = fields.upgrade(tokens)
    else:
        head.keep_alive = version == b"1.1"
    return head, end + 4


def parse_response_head(buf, Py_ssize_t max_head=262144):
    """(ResponseHead, bytes consumed) from the start of buf, or None while the head is incomplete."""
    cdef Py_ssize_t n = 0, end, line_end, sp1, sp2, i
    cdef const unsigned char *p = _view(buf, &n)
    end = _find_head_end(p, 0, n)
    if end < 0:
        _check_incomplete(p, 0, n, -1, max_head, BAD_GATEWAY, BAD_GATEWAY)
        return None
    if end + 4 > max_head:
        raise HttpParseError(BAD_GATEWAY, "response head too large")
    line_end = _find_crlf(p, 0, n)
    sp1 = 0
    while sp1 < line_end and p[sp1] != SP:
        sp1 += 1
    cdef bytes version = _version(p, 0, sp1, BAD_GATEWAY, BAD_GATEWAY)
    # Lenient: "HTTP/1.1 200" without the SP before an empty reason is accepted; a client
    # ignores the reason-phrase anyway (RFC 9112 4).
    sp2 = sp1 + 1
    while sp2 < line_end and p[sp2] != SP:
        sp2 += 1
    if not (sp2 - sp1 == 4 and 49 <= p[sp1 + 1] <= 53 and 48 <= p[sp1 + 2] <= 57
            and 48 <= p[sp1 + 3] <= 57):
        raise HttpParseError(BAD_GATEWAY, "invalid status code")
    for i in range(sp2 + 1, line_end):
        if not FIELD_CHAR[p[i]]:
            raise HttpParseError(BAD_GATEWAY, "invalid reason phrase")
    cdef int status = (p[sp1 + 1] - 48) * 100 + (p[sp1 + 2] - 48) * 10 + p[sp1 + 3] - 48
    cdef _Fields fields = _field_lines(p, line_end + 2, end, BAD_GATEWAY)

    cdef bint no_body = status < 200 or status == 204 or status == 304
    content_length = None
    cdef bint chunked = False
    if fields.transfer_encodings:
        if version == b"1.0":
            raise HttpParseError(BAD_GATEWAY, "Transfer-Encoding in an HTTP/1.0 response")
        if fields.content_lengths:
            raise HttpParseError(BAD_GATEWAY, "both Content-Length and Transfer-Encoding")
        if not fields.single_chunked():
            raise HttpParseError(BAD_GATEWAY, "unsupported Transfer-Encoding")
        chunked = True
    elif fields.content_lengths:
        # Lenient as RFC 9110 8.6 allows: repeated Content-Length lines with one value are
        # that value. Different values stay an error.
        content_length = _content_length(fields.content_lengths[0], BAD_GATEWAY)
        for other in fields.content_lengths[1:]:
            if _content_length(other, BAD_GATEWAY) != content_length:
                raise HttpParseError(BAD_GATEWAY, "conflicting Content-Length")

    cdef ResponseHead head = ResponseHead.__new__(ResponseHead)
    head.status = status
    head.reason = PyBytes_FromStringAndSize(<const char *>p + sp2 + 1,
                                            max(line_end - sp2 - 1, 0))
    head.version = version
    head.headers = fields.headers
    head.content_length = content_length
    head.chunked = chunked
    head.no_body = no_body
    tokens = fields.connection_tokens()
    # A body delimited by the end of the connection leaves nothing to keep alive.
    head.keep_alive = (fields.keep_alive(version, tokens)
                       and (no_body or chunked or content_length is not None))
    head.upgrade = fields.upgrade(tokens)
    return head, end + 4


cdef enum DecoderState:
    SIZE, DATA, DATA_CR, DATA_LF, TRAILER, DONE


cdef class ChunkedDecoder:
    """Decodes a chunked body fed in pieces of any size. Unusable after it raised."""
    cdef readonly bint done
    cdef DecoderState _state
    cdef bytearray _line  # the partial size or trailer line, until its LF arrives
    cdef unsigned long long _remaining  # data bytes left in the current chunk
    cdef Py_ssize_t _trailer_bytes
    cdef bytearray _rest  # bytes after the body

    def __cinit__(self):
        self._state = SIZE
        self._line = bytearray()
        self._rest = bytearray()

    def unconsumed(self):
        """The bytes fed after the end of the body (the next pipelined message)."""
        return bytes(self._rest)

    def feed(self, data):
        cdef bytes chunk = data if type(data) is bytes else bytes(data)
        cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(chunk)
        cdef Py_ssize_t pos = 0, n = PyBytes_GET_SIZE(chunk), take, lf
        cdef const unsigned char *hit
        cdef bytes line
        cdef list pieces = []
        if self._state == DONE:
            self._rest += chunk
            return pieces
        while pos < n:
            if self._state == DATA:
                take = <Py_ssize_t>min(self._remaining, <unsigned long long>(n - pos))
                pieces.append(chunk if take == n else
                              PyBytes_FromStringAndSize(<const char *>p + pos, take))
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = DATA_CR
            elif self._state == DATA_CR or self._state == DATA_LF:
                if p[pos] != (CR if self._state == DATA_CR else LF):
                    raise HttpParseError(400, "chunk data not followed by CRLF")
                pos += 1
                self._state = DATA_LF if self._state == DATA_CR else SIZE
            elif self._state == DONE:
                self._rest += p[pos:n]
                break
            else:
                hit = <const unsigned char *>memchr(p + pos, LF, n - pos)
                if hit == NULL:
                    self._line += p[pos:n]
                    self._check_line_bound(len(self._line))
                    break
                lf = hit - p
                if self._line:  # the line began in an earlier piece
                    self._line += p[pos:lf]
                    line = bytes(self._line)
                    self._line.clear()
                    self._check_line_bound(len(line))
                    self._end_of_line(<const unsigned char *>PyBytes_AS_STRING(line), len(line))
                else:
                    self._check_line_bound(lf - pos)
                    self._end_of_line(p + pos, lf - pos)
                pos = lf + 1
        return pieces

    cdef int _check_line_bound(self, Py_ssize_t length) except -1:
        # Counting the LF not seen yet keeps the verdict the same however the data is split.
        if self._state == SIZE:
            if length + 1 > MAX_CHUNK_LINE:
                raise HttpParseError(400, "chunk size line too long")
        elif self._trailer_bytes + length + 1 > MAX_TRAILER_SECTION:
            raise HttpParseError(400, "trailer section too large")
        return 0

    cdef int _end_of_line(self, const unsigned char *q, Py_ssize_t length) except -1:
        cdef Py_ssize_t i = 0, digits
        cdef unsigned long long size = 0
        cdef unsigned char c
        if length == 0 or q[length - 1] != CR:
            raise HttpParseError(400, "bare LF in chunked body")
        length -= 1
        if self._state == SIZE:
            while i < length and i <= MAX_CHUNK_SIZE_DIGITS:
                c = q[i]
                if 48 <= c <= 57:
                    size = size * 16 + (c - 48)
                elif 97 <= LOWER[c] <= 102:
                    size = size * 16 + (LOWER[c] - 87)
                else:
                    break
                i += 1
            digits = i
            if digits == 0 or digits > MAX_CHUNK_SIZE_DIGITS:
                raise HttpParseError(400, "invalid chunk size")
            if i < length:
                # Lenient where RFC 9112 7.1.1 is too: BWS before ";". Extensions are skipped.
                while i < length and (q[i] == SP or q[i] == HTAB):
                    i += 1
                if i == length or q[i] != b";"[0]:
                    raise HttpParseError(400, "invalid chunk size")
                for i in range(i + 1, length):
                    if not FIELD_CHAR[q[i]]:
                        raise HttpParseError(400, "invalid chunk size")
            self._remaining = size
            self._state = DATA if size else TRAILER
            return 0
        self._trailer_bytes += length + 2
        if length:
            _field_line(q, 0, length, 400, None)  # trailers are checked like headers, then dropped
        else:
            self._state = DONE
            self.done = True
        return 0
