"""What the drain counts as still unsent: the kernel's per-port send queues, orphaned sockets included."""
from __future__ import annotations

import socket
import threading
import time

from serving.runtime.server import kernel_unsent_bytes

# The header and two rows of /proc/net/tcp as Linux writes them (net/ipv4/tcp_ipv4.c): local 127.0.0.1:8080
# (0x1F90) in LISTEN (0A) with a backlog, an established connection with 0x5000 bytes unacknowledged, and a
# connection on another port.
PROC_TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00005000:00000000 01:00000014 00000000 10001        0 2 1 0 20 4 30 10 -1
   2: 0100007F:2382 0100007F:D432 01 00000400:00000000 01:00000014 00000000 10001        0 3 1 0 20 4 30 10 -1
"""


def test_counts_only_the_serving_port_and_never_the_listen_backlog(tmp_path):
    (tmp_path / "tcp").write_text(PROC_TCP)
    (tmp_path / "tcp6").write_text(PROC_TCP.splitlines()[0] + "\n")
    assert kernel_unsent_bytes({8080}, tmp_path) == 0x5000
    assert kernel_unsent_bytes({9090}, tmp_path) == 0x400
    assert kernel_unsent_bytes({1}, tmp_path) == 0


def test_none_where_there_is_no_proc_net(tmp_path):
    assert kernel_unsent_bytes({8080}, tmp_path / "absent") is None


def test_a_closed_socket_with_data_in_flight_still_counts():
    """The case that cut slow readers off: the process closed the socket, the kernel still holds its bytes."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    client.connect(("127.0.0.1", port))
    conn, _ = listener.accept()
    conn.setblocking(False)
    sent = 0
    try:
        while True:
            sent += conn.send(b"x" * (1 << 20))
    except BlockingIOError:
        pass
    conn.close()  # orphaned: the kernel goes on sending what it holds
    assert kernel_unsent_bytes({port}) > sent // 2
    drained = threading.Event()

    def read_all():
        while client.recv(1 << 20):
            pass
        drained.set()

    threading.Thread(target=read_all, daemon=True).start()
    deadline = time.monotonic() + 10
    while kernel_unsent_bytes({port}) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert kernel_unsent_bytes({port}) == 0
    drained.wait(5)
    client.close()
    listener.close()
