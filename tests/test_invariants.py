"""SPEC §5: no double spend, never below zero, nothing lost — under concurrency and failures."""
import asyncio
import stat
import time

import httpx
import pytest

from conftest import ON_DYNAMODB


def gather(url, requests):
    async def main():
        limits = httpx.Limits(max_connections=250, max_keepalive_connections=250)
        async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
            return await asyncio.gather(*(client.request(**r) for r in requests))
    return asyncio.run(main())


def test_200_concurrent_casts_of_one_invoice_spend_once(server):
    user = server.session()
    inv = server.invoice(user["token"], "hello-sigil").json()
    body = {"slug": "hello-sigil", "invoiceId": inv["invoiceId"], "context": {"name": "Once"}}
    headers = {"authorization": f"Bearer {user['token']}"}
    responses = gather(server.url, [dict(method="POST", url="/api/v1/spells/cast", json=body, headers=headers)] * 200)
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(202) == 1 and statuses.count(200) == 199, statuses
    assert len({(r.json()["runId"], r.json()["creditTxId"]) for r in responses}) == 1
    assert server.balance(user["token"]) == 1000 - inv["costPts"]
    kinds = [e["kind"] for e in server.ledger(user["token"])]
    assert kinds.count("debit") == 1


def test_concurrent_casts_never_drive_a_balance_below_zero(server):
    broke = server.session(grant=0)
    r = server.invoice(broke["token"], "hello-sigil")
    assert r.status_code == 402 and r.json()["code"] == "insufficient_balance"
    cost = server.http.get("/api/v1/spells/hello-sigil/meta").json()["avgCostPtsCached"]
    user = server.session(grant=7 * cost)
    invoices = [server.invoice(user["token"], "hello-sigil").json()["invoiceId"] for _ in range(200)]
    headers = {"authorization": f"Bearer {user['token']}"}
    requests = [dict(method="POST", url="/api/v1/spells/cast", headers=headers,
                     json={"slug": "hello-sigil", "invoiceId": i, "context": {"name": f"n{n}"}})
                for n, i in enumerate(invoices)]
    responses = gather(server.url, requests)
    statuses = [r.status_code for r in responses]
    assert statuses.count(202) == 7, sorted(statuses)
    assert statuses.count(402) == 193
    assert all(r.json()["code"] == "insufficient_balance" for r in responses if r.status_code == 402)
    assert server.balance(user["token"]) == 0
    ledger = server.ledger(user["token"])
    assert sum(e["pts"] for e in ledger) == 0
    assert [e["kind"] for e in ledger].count("debit") == 7


def test_a_lost_start_event_is_published_again(start, tmp_path):
    data = tmp_path / "data"
    first = start("--data-dir", str(data), "--no-runner")
    user = first.session(user_id="lost-event")
    inv, cast = first.quote_and_cast(user["token"], "hello-sigil", {"name": "Lost"})
    time.sleep(0.5)
    assert first.run(user["token"], cast["runId"])["status"] == "queued"
    first.stop()
    second = start("--data-dir", str(data), "--sweep-interval-ms", "200", "--republish-after-ms", "300")
    run = second.wait_for_status(user["token"], cast["runId"])
    assert run["status"] == "succeeded"
    assert second.balance(user["token"]) == 1000 - inv["costPts"]
    assert [e[1] for e in second.events(cast, inv["invoiceId"])][-1] == "executionFinished"


def test_a_run_whose_runner_died_is_failed_and_refunded_once(start, tmp_path):
    data = tmp_path / "data"
    first = start("--data-dir", str(data))
    user = first.session(user_id="dead-runner")
    inv, cast = first.quote_and_cast(user["token"], "long-haul", {})
    seen = first.events(cast, inv["invoiceId"], stop_after=4)
    assert seen[0][1] == "executionStarted"
    first.kill()  # SIGKILL mid-run: the runner dies with the process
    second = start("--data-dir", str(data), "--sweep-interval-ms", "200")
    run = second.wait_for_status(user["token"], cast["runId"], timeout=20)
    assert run["status"] == "failed" and run["error"]["code"] == "timed_out"
    events = second.events(cast, inv["invoiceId"], last_event_id=seen[-1][0])
    assert events[-1][1] == "spellExecutionError"
    assert events[-1][2]["code"] == "timed_out" and events[-1][2]["refundedPts"] == inv["costPts"]
    time.sleep(1)  # more sweeps: still refunded exactly once
    assert second.balance(user["token"]) == 1000
    kinds = [e["kind"] for e in second.ledger(user["token"])]
    assert kinds.count("refund") == 1 and kinds.count("debit") == 1


def test_state_survives_a_restart(start, tmp_path):
    data = tmp_path / "data"
    first = start("--data-dir", str(data))
    user = first.session(user_id="keeper")
    inv, cast = first.quote_and_cast(user["token"], "hello-sigil", {"name": "Kept"})
    before = first.wait_for_status(user["token"], cast["runId"])
    ledger_before = first.ledger(user["token"])
    first.stop()
    second = start("--data-dir", str(data))
    assert second.balance(user["token"]) == 1000 - inv["costPts"]
    assert second.ledger(user["token"]) == ledger_before
    after = second.run(user["token"], cast["runId"])
    # The owner's page credential is signed afresh on every read; the run itself is unchanged.
    assert after.pop("watchToken") and before.pop("watchToken")
    assert after == before
    replay = second.events(cast, inv["invoiceId"])
    assert replay[-1][1] == "executionFinished"


@pytest.mark.skipif(ON_DYNAMODB, reason="the data dir holds the embedded store; on DynamoDB it is unused")
def test_the_data_dir_and_its_database_are_private(start, tmp_path):
    """The database holds balances and the generated token secret: owner-only (SPEC 2, issue 10)."""
    data = tmp_path / "data"
    server = start("--data-dir", str(data))
    server.session()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "spellcast.redb").stat().st_mode) == 0o600


@pytest.mark.skipif(not ON_DYNAMODB, reason="the tests listen on loopback only; with the embedded store there the demo endpoint is meant to exist")
def test_the_demo_endpoint_is_not_served_on_dynamodb_unless_asked_for_as_unsafe(start):
    server = start(demo_sessions=False)
    r = server.http.post("/api/v1/dev/session", json={"grantPts": 1000000})
    assert r.status_code == 404, r.text
