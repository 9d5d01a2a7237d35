"""Choice among endpoints: ready first, then round trip; sticky unless another is clearly faster."""
from __future__ import annotations

import math

import pytest

from edge_diffusion_client.endpoints import endpoint_from, choose, rank


def ep(url, ready=True):
    return endpoint_from({"url": url, "ready": ready})


A, B, C = ep("http://10.0.0.1:30080"), ep("http://10.0.0.2:30080"), ep("http://10.0.0.3:30080", ready=False)


def test_items_parse_like_the_inventory_and_bad_ones_name_the_field():
    item = endpoint_from({"url": "https://198.51.100.7:30080/", "server_name": "inference.x", "ca_spki_sha256": "p",
                          "zone": "us-west-2-lax-1a", "stale": True, "age_s": 3})
    assert (item.url, item.stream_url, item.host, item.port, item.tls, item.stale) == (
        "https://198.51.100.7:30080", "wss://198.51.100.7:30080/v1/stream", "198.51.100.7", 30080, True, True)
    with pytest.raises(ValueError, match=r"endpoint\.url"):
        endpoint_from({"url": "198.51.100.7:30080"})


def test_ready_endpoints_come_first_then_the_round_trip():
    rtt = {A.url: 0.030, B.url: 0.010, C.url: 0.001}
    assert rank([A, B, C], rtt) == [B, A, C]
    assert choose([A, B, C], rtt, None) == B


def test_the_current_endpoint_sticks_unless_another_is_clearly_faster():
    # 9 ms vs 10 ms is jitter, not a reason to move a stream.
    assert choose([A, B], {A.url: 0.010, B.url: 0.009}, A.url) == A
    # 30% and 5 ms better: move.
    assert choose([A, B], {A.url: 0.030, B.url: 0.012}, A.url) == B
    # A large ratio on a tiny absolute gain stays put (2 ms vs 0.5 ms).
    assert choose([A, B], {A.url: 0.002, B.url: 0.0005}, A.url) == A


def test_unreachable_failed_and_no_longer_ready_endpoints_are_left():
    rtt = {A.url: 0.010, B.url: 0.050, C.url: 0.001}
    assert choose([A, B], {A.url: math.inf, B.url: 0.050}, A.url) == B
    assert choose([A, B], rtt, A.url, excluded={A.url}) == B
    not_ready_a = ep(A.url, ready=False)
    assert choose([not_ready_a, B], rtt, A.url) == B
    assert choose([C], rtt, None) == C  # a draining endpoint is still better than none
    assert choose([A], {A.url: math.inf}, None) is None
