"""Issue 12, item 2: run webhooks (SPEC §3.13) over real TCP, on the embedded store and (with
SPELLCAST_TEST_STORE=dynamodb) on DynamoDB: deliveries signed per Standard Webhooks (checked with
its own library, as a receiver would), retried with backoff after failures with the same id and
body, listed per run, kept in the store across a restart, refused before connecting to
addresses that are not public; invalid targets refused at the cast with nothing paid.

The server under test runs with `--unsafe-webhook-loopback` (the receiver here listens on
127.0.0.1) and `--webhook-retry-divisor 1000` (retries within seconds, not hours), except where a
test says otherwise."""
import http.server
import json
import socket
import threading
import time

import pytest
from standardwebhooks.webhooks import Webhook

from test_bad_input import is_problem

FAST = ("--unsafe-webhook-loopback", "--webhook-retry-divisor", "1000")


class Receiver:
    """An HTTP receiver on 127.0.0.1 that answers each delivery (of type `only`, if given) with
    the next status of `plan` (then 200) and records what it got."""

    def __init__(self, plan=(), only=None):
        self.plan = list(plan)
        self.only = only
        self.got = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    kind = json.loads(body or b"{}").get("type")
                    planned = receiver.plan and receiver.only in (None, kind)
                    status = receiver.plan.pop(0) if planned else 200
                    receiver.got.append({"headers": {k.lower(): v for k, v in self.headers.items()},
                                         "body": body, "status": status, "at": time.monotonic()})
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/spellcast?x=1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def wait_for(self, count, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.got) >= count:
                    return list(self.got)
            time.sleep(0.05)
        raise AssertionError(f"{count} deliveries expected, got {len(self.got)}")


@pytest.fixture
def receiver():
    made = []

    def _make(plan=(), only=None):
        r = Receiver(plan, only)
        made.append(r)
        return r

    yield _make
    for r in made:
        r.close()


def auth(token):
    return {"authorization": f"Bearer {token}"}


def cast_with(server, token, slug, context, **extra):
    inv = server.invoice(token, slug)
    assert inv.status_code == 201, inv.text
    body = {"slug": slug, "invoiceId": inv.json()["invoiceId"], "context": context, **extra}
    return inv.json(), server.http.post("/api/v1/spells/cast", json=body, headers=auth(token))


def attempts(server, token, run_id):
    r = server.http.get(f"/api/v1/runs/{run_id}/webhooks", headers=auth(token))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return r.json()


def wait_for_attempts(server, token, run_id, done, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = attempts(server, token, run_id)
        if done(got):
            return got
        time.sleep(0.05)
    raise AssertionError(f"attempts did not settle: {got}")


def secret(server, token):
    r = server.http.get("/api/v1/me/webhook-secret", headers=auth(token))
    assert r.status_code == 200, r.text
    return r.json()["secret"]


def test_a_run_webhook_is_signed_retried_with_the_same_id_and_listed(start, receiver):
    server = start(*FAST)
    hook = receiver(plan=[500, 503], only="run.completed")
    token = server.session(grant=100)["token"]
    key = secret(server, token)
    inv, r = cast_with(server, token, "hello-sigil", {"name": "Ada"},
                       webhook=hook.url, webhookEvents=["start", "completed"])
    assert r.status_code == 202, r.text
    run_id = r.json()["runId"]
    # The start is delivered at once; the end fails twice (500, then 503) before it is taken.
    got = hook.wait_for(4)
    started = got[0]
    assert json.loads(started["body"])["type"] == "run.started"
    assert [g["status"] for g in got] == [200, 500, 503, 200]

    verifier = Webhook(key)
    completed = got[1:]
    for g in got:
        # Signed with the user's secret over id.timestamp.body: the receiver's library agrees.
        payload = verifier.verify(g["body"], g["headers"])
        assert payload["data"]["runId"] == run_id
        assert g["headers"]["content-type"] == "application/json"
        assert g["headers"]["webhook-id"].startswith("msg_")
    ids = {g["headers"]["webhook-id"] for g in completed}
    assert len(ids) == 1, "one id on every attempt of one delivery"
    assert started["headers"]["webhook-id"] not in ids
    assert len({g["body"] for g in completed}) == 1, "the same body on every attempt"
    body = json.loads(completed[0]["body"])
    assert body["type"] == "run.completed"
    assert body["timestamp"].endswith("Z")
    run = server.run(token, run_id)
    # The owner's answer also carries a credential for its page (watchToken): never sent out.
    assert "watchToken" not in body["data"] and run.pop("watchToken")
    assert body["data"] == run, "data is the run snapshot as GET /api/v1/runs/{id} shows it"
    assert body["data"]["status"] == "succeeded"
    # Retries waited (5 s and 5 min, divided by 1000 here): never all at once.
    assert completed[1]["at"] - completed[0]["at"] >= 0.004
    assert completed[2]["at"] - completed[1]["at"] >= 0.29

    # Another secret does not verify; a tampered body does not either.
    with pytest.raises(Exception):
        Webhook("whsec_" + "QUJD" * 8).verify(got[0]["body"], got[0]["headers"])
    with pytest.raises(Exception):
        verifier.verify(got[-1]["body"].replace(b"succeeded", b"failed_xx"), got[-1]["headers"])

    listed = wait_for_attempts(server, token, run_id, lambda a: len(a) == 4)
    assert [(a["type"], a["attempt"], a.get("status")) for a in listed] == [
        ("run.started", 1, 200), ("run.completed", 1, 500), ("run.completed", 2, 503), ("run.completed", 3, 200)]
    assert listed[1]["error"] == "the receiver answered 500" and "nextAt" in listed[1]
    assert "error" not in listed[3] and "nextAt" not in listed[3]
    assert all(a["webhookId"] == completed[0]["headers"]["webhook-id"] for a in listed[1:])
    # The invoice that paid for the run sees them too; someone else does not.
    assert server.http.get(f"/api/v1/runs/{run_id}/webhooks", headers=auth(inv["invoiceId"])).status_code == 200
    stranger = server.session(grant=0)["token"]
    r = server.http.get(f"/api/v1/runs/{run_id}/webhooks", headers=auth(stranger))
    is_problem(r, 403, "forbidden")
    r = server.http.get(f"/api/v1/runs/{run_id}/webhooks")
    is_problem(r, 401, "unauthorized")
    r = server.http.get("/api/v1/runs/run_nope/webhooks", headers=auth(token))
    is_problem(r, 404, "run_not_found")
    # Taken: nothing more is sent.
    time.sleep(0.5)
    assert len(hook.got) == 4, "nothing is delivered twice once taken"


def test_by_default_only_the_end_is_delivered_and_a_run_without_a_webhook_sends_nothing(start, receiver):
    server = start(*FAST)
    hook = receiver()
    token = server.session(grant=100)["token"]
    _, r = cast_with(server, token, "hello-sigil", {"name": "Ada"}, webhook=hook.url)
    assert r.status_code == 202, r.text
    run_id = r.json()["runId"]
    got = hook.wait_for(1)
    assert json.loads(got[0]["body"])["type"] == "run.completed"
    _, plain = cast_with(server, token, "hello-sigil", {"name": "Bo"})
    assert plain.status_code == 202
    server.wait_for_status(token, plain.json()["runId"])
    time.sleep(0.5)
    assert len(hook.got) == 1
    assert attempts(server, token, plain.json()["runId"]) == []
    assert [a["type"] for a in attempts(server, token, run_id)] == ["run.completed"]


def test_a_failed_and_a_canceled_run_are_completed_deliveries_too(start, receiver):
    server = start("--no-runner", *FAST)
    hook = receiver()
    token = server.session(grant=100)["token"]
    _, r = cast_with(server, token, "hello-sigil", {"name": "Ada"}, webhook=hook.url)
    run_id = r.json()["runId"]
    assert server.http.post(f"/api/v1/runs/{run_id}/cancel", headers=auth(token)).status_code == 202
    body = json.loads(hook.wait_for(1)[0]["body"])
    assert (body["type"], body["data"]["status"]) == ("run.completed", "canceled")
    assert body["data"]["refundedPts"] == body["data"]["costPts"]


@pytest.mark.parametrize("extra, why", [
    ({"webhook": "http://hooks.example/x"}, "https"),
    ({"webhook": "ftp://hooks.example/x"}, "https"),
    ({"webhook": "https://user:pw@hooks.example/x"}, "credentials"),
    ({"webhook": "not a url"}, "URL"),
    ({"webhook": "https://hooks.example/" + "a" * 2100}, "2048"),
    ({"webhook": 42}, "https"),
    ({"webhook": "https://hooks.example/x", "webhookEvents": ["finished"]}, "finished"),
    ({"webhook": "https://hooks.example/x", "webhookEvents": "completed"}, "list"),
    ({"webhook": "https://hooks.example/x", "webhookEvents": [1]}, "list"),
    ({"webhookEvents": ["start"]}, "needs a webhook"),
    ({"webhook": "http://127.0.0.1:9/x"}, "https"),  # loopback only behind the local flag
])
def test_an_invalid_webhook_is_refused_and_nothing_is_paid(server, extra, why):
    token = server.session(grant=100)["token"]
    inv, r = cast_with(server, token, "hello-sigil", {"name": "Ada"}, **extra)
    assert why in is_problem(r, 422, "invalid_webhook")["detail"]
    assert server.balance(token) == 100
    # The invoice is still open: the same cast without the bad webhook goes through.
    ok = server.cast(token, "hello-sigil", inv["invoiceId"], {"name": "Ada"})
    assert ok.status_code == 202, ok.text


def test_addresses_that_are_not_public_are_never_connected_to(start, receiver):
    # No loopback flag: the real rules. The receiver listens on 127.0.0.1 and must get nothing.
    server = start()
    hook = receiver()
    token = server.session(grant=1000)["token"]
    targets = [f"https://localhost:{hook.port}/x",  # a name resolving to 127.0.0.1
               f"https://[::1]:{hook.port}/x",
               "https://169.254.169.254/latest/meta-data/",
               "https://10.0.0.1/x"]
    runs = []
    for url in targets:
        _, r = cast_with(server, token, "hello-sigil", {"name": "Ada"}, webhook=url)
        assert r.status_code == 202, (url, r.text)
        runs.append(r.json()["runId"])
    for run_id, url in zip(runs, targets):
        listed = wait_for_attempts(server, token, run_id, lambda a: len(a) >= 1)
        first = listed[0]
        assert first["attempt"] == 1 and "status" not in first, (url, first)
        assert "public" in first["error"], (url, first)
        assert "nextAt" in first, "refused now, tried again later (the name may change)"
    assert hook.got == []


def test_pending_deliveries_survive_a_restart(start, receiver, tmp_path):
    # The real schedule (the first retry after 5 s): the server dies after the first attempt
    # failed; the next process finds the delivery in the store and makes the second.
    data = ["--data-dir", str(tmp_path / "data")]
    first = start("--unsafe-webhook-loopback", *data, memory=False)
    hook = receiver(plan=[503])
    token = first.session(user_id="restart-user", grant=100)["token"]
    _, r = cast_with(first, token, "hello-sigil", {"name": "Ada"}, webhook=hook.url)
    run_id = r.json()["runId"]
    hook.wait_for(1)
    wait_for_attempts(first, token, run_id, lambda a: len(a) == 1)
    first.kill()

    second = start("--unsafe-webhook-loopback", *data, memory=False)
    got = hook.wait_for(2, timeout=20)
    assert [g["status"] for g in got] == [503, 200]
    assert got[0]["headers"]["webhook-id"] == got[1]["headers"]["webhook-id"]
    assert got[1]["at"] - got[0]["at"] >= 4.5, "the backoff was kept across the restart"
    listed = wait_for_attempts(second, token, run_id, lambda a: len(a) == 2)
    assert [(a["attempt"], a.get("status")) for a in listed] == [(1, 503), (2, 200)]


def test_a_receiver_that_does_not_answer_is_given_up_on_after_the_timeout(start):
    # A listener that accepts and never answers: the attempt ends at 10 s, recorded as no answer.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        server = start(*FAST)
        token = server.session(grant=100)["token"]
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/x"
        _, r = cast_with(server, token, "hello-sigil", {"name": "Ada"}, webhook=url)
        run_id = r.json()["runId"]
        listed = wait_for_attempts(server, token, run_id, lambda a: len(a) >= 1, timeout=40)
        assert "no answer in time" in listed[0]["error"], listed
    finally:
        silent.close()
