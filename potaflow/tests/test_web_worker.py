"""Where a request ends, decided by the web worker's front before a thread takes it (potaflow.web_worker).

The framing only finds the end of one request (and keeps what follows for the
next); judging it stays with gunicorn's parser, which reads the buffered bytes.
The worker itself, with real sockets and deadlines, is tested in test_hostile.py.
"""

import io

import pytest
from gunicorn.config import Config
from gunicorn.http.parser import RequestParser

from potaflow.web_worker import BufferingWorker, Refusal, RequestFramer

LIMITS = {b"/hooks/": (100, "POTAFLOW_WEBHOOK_MAX_BYTES")}


def limits(target: bytes) -> tuple[int, str]:
    return LIMITS[b"/hooks/"] if target.startswith(b"/hooks/") else (1000, "POTAFLOW_MAX_BODY_BYTES")


def framer() -> RequestFramer:
    return RequestFramer(max_head=8192, limits=limits)


def feed_bytewise(f: RequestFramer, data: bytes) -> int:
    """Feed one byte at a time (the slowest client); the index at which the request was complete."""
    for index in range(len(data)):
        if f.feed(data[index : index + 1]):
            return index
    return -1


def parsed(f: RequestFramer) -> tuple[str, bytes]:
    request = next(RequestParser(Config(), f.request_chunks(), ("127.0.0.1", 1)))
    return request.path, request.body.read()


def test_a_content_length_body_is_complete_with_its_last_byte_and_parses_as_sent():
    request = b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
    f = framer()
    assert feed_bytewise(f, request) == len(request) - 1
    assert parsed(f) == ("/api/x", b"hello")


def test_a_chunked_body_with_extensions_and_trailers_ends_after_its_trailers():
    request = (
        b"POST /hooks/t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    f = framer()
    assert feed_bytewise(f, request) == len(request) - 1
    assert parsed(f) == ("/hooks/t", b"hello world")


def test_a_pipelined_request_is_kept_for_the_next_turn():
    first = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
    second = b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n"
    f = framer()
    assert f.feed(first + second)
    assert f.leftover == second
    assert parsed(f) == ("/a", b"")


def test_bodies_over_the_limit_are_refused_before_they_are_read_each_path_with_its_setting():
    declared = framer()
    with pytest.raises(Refusal) as refusal:
        declared.feed(b"POST /hooks/t HTTP/1.1\r\nContent-Length: 101\r\n\r\n")
    assert refusal.value.status.startswith("413") and "POTAFLOW_WEBHOOK_MAX_BYTES" in refusal.value.detail
    chunked = framer()
    chunked.feed(b"POST /api/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(Refusal) as refusal:
        for _ in range(3):
            chunked.feed(b"190\r\n" + b"x" * 400 + b"\r\n")
    assert "more than 1000 bytes (chunked)" in refusal.value.detail
    assert "POTAFLOW_MAX_BODY_BYTES" in refusal.value.detail


@pytest.mark.parametrize(
    "head",
    [
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    ],
)
def test_ambiguous_framing_is_handed_to_gunicorns_parser_which_refuses_it(head):
    f = framer()
    assert f.feed(head)  # complete as it is: nothing more is awaited
    with pytest.raises(Exception) as error:
        parsed(f)
    assert "Invalid" in type(error.value).__name__ or "Unsupported" in type(error.value).__name__


def test_headers_too_large_are_handed_over_at_once_and_refused_by_the_parser():
    f = framer()
    assert f.feed(b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 9000)


def test_expect_100_continue_is_noticed_on_http_1_1_only():
    f = framer()
    f.feed(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert f.expects_continue and not f.complete
    old = framer()
    old.feed(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert not old.expects_continue


def test_a_large_body_waits_in_a_temporary_file_not_in_memory():
    big = framer()
    big.limits = lambda target: (2_000_000, "POTAFLOW_MAX_BODY_BYTES")
    assert big.feed(b"POST / HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1_000_000)
    assert big.file is not None and not big.memory  # past SPOOL_BYTES: on disk
    assert isinstance(big.pending, bytearray) and not big.pending
    assert len(b"".join(big.request_chunks())) > 1_000_000


def test_a_spooled_body_is_gone_once_the_request_is_done_with():
    big = framer()
    big.limits = lambda target: (2_000_000, "POTAFLOW_MAX_BODY_BYTES")
    big.feed(b"POST / HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 600_000)
    spool = big.file
    assert spool is not None and big.held_bytes == 1_000_000  # counted whole from its Content-Length
    big.close()
    assert spool.closed and big.file is None  # an anonymous temporary file: closed, its blocks are free


def test_a_body_cut_short_says_how_much_of_it_came():
    sized = framer()
    sized.feed(b"POST /hooks/t HTTP/1.1\r\nContent-Length: 90\r\n\r\n" + b"x" * 40)
    assert not sized.complete
    assert "after 40 of the 90 bytes its Content-Length declared" in sized.cut_short()
    chunked = framer()
    chunked.feed(b"POST /hooks/t HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"20\r\n" + b"x" * 40)
    assert chunked.held_bytes == 32 and "before the last chunk" in chunked.cut_short()


@pytest.mark.parametrize(
    "client, key",
    [
        (("203.0.113.7", 5), "203.0.113.7"),
        (("2001:db8:1:2:3:4:5:6", 5, 0, 0), "2001:db8:1:2::/64"),
        (("::ffff:203.0.113.7", 5, 0, 0), "203.0.113.7"),
    ],
)
def test_connections_are_counted_per_address_and_per_ipv6_64(client, key):
    assert BufferingWorker.address_key(client) == key


def test_refusals_are_complete_http_answers_in_the_error_shape():
    answer = Refusal("408 Request Timeout", "Request body not received within 3 seconds.").payload()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"Connection: close" in head
    assert io.BytesIO(body).read() == b'{"detail": "Request body not received within 3 seconds.", "errors": {}}'
