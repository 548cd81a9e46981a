"""SPEC §5.7 (issue 10, item 4): outputs of any size. Large ones go to the blob store (files under
the data dir locally, S3 on AWS: moto's in the DynamoDB pass) and the run, its events and its
snapshot carry a reference; the outputs endpoint serves them or redirects to a short-lived signed
URL; the bytes come back exact and no store item nears its limit."""
import json

import httpx
import pytest

from conftest import ON_DYNAMODB


def expected(kb):
    return b"0123456789abcdef" * (kb * 64)


@pytest.mark.parametrize("kb", [1024, 5120])
def test_a_large_output_succeeds_and_comes_back_exact(server, kb):
    user = server.session(grant=100_000)
    auth = {"authorization": f"Bearer {user['token']}"}
    inv, cast = server.quote_and_cast(user["token"], "bulky", {"kb": kb})
    run = server.wait_for_status(user["token"], cast["runId"], timeout=120)
    assert run["status"] == "succeeded", run
    [output] = run["outputs"]
    assert output["kind"] == "file" and output["mime"].startswith("text/plain"), output
    assert "value" not in output, "the text is not copied into the run"
    assert output["url"] == f"/api/v1/runs/{cast['runId']}/outputs/0"

    r = server.http.get(output["url"], headers=auth)
    if ON_DYNAMODB:
        # From S3 directly, by a presigned URL that works for minutes, not through the function.
        assert r.status_code == 302, r.text
        assert r.headers["cache-control"] == "no-store"
        location = r.headers["location"]
        assert "Signature=" in location or "X-Amz-Signature=" in location, location
        r = httpx.get(location, timeout=60)
    assert r.status_code == 200, r.text[:200]
    assert len(r.content) == kb * 1024 and r.content == expected(kb)

    # The events carry the reference, not the text: every one is small.
    events = server.events(cast, inv["invoiceId"])
    assert events[-1][1] == "executionFinished"
    for _, _, data, _ in events:
        assert len(json.dumps(data)) < 4096
    assert events[-1][2]["outputs"][0]["url"] == output["url"]

    # The invoice opens the file too (EventSource and <img> cannot send headers).
    r = server.http.get(output["url"], params={"token": inv["invoiceId"]}, follow_redirects=True)
    assert r.status_code == 200 and r.content == expected(kb)

    # Someone else may not have it.
    other = server.session()
    r = server.http.get(output["url"], headers={"authorization": f"Bearer {other['token']}"})
    assert r.status_code == 403


def test_small_outputs_stay_inline(server):
    user = server.session(grant=1000)
    _, cast = server.quote_and_cast(user["token"], "bulky", {"kb": 1})
    run = server.wait_for_status(user["token"], cast["runId"])
    [output] = run["outputs"]
    assert output["kind"] == "text" and output["value"] == expected(1).decode()
    assert "url" not in output
