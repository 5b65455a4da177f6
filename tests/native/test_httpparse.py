"""Behaviour of both HTTP parser backends: smuggling defences, kubectl heads, chunked bodies."""
import pytest

import native.httpparse
from native.errors import HttpParseError
from tests.native.backends import backend_id, backends

BACKENDS = backends("httpparse")


@pytest.fixture(params=BACKENDS, ids=backend_id)
def hp(request):
    return request.param


def head(lines: list, body: bytes = b"") -> bytes:
    return b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


GET = b"GET /api/v1/pods HTTP/1.1"
HOST = b"Host: gw.example"

SMUGGLING = {
    "CL and TE": ([b"POST / HTTP/1.1", HOST, b"Content-Length: 5", b"Transfer-Encoding: chunked"], 400),
    "TE and CL": ([b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked", b"Content-Length: 5"], 400),
    "duplicate CL, equal": ([b"POST / HTTP/1.1", HOST, b"Content-Length: 5", b"Content-Length: 5"], 400),
    "duplicate CL, different": ([b"POST / HTTP/1.1", HOST, b"Content-Length: 5", b"Content-Length: 6"], 400),
    "CL list": ([b"POST / HTTP/1.1", HOST, b"Content-Length: 5, 5"], 400),
    "CL sign": ([b"POST / HTTP/1.1", HOST, b"Content-Length: +5"], 400),
    "CL hex": ([b"POST / HTTP/1.1", HOST, b"Content-Length: 0x5"], 400),
    "CL empty": ([b"POST / HTTP/1.1", HOST, b"Content-Length:"], 400),
    "CL overflow": ([b"POST / HTTP/1.1", HOST, b"Content-Length: 1" + b"0" * 18], 400),
    "CL inner space": ([b"POST / HTTP/1.1", HOST, b"Content-Length: 1 2"], 400),
    "TE gzip, chunked": ([b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: gzip, chunked"], 501),
    "TE chunked twice": ([b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"], 501),
    "TE identity": ([b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: identity"], 501),
    "TE chunked with junk": ([b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked, "], 501),
    "TE in HTTP/1.0": ([b"POST / HTTP/1.0", b"Transfer-Encoding: chunked"], 400),
    "space before colon": ([GET, HOST, b"Content-Length : 5"], 400),
    "tab before colon": ([GET, HOST, b"Transfer-Encoding\t: chunked"], 400),
    "obs-fold": ([GET, HOST, b"X-A: a", b" folded"], 400),
    "obs-fold tab": ([GET, HOST, b"X-A: a", b"\tfolded"], 400),
    "bare LF in header": ([GET, HOST + b"\nX-B: b"], 400),
    "bare CR in header": ([GET, HOST + b"\rX-B: b"], 400),
    "bare CR in request line": ([b"GET /\r HTTP/1.1", HOST], 400),
    "NUL in value": ([GET, HOST, b"X-A: a\x00b"], 400),
    "CTL in value": ([GET, HOST, b"X-A: a\x01b"], 400),
    "DEL in value": ([GET, HOST, b"X-A: a\x7fb"], 400),
    "empty header name": ([GET, HOST, b": value"], 400),
    "no colon": ([GET, HOST, b"X-A value"], 400),
    "bad name char": ([GET, HOST, b"X(A): value"], 400),
    "non-ASCII name": ([GET, HOST, b"X-\xc3\xa4: value"], 400),
    "missing Host": ([GET], 400),
    "two Hosts": ([GET, HOST, HOST], 400),
    "two Hosts in 1.0": ([b"GET / HTTP/1.0", HOST, HOST], 400),
    "HTTP/2.0": ([b"GET / HTTP/2.0", HOST], 505),
    "HTTP/1.2": ([b"GET / HTTP/1.2", HOST], 505),
    "HTTP/0.9": ([b"GET / HTTP/0.9", HOST], 505),
    "lower-case version": ([b"GET / http/1.1", HOST], 400),
    "version junk": ([b"GET / HTTP/1.1x", HOST], 400),
    "two spaces": ([b"GET  / HTTP/1.1", HOST], 400),
    "trailing space": ([b"GET / HTTP/1.1 ", HOST], 400),
    "missing version": ([b"GET /", HOST], 400),
    "space in target": ([b"GET /a b HTTP/1.1", HOST], 400),
    "non-ASCII target": ([b"GET /\xc3\xa4 HTTP/1.1", HOST], 400),
    "bad method": ([b"G(T / HTTP/1.1", HOST], 400),
    "leading space": ([b" GET / HTTP/1.1", HOST], 400),
}


@pytest.mark.parametrize("lines, status", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_ambiguous_or_malformed_requests_are_refused(hp, lines, status):
    with pytest.raises(HttpParseError) as caught:
        hp.parse_request_head(head(lines))
    assert caught.value.status == status
    assert caught.value.reason and "\n" not in caught.value.reason


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\nHost: a\n\n",
    b"GET / HTTP/1.1\r\nHost: a\n",
    b"GET / HTTP/1.1\rHost: a",
    b"\nGET / HTTP/1.1\r\n",
], ids=["LF lines", "LF after header", "bare CR", "leading LF"])
def test_bare_line_ends_are_refused_before_the_head_is_complete(hp, data):
    with pytest.raises(HttpParseError) as caught:
        hp.parse_request_head(data)
    assert caught.value.status == 400


def test_limits(hp):
    long_line = b"GET /" + b"a" * 100 + b" HTTP/1.1"
    for data in (head([long_line, HOST]), long_line):  # complete or not yet
        with pytest.raises(HttpParseError) as caught:
            hp.parse_request_head(data, max_line=50)
        assert caught.value.status == 414
    many = [GET, HOST] + [b"X-Pad: " + b"p" * 50] * 20
    for data in (head(many), head(many)[:-10]):
        with pytest.raises(HttpParseError) as caught:
            hp.parse_request_head(data, max_head=1000)
        assert caught.value.status == 431
    exact = head([b"GET / HTTP/1.1", HOST])
    assert hp.parse_request_head(exact, max_line=14, max_head=len(exact)) is not None
    with pytest.raises(HttpParseError):
        hp.parse_request_head(exact, max_head=len(exact) - 1)
    with pytest.raises(HttpParseError):
        hp.parse_request_head(exact, max_line=13)


KUBECTL_EXEC_SPDY = head([
    b"POST /api/v1/namespaces/default/pods/p1/exec?command=ls&command=-la&container=c1"
    b"&stderr=true&stdout=true HTTP/1.1",
    b"Host: 127.0.0.1:8443",
    b"User-Agent: kubectl/v1.32.4 (linux/amd64) kubernetes/4cb5f07",
    b"Content-Length: 0",
    b"Connection: Upgrade",
    b"Kubectl-Command: kubectl exec",
    b"Kubectl-Session: 0f3c1f5e-2a43-4d0e-9a5e-7f1c3b2e6d11",
    b"Upgrade: SPDY/3.1",
    b"X-Stream-Protocol-Version: v5.channel.k8s.io",
    b"X-Stream-Protocol-Version: v4.channel.k8s.io",
    b"X-Stream-Protocol-Version: v3.channel.k8s.io",
    b"X-Stream-Protocol-Version: v2.channel.k8s.io",
    b"X-Stream-Protocol-Version: channel.k8s.io",
])

KUBECTL_LIST = head([
    b"GET /api/v1/namespaces/default/pods?limit=500 HTTP/1.1",
    b"Host: 127.0.0.1:8443",
    b"User-Agent: kubectl/v1.32.4 (linux/amd64) kubernetes/4cb5f07",
    b"Accept: application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;"
    b"g=meta.k8s.io,application/json",
    b"Accept-Encoding: gzip",
    b"Authorization: Bearer abc.def.ghi",
    b"Kubectl-Command: kubectl get",
    b"Kubectl-Session: 0f3c1f5e-2a43-4d0e-9a5e-7f1c3b2e6d11",
])

KUBECTL_CAN_I = head([
    b"POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews HTTP/1.1",
    b"Host: gw",
    b"Content-Type: application/vnd.kubernetes.protobuf",
    b"Accept: application/vnd.kubernetes.protobuf, */*",
    b"Content-Length: 74",
], b"k8s\x00\n\x1e")


def test_kubectl_spdy_exec_head(hp):
    parsed, consumed = hp.parse_request_head(KUBECTL_EXEC_SPDY + b"next")
    assert consumed == len(KUBECTL_EXEC_SPDY)
    assert parsed.method == b"POST"
    assert parsed.target.endswith(b"&stderr=true&stdout=true")
    assert parsed.version == b"1.1"
    assert [v for n, v in parsed.headers if n == b"x-stream-protocol-version"] == [
        b"v5.channel.k8s.io", b"v4.channel.k8s.io", b"v3.channel.k8s.io", b"v2.channel.k8s.io",
        b"channel.k8s.io"]
    assert parsed.content_length == 0 and not parsed.chunked
    assert parsed.upgrade == b"spdy/3.1" and parsed.keep_alive


def test_kubectl_list_and_protobuf_heads(hp):
    parsed, consumed = hp.parse_request_head(bytearray(KUBECTL_LIST))
    assert consumed == len(KUBECTL_LIST)
    assert parsed.headers[0] == (b"host", b"127.0.0.1:8443")
    assert (b"accept-encoding", b"gzip") in parsed.headers
    assert parsed.content_length is None and parsed.upgrade is None and parsed.keep_alive
    parsed, consumed = hp.parse_request_head(KUBECTL_CAN_I)
    assert KUBECTL_CAN_I[consumed:] == b"k8s\x00\n\x1e"
    assert (b"content-type", b"application/vnd.kubernetes.protobuf") in parsed.headers
    assert parsed.content_length == 74


def test_websocket_upgrade_and_long_query(hp):
    target = b"/api/v1/namespaces/default/pods/p1/exec?" + b"&".join(
        b"command=arg%d" % i for i in range(300))
    data = head([b"GET " + target + b" HTTP/1.1", HOST, b"Connection: keep-alive, Upgrade",
                 b"Upgrade: websocket", b"Sec-WebSocket-Version: 13",
                 b"Sec-WebSocket-Protocol: v5.channel.k8s.io"])
    parsed, _ = hp.parse_request_head(data)
    assert parsed.target == target and parsed.upgrade == b"websocket"


@pytest.mark.parametrize("lines, keep_alive", [
    ([b"GET / HTTP/1.1", HOST], True),
    ([b"GET / HTTP/1.1", HOST, b"Connection: close"], False),
    ([b"GET / HTTP/1.1", HOST, b"Connection: Keep-Alive, CLOSE"], False),
    ([b"GET / HTTP/1.0"], False),
    ([b"GET / HTTP/1.0", b"Connection: keep-alive"], True),
])
def test_keep_alive(hp, lines, keep_alive):
    assert hp.parse_request_head(head(lines))[0].keep_alive is keep_alive


def test_field_values_lose_surrounding_whitespace_only(hp):
    parsed, _ = hp.parse_request_head(head([GET, b"HOST:gw", b"X-A: \t a \t b \t", b"X-Empty:",
                                            b"X-Obs: caf\xc3\xa9"]))
    assert parsed.headers == [(b"host", b"gw"), (b"x-a", b"a \t b"), (b"x-empty", b""),
                              (b"x-obs", b"caf\xc3\xa9")]


def test_leading_empty_lines_are_skipped(hp):
    # RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request-line.
    data = b"\r\n\r\n" + head([GET, HOST])
    parsed, consumed = hp.parse_request_head(data)
    assert parsed.method == b"GET" and consumed == len(data)


def test_chunked_request(hp):
    parsed, _ = hp.parse_request_head(head([b"POST / HTTP/1.1", HOST,
                                            b"Transfer-Encoding: Chunked"]))
    assert parsed.chunked and parsed.content_length is None


@pytest.mark.parametrize("data", [KUBECTL_EXEC_SPDY, KUBECTL_LIST, KUBECTL_CAN_I[:-6]])
def test_every_proper_prefix_is_incomplete(hp, data):
    for end in range(len(data)):
        assert hp.parse_request_head(data[:end]) is None, end
    assert hp.parse_request_head(data) is not None


def test_response_heads(hp):
    parsed, consumed = hp.parse_response_head(head([
        b"HTTP/1.1 200 OK", b"Content-Type: application/json", b"Transfer-Encoding: chunked"]))
    assert (parsed.status, parsed.reason, parsed.version) == (200, b"OK", b"1.1")
    assert parsed.chunked and parsed.keep_alive and not parsed.no_body
    switching = hp.parse_response_head(head([b"HTTP/1.1 101 Switching Protocols",
                                              b"Upgrade: websocket", b"Connection: Upgrade",
                                              b"Sec-WebSocket-Protocol: v5.channel.k8s.io"]))[0]
    assert switching.upgrade == b"websocket" and switching.no_body
    for status in (b"204 No Content", b"304 Not Modified", b"100 Continue"):
        parsed = hp.parse_response_head(head([b"HTTP/1.1 " + status]))[0]
        assert parsed.no_body and parsed.keep_alive and parsed.content_length is None
    until_close = hp.parse_response_head(head([b"HTTP/1.1 200 OK"]))[0]
    assert not until_close.keep_alive and until_close.content_length is None
    old = hp.parse_response_head(head([b"HTTP/1.0 200 OK", b"Content-Length: 2"]))[0]
    assert not old.keep_alive and old.content_length == 2


def test_response_leniency(hp):
    # RFC 9112 4: the reason-phrase is ignored, so "HTTP/1.1 200" without its SP is accepted.
    assert hp.parse_response_head(head([b"HTTP/1.1 200", b"Content-Length: 0"]))[0].reason == b""
    # RFC 9110 8.6: repeated identical Content-Length lines may be read as one.
    parsed = hp.parse_response_head(head([b"HTTP/1.1 200 OK", b"Content-Length: 7",
                                          b"Content-Length: 7"]))[0]
    assert parsed.content_length == 7


@pytest.mark.parametrize("lines", [
    [b"HTTP/1.1 200 OK", b"Content-Length: 1", b"Transfer-Encoding: chunked"],
    [b"HTTP/1.1 200 OK", b"Content-Length: 1", b"Content-Length: 2"],
    [b"HTTP/1.1 200 OK", b"Transfer-Encoding: gzip, chunked"],
    [b"HTTP/1.0 200 OK", b"Transfer-Encoding: chunked"],
    [b"HTTP/1.1 20 OK"], [b"HTTP/1.1 600 Nope"], [b"HTTP/1.1 099 Low"], [b"HTTP/2 200 OK"],
    [b"HTTP/1.1 200 OK", b"X: a", b" folded"], [b"HTTP/1.1 200 O\x00K"],
    [b"HTTP/1.1 200 OK", b"Bad Name: x"],
], ids=str)
def test_bad_responses_are_502(hp, lines):
    with pytest.raises(HttpParseError) as caught:
        hp.parse_response_head(head(lines))
    assert caught.value.status == 502


def test_response_head_limit(hp):
    with pytest.raises(HttpParseError) as caught:
        hp.parse_response_head(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 100, max_head=300)
    assert caught.value.status == 502


def chunked(pieces: list, trailers: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n" + trailers + b"\r\n"


BODY = chunked([b"hello", b" ", b"x" * 300, b"world"], b"X-Checksum: abc\r\n")


def decode_all(hp, parts):
    decoder = hp.ChunkedDecoder()
    out = []
    for part in parts:
        out.extend(decoder.feed(part))
    return b"".join(out), decoder.done, decoder.unconsumed()


def test_chunked_body_with_pipelined_rest(hp):
    assert decode_all(hp, [BODY + b"GET / HTTP/1.1\r\n"]) == (
        b"hello " + b"x" * 300 + b"world", True, b"GET / HTTP/1.1\r\n")


def test_chunked_split_at_every_offset(hp):
    data = chunked([b"a" * 17, b"b"], b"T: 1\r\n") + b"NEXT"
    data = data.replace(b"11\r\n", b"11 ; ext=\"q\"\r\n", 1)
    expected = (b"a" * 17 + b"b", True, b"NEXT")
    for i in range(len(data) + 1):
        assert decode_all(hp, [data[:i], data[i:]]) == expected, i
        for j in range(i, len(data) + 1):
            assert decode_all(hp, [data[:i], data[i:j], data[j:]]) == expected, (i, j)
    assert decode_all(hp, [data[i:i + 1] for i in range(len(data))]) == expected


def test_incomplete_body_is_not_done(hp):
    assert decode_all(hp, [BODY[:-1]])[1:] == (False, b"")


@pytest.mark.parametrize("data", [
    b"-5\r\nhello\r\n0\r\n\r\n", b"+5\r\nhello\r\n0\r\n\r\n", b"0x5\r\nhello\r\n0\r\n\r\n",
    b" 5\r\nhello\r\n0\r\n\r\n", b"5 \r\nhello\r\n0\r\n\r\n", b"5x\r\nhello\r\n0\r\n\r\n",
    b"\r\nhello\r\n0\r\n\r\n", b"1" + b"0" * 16 + b"\r\n", b"5\nhello\r\n0\r\n\r\n",
    b"5\r\nhelloXX0\r\n\r\n", b"5\r\nhello\n0\r\n\r\n", b"5\r\nhello\r\r\n",
    b"5;a\x00b\r\nhello\r\n", b"5\r\r\nhello\r\n", b"0\r\nBad Trailer: x\r\n\r\n",
    b"0\r\n folded: x\r\n\r\n", b"0\r\nX: a\nY: b\r\n\r\n", b"5;" + b"e" * 5000,
    b"0\r\n" + b"X-T: yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\r\n" * 300,
], ids=repr)
def test_malformed_chunked_bodies(hp, data):
    with pytest.raises(HttpParseError) as caught:
        decode_all(hp, [data])
    assert caught.value.status == 400


def test_largest_chunk_size_is_accepted(hp):
    decoder = hp.ChunkedDecoder()
    assert decoder.feed(b"000000000000000F\r\n" + b"z" * 15) == [b"z" * 15]
    decoder = hp.ChunkedDecoder()
    assert decoder.feed(b"ffffffffffffffff\r\nabc") == [b"abc"]
    assert not decoder.done


def test_bytes_fed_after_the_end_are_kept(hp):
    decoder = hp.ChunkedDecoder()
    decoder.feed(b"0\r\n\r\nA")
    assert decoder.feed(bytearray(b"B")) == [] and decoder.unconsumed() == b"AB"


def test_public_module_uses_the_selected_backend():
    assert native.httpparse.HttpParseError is HttpParseError
    assert native.httpparse.parse_request_head is BACKENDS[-1].parse_request_head
    assert all(m.HttpParseError is HttpParseError for m in BACKENDS)
