"""HTTP/1.1 request and response heads, chunked bodies: the backend chosen by `native.load`.

Contract: docs/architecture.md, section native.httpparse. `ResponseHead.no_body` (1xx, 204, 304)
is an addition; a response to HEAD has no body either, which only the caller knows.
"""
from native import load
from native.errors import HttpParseError

_m = load("httpparse")

RequestHead = _m.RequestHead
ResponseHead = _m.ResponseHead
parse_request_head = _m.parse_request_head
parse_response_head = _m.parse_response_head
ChunkedDecoder = _m.ChunkedDecoder

__all__ = ["HttpParseError", "RequestHead", "ResponseHead", "parse_request_head",
           "parse_response_head", "ChunkedDecoder"]
