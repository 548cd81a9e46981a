"""Black-box harness: starts the real `spellcast-local` binary on 127.0.0.1, port 0, and talks HTTP
to it. Each server is stopped by PID when its test ends."""
import hashlib
import hmac
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import time

import httpx
import pytest
from httpx_sse import connect_sse

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = pathlib.Path(os.environ.get("SPELLCAST_TEST_OUTPUT", ROOT / "test-output"))
WEBHOOK_SECRET = "test-webhook-secret"
# Known to the tests so they can mint honestly signed tokens (expired, wrong audience, ...).
TOKEN_SECRET = "test-token-secret-of-at-least-32-bytes!"
# Invoices are signed with a key of their own (SPEC §9.3); the local server derives it from its one
# secret as an HMAC of a fixed label (`spellcast_application::auth::TokenKeys::hs256`).
INVOICE_KEY = hmac.new(TOKEN_SECRET.encode(), b"spellcast invoice key v1", hashlib.sha256).digest()


def binary():
    explicit = os.environ.get("SPELLCAST_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR", ROOT / "target")
    return str(pathlib.Path(target) / "debug" / "spellcast-local")


class Server:
    """One running spellcast-local process."""

    def __init__(self, args, log_name, env=None):
        OUT.mkdir(parents=True, exist_ok=True)
        self.log_path = OUT / (re.sub(r"[^A-Za-z0-9_.-]+", "_", log_name)[:120] + ".log")
        self.log = open(self.log_path, "ab")
        self.log_start = self.log.tell()  # logs of a test's earlier servers come before
        env = dict(os.environ, SPELLCAST_WEBHOOK_SECRET=WEBHOOK_SECRET, SPELLCAST_TOKEN_SECRET=TOKEN_SECRET,
                   RUST_LOG="info", **(env or {}))
        self.proc = subprocess.Popen(
            [binary(), "--addr", "127.0.0.1:0", *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, env=env)
        line = self.proc.stdout.readline().decode()
        if "open http://" not in line:
            self.stop()
            raise RuntimeError(f"server did not start: {line!r}; see {self.log_path}")
        self.url = line.split("open ")[1].split("/spells/")[0]
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def log_text(self):
        """What this server has logged so far."""
        with open(self.log_path, "rb") as f:
            f.seek(self.log_start)
            return f.read().decode(errors="replace")

    def kill(self):
        self.stop(signal.SIGKILL)

    # --- the API, step by step -----------------------------------------------------------------

    def session(self, user_id=None, grant=1000):
        body = {"grantPts": grant}
        if user_id:
            body["userId"] = user_id
        r = self.http.post("/api/v1/dev/session", json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def invoice(self, token, slug, key=None):
        headers = {"authorization": f"Bearer {token}"}
        if key:
            headers["idempotency-key"] = key
        return self.http.post("/api/v1/payments/invoice", json={"spellSlug": slug, "asset": "PTS"}, headers=headers)

    def cast(self, token, slug, invoice_id, context):
        return self.http.post("/api/v1/spells/cast", json={"slug": slug, "invoiceId": invoice_id, "context": context},
                              headers={"authorization": f"Bearer {token}"})

    def quote_and_cast(self, token, slug, context):
        inv = self.invoice(token, slug)
        assert inv.status_code == 201, inv.text
        cast = self.cast(token, slug, inv.json()["invoiceId"], context)
        assert cast.status_code == 202, cast.text
        return inv.json(), cast.json()

    def balance(self, token):
        r = self.http.get("/api/v1/me/balance", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        return r.json()["balances"]["PTS"]

    def ledger(self, token):
        entries, cursor = [], None
        while True:
            params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
            r = self.http.get("/api/v1/me/ledger", params=params, headers={"authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
            entries += r.json()["entries"]
            cursor = r.json().get("nextCursor")
            if not cursor:
                return entries

    def run(self, token, run_id):
        r = self.http.get(f"/api/v1/runs/{run_id}", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        return r.json()

    def events(self, cast, invoice_token, last_event_id=None, stop_after=None, timeout=60):
        """Reads the run's SSE stream: a list of (id, event, data, arrival time)."""
        headers = {"authorization": f"Bearer {invoice_token}"}
        if last_event_id is not None:
            headers["last-event-id"] = str(last_event_id)
        out = []
        with httpx.Client(base_url=self.url, timeout=timeout) as client:
            with connect_sse(client, "GET", cast["streamUrl"], headers=headers) as source:
                assert source.response.status_code == 200, source.response.read()
                for sse in source.iter_sse():
                    if not sse.data and not sse.event or sse.event == "message" and not sse.data:
                        continue  # the `retry:` block carries no event; browsers dispatch nothing
                    out.append((int(sse.id), sse.event, json.loads(sse.data), time.monotonic()))
                    if stop_after is not None and len(out) >= stop_after:
                        break
        return out

    def wait_for_status(self, token, run_id, statuses=("succeeded", "failed"), timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(token, run_id)
            if run["status"] in statuses:
                return run
            time.sleep(0.1)
        raise AssertionError(f"run {run_id} did not reach {statuses}: {run}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_model(url, proc=None, timeout=900):
    """Waits until llama.cpp's server answers /health (the first start may build it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the model server exited with {proc.returncode}")
        try:
            if httpx.get(url.removesuffix("/v1") + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the model server did not come up")


@pytest.fixture(scope="session", autouse=True)
def model(tmp_path_factory):
    """The real small model (SmolLM2-135M behind llama.cpp's server, `scripts/model-server`),
    named `local` in the tool configuration that every spellcast-local of the session reads
    (`SPELLCAST_TOOLS_FILE`), so the sample `oracle` spell runs against it. scripts/test starts
    one for the whole run; a session started without it starts its own. Yields the base URL."""
    given = os.environ.get("SPELLCAST_TOOLS_FILE")
    if given:
        url = json.loads(pathlib.Path(given).read_text())["llm"]["local"]["baseUrl"]
        wait_for_model(url)
        yield url
        return
    OUT.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(OUT / "model-server.log", "ab")
    proc = subprocess.Popen([str(ROOT / "scripts" / "model-server"), "serve", str(port)],
                            stdout=log, stderr=log, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        wait_for_model(url, proc)
        tools = tmp_path_factory.mktemp("tools") / "tools.json"
        tools.write_text(subprocess.check_output([str(ROOT / "scripts" / "model-server"), "tools", str(port)]).decode())
        os.environ["SPELLCAST_TOOLS_FILE"] = str(tools)
        yield url
    finally:
        os.environ.pop("SPELLCAST_TOOLS_FILE", None)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        log.close()


@pytest.fixture
def catalog(tmp_path):
    """The sample catalog plus the test spells."""
    d = tmp_path / "catalog"
    d.mkdir()
    for f in (ROOT / "infra" / "spells").glob("*.json"):
        shutil.copy(f, d)
    for f in (ROOT / "tests" / "fixtures" / "spells").glob("*.json"):
        shutil.copy(f, d)
    return d


# SPELLCAST_TEST_STORE=dynamodb runs the whole suite on DynamoDB and EventBridge (moto at
# SPELLCAST_MOTO_ENDPOINT) instead of the embedded store; every test gets its own table and bus.
ON_DYNAMODB = os.environ.get("SPELLCAST_TEST_STORE") == "dynamodb"
SESSION = os.urandom(8).hex()  # engines may outlive a test session: names never repeat
if ON_DYNAMODB:
    os.environ.update(AWS_ENDPOINT_URL=os.environ["SPELLCAST_MOTO_ENDPOINT"], AWS_REGION="us-east-1",
                      AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")


@pytest.fixture
def start(request, catalog):
    """Starts servers; every one is stopped when the test ends. Servers of one test share state."""
    servers = []
    table = "t-" + hashlib.sha256(f"{SESSION}{request.node.nodeid}".encode()).hexdigest()[:16]

    def _start(*args, memory=True, demo_sessions=True, limits=False, env=None, aws_timeout_secs=120):
        # The suite's own load (200 concurrent casts of one user) is far over the per-user rate
        # limits; tests of the limits ask for them (limits=True) and set their own.
        if not limits:
            args = ("--invoices-per-minute", "1000000", "--casts-per-minute", "1000000",
                    "--sessions-per-minute", "1000000", *args)
        if ON_DYNAMODB:
            extra = ["--store", "dynamodb", "--create-tables", "--table", table, "--event-bus", table,
                     "--outputs-bucket", table,
                     "--aws-timeout-secs", str(aws_timeout_secs)]
            # On DynamoDB the demo endpoint must be asked for by name (it grants points).
            extra += ["--unsafe-demo-sessions"] if demo_sessions else []
        else:
            extra = ["--memory"] if memory and "--data-dir" not in args else []
        s = Server(["--catalog", str(catalog), *extra, *args], request.node.name, env=env)
        servers.append(s)
        return s

    yield _start
    for s in servers:
        s.stop()


@pytest.fixture
def server(start):
    return start()
