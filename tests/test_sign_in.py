"""Signing in with an OpenID provider, points for users, and where a session may travel (SPEC §2,
§9.1, §9.2), against a real OpenID provider on this machine (npm oidc-provider, OpenID Certified):
users signed in through its own login page with the Authorization Code flow and PKCE, its keys
rotated, tokens forged every way the spec names; the welcome grant once under concurrent first
requests; admin grants (no token, replay, conflict, below zero). On both stores."""
import base64
import concurrent.futures
import datetime
import hashlib
import hmac
import json
import re
import stat
import subprocess
import time
import unittest.mock

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import RSAAlgorithm

from conftest import free_port
from oidc_provider import CLIENT_ID, Provider, make_key

WELCOME = 100
ADMIN_TOKEN = "test-admin-token-0123456789"


@pytest.fixture
def provider(tmp_path, request):
    from conftest import OUT
    p = Provider(tmp_path, free_port(), [make_key("rsa", "rsa-1")], ["http://127.0.0.1:9/callback"],
                 OUT / f"oidc-{request.node.name}.log")
    yield p
    p.stop()


@pytest.fixture
def signed_in_server(start, provider):
    def _start(*extra):
        return start("--oidc-issuer", provider.issuer, "--oidc-audience", CLIENT_ID,
                     "--welcome-pts", str(WELCOME), "--admin-token", ADMIN_TOKEN, *extra)
    return _start


def bearer(token):
    return {"authorization": f"Bearer {token}"}


def me(server, token):
    return server.http.get("/api/v1/me/balance", headers=bearer(token))


def test_a_user_signs_in_with_the_provider_gets_welcome_points_once_and_casts(signed_in_server, provider):
    server = signed_in_server()
    first = provider.sign_in("alice")["id_token"]
    r = me(server, first)
    assert r.status_code == 200, r.text
    user = r.json()["userId"]
    assert r.json()["balances"]["PTS"] == WELCOME
    assert user.startswith("oidc_") and "alice" not in user

    _, cast = server.quote_and_cast(first, "hello-sigil", {"name": "Alice"})
    assert server.wait_for_status(first, cast["runId"])["status"] == "succeeded"

    # Signing in again is the same user, and nobody is welcomed twice (nor after a restart:
    # the grant is recorded in the store, not only remembered by the process).
    again = provider.sign_in("alice")["id_token"]
    assert again != first
    balance = server.balance(again)
    assert me(server, again).json()["userId"] == user
    entries = server.ledger(again)
    welcome = [e for e in entries if e.get("reason") == "welcome"]
    assert len(welcome) == 1 and welcome[0]["pts"] == WELCOME and welcome[0]["grantedBy"] == "spellcast"
    assert balance == sum(e["pts"] for e in entries) < WELCOME


def test_an_es256_provider_signs_users_in_too(signed_in_server, provider):
    provider.restart([make_key("ec", "ec-1")])
    server = signed_in_server()
    token = provider.sign_in("bob")["id_token"]
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["alg"] == "ES256"
    assert me(server, token).status_code == 200


def test_a_rotated_key_is_picked_up_with_at_most_one_refetch_per_interval(signed_in_server, provider):
    server = signed_in_server("--oidc-refetch-secs", "3")
    old = provider.sign_in("carol")["id_token"]
    assert me(server, old).status_code == 200  # the key set is fetched now
    provider.restart([make_key("rsa", "rsa-2"), *provider.keys])  # the new key signs from now on
    new = provider.sign_in("carol")["id_token"]
    assert json.loads(base64.urlsafe_b64decode(new.split(".")[0] + "=="))["kid"] == "rsa-2"
    # Within the interval the unknown key is not fetched for: refused.
    assert me(server, new).status_code == 401
    time.sleep(3.2)
    r = me(server, new)
    assert r.status_code == 200, r.text
    assert me(server, old).status_code == 200, "the old key is still in the set"


def forged_tokens(provider):
    key = provider.keys[0]
    now = int(time.time())
    claims = {"iss": provider.issuer, "aud": CLIENT_ID, "sub": "mallory", "iat": now, "exp": now + 300}

    def unsigned(header, body):
        enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
        return f"{enc(header)}.{enc(body)}"

    # HMAC "signed" with the provider's public key, the classic algorithm confusion.
    public_pem = RSAAlgorithm.from_jwk(json.dumps(key)).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = unsigned({"alg": "HS256", "typ": "JWT", "kid": key["kid"]}, claims)
    mac = base64.urlsafe_b64encode(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())
    return {
        "alg none": unsigned({"alg": "none", "typ": "JWT", "kid": key["kid"]}, claims) + ".",
        "HMAC with the public key": f"{signing_input}.{mac.rstrip(b'=').decode()}",
        "unknown kid": provider.mint({}, key=make_key("rsa", "not-in-the-set")),
        "a key not in the set under a known kid": provider.mint({}, key={**make_key("rsa", key["kid"])}),
        "wrong aud": provider.mint({"aud": "another-client"}),
        "wrong iss": provider.mint({"iss": "http://127.0.0.1:1"}),
        "expired": provider.mint({"iat": now - 7200, "exp": now - 3600}),
        "expired beyond the leeway": provider.mint({"iat": now - 600, "exp": now - 61}),
        "not yet valid": provider.mint({"nbf": now + 3600}),
        "issued in the future": provider.mint({"iat": now + 3600, "exp": now + 7200}),
        "no sub": provider.mint({"sub": ""}),
    }


def test_forged_and_foreign_tokens_are_refused_and_welcome_nobody(signed_in_server, provider):
    server = signed_in_server("--oidc-refetch-secs", "0")
    good = provider.mint({"sub": "mallory"})
    for name, token in forged_tokens(provider).items():
        r = me(server, token)
        assert r.status_code == 401, f"{name}: {r.status_code} {r.text}"
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "unauthorized", name
    # Within the leeway the clock skew is forgiven.
    now = int(time.time())
    assert me(server, provider.mint({"sub": "skewed", "iat": now - 600, "exp": now - 30})).status_code == 200
    # None of the refused ones granted the user anything.
    entries = server.ledger(good)
    assert [e["reason"] for e in entries] == ["welcome"], entries


def test_the_welcome_grant_is_made_once_under_twenty_concurrent_first_requests(signed_in_server, provider):
    server = signed_in_server()
    token = provider.mint({"sub": "eager"})
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: httpx.get(f"{server.url}/api/v1/me/balance", headers=bearer(token),
                                                    timeout=30), range(20)))
    assert [a.status_code for a in answers] == [200] * 20
    entries = server.ledger(token)
    assert [(e["kind"], e["pts"], e["reason"]) for e in entries] == [("grant", WELCOME, "welcome")]
    assert server.balance(token) == WELCOME


def test_a_session_is_accepted_only_as_a_bearer_header(server):
    token = server.session()["token"]
    r = server.http.get("/api/v1/me/balance", params={"token": token})
    assert r.status_code == 401, r.text
    inv, cast = server.quote_and_cast(token, "hello-sigil", {"name": "Q"})
    stream = server.http.get(f"{cast['streamUrl']}&token={token}")
    assert stream.status_code == 401, stream.text
    run = server.wait_for_status(token, cast["runId"])
    output = run["outputs"][0]["url"] if run["outputs"][0]["kind"] in ("image", "file") else None
    if output:
        assert server.http.get(output, params={"token": token}).status_code == 401
    # The owner's page gets a token for the query instead: the run's invoice, signed again.
    watch = run["watchToken"]
    assert watch != token  # the invoice (signed again at another second, another string)
    assert server.http.get(f"{cast['streamUrl']}&token={watch}", timeout=30).status_code == 200
    if output:
        assert server.http.get(output, params={"token": watch}, follow_redirects=True).status_code == 200
    # It opens only this run, pays for nothing, and is never handed to a non-owner.
    again = server.cast(token, "hello-sigil", watch, {"name": "Q"})
    assert again.status_code in (200, 202, 409) and again.json().get("runId", cast["runId"]) == cast["runId"]
    assert server.balance(token) == 1000 - inv["costPts"]
    stranger = server.session()["token"]
    assert server.http.get(f"/api/v1/runs/{cast['runId']}", headers=bearer(watch)).json().get("watchToken") is None
    assert server.http.get(f"/api/v1/runs/{cast['runId']}", headers=bearer(stranger)).status_code == 403


def grant(server, body, key=None, token=ADMIN_TOKEN):
    headers = {**({"authorization": f"Bearer {token}"} if token else {}), **({"idempotency-key": key} if key else {})}
    return server.http.post("/api/v1/admin/grants", json=body, headers=headers)


def test_admin_grants_are_idempotent_never_below_zero_and_need_the_admin_token(signed_in_server, provider):
    server = signed_in_server()
    token = provider.mint({"sub": "granted"})
    user = me(server, token).json()["userId"]  # welcomed: 100
    body = {"userId": user, "pts": 50, "reason": "beta tester"}

    assert grant(server, body, token=None).status_code == 401
    assert grant(server, body, token="wrong").status_code == 401
    assert grant(server, body, token=token).status_code == 401, "a user's session is no admin token"
    assert server.balance(token) == WELCOME

    first = grant(server, body, key="k1")
    assert first.status_code == 201, first.text
    entry = first.json()
    assert (entry["kind"], entry["pts"], entry["reason"], entry["grantedBy"]) == ("grant", 50, "beta tester", "admin-token")
    replay = grant(server, body, key="k1")
    assert replay.status_code == 201 and replay.json() == entry
    assert server.balance(token) == WELCOME + 50
    conflict = grant(server, {**body, "pts": 51}, key="k1")
    assert conflict.status_code == 409 and conflict.json()["code"] == "idempotency_conflict"

    too_much = grant(server, {"userId": user, "pts": -1000, "reason": "correction"}, key="k2")
    assert too_much.status_code == 409 and too_much.json()["code"] == "insufficient_balance", too_much.text
    assert server.balance(token) == WELCOME + 50
    taken = grant(server, {"userId": user, "pts": -(WELCOME + 50), "reason": "correction"}, key="k3")
    assert taken.status_code == 201 and taken.json()["pts"] == -(WELCOME + 50)
    assert server.balance(token) == 0
    reasons = [e.get("reason") for e in server.ledger(token)]
    assert reasons == ["correction", "beta tester", "welcome"]

    for bad, pointer in [({"pts": 5, "reason": "x"}, "/userId"), ({"userId": user, "reason": "x"}, "/pts"),
                         ({"userId": user, "pts": 0, "reason": "x"}, "/pts"),
                         ({"userId": user, "pts": 1.5, "reason": "x"}, "/pts"),
                         ({"userId": user, "pts": 5}, "/reason"), ({"userId": user, "pts": 5, "reason": " "}, "/reason"),
                         ({"userId": user, "pts": 5, "reason": "x", "extra": 1}, "/extra")]:
        r = grant(server, bad)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["errors"][0]["pointer"] == pointer, (bad, r.json())
    assert server.balance(token) == 0


def test_the_cli_signs_in_with_the_device_flow_or_a_pasted_token(signed_in_server, provider, tmp_path):
    from test_cli import Cli
    server = signed_in_server()
    cli = Cli(server.url, tmp_path)
    login = cli.start("login")
    line = login.stderr.readline()
    m = re.search(r"open (\S+) and confirm the code (\S+)", line)
    assert m, line
    provider.confirm_device(m.group(1), "dora")
    out, err = login.communicate(timeout=60)
    assert login.returncode == 0, (out, err)
    assert f"with {WELCOME} points" in out
    saved = tmp_path / ".config" / "spellcast" / "token"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert cli.json("balance")["balances"]["PTS"] == WELCOME

    # A token pasted (from the site's sign-in) is checked, then kept; one the server refuses is not.
    other = provider.mint({"sub": "pasted"})
    r = subprocess.run([*cli_command(), "login", "--paste"], input=other + "\n", env=cli.env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r
    assert saved.read_text() == other
    for bad, code in (("not a token", 2), (provider.mint({"aud": "elsewhere"}), 1)):
        r = subprocess.run([*cli_command(), "login", "--paste"], input=bad + "\n", env=cli.env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == code, r
        assert saved.read_text() == other, "a refused token is not saved"


def cli_command():
    from test_cli import cli_binary
    return [str(cli_binary())]


def test_the_cli_grants_with_the_admin_token_locally(signed_in_server, provider, tmp_path):
    from test_cli import Cli
    server = signed_in_server()
    token = provider.mint({"sub": "cli-granted"})
    user = me(server, token).json()["userId"]
    cli = Cli(server.url, tmp_path)
    args = ["admin", "grant", user, "25", "--reason", "support ticket 7", "--idempotency-key", "t7"]
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        cli.env.pop(var, None)
    unsigned = cli.run(*args)
    assert unsigned.returncode == 1 and "no AWS credentials" in unsigned.stderr, unsigned
    cli.env["SPELLCAST_ADMIN_TOKEN"] = "wrong"
    refused = cli.run(*args)
    assert refused.returncode == 1 and "unauthorized" in refused.stderr, refused
    cli.env["SPELLCAST_ADMIN_TOKEN"] = ADMIN_TOKEN
    first = cli.json(*args)
    assert (first["pts"], first["reason"], first["grantedBy"]) == (25, "support ticket 7", "admin-token")
    assert cli.json(*args) == first, "a retry with its key is the same grant"
    taken = cli.json("admin", "grant", user, "-125", "--reason", "correction")
    assert taken["pts"] == -125
    assert server.balance(token) == 0


def test_the_cli_signs_a_grant_for_the_admin_function_with_sigv4(tmp_path):
    """Without an admin token the grant is signed with the shell's AWS credentials (SPEC §9.2):
    captured by a stand-in for the Function URL and checked with botocore's own SigV4 signer."""
    import http.server
    import threading

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from test_cli import Cli

    seen = {}

    class FunctionUrl(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            seen["path"], seen["headers"] = self.path, dict(self.headers)
            seen["body"] = self.rfile.read(int(self.headers["content-length"]))
            body = json.dumps({"txId": "tx_1", "userId": "u1", "kind": "grant", "pts": 5, "reason": "r",
                               "at": "2026-12-06T00:00:00Z"}).encode()
            self.send_response(201)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    stand_in = http.server.HTTPServer(("127.0.0.1", 0), FunctionUrl)
    threading.Thread(target=stand_in.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{stand_in.server_port}"
        cli = Cli(url, tmp_path)
        cli.env.update(AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                       AWS_SESSION_TOKEN="session-token", AWS_REGION="eu-west-1")
        cli.env.pop("SPELLCAST_ADMIN_TOKEN", None)
        entry = cli.json("admin", "grant", "u1", "5", "--reason", "r", "--admin-url", url)
        assert entry["txId"] == "tx_1"
    finally:
        stand_in.shutdown()
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/lambda/aws4_request" in headers["authorization"]
    assert headers["x-amz-security-token"] == "session-token"
    signed = headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    # Recompute the signature over what arrived, as AWS would.
    request = AWSRequest(method="POST", url=f"{url}{seen['path']}", data=seen["body"],
                         headers={h: headers[h] for h in signed if h != "host"})
    signer = SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token"),
                       "lambda", "eu-west-1")
    # botocore signs at its own clock's time: held at the moment the CLI signed.
    signed_at = datetime.datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ")
    with unittest.mock.patch("botocore.auth.get_current_datetime", return_value=signed_at):
        signer.add_auth(request)
    assert request.headers["Authorization"] == headers["authorization"]
