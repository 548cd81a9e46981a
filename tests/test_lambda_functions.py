"""The Lambda functions end to end, under the Lambda runtime emulator (`cargo lambda watch`), on
moto's DynamoDB, EventBridge and SQS: meta -> invoice -> cast through the function URLs, the
`executionStarted` event read from an SQS target of the rule and handed to the runner function
as EventBridge would, the stream function's SSE read while the run progresses (and resumed), the
snapshot, a duplicate delivery, the schedule, and the EMF metrics the runner writes.

Runs in the DynamoDB pass of the suite (moto is up there); the embedded pass has no AWS engine."""
import datetime
import hashlib
import hmac
import http.server
import json
import os
import pathlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid

import httpx
import jwt
import pytest
import trustme
from httpx_sse import connect_sse
from standardwebhooks.webhooks import Webhook

from conftest import OUT, ROOT, ON_DYNAMODB, SESSION, TOKEN_SECRET, WEBHOOK_SECRET, Server
from lambda_first_events import FIRST_EVENTS, FUNCTIONS, function_env
from oidc_provider import CLIENT_ID, Provider, make_key

pytestmark = pytest.mark.skipif(not ON_DYNAMODB, reason="the functions need DynamoDB and EventBridge: "
                                                         "they run in the SPELLCAST_TEST_STORE=dynamodb pass")

STREAM_LIMIT_SECS = 2  # below slow-scroll's length, so the first stream is cut and resumed
REPUBLISH_AFTER_SECS = 2  # a queued run's start event counts as lost after this (60 s on AWS)


def cargo_lambda():
    found = shutil.which("cargo-lambda")
    if found:
        return found
    venv = pathlib.Path(os.environ.get("SPELLCAST_VENV", pathlib.Path.home() / ".cache/spellcast/venv"))
    return str(venv / "bin" / "cargo-lambda")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Emulator:
    """`cargo lambda watch` serving every function of the workspace on 127.0.0.1."""

    def __init__(self, env, headers=None, log=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log or OUT / "lambda-emulator.log"
        OUT.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [cargo_lambda(), "lambda", "watch", "-A", "127.0.0.1", "-P", str(self.port), "--ignore-changes",
             "--concurrency", "4"],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                assert self.proc.poll() is None, self.output()
                time.sleep(0.2)
        # What CloudFront adds to every request to the API (x-spellcast-origin).
        self.http = httpx.Client(base_url=self.url, timeout=120, headers=headers or {})

    def output(self):
        return self.log_path.read_text(errors="replace")

    def url_of(self, function, path):
        return f"/lambda-url/{function}{path}"

    def invoke(self, function, event):
        """Invokes a function as an AWS service would (the Lambda Invoke API)."""
        r = self.http.post(f"/2015-03-31/functions/{function}/invocations", json=event)
        return r

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def aws():
    import boto3
    return {name: boto3.client(name, endpoint_url=os.environ["SPELLCAST_MOTO_ENDPOINT"], region_name="us-east-1",
                               aws_access_key_id="test", aws_secret_access_key="test")
            for name in ("events", "sqs", "dynamodb", "secretsmanager")}


@pytest.fixture(scope="module")
def deployment(aws, tmp_path_factory):
    """The table and bus (made by spellcast-local, which also grants demo points), a rule sending
    `executionStarted` to an SQS queue, and the emulator serving the functions."""
    name = f"lam-{SESSION}"
    catalog = tmp_path_factory.mktemp("catalog")
    for f in (ROOT / "infra" / "spells").glob("*.json"):
        shutil.copy(f, catalog)
    local = Server(["--catalog", str(catalog), "--store", "dynamodb", "--create-tables", "--table", name,
                    "--event-bus", name, "--outputs-bucket", name, "--aws-timeout-secs", "120", "--no-runner",
                    # The webhooks function delivers (this process would race it on the shared table).
                    "--no-webhooks",
                    # Demo sessions fund the test users on the shared table (the Lambdas have none).
                    "--unsafe-demo-sessions"], "lambda-setup")
    queue = aws["sqs"].create_queue(QueueName=name)["QueueUrl"]
    queue_arn = aws["sqs"].get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    # The same pattern as the template's rule for the runner.
    aws["events"].put_rule(Name=name, EventBusName=name,
                           EventPattern=json.dumps({"source": ["spellcast"], "detail-type": ["executionStarted"]}))
    aws["events"].put_targets(Rule=name, EventBusName=name, Targets=[{"Id": "queue", "Arn": queue_arn}])
    # The template's webhooks queue and its rule (`WebhookDueRule`); a CA the webhooks function
    # trusts besides the public ones (SPELLCAST_WEBHOOK_CA_FILE), which signs the test receiver.
    hooks = aws["sqs"].create_queue(QueueName=name + "-hooks")["QueueUrl"]
    hooks_arn = aws["sqs"].get_queue_attributes(QueueUrl=hooks, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws["events"].put_rule(Name=name + "-hooks", EventBusName=name,
                           EventPattern=json.dumps({"source": ["spellcast"], "detail-type": ["webhookDue"]}))
    aws["events"].put_targets(Rule=name + "-hooks", EventBusName=name, Targets=[{"Id": "hooks", "Arn": hooks_arn}])
    # The template's wake-ups queue (durable waits; the durable emulators' runner sends to it).
    wake_ups = aws["sqs"].create_queue(QueueName=name + "-wake-ups")["QueueUrl"]
    # Everything published on the bus, to check that nothing goes out that no rule consumes.
    audit = aws["sqs"].create_queue(QueueName=name + "-audit")["QueueUrl"]
    audit_arn = aws["sqs"].get_queue_attributes(QueueUrl=audit, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws["events"].put_rule(Name=name + "-audit", EventBusName=name, EventPattern=json.dumps({"source": ["spellcast"]}))
    aws["events"].put_targets(Rule=name + "-audit", EventBusName=name, Targets=[{"Id": "audit", "Arn": audit_arn}])
    # A real OpenID provider the functions verify users' tokens against (tests/oidc).
    provider = Provider(tmp_path_factory.mktemp("oidc"), free_port(), [make_key("ec", "ec-1")],
                        ["http://127.0.0.1:9/me"], OUT / "lambda-oidc-provider.log")
    # The token keys as the template hands them over: named by their secrets, read by the functions
    # from Secrets Manager at start (never in their environment). The session key is the one the
    # tests sign sessions with, as an identity service of the deployer's would; the invoice key
    # is the stack's own.
    session_key = aws["secretsmanager"].create_secret(Name=f"{name}-session", SecretString=TOKEN_SECRET)["ARN"]
    invoice_key = aws["secretsmanager"].create_secret(Name=f"{name}-invoice",
                                                      SecretString=uuid.uuid4().hex + uuid.uuid4().hex)["ARN"]
    # CloudFront's origin header value, as the functions behind the API read it.
    origin = uuid.uuid4().hex + uuid.uuid4().hex
    origin_secret = aws["secretsmanager"].create_secret(Name=f"{name}-origin", SecretString=origin)["ARN"]
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("ca") / "receivers.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    env = dict(os.environ, SPELLCAST_TABLE=name, SPELLCAST_EVENT_BUS=name, SPELLCAST_OUTPUTS_BUCKET=name,
               SPELLCAST_PUBLIC_URL="https://spellcast.test",
               SPELLCAST_SESSION_KEY_ARN=session_key, SPELLCAST_INVOICE_KEY_ARN=invoice_key,
               SPELLCAST_WEBHOOK_SECRET=WEBHOOK_SECRET, SPELLCAST_ORIGIN_SECRET_ARN=origin_secret,
               SPELLCAST_AWS_TIMEOUT_SECS="120", SPELLCAST_HEARTBEAT_MS="500",
               SPELLCAST_STREAM_LIMIT_SECS=str(STREAM_LIMIT_SECS),
               SPELLCAST_REPUBLISH_AFTER_SECS=str(REPUBLISH_AFTER_SECS), RUST_LOG="info",
               SPELLCAST_WEBHOOKS_QUEUE_URL=hooks, SPELLCAST_WEBHOOK_CA_FILE=str(ca_file),
               SPELLCAST_OIDC_ISSUER=provider.issuer, SPELLCAST_OIDC_AUDIENCE=CLIENT_ID,
               # The tool configuration as the template hands it to every function: the real
               # small model on this machine as `local` (the conftest's `model` fixture).
               SPELLCAST_TOOLS=pathlib.Path(os.environ["SPELLCAST_TOOLS_FILE"]).read_text())
    emulator = Emulator(env, headers={"x-spellcast-origin": origin})
    try:
        yield {"local": local, "emulator": emulator, "queue": queue, "name": name, "hooks": hooks, "ca": ca,
               "wake_ups": wake_ups,
               "audit": audit, "env": env, "origin": origin,
               "provider": provider}
    finally:
        provider.stop()
        emulator.stop()
        local.stop()


def lambda_session(user_id):
    """A session token as the platform's identity service would sign it for the functions."""
    now = int(time.time())
    return jwt.encode({"sub": user_id, "iat": now, "exp": now + 3600, "aud": "spellcast-session", "iss": "spellcast"},
                      TOKEN_SECRET, algorithm="HS256")


def funded_user(local, pts=1000):
    """A user with `pts` demo points (granted through the local server's dev endpoint, which the
    Lambdas do not have) and a session token for the functions."""
    user_id = "u-" + uuid.uuid4().hex[:12]
    session = local.session(user_id=user_id, grant=pts)
    assert session["userId"] == user_id and session["balancePts"] == pts
    return user_id, lambda_session(user_id)


def receive(aws, queue, wanted, what, timeout=30):
    """The first message on `queue` whose body (JSON) `wanted` accepts, as an event source would
    take it (deleted; the others it meets on the way too): (its body as sent, parsed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = aws["sqs"].receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for m in got.get("Messages", []):
            aws["sqs"].delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
            body = json.loads(m["Body"])
            if wanted(body):
                return m["Body"], body
    raise AssertionError(f"no {what} reached the queue")


def receive_execution(aws, queue, run_id, timeout=30):
    """The `executionStarted` event for `run_id`, as the rule delivered it to its SQS target."""
    return receive(aws, queue, lambda e: e["detail"].get("runId") == run_id,
                   f"executionStarted for {run_id}", timeout)[1]


def quote_and_cast(emulator, auth, slug, context):
    """An invoice from the invoice function, paid through the cast function: (invoice, cast)."""
    invoice = emulator.http.post(emulator.url_of("invoice", "/api/v1/payments/invoice"), headers=auth,
                                 json={"spellSlug": slug, "asset": "PTS"})
    assert invoice.status_code == 201, invoice.text
    invoice = invoice.json()
    cast = emulator.http.post(emulator.url_of("cast", "/api/v1/spells/cast"), headers=auth,
                              json={"slug": slug, "invoiceId": invoice["invoiceId"], "context": context})
    assert cast.status_code == 202, cast.text
    return invoice, cast.json()


def read_stream(emulator, cast, invoice_token, last_event_id=None, opened=None):
    """Reads one connection of the stream function: [(id, event, data, arrival)] until it closes.
    `opened` (a threading.Event) is set once the stream has answered 200."""
    headers = {"authorization": f"Bearer {invoice_token}"}
    if last_event_id is not None:
        headers["last-event-id"] = str(last_event_id)
    out = []
    with connect_sse(emulator.http, "GET", emulator.url_of("stream", cast["streamUrl"]), headers=headers) as source:
        if source.response.status_code == 204:
            return None
        assert source.response.status_code == 200, source.response.read()
        assert source.response.headers["content-type"].startswith("text/event-stream")
        assert "content-length" not in source.response.headers
        if opened is not None:
            opened.set()
        for sse in source.iter_sse():
            if not sse.data:
                continue
            out.append((int(sse.id), sse.event, json.loads(sse.data), time.monotonic()))
    return out


def test_the_oracle_streams_its_answer_through_the_runner_and_stream_functions(deployment, aws):
    """`llm.chat` on AWS's shape: the runner function calls the model (the real small model on
    this machine) and writes its deltas; the stream function delivers them while it answers."""
    emulator, local = deployment["emulator"], deployment["local"]
    _, token = funded_user(local)
    auth = {"authorization": f"Bearer {token}"}
    invoice, cast = quote_and_cast(emulator, auth, "oracle", {"question": "What is rain?"})
    event = receive_execution(aws, deployment["queue"], cast["runId"])
    opened, streamed = threading.Event(), {}
    reader = threading.Thread(target=lambda: streamed.update(
        events=read_stream(emulator, cast, invoice["invoiceId"], opened=opened)))
    reader.start()
    try:
        assert opened.wait(120), "the stream function did not open the stream"
        ran = emulator.invoke("runner", event)
    finally:
        reader.join(120)
    assert ran.status_code == 200 and ran.json()["status"] == "succeeded", ran.text
    events = streamed["events"]
    while events[-1][1] not in ("executionFinished", "spellExecutionError"):
        events += read_stream(emulator, cast, invoice["invoiceId"], last_event_id=events[-1][0])
    assert events[-1][1] == "executionFinished", events[-1]
    deltas = [e for e in events if e[1] == "stepDelta"]
    assert deltas and all(d[2]["stepId"] == "answer" for d in deltas)
    text = "".join(d[2]["text"] for d in deltas)
    snapshot = emulator.http.get(emulator.url_of("runs", f"/api/v1/runs/{cast['runId']}"), headers=auth).json()
    assert snapshot["outputs"][0]["value"] == text and text.strip()
    assert snapshot["steps"][0]["usage"]["completionTokens"] > 0
    assert text.strip() in snapshot["outputs"][1]["value"], "the scroll read the answer by reference"


def test_a_paid_run_flows_through_the_functions(deployment, aws):
    emulator, local = deployment["emulator"], deployment["local"]
    _, token = funded_user(local)
    auth = {"authorization": f"Bearer {token}"}

    meta = emulator.http.get(emulator.url_of("meta", "/api/v1/spells/slow-scroll/meta"))
    assert meta.status_code == 200, meta.text
    price = meta.json()["avgCostPtsCached"]

    invoice, cast = quote_and_cast(emulator, auth, "slow-scroll", {"topic": "lambdas", "lines": 2})
    assert invoice["costPts"] == price
    run_id = cast["runId"]

    event = receive_execution(aws, deployment["queue"], run_id)
    assert event["detail-type"] == "executionStarted" and event["source"] == "spellcast"

    # The runner executes while the stream function streams: the invocation returns when the run ends.
    # Both functions started before the run, so the stream watches it from its first event.
    assert emulator.invoke("runner", {"detail-type": "executionStarted", "source": "spellcast",
                                      "detail": {"runId": "warm-up", "slug": "slow-scroll"}}).json()["ran"] is False
    assert emulator.http.get(emulator.url_of("stream", cast["streamUrl"])).status_code == 401
    opened, streamed = threading.Event(), {}
    reader = threading.Thread(target=lambda: streamed.update(
        events=read_stream(emulator, cast, invoice["invoiceId"], opened=opened)))
    reader.start()
    try:
        assert opened.wait(120), "the stream function did not open the stream"
        ran = {"r": emulator.invoke("runner", event)}  # returns when the run has ended
    finally:
        reader.join(120)
    first = streamed.get("events")
    assert ran["r"].status_code == 200, ran["r"].text
    assert ran["r"].json()["ran"] is True and ran["r"].json()["status"] == "succeeded", ran["r"].json()

    # The first connection ends at the configured limit, before the run does; events came one by
    # one while the run progressed, not in a burst at the end.
    assert first, "the stream delivered nothing before its limit"
    assert first[-1][1] not in ("executionFinished", "spellExecutionError"), "the limit should cut the stream"
    arrivals = [a for (_, _, _, a) in first]
    assert arrivals[-1] - arrivals[0] > 0.5, f"events arrived in one burst: {arrivals}"

    # The client resumes with Last-Event-ID and gets the rest: nothing skipped, nothing repeated.
    events = list(first)
    while events[-1][1] not in ("executionFinished", "spellExecutionError"):
        more = read_stream(emulator, cast, invoice["invoiceId"], last_event_id=events[-1][0])
        assert more is not None, "204 before the terminal event was delivered"
        events += more
    ids = [i for (i, _, _, _) in events]
    assert ids == list(range(ids[0], ids[0] + len(ids))), ids
    assert events[-1][1] == "executionFinished"
    assert read_stream(emulator, cast, invoice["invoiceId"], last_event_id=ids[-1]) is None  # 204: done

    # Resuming from the middle replays exactly the tail.
    middle = ids[len(ids) // 2]
    tail = []
    while not tail or tail[-1][1] != "executionFinished":
        got = read_stream(emulator, cast, invoice["invoiceId"], last_event_id=(tail[-1][0] if tail else middle))
        tail += got
    assert [i for (i, _, _, _) in tail] == [i for i in ids if i > middle]
    assert [e[2] for e in tail] == [e[2] for e in events if e[0] > middle]

    # The snapshot matches what the stream said.
    snapshot = emulator.http.get(emulator.url_of("runs", f"/api/v1/runs/{run_id}"), headers=auth)
    assert snapshot.status_code == 200, snapshot.text
    snapshot = snapshot.json()
    assert snapshot["status"] == "succeeded"
    finished_steps = {e[2]["stepId"] for e in events if e[1] == "stepUpdate" and e[2]["status"] == "succeeded"}
    assert {s["id"] for s in snapshot["steps"] if s["status"] == "succeeded"} == finished_steps
    assert len(snapshot["steps"]) == len(finished_steps) == 5
    assert snapshot["outputs"] == events[-1][2]["outputs"] and snapshot["outputs"]

    # A duplicate delivery executes nothing: no new event, no second debit.
    again = emulator.invoke("runner", event)
    assert again.status_code == 200 and again.json()["ran"] is False, again.text
    assert read_stream(emulator, cast, invoice["invoiceId"], last_event_id=ids[-1]) is None
    balance = emulator.http.get(emulator.url_of("balance", "/api/v1/me/balance"), headers=auth)
    assert balance.status_code == 200, balance.text
    assert balance.json()["balances"]["PTS"] == 1000 - invoice["costPts"]
    ledger = emulator.http.get(emulator.url_of("balance", "/api/v1/me/ledger"), headers=auth).json()["entries"]
    assert sum(e["pts"] for e in ledger) == balance.json()["balances"]["PTS"]
    assert [e["kind"] for e in ledger].count("debit") == 1

    # The runner wrote its metrics as CloudWatch EMF, under the names /metrics uses locally.
    emf = [json.loads(line[line.index("{"):]) for line in emulator.output().splitlines() if '"_aws"' in line]
    names = {m["Name"] for doc in emf for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"spell_execution_started_total", "spell_execution_finished_total", "spell_run_duration_seconds"} <= names
    started = [d for d in emf if "spell_execution_started_total" in d and d.get("spell") == "slow-scroll"]
    assert started and started[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Spellcast"


def test_a_failing_spell_is_refunded_through_the_runner_function(deployment, aws):
    emulator, local = deployment["emulator"], deployment["local"]
    _, token = funded_user(local, pts=100)
    auth = {"authorization": f"Bearer {token}"}
    _, cast = quote_and_cast(emulator, auth, "fizzle", {})
    event = receive_execution(aws, deployment["queue"], cast["runId"])
    ran = emulator.invoke("runner", event)
    assert ran.status_code == 200 and ran.json()["status"] == "failed", ran.text
    balance = emulator.http.get(emulator.url_of("balance", "/api/v1/me/balance"), headers=auth).json()
    assert balance["balances"]["PTS"] == 100
    ledger = emulator.http.get(emulator.url_of("balance", "/api/v1/me/ledger"), headers=auth).json()["entries"]
    assert sorted(e["kind"] for e in ledger) == ["debit", "grant", "refund"]


def test_an_image_output_comes_back_byte_for_byte_through_the_runs_function(deployment, aws):
    emulator, local = deployment["emulator"], deployment["local"]
    _, token = funded_user(local, pts=100)
    auth = {"authorization": f"Bearer {token}"}
    _, cast = quote_and_cast(emulator, auth, "hello-sigil", {"name": "Lambda"})
    ran = emulator.invoke("runner", receive_execution(aws, deployment["queue"], cast["runId"]))
    assert ran.json()["status"] == "succeeded", ran.text
    run = emulator.http.get(emulator.url_of("runs", f"/api/v1/runs/{cast['runId']}"), headers=auth).json()
    image = next(i for i, o in enumerate(run["outputs"]) if o["kind"] == "image")
    png = emulator.http.get(emulator.url_of("runs", f"/api/v1/runs/{cast['runId']}/outputs/{image}"), headers=auth)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png", png.text
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n") and len(png.content) > 100

def test_a_file_input_goes_up_by_presigned_put_and_comes_back_through_the_runs_function(deployment, aws):
    """SPEC §7.3 on AWS: the cast function hands out an S3 presigned PUT (moto's S3), checks the
    upload at the cast, and the runner shows it; the runs function serves the very bytes."""
    from test_uploads import png
    emulator, local = deployment["emulator"], deployment["local"]
    _, token = funded_user(local, pts=100)
    auth = {"authorization": f"Bearer {token}"}
    picture = png(5, 5, seed=3)
    asked = emulator.http.post(emulator.url_of("cast", "/api/v1/uploads"), headers=auth,
                               json={"mime": "image/png", "bytes": len(picture)})
    assert asked.status_code == 201, asked.text
    ticket = asked.json()
    assert "X-Amz-Signature=" in ticket["url"], "an S3 presigned URL"
    headers = {k: v for k, v in ticket["headers"].items() if k != "content-length"}
    put = httpx.put(ticket["url"], content=picture, headers=headers)
    assert put.status_code == 200, put.text
    _, cast = quote_and_cast(emulator, auth, "looking-glass", {"picture": ticket["uploadId"]})
    ran = emulator.invoke("runner", receive_execution(aws, deployment["queue"], cast["runId"]))
    assert ran.json()["status"] == "succeeded", ran.text
    run = emulator.http.get(emulator.url_of("runs", f"/api/v1/runs/{cast['runId']}"), headers=auth).json()
    image = next(i for i, o in enumerate(run["outputs"]) if o.get("title") == "What the glass sees")
    got = emulator.http.get(emulator.url_of("runs", f"/api/v1/runs/{cast['runId']}/outputs/{image}"), headers=auth,
                            follow_redirects=True)
    assert got.status_code == 200 and got.content == picture, got.status_code


def test_cancel_through_the_cancel_function_stops_the_runner_function(deployment, aws):
    """Issue 12 item 1 on AWS: a queued run canceled is refunded in full and its delivery then runs
    nothing; a running one, canceled through the cancel function, is stopped by the runner
    function at its next safe point and refunded by the rule."""
    emulator, local = deployment["emulator"], deployment["local"]
    _, token = funded_user(local, pts=1000)
    auth = {"authorization": f"Bearer {token}"}
    cancel_url = lambda run_id: emulator.url_of("cancel", f"/api/v1/runs/{run_id}/cancel")

    queued_invoice, queued = quote_and_cast(emulator, auth, "hello-sigil", {"name": "Never"})
    event = receive_execution(aws, deployment["queue"], queued["runId"])
    r = emulator.http.post(cancel_url(queued["runId"]), headers=auth)
    assert r.status_code == 202 and r.json()["status"] == "canceled", r.text
    assert r.json()["refundedPts"] == queued_invoice["costPts"]
    ran = emulator.invoke("runner", event)
    assert ran.status_code == 200 and ran.json()["ran"] is False, ran.text
    # (The emulator builds a function on its first call: the runs function is called once now,
    # so that it answers at once while the runner runs.)
    shown = emulator.http.get(emulator.url_of("runs", f"/api/v1/runs/{queued['runId']}"), headers=auth)
    assert shown.json()["status"] == "canceled", shown.text

    invoice, cast = quote_and_cast(emulator, auth, "slow-scroll", {"topic": "stopping"})
    event = receive_execution(aws, deployment["queue"], cast["runId"])
    ran = {}
    runner = threading.Thread(target=lambda: ran.update(r=emulator.invoke("runner", event)))
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while True:  # until the second step (a wait) is under way
            snapshot = emulator.http.get(emulator.url_of("runs", f"/api/v1/runs/{cast['runId']}"), headers=auth).json()
            if snapshot["steps"][1]["status"] == "running":
                break
            assert time.monotonic() < deadline, snapshot
            time.sleep(0.05)
        r = emulator.http.post(cancel_url(cast["runId"]), headers=auth)
        assert r.status_code == 202 and r.json()["status"] in ("canceling", "canceled"), r.text
    finally:
        runner.join(120)
    assert ran["r"].status_code == 200 and ran["r"].json()["status"] == "canceled", ran["r"].text
    snapshot = emulator.http.get(emulator.url_of("runs", f"/api/v1/runs/{cast['runId']}"), headers=auth).json()
    done = sum(1 for s in snapshot["steps"] if s["status"] == "succeeded")
    assert done < 5, snapshot["steps"]
    expected = invoice["costPts"] * (5 - done) // 5
    assert (snapshot["status"], snapshot["refundedPts"]) == ("canceled", expected)
    events = read_stream(emulator, cast, invoice["invoiceId"])
    assert events[-1][1] == "executionCanceled" and events[-1][2]["refundedPts"] == expected
    assert read_stream(emulator, cast, invoice["invoiceId"], last_event_id=events[-1][0]) is None
    balance = emulator.http.get(emulator.url_of("balance", "/api/v1/me/balance"), headers=auth).json()
    assert balance["balances"]["PTS"] == 1000 - invoice["costPts"] + expected
    ledger = emulator.http.get(emulator.url_of("balance", "/api/v1/me/ledger"), headers=auth).json()["entries"]
    assert sum(e["pts"] for e in ledger) == balance["balances"]["PTS"]
    assert [e["kind"] for e in ledger].count("refund") == (2 if expected else 1)


def test_a_lost_start_event_is_published_again_by_the_recovery_tick(deployment, aws):
    """SPEC 5.8 on AWS: the every-minute tick (the template's `EveryMinute` input) publishes a
    queued run's lost start event again, and the runner then executes it; nothing is refunded."""
    emulator, local = deployment["emulator"], deployment["local"]
    _, token = funded_user(local, pts=100)
    auth = {"authorization": f"Bearer {token}"}
    _, cast = quote_and_cast(emulator, auth, "hello-sigil", {"name": "Lost"})
    receive_execution(aws, deployment["queue"], cast["runId"])  # taken off the queue: lost
    time.sleep(REPUBLISH_AFTER_SECS + 0.5)
    tick = emulator.invoke("stats", {"spellcast": "recover"})
    assert tick.status_code == 200, tick.text
    assert cast["runId"] in tick.json()["republished"] and not tick.json()["timedOut"]
    ran = emulator.invoke("runner", receive_execution(aws, deployment["queue"], cast["runId"]))
    assert ran.json()["status"] == "succeeded", ran.text
    ledger = emulator.http.get(emulator.url_of("balance", "/api/v1/me/ledger"), headers=auth).json()["entries"]
    assert sorted(e["kind"] for e in ledger) == ["debit", "grant"]


def durable_emulator(deployment, log_name):
    """A second emulator over the same table and bus whose runner hands its run over after half a
    second (SPELLCAST_HANDOVER_BUDGET_MS), holds a run for 1.5 s without writing (its lease), and
    lets a run go for any wait of 0.9 s or more (a durable wait: slow-scroll's "read" step), to be
    woken through the wake-ups queue."""
    env = dict(deployment["env"], SPELLCAST_HANDOVER_BUDGET_MS="500", SPELLCAST_LEASE_MS="1500",
               SPELLCAST_DURABLE_WAIT_AFTER_MS="900", SPELLCAST_WAKE_UPS_QUEUE_URL=deployment["wake_ups"])
    emulator = Emulator(env, headers={"x-spellcast-origin": deployment["origin"]}, log=OUT / log_name)
    # The emulator starts a function on its first call: warm the runner (an unknown run: skipped).
    warm = emulator.invoke("runner", {"detail-type": "executionStarted", "source": "spellcast",
                                      "detail": {"runId": "run_unknown", "slug": "slow-scroll"}})
    assert warm.status_code == 200 and warm.json()["ran"] is False, warm.text
    # And the runs function, which the tests poll while a step is under way (its first start
    # can take longer than a step).
    warm = emulator.http.get(emulator.url_of("runs", "/api/v1/runs/run_unknown"))
    assert warm.status_code in (401, 404), warm.text
    return emulator


@pytest.fixture(scope="module")
def durable(deployment):
    emulator = durable_emulator(deployment, "lambda-emulator-durable.log")
    yield emulator
    emulator.stop()


def receive_wake_up(aws, queue, run_id, timeout=30):
    """The wake-up for `run_id` from the wake-ups queue, as its event source would take it:
    (its body, seconds between its due time and its receipt)."""
    sent, body = receive(aws, queue, lambda b: b["runId"] == run_id, f"wake-up for {run_id}", timeout)
    due = datetime.datetime.fromisoformat(body["dueAt"].replace("Z", "+00:00"))
    return sent, (datetime.datetime.now(datetime.timezone.utc) - due).total_seconds()


def relay(emulator, aws, deployment, cast, auth, while_waiting=None):
    """Plays the runner's event sources until the run ends: its executionStarted events (the
    rule) and its wake-ups (the wake-ups queue, whose messages moto holds back for their delay):
    [(seconds the invocation took, its answer)]; a wake-up's answer is {"lateBy": seconds}.
    `while_waiting(emulator)`, if given, is called once the run waits and returns the emulator
    to go on with (a fresh one: the wait crosses a restart)."""
    invocations = []
    event = receive_execution(aws, deployment["queue"], cast["runId"])
    for _ in range(30):
        began = time.monotonic()
        r = emulator.invoke("runner", event)
        invocations.append((time.monotonic() - began, r.json()))
        assert r.status_code == 200, r.text
        if "status" in r.json():
            return invocations
        if r.json().get("waiting"):
            if while_waiting is not None:
                emulator = while_waiting(emulator)
            body, late = receive_wake_up(aws, deployment["wake_ups"], cast["runId"])
            began = time.monotonic()
            r = emulator.invoke("runner", sqs_event(body))
            assert r.status_code == 200 and r.json() == {"batchItemFailures": []}, r.text
            invocations.append((time.monotonic() - began, {"lateBy": late}))
            run = emulator.http.get(emulator.url_of("runs", f"/api/v1/runs/{cast['runId']}"), headers=auth).json()
            if run["status"] in ("succeeded", "failed", "canceled"):
                invocations.append((0, {"status": run["status"]}))
                return invocations
        event = receive_execution(aws, deployment["queue"], cast["runId"])
    raise AssertionError(f"the run did not end: {invocations}")


def test_a_run_crosses_many_runner_invocations_and_a_durable_wait(deployment, aws, durable):
    """SPEC 8.2 on AWS: the runner function hands the run over before its time is up, so the run
    takes several invocations, none much longer than its budget; a long wait ends the invocation,
    and its wake-up, held back by the queue for the wait's delay, sends the run on when due (no
    recovery tick): never early, at most SQS's whole second (and a poll) late."""
    _, token = funded_user(deployment["local"])
    auth = {"authorization": f"Bearer {token}"}
    invoice, cast = quote_and_cast(durable, auth, "slow-scroll", {"topic": "relay"})
    invocations = relay(durable, aws, deployment, cast, auth)
    answers = [a for _, a in invocations]
    assert answers[-1]["status"] == "succeeded", answers
    # A wake-up's invocation may hand over too (its answer is the queue's: no outcome shown).
    assert len(answers) >= 4 and sum(1 for a in answers if a.get("handedOver")) >= 1, answers
    assert sum(1 for a in answers if a.get("waiting")) == 1, answers
    late = [a["lateBy"] for a in answers if "lateBy" in a]
    assert len(late) == 1 and 0 <= late[0] < 2.0, answers
    # Each invocation ends at most one step past its budget (slow-scroll's longest step: 1 s).
    assert max(took for took, _ in invocations) < 0.5 + 1.0 + 1.0, invocations
    events = read_stream(durable, cast, invoice["invoiceId"])
    assert [e[0] for e in events] == list(range(1, len(events) + 1))
    read = [(e[2]["status"], e[2].get("until")) for e in events if e[1] == "stepUpdate" and e[2]["stepId"] == "read"]
    assert [s for s, _ in read] == ["waiting", "succeeded"] and read[0][1], read
    snapshot = durable.http.get(durable.url_of("runs", f"/api/v1/runs/{cast['runId']}"), headers=auth).json()
    assert snapshot["refundedPts"] == 0 and len(snapshot["outputs"]) == 2


def test_a_durable_wait_crosses_a_restart_of_every_function(deployment, aws):
    """SPEC 8.2 on AWS: while a run waits nothing holds it, so every execution environment may
    go (the emulator stopped, all its processes with it); the wake-up, on the queue, reaches a
    fresh runner when due, which takes the run on to the end."""
    _, token = funded_user(deployment["local"])
    auth = {"authorization": f"Bearer {token}"}
    first = durable_emulator(deployment, "lambda-emulator-before-wait.log")
    fresh = []

    def restart(emulator):
        emulator.stop()
        fresh.append(durable_emulator(deployment, "lambda-emulator-after-wait.log"))
        return fresh[0]

    try:
        invoice, cast = quote_and_cast(first, auth, "slow-scroll", {"topic": "restart"})
        answers = [a for _, a in relay(first, aws, deployment, cast, auth, while_waiting=restart)]
        assert answers[-1]["status"] == "succeeded" and fresh, answers
        # Woken after the restart, however long that took: never before it was due.
        assert [a["lateBy"] >= 0 for a in answers if "lateBy" in a] == [True], answers
        events = read_stream(fresh[0], cast, invoice["invoiceId"])
        assert [e[0] for e in events] == list(range(1, len(events) + 1))
        read = [e[2]["status"] for e in events if e[1] == "stepUpdate" and e[2]["stepId"] == "read"]
        assert read == ["waiting", "succeeded"], read
    finally:
        first.stop()
        for emulator in fresh:
            emulator.stop()


def runner_pids(marker):
    """The runner function processes whose environment holds `marker`."""
    pids = []
    for proc in pathlib.Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "exe").resolve().name == "runner" and \
                    marker.encode() in (proc / "environ").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_a_runner_function_killed_mid_step_is_resumed_through_the_recovery_tick(deployment, aws):
    """SPEC 8.1 on AWS: the runner's process dies mid-step (and its emulator with it: a lost
    execution environment); once its lease has run out the recovery tick, in a fresh environment,
    sends the run to a runner again, which takes it up at that step (`resumed`); the steps done
    before are not run again, and nothing is refunded."""
    _, token = funded_user(deployment["local"])
    auth = {"authorization": f"Bearer {token}"}
    lost = durable_emulator(deployment, "lambda-emulator-lost.log")
    try:
        invoice, cast = quote_and_cast(lost, auth, "slow-scroll", {"topic": "lost"})
        event = receive_execution(aws, deployment["queue"], cast["runId"])

        def doomed():
            try:
                lost.invoke("runner", event)
            except httpx.HTTPError:
                pass  # its process is killed: the emulator answers late or not at all

        threading.Thread(target=doomed, daemon=True).start()
        deadline = time.monotonic() + 30
        while True:  # until the first step (0.8 s of ticks) is under way
            snapshot = lost.http.get(lost.url_of("runs", f"/api/v1/runs/{cast['runId']}"), headers=auth).json()
            if snapshot["steps"][0]["status"] == "running":
                break
            assert time.monotonic() < deadline, snapshot
            time.sleep(0.05)
        pids = runner_pids("SPELLCAST_LEASE_MS=1500")
        assert pids, "the runner process"
        for pid in pids:
            os.kill(pid, 9)
    finally:
        lost.stop()
    fresh = durable_emulator(deployment, "lambda-emulator-fresh.log")
    try:
        time.sleep(1.6)  # the lease has run out
        tick = fresh.invoke("stats", {"spellcast": "recover"})
        assert cast["runId"] in tick.json()["resumed"] and cast["runId"] not in tick.json()["timedOut"], tick.text
        answers = [a for _, a in relay(fresh, aws, deployment, cast, auth)]
        assert answers[-1]["status"] == "succeeded", answers
        events = read_stream(fresh, cast, invoice["invoiceId"])
        assert [e[0] for e in events] == list(range(1, len(events) + 1))
        resumed = [e[2]["stepId"] for e in events if e[1] == "stepUpdate" and e[2].get("resumed")]
        assert resumed == ["unroll"], resumed
        succeeded = [e[2]["stepId"] for e in events if e[1] == "stepUpdate" and e[2]["status"] == "succeeded"]
        assert succeeded == ["unroll", "read", "copy", "seal", "record"], succeeded
        snapshot = fresh.http.get(fresh.url_of("runs", f"/api/v1/runs/{cast['runId']}"), headers=auth).json()
        assert snapshot["status"] == "succeeded" and snapshot["refundedPts"] == 0
    finally:
        fresh.stop()


def test_every_function_starts_and_answers_as_scripts_bench_lambda_starts_it(deployment):
    """scripts/bench-lambda times each function from its start to its first answer, started on
    its own with `lambda_first_events`' environment under `cargo lambda watch --only-lambda-apis`:
    here every function of the template is started that way (debug builds) and answers its first
    event — not a crash at start, not a 5xx — so the benchmark cannot stop running unseen."""
    template = (ROOT / "infra" / "template.yaml").read_text()
    binaries = sorted(line.split("Binary:")[1].strip() for line in template.splitlines() if "Binary:" in line)
    assert sorted(FUNCTIONS) == binaries and sorted(FIRST_EVENTS) == binaries
    rt = free_port()
    emulator = subprocess.Popen([cargo_lambda(), "lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1",
                                 "-P", str(rt)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache/spellcast-target"))
    env = function_env({k: v for k, v in os.environ.items() if not k.startswith("SPELLCAST_")},
                       f"http://127.0.0.1:{rt}/.rt", deployment["name"])
    answered = {}
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", rt), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        for name in FUNCTIONS:
            log = open(OUT / f"bench-env-{name}.log", "wb")
            function = subprocess.Popen([str(target / "debug" / name)], env=env, stdout=log, stderr=log)
            try:
                got = []
                call = threading.Thread(target=lambda: got.append(httpx.post(
                    f"http://127.0.0.1:{rt}/2015-03-31/functions/_/invocations", json=FIRST_EVENTS[name],
                    timeout=60)), daemon=True)
                call.start()
                while call.is_alive() and function.poll() is None:
                    call.join(0.05)
                # A function that exits at start leaves its invocation waiting in the emulator.
                assert got, f"{name} exited at start ({function.poll()}): {pathlib.Path(log.name).read_text()[-2000:]}"
                r = got[0]
                answered[name] = r.status_code
                assert r.status_code < 500, (name, r.status_code, r.text)
                try:
                    answer = r.json()
                except ValueError:
                    answer = None  # the stream's answer is streamed: its status is the HTTP one
                if isinstance(answer, dict) and "statusCode" in answer:  # an HTTP function's
                    assert answer["statusCode"] < 500, (name, r.text)
            finally:
                function.kill()
                function.wait()
                log.close()
    finally:
        os.killpg(emulator.pid, 15)
        emulator.wait(10)
    assert sorted(answered) == binaries


def test_each_function_answers_only_for_its_own_endpoints(deployment):
    emulator = deployment["emulator"]
    # The balance function has no business with spell metadata, nor meta with balances.
    for function, path in [("balance", "/api/v1/spells/hello-sigil/meta"), ("meta", "/api/v1/me/balance"),
                           ("og", "/api/v1/dev/session"), ("cast", "/api/v1/dev/session")]:
        r = emulator.http.get(emulator.url_of(function, path))
        assert r.status_code == 404, (function, path, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    gone = emulator.http.post(emulator.url_of("removed", "/api/v1/payments/confirm"), json={})
    assert gone.status_code == 410 and gone.headers["deprecation"], gone.text
    og = emulator.http.get(emulator.url_of("og", "/spells/hello-sigil/og"))
    assert og.status_code == 200 and 'property="og:title"' in og.text
    assert "https://spellcast.test/spells/hello-sigil" in og.text
    bad = emulator.http.post(emulator.url_of("invoice", "/api/v1/payments/invoice"), content=b"{not json",
                             headers={"authorization": f"Bearer {lambda_session('u-x')}"})
    assert bad.status_code == 400 and bad.json()["code"], bad.text


def test_a_user_of_the_openid_provider_signs_in_at_every_function(deployment):
    """The functions verify the provider's tokens themselves (the one verifier the local server
    uses), and tell the page where to sign in; a session never rides in a query."""
    emulator, provider = deployment["emulator"], deployment["provider"]
    token = provider.sign_in("lambda-user")["id_token"]
    auth = {"authorization": f"Bearer {token}"}
    me = emulator.http.get(emulator.url_of("balance", "/api/v1/me/balance"), headers=auth)
    assert me.status_code == 200, me.text
    assert me.json()["userId"].startswith("oidc_") and me.json()["balances"]["PTS"] == 0
    poor = emulator.http.post(emulator.url_of("invoice", "/api/v1/payments/invoice"), headers=auth,
                              json={"spellSlug": "hello-sigil", "asset": "PTS"})
    assert poor.status_code == 402 and poor.json()["code"] == "insufficient_balance", poor.text
    assert emulator.http.get(emulator.url_of("balance", f"/api/v1/me/balance?token={token}")).status_code == 401
    config = emulator.http.get(emulator.url_of("balance", "/api/v1/auth/config")).json()["oidc"]
    assert config["issuer"] == provider.issuer and config["clientId"] == CLIENT_ID
    assert config["authorizationEndpoint"] == f"{provider.issuer}/auth"
    forged = provider.mint({"aud": "someone-else"})
    assert emulator.http.get(emulator.url_of("balance", "/api/v1/me/balance"),
                             headers={"authorization": f"Bearer {forged}"}).status_code == 401


def test_the_api_refuses_requests_that_did_not_come_through_cloudfront(deployment):
    """API Gateway's own address is public: a request without CloudFront's secret origin header
    (or with a wrong one) is refused before any handler runs (SPEC §9.3)."""
    emulator = deployment["emulator"]
    for function, path in [("meta", "/api/v1/spells"), ("balance", "/api/v1/me/balance"),
                           ("og", "/spells/hello-sigil/og")]:
        assert emulator.http.get(emulator.url_of(function, path)).status_code in (200, 401)
        for header in ({"x-spellcast-origin": ""}, {"x-spellcast-origin": "guess"}):
            r = httpx.get(emulator.url + emulator.url_of(function, path), headers=header, timeout=60)
            assert r.status_code == 403 and r.json()["code"] == "forbidden", (function, r.text)


def test_the_admin_function_grants_only_to_signed_callers(deployment):
    """Behind its IAM Function URL, Lambda puts the signer in the request context; the emulator
    sends none, so this is an unsigned call: refused, nothing granted (the signed path: the unit
    test of `spellcast_lambda::iam_caller`)."""
    emulator = deployment["emulator"]
    user, session = funded_user(deployment["local"], pts=10)
    for headers in ({}, {"authorization": f"Bearer {session}"}):
        r = emulator.http.post(emulator.url_of("admin", "/api/v1/admin/grants"), headers=headers,
                               json={"userId": user, "pts": 1000, "reason": "free points?"})
        assert r.status_code == 401 and r.json()["code"] == "unauthorized", r.text
    me = emulator.http.get(emulator.url_of("balance", "/api/v1/me/balance"),
                           headers={"authorization": f"Bearer {session}"})
    assert me.json()["balances"]["PTS"] == 10, me.text


def test_the_schedule_and_the_signed_webhook_reach_the_stats_function(deployment):
    emulator = deployment["emulator"]
    scheduled = emulator.invoke("stats", {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": "2026-11-25T00:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/spellcast-stats"], "detail": {}})
    assert scheduled.status_code == 200, scheduled.text
    assert scheduled.json()["spells"] >= 3
    unsigned = emulator.http.post(emulator.url_of("stats", "/api/v1/internal/stats/refresh"), content=b"{}")
    assert unsigned.status_code == 401, unsigned.text
    ts = str(int(time.time()))
    body = b"{}"
    sig = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    signed = emulator.http.post(emulator.url_of("stats", "/api/v1/internal/stats/refresh"), content=body,
                                headers={"x-spellcast-timestamp": ts, "x-spellcast-signature": sig})
    assert signed.status_code == 200, signed.text
    assert {s["slug"] for s in signed.json()["spells"]} >= {"hello-sigil", "slow-scroll", "fizzle"}


# A public address (not loopback, private, link-local or documentation: the webhooks function
# refuses those) given to this machine's loopback interface for one test, so the function's
# real rules let it connect to a receiver here.
PUBLIC_ADDRESS = "11.22.33.44"


@pytest.fixture
def public_receiver(deployment):
    """An https receiver on PUBLIC_ADDRESS with a certificate of the deployment's test CA that
    answers the n-th delivery with plan[n] (then 200), recording what it got."""
    # As scripts/test runs what needs root: directly as root, else through sudo.
    as_root = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if not shutil.which("ip") or (as_root and not shutil.which("sudo")):
        pytest.skip("giving the loopback interface a public address needs iproute2 and root (CI has both)")
    added = subprocess.run([*as_root, "ip", "addr", "add", f"{PUBLIC_ADDRESS}/32", "dev", "lo"],
                           capture_output=True, text=True)
    assert added.returncode == 0 or "File exists" in added.stderr, added.stderr
    got, plan = [], []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            status = plan.pop(0) if plan else 200
            got.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body, "status": status})
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer((PUBLIC_ADDRESS, 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    deployment["ca"].issue_cert(PUBLIC_ADDRESS).configure_cert(context)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield {"url": f"https://{PUBLIC_ADDRESS}:{httpd.server_address[1]}/hooks", "got": got, "plan": plan}
    finally:
        httpd.shutdown()
        httpd.server_close()
        subprocess.run([*as_root, "ip", "addr", "del", f"{PUBLIC_ADDRESS}/32", "dev", "lo"], capture_output=True)


def sqs_event(*bodies):
    """An SQS batch as Lambda's event source mapping hands it to a function."""
    return {"Records": [{"messageId": str(uuid.uuid4()), "receiptHandle": "r", "body": body,
                         "eventSource": "aws:sqs", "attributes": {}, "messageAttributes": {}} for body in bodies]}


def pump_webhooks(emulator, aws, queue, until, timeout=30):
    """Plays the queue's event source: hands each message on the webhooks queue to the webhooks
    function (deleting it once handled) until `until()` holds."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "the webhooks queue did not bring what was expected"
        got = aws["sqs"].receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for m in got.get("Messages", []):
            r = emulator.invoke("webhooks", sqs_event(m["Body"]))
            assert r.status_code == 200 and r.json() == {"batchItemFailures": []}, r.text
            aws["sqs"].delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])


def test_a_run_webhook_goes_through_the_rule_the_queue_and_the_webhooks_function(deployment, aws, public_receiver):
    """Issue 12 item 2 on AWS: the runner function ends a run; its `webhookDue` event reaches the
    webhooks queue by the rule; the webhooks function delivers it to an https receiver that
    fails twice, queueing each retry with its delay; the third attempt is taken; the runs
    function lists the attempts; the signatures verify with the user's secret."""
    emulator, local, hooks = deployment["emulator"], deployment["local"], deployment["hooks"]
    _, token = funded_user(local)
    auth = {"authorization": f"Bearer {token}"}
    public_receiver["plan"].extend([500, 503])
    got = public_receiver["got"]
    invoice = emulator.http.post(emulator.url_of("invoice", "/api/v1/payments/invoice"), headers=auth,
                                 json={"spellSlug": "hello-sigil", "asset": "PTS"}).json()
    r = emulator.http.post(emulator.url_of("cast", "/api/v1/spells/cast"), headers=auth,
                           json={"slug": "hello-sigil", "invoiceId": invoice["invoiceId"], "context": {"name": "Ada"},
                                 "webhook": public_receiver["url"]})
    assert r.status_code == 202, r.text
    run_id = r.json()["runId"]
    ran = emulator.invoke("runner", receive_execution(aws, deployment["queue"], run_id))
    assert ran.status_code == 200 and ran.json()["status"] == "succeeded", ran.text

    # The rule's message (an EventBridge event) brings attempt 1 (500); the function queues the
    # retry 5 s later, which brings attempt 2 (503).
    pump_webhooks(emulator, aws, hooks, lambda: len(got) >= 2)
    assert [g["status"] for g in got] == [500, 503]
    # The next retry is 5 minutes away (a chain of delayed messages on AWS). The test moves the
    # delivery's due time to now instead of waiting, and hands the function the message the
    # chain would bring.
    webhook_id = got[0]["headers"]["webhook-id"]
    aws["dynamodb"].update_item(
        TableName=deployment["name"], Key={"pk": {"S": f"HOOKS#{run_id}"}, "sk": {"S": webhook_id}},
        UpdateExpression="SET nextAt = :now",
        ExpressionAttributeValues={":now": {"S": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}})
    message = json.dumps({"runId": run_id, "webhookId": webhook_id})
    r = emulator.invoke("webhooks", sqs_event(message))
    assert r.status_code == 200 and r.json() == {"batchItemFailures": []}, r.text
    assert [g["status"] for g in got] == [500, 503, 200]
    # A duplicate message once it was taken sends nothing; a stray one is dropped, not retried.
    r = emulator.invoke("webhooks", sqs_event(message, "not json"))
    assert r.json() == {"batchItemFailures": []} and len(got) == 3

    secret = emulator.http.get(emulator.url_of("balance", "/api/v1/me/webhook-secret"), headers=auth).json()["secret"]
    for g in got:
        payload = Webhook(secret).verify(g["body"], g["headers"])
        assert (payload["type"], payload["data"]["runId"], payload["data"]["status"]) == \
            ("run.completed", run_id, "succeeded")
        assert g["headers"]["webhook-id"] == webhook_id
    listed = emulator.http.get(emulator.url_of("runs", f"/api/v1/runs/{run_id}/webhooks"), headers=auth)
    assert listed.status_code == 200, listed.text
    assert [(a["attempt"], a.get("status"), "nextAt" in a) for a in listed.json()] == \
        [(1, 500, True), (2, 503, True), (3, 200, False)]


def test_a_run_shared_through_the_cancel_function_unfurls_through_the_og_function(deployment, aws):
    """Issue 13 on AWS: the owner shares a finished run through the cancel function (the owner's
    changes to a run); the runs function serves it to anyone; the og function serves its og page
    and draws its card (a 1200×630 PNG with the run's image); unsharing makes all of it 404."""
    emulator, local = deployment["emulator"], deployment["local"]
    _, token = funded_user(local)
    auth = {"authorization": f"Bearer {token}"}
    _, cast = quote_and_cast(emulator, auth, "hello-sigil", {"name": "Ada"})
    ran = emulator.invoke("runner", receive_execution(aws, deployment["queue"], cast["runId"]))
    assert ran.status_code == 200 and ran.json()["status"] == "succeeded", ran.text
    share_url = emulator.url_of("cancel", f"/api/v1/runs/{cast['runId']}/share")
    shared = emulator.http.post(share_url, headers=auth)
    assert shared.status_code == 200, shared.text
    share = shared.json()

    public = emulator.http.get(emulator.url_of("runs", f"/api/v1/shares/{share['shareId']}"))
    assert public.status_code == 200 and public.json()["title"] == "Hello, Sigil", public.text
    image = [o for o in public.json()["outputs"] if o["kind"] == "image"][0]
    picture = emulator.http.get(emulator.url_of("runs", image["url"]))
    assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")

    og = emulator.http.get(emulator.url_of("og", f"{share['url']}/og"))
    assert og.status_code == 200, og.text
    assert f'content="https://spellcast.test{share["url"]}/og.png"' in og.text
    card = emulator.http.get(emulator.url_of("og", f"{share['url']}/og.png"))
    assert card.status_code == 200 and card.headers["content-type"] == "image/png", card.text[:200]
    assert card.content.startswith(b"\x89PNG") and len(card.content) < 300 * 1024
    assert (int.from_bytes(card.content[16:20], "big"), int.from_bytes(card.content[20:24], "big")) == (1200, 630)

    gone = emulator.http.delete(share_url, headers=auth)
    assert gone.status_code == 204, gone.text
    assert emulator.http.get(emulator.url_of("runs", f"/api/v1/shares/{share['shareId']}")).status_code == 404
    assert emulator.http.get(emulator.url_of("og", f"{share['url']}/og")).status_code == 404
    assert emulator.http.get(emulator.url_of("og", f"{share['url']}/og.png")).status_code == 404


def test_only_events_a_rule_consumes_are_published(deployment, aws):
    """A run's progress is read from the store by its streams: on the bus go only the events the
    template routes somewhere (`executionStarted` to the runner, `webhookDue` to the webhooks
    queue), each one a paid PutEvents entry."""
    import re
    routed = set(re.findall(r"detail-type: \[(\w+)\]", (ROOT / "infra" / "template.yaml").read_text()))
    assert routed == {"executionStarted", "webhookDue"}, routed
    emulator, local = deployment["emulator"], deployment["local"]
    _, token = funded_user(local)
    auth = {"authorization": f"Bearer {token}"}
    _, cast = quote_and_cast(emulator, auth, "hello-sigil", {"name": "Audit"})
    event = receive_execution(aws, deployment["queue"], cast["runId"])
    ran = emulator.invoke("runner", event)
    assert ran.status_code == 200 and ran.json()["status"] == "succeeded", ran.text
    published = []
    while True:
        got = aws["sqs"].receive_message(QueueUrl=deployment["audit"], MaxNumberOfMessages=10, WaitTimeSeconds=1)
        if not got.get("Messages"):
            break
        for m in got["Messages"]:
            aws["sqs"].delete_message(QueueUrl=deployment["audit"], ReceiptHandle=m["ReceiptHandle"])
            published.append(json.loads(m["Body"])["detail-type"])
    assert "executionStarted" in published, published
    assert set(published) <= routed, f"published with no rule to consume them: {set(published) - routed}"
