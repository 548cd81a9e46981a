"""Issue 12, item 1: canceling a run (SPEC §3.12) over real TCP, on the embedded store and (with
SPELLCAST_TEST_STORE=dynamodb) on DynamoDB and EventBridge: a queued run ends at once with a full
refund; a running one stops at its next safe point — also inside a waiting tool — refunded
floor(cost × notSucceeded / of); asking again changes nothing; a finished run answers 409; the
money moves once and the ledger still sums to the balance."""
import time

from test_bad_input import is_problem


def cancel(server, token, run_id):
    return server.http.post(f"/api/v1/runs/{run_id}/cancel", headers={"authorization": f"Bearer {token}"})


def refunds(server, token, run_id):
    return [e for e in server.ledger(token) if e["kind"] == "refund" and e.get("runId") == run_id]


def assert_books_balance(server, token):
    assert sum(e["pts"] for e in server.ledger(token)) == server.balance(token)


def test_a_queued_run_canceled_ends_at_once_with_a_full_refund(start):
    server = start("--no-runner")  # nothing takes the run: it stays queued
    user = server.session(grant=100)
    token = user["token"]
    inv, cast = server.quote_and_cast(token, "hello-sigil", {"name": "Ada"})
    cost = inv["costPts"]
    assert server.balance(token) == 100 - cost

    r = cancel(server, token, cast["runId"])
    assert r.status_code == 202, r.text
    assert r.headers["content-type"] == "application/json"
    run = r.json()
    assert (run["status"], run["refundedPts"], run["costPts"]) == ("canceled", cost, cost)
    assert server.balance(token) == 100
    assert [e["pts"] for e in refunds(server, token, cast["runId"])] == [cost]

    # The stream replays the run: one terminal event, then the 204 rule.
    events = server.events(cast, inv["invoiceId"])
    assert [e[1] for e in events] == ["executionCanceled"]
    seq, _, data, _ = events[0]
    assert data["runId"] == cast["runId"]
    assert (data["completedSteps"], data["refundedPts"]) == (0, cost)
    assert data["canceledAt"].endswith("Z")
    again = server.http.get(cast["streamUrl"], headers={"authorization": f"Bearer {inv['invoiceId']}",
                                                        "last-event-id": str(seq)})
    assert again.status_code == 204

    # Asking again is idempotent: the same run, no second refund.
    r = cancel(server, token, cast["runId"])
    assert r.status_code == 202 and r.json()["status"] == "canceled"
    assert server.balance(token) == 100
    assert len(refunds(server, token, cast["runId"])) == 1
    assert server.run(token, cast["runId"])["status"] == "canceled"
    assert_books_balance(server, token)


def test_a_running_run_stops_inside_its_waiting_step_and_refunds_the_steps_not_done(server):
    user = server.session(grant=100)
    token = user["token"]
    inv, cast = server.quote_and_cast(token, "long-wait", {})
    cost = inv["costPts"]
    # Wait until the runner is inside the 30 s wait (the second of three steps).
    deadline = time.monotonic() + 30
    while True:
        run = server.run(token, cast["runId"])
        if run["steps"][1]["status"] == "running":
            break
        assert time.monotonic() < deadline, run
        time.sleep(0.05)

    asked = time.monotonic()
    r = cancel(server, token, cast["runId"])
    assert r.status_code == 202, r.text
    assert r.json()["status"] in ("canceling", "canceled")
    events = server.events(cast, inv["invoiceId"], timeout=30)
    stopped_after = time.monotonic() - asked
    kinds = [e[1] for e in events]
    assert kinds[0] == "executionStarted" and kinds[-1] == "executionCanceled", kinds
    assert kinds.count("executionCanceled") == 1
    assert [e[0] for e in events] == list(range(1, len(events) + 1)), "every event once, in order"
    # The wait was cut short: it had 29 s to go.
    assert stopped_after < 10, stopped_after
    expected = cost * 2 // 3  # one of three steps done: floor(cost × 2 / 3)
    data = events[-1][2]
    assert (data["completedSteps"], data["refundedPts"]) == (1, expected)

    run = server.run(token, cast["runId"])
    assert (run["status"], run["refundedPts"]) == ("canceled", expected)
    assert [s["status"] for s in run["steps"]] == ["succeeded", "pending", "pending"]
    assert server.balance(token) == 100 - cost + expected
    assert [e["pts"] for e in refunds(server, token, cast["runId"])] == ([expected] if expected else [])
    r = cancel(server, token, cast["runId"])
    assert r.status_code == 202 and r.json()["status"] == "canceled"
    assert server.balance(token) == 100 - cost + expected
    assert_books_balance(server, token)


def test_a_finished_run_cannot_be_canceled_and_only_its_owner_may_try(server):
    owner = server.session(grant=100)
    token = owner["token"]
    inv, cast = server.quote_and_cast(token, "hello-sigil", {"name": "Ada"})
    server.wait_for_status(token, cast["runId"])
    balance = server.balance(token)

    body = is_problem(cancel(server, token, cast["runId"]), 409, "run_finished")
    assert "succeeded" in body["detail"]
    assert server.run(token, cast["runId"])["status"] == "succeeded"
    assert server.balance(token) == balance

    stranger = server.session(grant=0)
    is_problem(cancel(server, stranger["token"], cast["runId"]), 403, "forbidden")
    # The invoice token watches its run; it does not change it.
    is_problem(cancel(server, inv["invoiceId"], cast["runId"]), 401, "unauthorized")
    is_problem(server.http.post(f"/api/v1/runs/{cast['runId']}/cancel"), 401, "unauthorized")
    is_problem(cancel(server, token, "run_does_not_exist"), 404, "run_not_found")
    is_problem(cancel(server, token, "x" * 300), 404, "run_not_found")
    r = server.http.get(f"/api/v1/runs/{cast['runId']}/cancel", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert server.balance(token) == balance


def test_many_cancels_at_once_move_the_money_once(server):
    from concurrent.futures import ThreadPoolExecutor

    user = server.session(grant=100)
    token = user["token"]
    inv, cast = server.quote_and_cast(token, "long-wait", {})
    cost = inv["costPts"]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: cancel(server, token, cast["runId"]), range(32)))
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers if a.status_code != 202]
    run = server.wait_for_status(token, cast["runId"], statuses=("canceled",), timeout=30)
    total_back = sum(e["pts"] for e in refunds(server, token, cast["runId"]))
    assert len(refunds(server, token, cast["runId"])) <= 1
    assert total_back == run["refundedPts"]
    assert server.balance(token) == 100 - cost + total_back
    assert_books_balance(server, token)
