"""The compiled parser against its pure-Python twin: same result, or the same error status."""
import pytest
from hypothesis import given, settings, strategies as st

from native import _httpparse_py as oracle
from native.errors import HttpParseError
from tests.native.backends import backend_id, backends
from tests.native.test_httpparse import BODY, KUBECTL_CAN_I, KUBECTL_EXEC_SPDY, KUBECTL_LIST, SMUGGLING, head

BACKENDS = backends("httpparse")


@pytest.fixture(params=BACKENDS, ids=backend_id)
def hp(request):
    return request.param


def outcome(call, *args):
    """What a parse call gave, comparable across backends."""
    try:
        result = call(*args)
    except HttpParseError as error:
        return "error", error.status
    if result is None:
        return None
    parsed, consumed = result
    names = ("method", "target", "status", "reason", "version", "headers", "content_length",
             "chunked", "keep_alive", "upgrade", "no_body")
    return {n: getattr(parsed, n) for n in names if hasattr(parsed, n)}, consumed


def decode_outcome(module, parts):
    decoder = module.ChunkedDecoder()
    out = []
    try:
        for part in parts:
            out.extend(decoder.feed(part))
    except HttpParseError as error:
        return "error", error.status
    return b"".join(out), decoder.done, decoder.unconsumed()


CORPUS = [KUBECTL_EXEC_SPDY, KUBECTL_LIST, KUBECTL_CAN_I] + [head(lines) for lines, _ in SMUGGLING.values()]


@pytest.mark.parametrize("data", CORPUS)
def test_same_verdict_on_every_prefix_of_the_corpus(hp, data):
    for end in range(len(data) + 1):
        assert outcome(hp.parse_request_head, data[:end], 200, 400) == outcome(
            oracle.parse_request_head, data[:end], 200, 400)
        assert outcome(hp.parse_response_head, data[:end], 300) == outcome(
            oracle.parse_response_head, data[:end], 300)


METHODS = st.sampled_from([b"GET", b"POST", b"PATCH", b"DELETE", b"G(T", b"", b"get"])
TARGETS = st.sampled_from([b"/", b"/api/v1/pods?watch=1", b"*", b"/a b", b"/\xff", b""])
VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 ", b"http/1.1"])
NAMES = st.sampled_from([b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection",
                         b"Upgrade", b"X-Stream-Protocol-Version", b"X A", b" Host", b""])
VALUES = st.sampled_from([b"gw", b"0", b"12", b"chunked", b"gzip, chunked", b"close",
                          b"Upgrade", b"keep-alive", b"websocket", b" 5 ", b"a\x00b", b"-1",
                          b"99999999999999999999", b"caf\xc3\xa9"])
ENDINGS = st.sampled_from([b"\r\n"] * 8 + [b"\n", b"\r", b"\r\r\n", b"\r\n "])


@st.composite
def request_heads(draw):
    line = draw(METHODS) + b" " + draw(TARGETS) + b" " + draw(VERSIONS)
    fields = draw(st.lists(st.tuples(NAMES, st.sampled_from([b":", b": ", b" :"]), VALUES, ENDINGS),
                           max_size=8))
    data = line + b"\r\n" + b"".join(n + c + v + e for n, c, v, e in fields) + b"\r\n"
    return mutate(draw, data)


@st.composite
def response_heads(draw):
    line = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/3"])) + draw(
        st.sampled_from([b" 200 OK", b" 101 Switching", b" 204", b" 99 x", b" 304 ", b" 2000"]))
    fields = draw(st.lists(st.tuples(NAMES, VALUES, ENDINGS), max_size=6))
    return mutate(draw, line + b"\r\n" + b"".join(n + b": " + v + e for n, v, e in fields) + b"\r\n")


def mutate(draw, data: bytes) -> bytes:
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        byte = draw(st.sampled_from([b"\r", b"\n", b" ", b"\t", b":", b"\x00", b"a", b"\xff", b""]))
        data = data[:at] + byte + data[at + draw(st.integers(0, 1)):]
    return data


@settings(max_examples=400, deadline=None)
@given(data=st.one_of(request_heads(), st.binary(max_size=80)),
       max_line=st.integers(8, 100), max_head=st.integers(16, 300))
def test_differential_request_heads(data, max_line, max_head):
    expected = outcome(oracle.parse_request_head, data, max_line, max_head)
    for module in BACKENDS:
        assert outcome(module.parse_request_head, data, max_line, max_head) == expected
        assert outcome(module.parse_request_head, bytearray(data), max_line, max_head) == expected


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(response_heads(), st.binary(max_size=80)), max_head=st.integers(16, 300))
def test_differential_response_heads(data, max_head):
    expected = outcome(oracle.parse_response_head, data, max_head)
    for module in BACKENDS:
        assert outcome(module.parse_response_head, data, max_head) == expected


@st.composite
def chunked_bodies(draw):
    pieces = []
    for payload in draw(st.lists(st.binary(max_size=40), max_size=4)):
        size = draw(st.sampled_from([b"%x" % len(payload), b"%X" % len(payload),
                                     b"0%x" % len(payload), b"%x;e=1" % len(payload),
                                     b"%x \t;q=\"a b\"" % len(payload)]))
        pieces.append(size + b"\r\n" + payload + b"\r\n")
    trailers = draw(st.sampled_from([b"", b"X-T: 1\r\n", b"Bad Name: x\r\n"]))
    data = mutate(draw, b"".join(pieces) + b"0\r\n" + trailers + b"\r\n" + draw(st.binary(max_size=5)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


@settings(max_examples=400, deadline=None)
@given(parts=st.one_of(chunked_bodies(), st.lists(st.binary(max_size=30), max_size=3)))
def test_differential_chunked(parts):
    expected = decode_outcome(oracle, parts)
    for module in BACKENDS:
        assert decode_outcome(module, parts) == expected
    # however the data is split, the verdict is the one for the whole
    if expected[0] != "error":
        assert decode_outcome(oracle, [b"".join(parts)]) == expected


def test_corpus_body_split_everywhere_matches_the_oracle(hp):
    for i in range(len(BODY) + 1):
        assert decode_outcome(hp, [BODY[:i], BODY[i:]]) == decode_outcome(oracle, [BODY])
