"""SPEC §2: rate limits per user, 429 `rate_limited` with `Retry-After`, counted where every
instance sees them (the table, on DynamoDB)."""
import time

import pytest

from conftest import ON_DYNAMODB


def limited(r):
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    return r


def within_one_window():
    """The limits count in fixed minutes: start a test well inside one, so its hits share it."""
    left = 60 - time.time() % 60
    if left < 15:
        time.sleep(left + 0.1)


def quote(server, token):
    return server.http.post("/api/v1/payments/invoice", json={"spellSlug": "hello-sigil", "asset": "PTS"},
                            headers={"authorization": f"Bearer {token}"})


def test_quotes_and_casts_are_limited_per_user_and_a_refusal_changes_nothing(start):
    server = start("--invoices-per-minute", "3", "--casts-per-minute", "2", limits=True)
    alice, bob = server.session(), server.session()
    within_one_window()
    quotes = [quote(server, alice["token"]) for _ in range(3)]
    assert [q.status_code for q in quotes] == [201, 201, 201]
    limited(quote(server, alice["token"]))
    assert quote(server, bob["token"]).status_code == 201, "another user has his own count"

    invoices = [q.json()["invoiceId"] for q in quotes]
    casts = [server.cast(alice["token"], "hello-sigil", inv, {"name": "L"}) for inv in invoices[:2]]
    assert [c.status_code for c in casts] == [202, 202]
    before = server.balance(alice["token"])
    limited(server.cast(alice["token"], "hello-sigil", invoices[2], {"name": "L"}))
    assert server.balance(alice["token"]) == before, "a refused cast pays nothing"


def test_demo_sessions_are_limited_per_client_address(start):
    """The one request that writes without a user (a demo session is a new user with points) is
    counted per client address."""
    server = start("--sessions-per-minute", "3", limits=True)
    within_one_window()
    for _ in range(3):
        server.session()
    r = limited(server.http.post("/api/v1/dev/session", json={"grantPts": 1000}))
    assert "sessions" in r.json()["detail"]
    # Reading needs no session and is not counted with them.
    assert server.http.get("/api/v1/spells/hello-sigil/meta").status_code == 200


@pytest.mark.skipif(not ON_DYNAMODB, reason="the embedded store counts in its one process; "
                    "the limits hold across processes where the counts are in the table")
def test_the_limits_hold_across_instances(start):
    first = start("--invoices-per-minute", "2", limits=True)
    second = start("--invoices-per-minute", "2", limits=True)
    user = first.session()
    within_one_window()
    assert quote(first, user["token"]).status_code == 201
    assert quote(second, user["token"]).status_code == 201
    limited(quote(first, user["token"]))
    limited(quote(second, user["token"]))


def test_open_streams_are_capped_per_run_and_per_user(start):
    # No runner: the runs stay queued and their streams open (pinging) until closed.
    # A long heartbeat: a stream that ends must free its slot without waiting for a write.
    server = start("--streams-per-run", "2", "--streams-per-user", "3", "--no-runner", "--heartbeat-ms", "60000")
    user = server.session()
    runs = [server.quote_and_cast(user["token"], "hello-sigil", {"name": n}) for n in ("A", "B")]
    auth = {"authorization": f"Bearer {user['token']}"}

    def open_stream(cast):
        stream = server.http.stream("GET", cast["streamUrl"], headers=auth)
        r = stream.__enter__()
        return stream, r

    (_, a), (_, b) = runs
    first = open_stream(a)
    second = open_stream(a)
    assert first[1].status_code == second[1].status_code == 200
    third = server.http.get(a["streamUrl"], headers=auth)
    limited(third)
    assert "run" in third.json()["detail"]
    on_b = open_stream(b)
    assert on_b[1].status_code == 200
    fourth = server.http.get(b["streamUrl"], headers=auth)
    limited(fourth)
    assert "user" in fourth.json()["detail"]
    # A stream whose client leaves gives its slot back at once.
    first[0].__exit__(None, None, None)
    deadline = time.monotonic() + 5
    while True:
        again = server.http.stream("GET", b["streamUrl"], headers=auth)
        r = again.__enter__()
        if r.status_code == 200:
            again.__exit__(None, None, None)
            break
        again.__exit__(None, None, None)
        assert time.monotonic() < deadline, "the slot was never given back"
        time.sleep(0.2)
    for stream, _ in (second, on_b):
        stream.__exit__(None, None, None)
