"""SPEC §8: durable runs. A run whose runner was lost is taken over at its first step not
succeeded; a succeeded step never runs again; a cut-off step that is not safe to repeat fails
the run, refunded once."""
import json
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from openai_faults import Faults
from test_llm import tools_file

STEPS = ("one", "two", "three")


def chain(slug="chain"):
    """Three answers of the slow model (~3 s each), each prompt unique to its run and step; the
    last one also reads the first answer by reference."""
    ask = lambda i, prompt: {"id": STEPS[i], "title": f"Ask {i + 1}", "tool": "llm.chat",
                             "with": {"endpoint": "slow", "prompt": prompt, "maxTokens": 64}}
    return {
        "slug": slug, "version": 1, "title": "Chain", "summary": "s", "description": "d", "timeoutSecs": 120,
        "inputs": {"type": "object", "properties": {"question": {"type": "string"}}, "required": ["question"]},
        "steps": [ask(0, "{{ question }}/one"), ask(1, "{{ question }}/two"),
                  ask(2, "{{ question }}/three after {{ steps.one.text }}")],
    }


def prompts(faults):
    """How often each prompt was asked of the model server."""
    return Counter(body["messages"][-1]["content"] for _, body, _ in list(faults.requests))


def test_runs_whose_server_was_killed_resume_at_their_step_and_run_each_step_once(start, catalog):
    faults = Faults()
    try:
        (catalog / "chain.json").write_text(json.dumps(chain()))
        tools = str(tools_file(catalog, faults))
        data = catalog.parent / "data"
        args = ("--data-dir", str(data), "--tools", tools, "--lease-ms", "1500", "--sweep-interval-ms", "200")
        first = start(*args, env={"FAULTS_KEY": "k"})
        user = first.session(user_id="durable", grant=100000)
        casts = [first.quote_and_cast(user["token"], "chain", {"question": f"q{n}"}) for n in range(20)]
        # Killed at a random moment of the burst: some runs between steps, most mid-answer.
        time.sleep(random.uniform(3.5, 6.5))
        first.kill()
        assert prompts(faults), "the runs had begun"

        second = start(*args, env={"FAULTS_KEY": "k"})
        runs = [second.wait_for_status(user["token"], cast["runId"], timeout=90) for _, cast in casts]
        assert [r["status"] for r in runs] == ["succeeded"] * len(runs), [r.get("error") for r in runs]

        asked = prompts(faults)
        resumed_steps = 0
        for (inv, cast), run in zip(casts, runs):
            events = second.events(cast, inv["invoiceId"])
            # A watcher reading from the first event sees each once, in order, none skipped.
            assert [e[0] for e in events] == list(range(1, len(events) + 1))
            kinds = Counter(e[1] for e in events)
            assert kinds["executionStarted"] == 1 and kinds["executionFinished"] == 1
            resumed = {e[2]["stepId"] for e in events if e[1] == "stepUpdate" and e[2].get("resumed")}
            resumed_steps += len(resumed)
            question = f"q{casts.index((inv, cast))}"
            for step in STEPS:
                n = sum(count for prompt, count in asked.items() if prompt.startswith(f"{question}/{step}"))
                # A step that succeeded before the kill was never asked again; only a step cut
                # off mid-answer (taken up again: `resumed`) was asked twice.
                assert n == 1 or (n == 2 and step in resumed), (question, step, n, resumed)
            assert run["outputs"][2]["value"] == "The stars are far, and the oracle is near."
            assert run["refundedPts"] == 0
        assert resumed_steps >= 1, "the kill interrupted at least one run"

        ledger = second.ledger(user["token"])
        assert sum(e["pts"] for e in ledger) == second.balance(user["token"])
        assert [e["kind"] for e in ledger].count("refund") == 0
    finally:
        faults.stop()


def serve(handler, path):
    """An HTTP endpoint on the loopback answered by `handler` (for the test's life): its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


class Hanging:
    """An endpoint that counts the POSTs it gets and answers none of them for a minute."""

    def __init__(self):
        self.posts = 0
        hanging = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                hanging.posts += 1
                time.sleep(60)

        self.url = serve(Handler, "/place")


def test_a_cut_off_step_not_safe_to_repeat_fails_the_run_refunded_once(start, catalog, tmp_path):
    spell = {
        "slug": "unrepeatable", "version": 1, "title": "Unrepeatable", "summary": "s", "description": "d",
        "timeoutSecs": 120, "inputs": {"type": "object"},
        "steps": [{"id": "post", "title": "Place the order", "tool": "http", "with": {"endpoint": "orders"}}],
    }
    (catalog / "unrepeatable.json").write_text(json.dumps(spell))
    orders = Hanging()
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps({"http": {"orders": {"url": orders.url, "timeoutSecs": 100}}}))
    args = ("--data-dir", str(tmp_path / "data"), "--tools", str(tools), "--lease-ms", "1000",
            "--sweep-interval-ms", "200")
    first = start(*args)
    user = first.session(user_id="unrepeatable")
    inv, cast = first.quote_and_cast(user["token"], "unrepeatable", {})
    deadline = time.monotonic() + 10
    while orders.posts == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert orders.posts == 1
    first.kill()  # the order may or may not have been placed: nobody knows

    second = start(*args)
    run = second.wait_for_status(user["token"], cast["runId"], timeout=20)
    assert run["status"] == "failed" and run["error"]["code"] == "interrupted", run
    assert run["error"]["stepId"] == "post" and run["refundedPts"] == inv["costPts"]
    time.sleep(1)  # more sweeps: nothing posted again, refunded once
    assert orders.posts == 1
    assert second.balance(user["token"]) == 1000
    kinds = [e["kind"] for e in second.ledger(user["token"])]
    assert kinds.count("refund") == 1 and kinds.count("debit") == 1
    events = second.events(cast, inv["invoiceId"])
    assert events[-1][1] == "spellExecutionError" and events[-1][2]["code"] == "interrupted"


def until_waiting(server, inv, cast):
    """Reads the stream until the nap waits; the events so far."""
    events = server.events(cast, inv["invoiceId"], stop_after=5)
    assert events[-1][1] == "stepUpdate" and events[-1][2]["status"] == "waiting", events
    return events


def test_a_long_wait_holds_no_runner_and_crosses_a_restart(start, catalog, tmp_path):
    args = ("--data-dir", str(tmp_path / "data"), "--durable-wait-after-ms", "1000", "--sweep-interval-ms", "200")
    first = start(*args)
    user = first.session(user_id="napper")
    inv, cast = first.quote_and_cast(user["token"], "nap", {})
    events = until_waiting(first, inv, cast)
    until = events[-1][2]["until"]
    snapshot = first.run(user["token"], cast["runId"])
    assert snapshot["status"] == "running"
    assert snapshot["steps"][1]["status"] == "waiting" and snapshot["steps"][1]["until"] == until
    first.kill()  # nothing was waiting in it: the due time is in the store

    second = start(*args)
    run = second.wait_for_status(user["token"], cast["runId"], timeout=20)
    assert run["status"] == "succeeded" and run["refundedPts"] == 0
    assert run["finishedAt"] >= until, (run["finishedAt"], until)
    events = second.events(cast, inv["invoiceId"])
    assert [e[0] for e in events] == list(range(1, len(events) + 1))
    nap = [(e[2]["status"], e[2].get("until")) for e in events if e[1] == "stepUpdate" and e[2]["stepId"] == "nap"]
    # It waited, then was done: never `running` (nothing executed the delay in a process).
    assert nap == [("waiting", until), ("succeeded", None)], nap
    assert second.balance(user["token"]) == 1000 - inv["costPts"]


def test_a_run_canceled_while_it_waits_stops_at_once(start, catalog):
    server = start("--durable-wait-after-ms", "1000")
    user = server.session(user_id="waiting-canceler")
    inv, cast = server.quote_and_cast(user["token"], "nap", {})
    until_waiting(server, inv, cast)
    r = server.http.post(f"/api/v1/runs/{cast['runId']}/cancel", headers={"authorization": f"Bearer {user['token']}"})
    assert r.status_code == 202, r.text
    # One step of three done: two thirds back, rounded down, at once (no runner to wind down).
    refund = inv["costPts"] * 2 // 3
    assert r.json()["status"] == "canceled" and r.json()["refundedPts"] == refund, r.json()
    assert r.json()["steps"][1]["status"] == "pending" and "until" not in r.json()["steps"][1]
    assert server.balance(user["token"]) == 1000 - inv["costPts"] + refund
    time.sleep(4.5)  # past the wait: nothing wakes
    assert server.run(user["token"], cast["runId"])["status"] == "canceled"
    assert server.balance(user["token"]) == 1000 - inv["costPts"] + refund


class Jobs:
    """An endpoint that takes each job with `202 Accepted` (the asynchronous request-reply
    pattern): the POST answers a status URL (`Location`) and `Retry-After: 1`; the first poll
    answers 202 again with `Retry-After: 3`; the next one the job's result. `location` may send
    the caller elsewhere."""

    def __init__(self, location=None):
        self.posts, self.polls = 0, []
        jobs = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status, headers=(), body=b""):
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                jobs.posts += 1
                self.rfile.read(int(self.headers["content-length"]))
                where = location or f"/jobs/{jobs.posts}?ticket=secret-{jobs.posts}"
                self.answer(202, [("location", where), ("retry-after", "1")])

            def do_GET(self):
                jobs.polls.append((self.path, time.monotonic()))
                if sum(1 for p, _ in jobs.polls if p == self.path) == 1:
                    self.answer(202, [("retry-after", "3")])
                else:
                    self.answer(200, [("content-type", "application/json")], b'{"answer": 42}')

        self.url = serve(Handler, "/jobs")


def with_jobs(catalog, tmp_path, jobs):
    spell = {
        "slug": "job", "version": 1, "title": "Job", "summary": "s", "description": "d",
        "timeoutSecs": 60, "inputs": {"type": "object"},
        "steps": [{"id": "job", "title": "Do the job", "tool": "http", "with": {"endpoint": "jobs"}}],
    }
    (catalog / "job.json").write_text(json.dumps(spell))
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps({"http": {"jobs": {"url": jobs.url, "timeoutSecs": 10}}}))
    return ("--data-dir", str(tmp_path / "data"), "--tools", str(tools), "--durable-wait-after-ms", "2000",
            "--sweep-interval-ms", "200")


def test_a_tool_that_asks_to_be_called_back_waits_durably_and_is_polled_across_a_restart(start, catalog, tmp_path):
    """SPEC 8.2: an http endpoint that answers 202 Accepted is polled at its Location after its
    Retry-After: a short wait in the runner (holding the run), a long one durable (nothing held;
    the server killed meanwhile and started again); the job is posted once, its result is the
    step's output, and the status URL (the deployer's) is never shown."""
    jobs = Jobs()
    args = with_jobs(catalog, tmp_path, jobs)
    first = start(*args)
    user = first.session(user_id="job-caster")
    inv, cast = first.quote_and_cast(user["token"], "job", {})
    deadline = time.monotonic() + 20
    while not jobs.polls and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # the poll's 202 is taken: the long wait begins
    snapshot = first.run(user["token"], cast["runId"])
    assert snapshot["steps"][0]["status"] == "waiting" and snapshot["steps"][0]["until"], snapshot
    first.kill()

    second = start(*args)
    run = second.wait_for_status(user["token"], cast["runId"], timeout=20)
    assert run["status"] == "succeeded" and run["refundedPts"] == 0, run
    assert [o["value"] for o in run["outputs"]] == [{"answer": 42}]
    assert jobs.posts == 1, "the job is posted once; what follows are polls"
    assert [p for p, _ in jobs.polls] == ["/jobs/1?ticket=secret-1"] * 2
    assert jobs.polls[1][1] - jobs.polls[0][1] >= 3, "polled again after its Retry-After"
    events = second.events(cast, inv["invoiceId"])
    assert [e[0] for e in events] == list(range(1, len(events) + 1))
    waits = [e[2]["until"] for e in events if e[1] == "stepUpdate" and e[2]["status"] == "waiting"]
    assert len(waits) == 2, events
    shown = json.dumps(events) + json.dumps(run)
    assert "ticket" not in shown and "/jobs/1" not in shown
    assert second.balance(user["token"]) == 1000 - inv["costPts"]


def test_a_status_url_on_another_origin_fails_the_step_refunded(start, catalog, tmp_path):
    """An endpoint may send its caller to poll itself only: a Location elsewhere (another host,
    the cloud's metadata service) fails the step, refunded, and nothing is fetched there."""
    jobs = Jobs(location="http://169.254.169.254/latest/meta-data/")
    server = start(*with_jobs(catalog, tmp_path, jobs))
    user = server.session(user_id="job-redirected")
    inv, cast = server.quote_and_cast(user["token"], "job", {})
    run = server.wait_for_status(user["token"], cast["runId"], timeout=20)
    assert run["status"] == "failed" and run["refundedPts"] == inv["costPts"], run
    assert "not on its own origin" in run["error"]["message"] and "169.254" not in run["error"]["message"]
    assert jobs.posts == 1 and jobs.polls == []
