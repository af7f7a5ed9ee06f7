"""Pure parts of the WebSocket client."""

from __future__ import annotations

import pytest

from ha_ingestor_live.client import contains, websocket_url


@pytest.mark.parametrize(
    ("haystack", "needle", "expected"),
    [
        (b'[{"id":3,"type":"event","event":{}},{"id":9,"type":"result","success":true}]', b'"result"', True),
        (b'[{"id":3,"type":"event","event":{"data":{"result":1}}}]', b'"result"', True),  # a false positive is fine
        (b'[{"id":3,"type":"event","event":{"data":{"results":1}}}]', b'"result"', False),
        (b'{"id":4,"type":"pong"}', b'"pong"', True),
        (b"", b'"pong"', False),
        (b'\x00"pong"', b'"pong"', True),  # a length-delimited search, not a C string's
    ],
)
def test_contains_finds_exactly_what_in_finds(haystack, needle, expected):
    assert contains(haystack, needle) is expected is (needle in haystack)


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://ha.local:8123", "ws://ha.local:8123/api/websocket"),
        ("https://ha.example/", "wss://ha.example/api/websocket"),
        ("ws://127.0.0.1:8123/api/websocket", "ws://127.0.0.1:8123/api/websocket"),
    ],
)
def test_websocket_url(base, url):
    assert websocket_url(base) == url


def test_websocket_url_refuses_other_schemes():
    with pytest.raises(ValueError, match="not an http"):
        websocket_url("ftp://ha.local")
