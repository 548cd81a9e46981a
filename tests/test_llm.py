"""Spells that do real work (SPEC §7): step references, `llm.chat` against the real small model
on this machine (SmolLM2-135M behind llama.cpp's server: answers are not fixed text, so the tests
assert structure, streaming order, usage and cost), and the faults a model server can have,
from an OpenAI-format server that misbehaves on purpose (tests/openai_faults.py)."""
import json
import math
import os
import shutil
import subprocess
import time

import pytest

from conftest import ROOT, ON_DYNAMODB, binary
from openai_faults import Faults
from test_pages_and_ops import sign


def answer_of(run):
    return next(o["value"] for o in run["outputs"] if o["title"] == "The oracle's answer")


def test_the_oracle_streams_its_answer_and_the_next_steps_use_it(server):
    user = server.session()
    inv, cast = server.quote_and_cast(user["token"], "oracle", {"question": "Why is the sea salty?"})
    events = server.events(cast, inv["invoiceId"])
    kinds = [e[1] for e in events]
    assert kinds[-1] == "executionFinished", kinds
    assert [e[0] for e in events] == list(range(1, len(events) + 1)), "seq 1, 2, 3, ... with deltas among them"

    deltas = [e for e in events if e[1] == "stepDelta"]
    assert deltas, "the answer arrives while it is generated"
    assert all(d[2]["stepId"] == "answer" and d[2]["index"] == 0 for d in deltas)
    started = next(e[0] for e in events if e[1] == "stepUpdate" and e[2]["stepId"] == "answer"
                   and e[2]["status"] == "running")
    done = next(e for e in events if e[1] == "stepUpdate" and e[2]["stepId"] == "answer"
                and e[2]["status"] == "succeeded")
    assert all(started < d[0] < done[0] for d in deltas), "every delta comes before the step ends"
    text = "".join(d[2]["text"] for d in deltas)
    assert done[2]["outputs"][0]["value"] == text, "the deltas add up to the answer, none twice"
    progress = [d[2]["progress"] for d in deltas]
    assert progress == sorted(progress) and 0 < progress[-1] <= 1, "tokens so far of maxTokens"
    assert text.strip(), "the model said something"

    run = server.run(user["token"], cast["runId"])
    step = run["steps"][0]
    usage = step["usage"]
    assert usage["promptTokens"] > 0 and 0 < usage["completionTokens"] <= 120, usage
    assert "usageEstimated" not in step, "llama.cpp's server sends the usage chunk"
    assert len(deltas) <= usage["completionTokens"], "coalesced: never more deltas than tokens"
    # ptsPer1kPrompt 1, ptsPer1kCompletion 4 (scripts/model-server tools): metered in integers.
    assert step["costPts"] == math.ceil((usage["promptTokens"] * 1 + usage["completionTokens"] * 4) / 1000)
    assert "partial" not in step, "the answer so far is gone once the step succeeded"

    # The scroll and the sigil read the answer by reference, from the run as stored.
    scroll = next(o["value"] for o in run["outputs"] if o["title"] == "The scroll")
    assert scroll.startswith("You asked: Why is the sea salty?")
    assert text.strip() in scroll
    assert f"({usage['completionTokens']} tokens of wisdom)" in scroll
    sigil = next(o for o in run["outputs"] if o["kind"] == "image")
    png = server.http.get(sigil["url"], params={"token": inv["invoiceId"]})
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert run["steps"][1]["outputIndexes"] == [1] and run["steps"][2]["outputIndexes"] == [2]


def test_deltas_are_replayed_exactly_once_by_last_event_id(server):
    user = server.session()
    inv, cast = server.quote_and_cast(user["token"], "oracle", {"question": "Name three colours."})
    first = server.events(cast, inv["invoiceId"], stop_after=4)
    assert first[-1][1] == "stepDelta" or any(e[1] == "stepDelta" for e in first), first
    rest = server.events(cast, inv["invoiceId"], last_event_id=first[-1][0])
    resumed = [e[0] for e in first + rest]
    assert resumed == list(range(1, len(resumed) + 1)), "nothing skipped, nothing twice"
    replay = server.events(cast, inv["invoiceId"])
    assert [(e[0], e[1], e[2]) for e in replay] == [(e[0], e[1], e[2]) for e in first + rest]


def test_metered_usage_is_averaged_into_the_next_quote(server):
    user = server.session()
    before = server.invoice(user["token"], "oracle").json()["costPts"]
    # Nominal until measured: a point per started 100 tokens (120 → 2), the scroll 1, the sigil 5.
    assert before == 2 + 1 + 5
    _, cast = server.quote_and_cast(user["token"], "oracle", {"question": "What is a star?"})
    run = server.wait_for_status(user["token"], cast["runId"])
    assert run["status"] == "succeeded", run
    assert run["costPts"] == before, "the quote binds for the run"
    measured = sum(s["costPts"] for s in run["steps"])
    assert run["steps"][2]["costPts"] == 5, "the sigil's price"
    r = server.http.post("/api/v1/internal/stats/refresh", content=b"{}", headers=sign(b"{}"))
    assert r.status_code == 200, r.text
    assert server.invoice(user["token"], "oracle").json()["costPts"] == measured


def test_the_snapshot_carries_the_answer_so_far(start, catalog):
    faults = Faults()
    try:
        (catalog / "slow-oracle.json").write_text(json.dumps(oracle_like("slow-oracle", "slow")))
        server = start("--tools", str(tools_file(catalog, faults)), env={"FAULTS_KEY": "k"})
        user = server.session()
        inv, cast = server.quote_and_cast(user["token"], "slow-oracle", {"question": "q"})
        deadline = time.monotonic() + 10
        partial = None
        while time.monotonic() < deadline and not partial:
            partial = server.run(user["token"], cast["runId"])["steps"][0].get("partial")
            time.sleep(0.05)
        assert partial and "The stars are far, and the oracle is near.".startswith(partial), partial
        run = server.wait_for_status(user["token"], cast["runId"])
        assert run["status"] == "succeeded"
        assert run["outputs"][0]["value"] == "The stars are far, and the oracle is near."
    finally:
        faults.stop()


def oracle_like(slug, endpoint, **step):
    """A one-step spell asking `endpoint`, then a text using its answer."""
    return {
        "slug": slug, "version": 1, "title": slug, "summary": "s", "description": "d", "timeoutSecs": 60,
        "inputs": {"type": "object", "properties": {"question": {"type": "string"}}},
        "steps": [
            {"id": "answer", "title": "Ask", "tool": "llm.chat",
             "with": {"endpoint": endpoint, "prompt": "{{ question }}", "maxTokens": 64}, **step},
            {"id": "echo", "title": "Echo", "tool": "text.render",
             "with": {"template": "said: {{ steps.answer.text }}"}},
        ],
    }


def local_model():
    """The real model's entry of the session's tool configuration (the conftest's `model`)."""
    return json.loads(open(os.environ["SPELLCAST_TOOLS_FILE"]).read())["llm"]["local"]


MODELS = ("slow", "flaky", "cut", "nousage", "bad", "idle")


def tools_file(directory, faults, idle_secs=2):
    """A tool configuration naming each behaviour of `faults` as an endpoint, with the real model
    as `local` too (the sample catalog's oracle needs it)."""
    local = local_model()
    llm = {m: {"baseUrl": faults.url, "model": m, "ptsPer1kPrompt": 1000, "ptsPer1kCompletion": 1000,
               "idleTimeoutSecs": idle_secs, "apiKeyEnv": "FAULTS_KEY"} for m in MODELS}
    path = directory.parent / "faults-tools.json"
    path.write_text(json.dumps({"llm": {"local": local, **llm}}))
    return path


@pytest.fixture
def faulty(start, catalog):
    """A server whose catalog has a spell per fault, all asking the misbehaving server."""
    faults = Faults()
    for m in MODELS:
        retry = {"retry": {"attempts": 3, "backoffSecs": 0.1}}
        (catalog / f"ask-{m}.json").write_text(json.dumps(oracle_like(f"ask-{m}", m, **retry)))
    server = start("--tools", str(tools_file(catalog, faults)), env={"FAULTS_KEY": "sk-test-SECRET-123"})
    yield server, faults
    faults.stop()


def test_a_transient_refusal_is_tried_again_and_the_attempt_shows(faulty):
    server, faults = faulty
    user = server.session()
    inv, cast = server.quote_and_cast(user["token"], "ask-flaky", {"question": "q"})
    events = server.events(cast, inv["invoiceId"])
    assert events[-1][1] == "executionFinished", events[-1]
    attempts = [e[2]["attempt"] for e in events if e[1] == "stepUpdate" and e[2]["stepId"] == "answer"
                and "attempt" in e[2]]
    assert attempts == [1, 2], attempts
    assert [m for m, _, _ in faults.requests].count("flaky") == 2
    run = server.run(user["token"], cast["runId"])
    assert run["steps"][0]["attempt"] == 2 and run["steps"][0]["costPts"] == 17 + 11


def test_a_cut_stream_is_retried_and_both_attempts_are_paid_for(faulty):
    server, faults = faulty
    user = server.session()
    inv, cast = server.quote_and_cast(user["token"], "ask-cut", {"question": "q"})
    events = server.events(cast, inv["invoiceId"])
    assert events[-1][1] == "executionFinished", events[-1]
    # The first attempt streamed four words before the cut; the second starts the answer afresh.
    second = max(e[0] for e in events if e[1] == "stepUpdate" and e[2].get("attempt") == 2)
    after = "".join(e[2]["text"] for e in events if e[1] == "stepDelta" and e[0] > second)
    assert after == "The stars are far, and the oracle is near."
    run = server.run(user["token"], cast["runId"])
    assert run["outputs"][0]["value"] == after
    assert "partial" not in run["steps"][0]
    # 1 point per token at these prices: the cut attempt counted by the rule (prompt "q" → 1;
    # "The stars are far", 17 characters in 4 pieces → 5), the whole one as reported (17 + 11).
    assert run["steps"][0]["costPts"] == (1 + 5) + (17 + 11)


def test_a_stream_without_usage_is_counted_by_the_rule_and_marked(faulty):
    server, _ = faulty
    user = server.session()
    _, cast = server.quote_and_cast(user["token"], "ask-nousage", {"question": "abcdefgh"})
    run = server.wait_for_status(user["token"], cast["runId"])
    assert run["status"] == "succeeded", run
    step = run["steps"][0]
    assert step["usageEstimated"] is True
    # "The stars are far, and the oracle is near." is 42 characters in 11 pieces: max(11, 11);
    # the prompt "abcdefgh": 8 characters → 2.
    assert step["usage"] == {"promptTokens": 2, "completionTokens": 11}
    assert step["costPts"] == 13


def test_a_permanent_refusal_fails_the_step_at_once_without_the_key(faulty):
    server, faults = faulty
    user = server.session()
    _, cast = server.quote_and_cast(user["token"], "ask-bad", {"question": "q"})
    run = server.wait_for_status(user["token"], cast["runId"])
    assert run["status"] == "failed" and run["refundedPts"] == run["costPts"], run
    assert run["error"]["stepId"] == "answer"
    assert "answered 400" in run["error"]["message"], run["error"]
    assert "SECRET" not in json.dumps(run) and "127.0.0.1" not in json.dumps(run)
    assert [m for m, _, _ in faults.requests].count("bad") == 1, "a 400 is not retried"
    assert faults.requests[-1][2]["authorization"] == "Bearer sk-test-SECRET-123", "the key was sent"
    assert faults.requests[-1][1]["max_tokens"] == 64 and faults.requests[-1][1]["stream"] is True
    assert faults.requests[-1][1]["stream_options"] == {"include_usage": True}


def test_a_silent_stream_fails_after_the_idle_timeout(faulty):
    server, faults = faulty
    user = server.session()
    _, cast = server.quote_and_cast(user["token"], "ask-idle", {"question": "q"})
    run = server.wait_for_status(user["token"], cast["runId"], timeout=40)
    assert run["status"] == "failed", run
    assert "silent" in run["error"]["message"], run["error"]
    assert [m for m, _, _ in faults.requests].count("idle") == 3, "timeouts are transient: three attempts"


def test_cancel_mid_answer_drops_the_stream(faulty):
    server, faults = faulty
    user = server.session()
    inv, cast = server.quote_and_cast(user["token"], "ask-slow", {"question": "q"})
    deadline = time.monotonic() + 10
    while not server.run(user["token"], cast["runId"])["steps"][0].get("partial"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = server.http.post(f"/api/v1/runs/{cast['runId']}/cancel", headers={"authorization": f"Bearer {user['token']}"})
    assert r.status_code == 202, r.text
    run = server.wait_for_status(user["token"], cast["runId"], statuses=("canceled",))
    # Two steps, none succeeded: floor(cost × 2 / 2).
    assert run["refundedPts"] == run["costPts"]
    assert faults.closed.wait(5), "the model's stream was dropped, not read to its end"
    assert server.events(cast, inv["invoiceId"])[-1][1] == "executionCanceled"


def run_server_expecting_failure(catalog, *args):
    proc = subprocess.run([binary(), "--addr", "127.0.0.1:0", "--memory", "--catalog", str(catalog), *args],
                          cwd=ROOT, capture_output=True, timeout=60)
    return proc.returncode, proc.stderr.decode() + proc.stdout.decode()


@pytest.mark.parametrize("template, why", [
    ("{{ steps.later.text }}", "runs after this one"),
    ("{{ steps.first.text }}", "a step cannot read its own result"),
    ("{{ steps.missing.text }}", "there is no step `missing`"),
    ("{{ steps.before.usage.completionTokens }}", "reports no usage"),
    ("{{ steps.before.json.x }}", "makes no JSON output"),
])
def test_a_catalog_with_a_bad_reference_is_refused_at_start(tmp_path, template, why):
    spell = {"slug": "broken", "version": 1, "title": "B", "summary": "s", "description": "d",
             "inputs": {"type": "object"}, "steps": [
                 {"id": "before", "title": "0", "tool": "text.render", "with": {"template": "x"}},
                 {"id": "first", "title": "1", "tool": "text.render", "with": {"template": template}},
                 {"id": "later", "title": "2", "tool": "text.render", "with": {"template": "x"}}]}
    (tmp_path / "broken.json").write_text(json.dumps(spell))
    code, out = run_server_expecting_failure(tmp_path)
    assert code != 0
    assert "broken.json" in out and "step `first`" in out and why in out, out
    assert template.strip("{} ") in out, out


def test_a_spell_whose_endpoint_is_not_configured_is_left_out_with_one_warning(start, tmp_path):
    (tmp_path / "none.json").write_text("{}")
    server = start("--tools", str(tmp_path / "none.json"))
    assert server.http.get("/api/v1/spells/oracle/meta").status_code == 404
    slugs = [s["slug"] for s in server.http.get("/api/v1/spells").json()["spells"]]
    assert "oracle" not in slugs and "hello-sigil" in slugs
    user = server.session()
    _, cast = server.quote_and_cast(user["token"], "hello-sigil", {"name": "Still here"})
    assert server.wait_for_status(user["token"], cast["runId"])["status"] == "succeeded"
    log = server.log_text()
    assert log.count("spell `oracle` is left out") == 1, log
    assert "`local`" in log


def test_a_tool_configuration_with_plain_http_beyond_loopback_is_refused(tmp_path):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps({"llm": {"x": {"baseUrl": "http://10.0.0.8:8080/v1", "model": "m"}}}))
    catalog = tmp_path / "spells"
    shutil.copytree(ROOT / "infra" / "spells", catalog)
    code, out = run_server_expecting_failure(catalog, "--tools", str(tools))
    assert code != 0 and "loopback" in out, out


@pytest.mark.skipif(ON_DYNAMODB, reason="scripts/dev runs the embedded store; the redb pass covers it")
def test_scripts_dev_with_the_model_serves_the_oracle(tmp_path):
    """The README's one command for the product with a real model: `scripts/dev --model`."""
    import signal

    from conftest import free_port
    env = dict(os.environ, SPELLCAST_MODEL_PORT=str(free_port()), TMPDIR=str(tmp_path))
    proc = subprocess.Popen([str(ROOT / "scripts" / "dev"), "--model", "--memory", "--addr", "127.0.0.1:0"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        line = proc.stdout.readline().decode()
        assert "open http://" in line, line
        url = line.split("open ")[1].split("/spells/")[0]
        import httpx
        meta = httpx.get(f"{url}/api/v1/spells/oracle/meta", timeout=10)
        assert meta.status_code == 200, meta.text
        token = httpx.post(f"{url}/api/v1/dev/session", json={}, timeout=10).json()["token"]
        auth = {"authorization": f"Bearer {token}"}
        inv = httpx.post(f"{url}/api/v1/payments/invoice", json={"spellSlug": "oracle", "asset": "PTS"},
                         headers=auth, timeout=10).json()
        cast = httpx.post(f"{url}/api/v1/spells/cast", headers=auth, timeout=10,
                          json={"slug": "oracle", "invoiceId": inv["invoiceId"], "context": {"question": "Hi?"}}).json()
        deadline = time.monotonic() + 60
        while (run := httpx.get(f"{url}/api/v1/runs/{cast['runId']}", headers=auth, timeout=10).json())["status"] \
                not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, run
            time.sleep(0.2)
        assert run["status"] == "succeeded", run
        assert run["steps"][0]["usage"]["completionTokens"] > 0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)


def test_a_text_too_long_to_travel_with_the_run_is_still_read_by_reference(start, catalog):
    """A text over the inline limit is stored as a file (SPEC §5.7); a later step reading it by
    reference gets the whole text, not an empty string."""
    spell = {"slug": "long-text", "version": 1, "title": "L", "summary": "s", "description": "d",
             "inputs": {"type": "object", "properties": {"n": {"type": "integer"}}}, "steps": [
                 {"id": "write", "title": "Write", "tool": "text.render",
                  "with": {"template": "{% for i in range(n) %}0123456789{% endfor %}"}},
                 {"id": "count", "title": "Count", "tool": "text.render",
                  "with": {"template": "{{ steps.write.text | length }} {{ steps.write.text[-3:] }}"}}]}
    (catalog / "long-text.json").write_text(json.dumps(spell))
    server = start()
    user = server.session()
    _, cast = server.quote_and_cast(user["token"], "long-text", {"n": 2000})
    run = server.wait_for_status(user["token"], cast["runId"])
    assert run["status"] == "succeeded", run
    assert run["outputs"][0]["kind"] == "file", "20,000 characters are stored as a file"
    assert run["outputs"][1]["value"] == "20000 789"


def test_an_https_model_behind_a_private_ca_is_reached_only_with_the_ca_file(start, catalog, tmp_path):
    """`caFile` (SPEC §7.4): the tools trust the public roots and the deployer's CA, nothing else."""
    import ssl

    import trustme
    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    faults = Faults(tls=tls)
    try:
        (catalog / "ask-tls.json").write_text(json.dumps(oracle_like("ask-tls", "tls", retry={"attempts": 1})))
        local = local_model()
        ca_file = tmp_path / "ca.pem"
        ca_file.write_bytes(ca.cert_pem.bytes())
        for trusted in (False, True):
            doc = {"llm": {"local": local, "tls": {"baseUrl": faults.url, "model": "tls"}}}
            if trusted:
                doc["caFile"] = str(ca_file)
            tools = tmp_path / f"tools-{trusted}.json"
            tools.write_text(json.dumps(doc))
            server = start("--tools", str(tools))
            user = server.session()
            _, cast = server.quote_and_cast(user["token"], "ask-tls", {"question": "q"})
            run = server.wait_for_status(user["token"], cast["runId"])
            if trusted:
                assert run["status"] == "succeeded", run
                assert run["outputs"][0]["value"] == "The stars are far, and the oracle is near."
            else:
                assert run["status"] == "failed", run
                assert faults.url not in run["error"]["message"]
            server.stop()
        assert faults.url.startswith("https://")
    finally:
        faults.stop()
