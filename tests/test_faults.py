"""Issue 10, item 7: faults of the machine and of its dependencies. A dependency that times out
answers 503 `unavailable` with Retry-After, and the client's retry of the same request is safe;
slow clients cannot hold the server's connections."""
import os
import socket
import threading
import time

import pytest

from conftest import ON_DYNAMODB
from test_bad_input import is_problem


class StallingProxy:
    """A TCP proxy in front of a server. While stalled it holds what the client sends (as a
    dependency that stopped answering does) and forwards it once resumed, so a request the client
    gave up on may still land late — as a timed-out write on AWS may."""

    def __init__(self, upstream_port):
        self.upstream = ("127.0.0.1", upstream_port)
        self.stalled = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src, dst, from_client):
        try:
            while data := src.recv(65536):
                while from_client and self.stalled.is_set():
                    time.sleep(0.02)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


@pytest.mark.skipif(not ON_DYNAMODB, reason="the dependency that stalls is DynamoDB (moto): the dynamodb pass")
def test_a_stalled_database_is_503_and_the_same_cast_retried_pays_once(start):
    moto_port = int(os.environ["SPELLCAST_MOTO_ENDPOINT"].rsplit(":", 1)[1])
    proxy = StallingProxy(moto_port)
    try:
        server = start(aws_timeout_secs=1, env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"})
        user = server.session(grant=100)
        auth = {"authorization": f"Bearer {user['token']}"}
        inv = server.invoice(user["token"], "hello-sigil").json()
        cost = inv["costPts"]

        proxy.stalled.set()
        began = time.monotonic()
        r = server.http.get("/api/v1/me/balance", headers=auth)
        body = is_problem(r, 503, "unavailable")
        assert int(r.headers["retry-after"]) >= 1
        assert "127.0.0.1" not in body["detail"], "the cause is logged, not shown"
        r = server.cast(user["token"], "hello-sigil", inv["invoiceId"], {"name": "Slow"})
        is_problem(r, 503, "unavailable")
        assert time.monotonic() - began < 25, "a stalled dependency fails the request within seconds"

        proxy.stalled.clear()
        # The stalled write may land late; either way the same request, sent again, pays once.
        first = server.cast(user["token"], "hello-sigil", inv["invoiceId"], {"name": "Slow"})
        again = server.cast(user["token"], "hello-sigil", inv["invoiceId"], {"name": "Slow"})
        assert first.status_code in (200, 202) and again.status_code == 200, (first.text, again.text)
        assert first.json()["runId"] == again.json()["runId"]
        server.wait_for_status(user["token"], first.json()["runId"])
        assert server.balance(user["token"]) == 100 - cost
        assert sum(e["pts"] for e in server.ledger(user["token"])) == 100 - cost
    finally:
        proxy.close()


def raw_connection(server):
    host, port = server.url.removeprefix("http://").split(":")
    c = socket.create_connection((host, int(port)))
    c.settimeout(10)
    return c


def closed_by_server(c):
    """Whether the server closed the connection (EOF or reset), reading what it sent first."""
    try:
        while c.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_slow_or_silent_clients_are_cut_off(start):
    server = start("--header-read-timeout-ms", "500")
    silent = raw_connection(server)
    trickle = raw_connection(server)
    began = time.monotonic()
    trickle.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
    for _ in range(5):  # a header line now and then, never the end of the head
        time.sleep(0.1)
        try:
            trickle.sendall(b"x-slow: 1\r\n")
        except OSError:
            break
    assert closed_by_server(trickle) and closed_by_server(silent)
    assert time.monotonic() - began < 8
    # A keep-alive connection that goes quiet after a request is closed too.
    idle = raw_connection(server)
    idle.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    assert idle.recv(4096).startswith(b"HTTP/1.1 200")
    assert closed_by_server(idle)
    assert server.http.get("/healthz").status_code == 200


def test_a_body_that_never_arrives_is_408_and_changes_nothing(start):
    server = start("--body-read-timeout-ms", "500")
    user = server.session(grant=100)
    c = raw_connection(server)
    c.sendall(b"POST /api/v1/payments/invoice HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
              + f"authorization: Bearer {user['token']}\r\ncontent-length: 200\r\n\r\n".encode()
              + b'{"spellSlug": "hello-')
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
        chunk = c.recv(4096)
        if not chunk:
            break
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert b"application/problem+json" in head and b'"code":"request_timeout"' in body
    assert server.balance(user["token"]) == 100
    assert [e["kind"] for e in server.ledger(user["token"])] == ["grant"]


def test_the_connection_cap_holds_and_frees_itself(start):
    server = start("--max-connections", "4", "--header-read-timeout-ms", "1500")
    hogs = [raw_connection(server) for _ in range(4)]
    time.sleep(0.2)  # all four accepted: every slot taken
    began = time.monotonic()
    r = server.http.get("/healthz")  # waits in the backlog until the idle ones are cut off
    waited = time.monotonic() - began
    assert r.status_code == 200
    assert waited > 1.0, f"served after {waited:.2f} s: the cap of 4 connections did not hold"
    assert all(closed_by_server(h) for h in hogs)
