"""SPEC §2 and §5.6: bad input gets a clear problem+json error and changes nothing."""
import base64
import json
import time

import jwt
import pytest

from conftest import INVOICE_KEY, TOKEN_SECRET


def b64(obj):
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def forged_none(claims):
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


def session_claims(sub, exp_in=300):
    now = int(time.time())
    return {"sub": sub, "exp": now + exp_in, "iat": now, "aud": "spellcast-session", "iss": "spellcast-local"}


def state(server, token):
    return server.balance(token), server.ledger(token)


def is_problem(r, status, code):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == code and body["status"] == status
    assert body["title"] and body["detail"] and body["type"]
    return body


@pytest.fixture
def world(server):
    """A user with a paid run and an open quote, to check that nothing moves."""
    user = server.session(user_id="alice")
    other = server.session(user_id="mallory")
    inv, cast = server.quote_and_cast(user["token"], "hello-sigil", {"name": "A"})
    server.wait_for_status(user["token"], cast["runId"])
    open_quote = server.invoice(user["token"], "hello-sigil").json()
    return dict(user=user, other=other, inv=inv, cast=cast, quote=open_quote)


def test_invoice_rejects_bad_requests_without_side_effects(server, world):
    token = world["user"]["token"]
    before = state(server, token)
    auth = {"authorization": f"Bearer {token}"}
    post = lambda body, headers=auth, **kw: server.http.post("/api/v1/payments/invoice", content=body, headers=headers, **kw)
    is_problem(post(b"{not json"), 400, "bad_json")
    is_problem(post(b"[1,2]"), 400, "bad_json")
    body = is_problem(post(json.dumps({"spellSlug": 5, "asset": "PTS"})), 400, "bad_json")
    assert body["errors"][0]["pointer"] == "/spellSlug"
    is_problem(post(json.dumps({"asset": "PTS"})), 400, "bad_json")
    is_problem(post(json.dumps({"spellSlug": "Bad/Slug", "asset": "PTS"})), 400, "invalid_slug")
    is_problem(post(json.dumps({"spellSlug": "no-such-spell", "asset": "PTS"})), 404, "spell_not_found")
    is_problem(post(json.dumps({"spellSlug": "hello-sigil", "asset": "GOLD"})), 400, "unknown_asset")
    is_problem(post(b'{"spellSlug":"hello-sigil","asset":"PTS","pad":"' + b"x" * 70000 + b'"}'), 413, "payload_too_large")
    is_problem(post(json.dumps({"spellSlug": "hello-sigil", "asset": "PTS"}), headers={}), 401, "unauthorized")
    is_problem(post(b"{}", headers={"authorization": "Bearer nonsense"}), 401, "unauthorized")
    is_problem(post(b"{}", headers={"authorization": f"Bearer {forged_none(session_claims('alice'))}"}), 401, "unauthorized")
    forged = jwt.encode(session_claims("alice"), "wrong-key-wrong-key-wrong-key-wrong", algorithm="HS256")
    is_problem(post(b"{}", headers={"authorization": f"Bearer {forged}"}), 401, "unauthorized")
    # An invoice is not a session.
    is_problem(post(b"{}", headers={"authorization": f"Bearer {world['quote']['invoiceId']}"}), 401, "unauthorized")
    too_long = {**auth, "idempotency-key": "k" * 256}
    is_problem(post(json.dumps({"spellSlug": "hello-sigil", "asset": "PTS"}), headers=too_long), 400, "bad_json")
    assert state(server, token) == before


def test_idempotency_key_semantics(server, world):
    token = world["user"]["token"]
    a = server.invoice(token, "hello-sigil", key="key-1")
    b = server.invoice(token, "hello-sigil", key="key-1")
    assert a.status_code == b.status_code == 201 and a.json() == b.json()
    c = server.http.post("/api/v1/payments/invoice", json={"spellSlug": "slow-scroll", "asset": "PTS"},
                         headers={"authorization": f"Bearer {token}", "idempotency-key": "key-1"})
    is_problem(c, 409, "idempotency_conflict")
    # Keys belong to their user: the same key from someone else is a new request.
    d = server.invoice(world["other"]["token"], "hello-sigil", key="key-1")
    assert d.status_code == 201 and d.json()["invoiceId"] != a.json()["invoiceId"]


def test_cast_rejects_bad_requests_without_side_effects(server, world):
    token, quote = world["user"]["token"], world["quote"]
    before = state(server, token)
    auth = {"authorization": f"Bearer {token}"}
    cast = lambda body, headers=auth: server.http.post("/api/v1/spells/cast", json=body, headers=headers)
    good = {"slug": "hello-sigil", "invoiceId": quote["invoiceId"], "context": {"name": "B"}}
    is_problem(server.http.post("/api/v1/spells/cast", content=b"{", headers=auth), 400, "bad_json")
    is_problem(cast({**good, "context": "nope"}), 400, "bad_json")
    is_problem(cast({**good, "invoiceId": 7}), 400, "bad_json")
    is_problem(cast({**good, "slug": "UPPER"}), 400, "invalid_slug")
    is_problem(cast({**good, "slug": "slow-scroll"}), 401, "invoice_invalid")
    is_problem(cast({**good, "invoiceId": "not-a-jwt"}), 401, "invoice_invalid")
    is_problem(cast({**good, "invoiceId": forged_none({"jti": "x", "sub": "alice"})}), 401, "invoice_invalid")
    is_problem(cast(good, headers={}), 401, "unauthorized")
    is_problem(cast(good, headers={"authorization": f"Bearer {world['other']['token']}"}), 403, "forbidden")
    body = is_problem(cast({**good, "context": {"name": "", "mood": "sleepy", "extra": 1}}), 422, "invalid_context")
    pointers = {e["pointer"] for e in body["errors"]}
    assert {"/context/name", "/context/mood"} <= pointers, pointers
    body = is_problem(cast({**good, "context": {}}), 422, "invalid_context")
    assert [e["pointer"] for e in body["errors"]] == ["/context/name"]
    # A consumed invoice with other inputs.
    consumed = {"slug": "hello-sigil", "invoiceId": world["inv"]["invoiceId"], "context": {"name": "Other"}}
    is_problem(cast(consumed), 409, "invoice_consumed")
    assert state(server, token) == before
    # The quote is still open and pays once the request is right.
    ok = cast(good)
    assert ok.status_code == 202


def test_stream_and_run_access_rules(server, world):
    cast, inv = world["cast"], world["inv"]
    other_quote = server.invoice(world["other"]["token"], "hello-sigil").json()
    url = cast["streamUrl"]
    is_problem(server.http.get(url), 401, "unauthorized")
    is_problem(server.http.get(url, headers={"authorization": "Bearer junk"}), 401, "invoice_invalid")
    is_problem(server.http.get(url, headers={"authorization": f"Bearer {other_quote['invoiceId']}"}), 403, "forbidden")
    is_problem(server.http.get(url.replace("hello-sigil", "fizzle"), headers={"authorization": f"Bearer {inv['invoiceId']}"}), 404, "run_not_found")
    is_problem(server.http.get(url.replace("hello-sigil", "Bad_Slug"), headers={"authorization": f"Bearer {inv['invoiceId']}"}), 400, "invalid_slug")
    is_problem(server.http.get("/api/v1/spells/hello-sigil/stream?creditTxId=tx_nope", headers={"authorization": f"Bearer {inv['invoiceId']}"}), 404, "run_not_found")
    is_problem(server.http.get(url, headers={"authorization": f"Bearer {inv['invoiceId']}", "last-event-id": "abc"}), 400, "bad_json")
    run_url = f"/api/v1/runs/{cast['runId']}"
    is_problem(server.http.get(run_url), 401, "unauthorized")
    is_problem(server.http.get(run_url, headers={"authorization": f"Bearer {world['other']['token']}"}), 403, "forbidden")
    is_problem(server.http.get("/api/v1/runs/run_nope", headers={"authorization": f"Bearer {world['user']['token']}"}), 404, "run_not_found")
    is_problem(server.http.get(f"{run_url}/outputs/99", headers={"authorization": f"Bearer {world['user']['token']}"}), 404, "run_not_found")
    is_problem(server.http.get(f"{run_url}/outputs/x", headers={"authorization": f"Bearer {world['user']['token']}"}), 404, "run_not_found")
    expired = jwt.encode(session_claims("alice", exp_in=-10), "irrelevant-key-irrelevant-key-123", algorithm="HS256")
    is_problem(server.http.get(run_url, headers={"authorization": f"Bearer {expired}"}), 401, "unauthorized")


def signed(claims, algorithm="HS256", key=TOKEN_SECRET):
    return jwt.encode(claims, key, algorithm=algorithm)


def test_only_valid_sessions_open_the_account(server, world):
    balance = lambda token: server.http.get("/api/v1/me/balance", headers={"authorization": f"Bearer {token}"})
    assert balance(signed(session_claims("alice"))).status_code == 200, "the test mints tokens like the server"
    rejected = {
        "expired": signed(session_claims("alice", exp_in=-5)),
        "other audience": signed({**session_claims("alice"), "aud": "spellcast-invoice"}),
        "other issuer": signed({**session_claims("alice"), "iss": "someone-else"}),
        "no expiry": signed({k: v for k, v in session_claims("alice").items() if k != "exp"}),
        "algorithm confusion (HS512 with the same key)": signed(session_claims("alice"), algorithm="HS512"),
        "alg none": forged_none(session_claims("alice")),
        "other key": signed(session_claims("alice"), key="another-secret-another-secret-123"),
        "garbage": "a.b.c",
    }
    for why, token in rejected.items():
        r = balance(token)
        assert r.status_code == 401 and r.json()["code"] == "unauthorized", why
    r = server.http.get("/api/v1/me/balance", headers={"authorization": "Basic YWxpY2U6cHc="})
    assert r.status_code == 401


def test_forged_invoices_cannot_pay(server, world):
    token = world["user"]["token"]
    before = state(server, token)
    quote = jwt.decode(world["quote"]["invoiceId"], options={"verify_signature": False})
    cast = lambda invoice: server.cast(token, "hello-sigil", invoice, {"name": "F"})
    cheap = {**quote, "cost": 0}
    is_problem(cast(signed(cheap, key="another-secret-another-secret-123")), 401, "invoice_invalid")
    # Signed with the session key: invoices have a key of their own.
    is_problem(cast(signed(quote)), 401, "invoice_invalid")
    is_problem(cast(forged_none(cheap)), 401, "invoice_invalid")
    # Correctly signed, but never issued: the store does not know it.
    is_problem(cast(signed({**cheap, "jti": "inv_made_up"}, key=INVOICE_KEY)), 401, "invoice_invalid")
    # Correctly signed and expired, unknown to the store (DynamoDB's TTL deletes invoices some
    # time after they expire): expired, as its token says.
    is_problem(cast(signed({**quote, "jti": "inv_old", "exp": int(time.time()) - 5}, key=INVOICE_KEY)), 401,
               "invoice_expired")
    # A session token is not an invoice.
    is_problem(cast(token), 401, "invoice_invalid")
    assert state(server, token) == before


def test_oversized_bodies_are_refused_everywhere(server, world):
    auth = {"authorization": f"Bearer {world['user']['token']}"}
    big = b'{"pad":"' + b"x" * (64 * 1024) + b'"}'
    for path in ("/api/v1/payments/invoice", "/api/v1/spells/cast", "/api/v1/dev/session",
                 "/api/v1/internal/stats/refresh"):
        is_problem(server.http.post(path, content=big, headers=auth), 413, "payload_too_large")


def test_meta_and_og_reject_bad_slugs(server):
    is_problem(server.http.get("/api/v1/spells/-bad/meta"), 400, "invalid_slug")
    is_problem(server.http.get(f"/api/v1/spells/{'a' * 65}/meta"), 400, "invalid_slug")
    is_problem(server.http.get("/api/v1/spells/nope/meta"), 404, "spell_not_found")
    r = server.http.get("/spells/nope/og")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "not found" in r.text.lower()


def test_ledger_and_session_bad_parameters(server, world):
    auth = {"authorization": f"Bearer {world['user']['token']}"}
    for limit in ("0", "201", "x"):
        is_problem(server.http.get("/api/v1/me/ledger", params={"limit": limit}, headers=auth), 400, "bad_json")
    is_problem(server.http.post("/api/v1/dev/session", json={"grantPts": -1}), 400, "bad_json")
    is_problem(server.http.post("/api/v1/dev/session", json={"grantPts": "many"}), 400, "bad_json")
    is_problem(server.http.post("/api/v1/dev/session", json={"userId": "has space"}), 400, "bad_json")
    is_problem(server.http.post("/api/v1/dev/session", content=b"{oops"), 400, "bad_json")


def test_unknown_routes_and_methods(server):
    r = server.http.get("/api/v1/nothing-here")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    r = server.http.delete("/api/v1/spells/cast")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    # Pages and files are read-only: a write is a 405 problem, not a page.
    for path in ["/", "/spells/hello-sigil", "/static/js/spell-execute.js", "/me", "/runs/run_1"]:
        r = server.http.post(path, content=b"x")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD", path
        assert r.headers["content-type"] == "application/problem+json", path


def test_extreme_ids_cursors_and_numbers_are_client_errors(server, world):
    """Issue 10, item 7: text and numbers a client sends reach the store only when they fit it
    (DynamoDB refuses an empty key or one over 2 KB with a ValidationException): an empty,
    oversized or strange id or cursor is a 400 or a 404, never a 500, on every store."""
    token = world["user"]["token"]
    before = state(server, token)
    auth = {"authorization": f"Bearer {token}"}
    inv_auth = {"authorization": f"Bearer {world['inv']['invoiceId']}"}
    huge = "x" * 5000
    for cursor in ("", huge, "tx_\u00e9", "tx 1", "tx_" + "9" * 3000):
        r = server.http.get("/api/v1/me/ledger", params={"cursor": cursor}, headers=auth)
        is_problem(r, 400, "bad_json")
    for run_id in (huge, "run_" + "z" * 2100, "r%20n", "%E2%80%AE"):
        is_problem(server.http.get(f"/api/v1/runs/{run_id}", headers=auth), 404, "run_not_found")
        is_problem(server.http.get(f"/api/v1/runs/{run_id}/outputs/0", headers=auth), 404, "run_not_found")
    for tx in ("", huge):
        r = server.http.get("/api/v1/spells/hello-sigil/stream", params={"creditTxId": tx}, headers=inv_auth)
        assert r.status_code in (400, 404) and r.headers["content-type"] == "application/problem+json", r.text
    stream = world["cast"]["streamUrl"]
    for last in ("99999999999999999999999999", "-1", "1e9", "0x10"):
        r = server.http.get(stream, headers={**inv_auth, "last-event-id": last})
        is_problem(r, 400, "bad_json")
        # In the query too, even beside a good header (Schemathesis found that one ignored).
        r = server.http.get(stream, params={"lastEventId": last}, headers={**inv_auth, "last-event-id": "1"})
        is_problem(r, 400, "bad_json")
    for n in ("99999999999999999999999", "-5", "1e3"):
        is_problem(server.http.get("/api/v1/me/ledger", params={"limit": n}, headers=auth), 400, "bad_json")
        is_problem(server.http.get(f"/api/v1/runs/{world['cast']['runId']}/outputs/{n}", headers=auth), 404,
                   "run_not_found")
    for user_id in ("", huge, "u" * 200):
        is_problem(server.http.post("/api/v1/dev/session", json={"userId": user_id}), 400, "bad_json")
    is_problem(server.http.post("/api/v1/dev/session", json={"grantPts": 2**70}), 400, "bad_json")
    # A session for a user id an identity provider might issue, but far longer than any does.
    long_sub = signed(session_claims("u" * 3000))
    r = server.http.get("/api/v1/me/balance", headers={"authorization": f"Bearer {long_sub}"})
    is_problem(r, 401, "unauthorized")
    assert state(server, token) == before
