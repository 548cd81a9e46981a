"""A real OpenID provider for the tests (`tests/oidc/provider.mjs`: npm oidc-provider, OpenID
Certified) and a client that signs a user in through it the way a browser would: Authorization
Code with PKCE, through the provider's own login and consent pages. The tests make the provider's
signing keys, so they can rotate them (restart with another set) and sign tokens the provider
never would (wrong audience, expired) with its real keys."""
import base64
import html
import hashlib
import json
import os
import pathlib
import re
import secrets
import subprocess
import time
import urllib.parse

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

HERE = pathlib.Path(__file__).resolve().parent / "oidc"
CLIENT_ID = "spellcast"


def make_key(kind, kid):
    """A private JWK: `rsa` (RS256, 2048 bits) or `ec` (ES256, P-256)."""
    if kind == "rsa":
        jwk = json.loads(RSAAlgorithm.to_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
        jwk.update(alg="RS256")
    else:
        jwk = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1())))
        jwk.update(alg="ES256")
    jwk.update(kid=kid, use="sig")
    return jwk


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Provider:
    """One oidc-provider process on 127.0.0.1; `restart(keys)` keeps its port (its issuer)."""

    def __init__(self, tmp, port, keys, redirect_uris, log):
        self.tmp, self.port, self.redirect_uris, self.log = tmp, port, redirect_uris, log
        self.issuer = f"http://127.0.0.1:{port}"
        self.proc = None
        self.restart(keys)

    def restart(self, keys):
        self.stop()
        self.keys = keys
        keys_file = self.tmp / f"keys-{time.monotonic_ns()}.json"
        keys_file.write_text(json.dumps({"keys": keys}))
        self.proc = subprocess.Popen(
            ["node", str(HERE / "provider.mjs"), str(self.port), str(keys_file), CLIENT_ID, *self.redirect_uris],
            cwd=HERE, stdout=subprocess.PIPE, stderr=open(self.log, "ab"))
        line = self.proc.stdout.readline().decode()
        if "listening" not in line:
            raise RuntimeError(f"the OpenID provider did not start: {line!r}; see {self.log}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def sign_in(self, login, redirect_uri=None):
        """Signs `login` in with the Authorization Code flow and PKCE; the token answer."""
        redirect_uri = redirect_uri or self.redirect_uris[0]
        verifier = secrets.token_urlsafe(48)
        state = secrets.token_urlsafe(12)
        query = {
            "client_id": CLIENT_ID, "response_type": "code", "scope": "openid profile",
            "redirect_uri": redirect_uri, "state": state, "nonce": secrets.token_urlsafe(12),
            "code_challenge": b64url(hashlib.sha256(verifier.encode()).digest()),
            "code_challenge_method": "S256",
        }
        with httpx.Client(base_url=self.issuer, timeout=10) as browser:
            r = browser.get("/auth", params=query)
            for _ in range(10):
                location = r.headers.get("location", "")
                if location.startswith(redirect_uri):
                    break
                if r.is_redirect:
                    r = browser.get(urllib.parse.urljoin(self.issuer, location))
                elif 'value="login"' in r.text:
                    r = browser.post(str(r.url), data={"prompt": "login", "login": login, "password": "any"})
                elif 'value="consent"' in r.text:
                    r = browser.post(str(r.url), data={"prompt": "consent"})
                else:
                    raise AssertionError(f"unexpected page from the provider: {r.status_code} {r.text[:300]}")
            answer = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(location).query))
            assert answer.get("state") == state, answer
            tokens = browser.post("/token", data={
                "grant_type": "authorization_code", "code": answer["code"], "redirect_uri": redirect_uri,
                "client_id": CLIENT_ID, "code_verifier": verifier,
            })
            assert tokens.status_code == 200, tokens.text
            return tokens.json()

    def confirm_device(self, link, login):
        """Does what a person does with the device flow's link in a browser: confirms the code,
        signs in on the provider's login page, consents."""
        hidden = re.compile(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"')
        with httpx.Client(timeout=10, follow_redirects=True) as browser:
            r = browser.get(link)
            for _ in range(10):
                if re.search(r"Sign-in Success|signed in|success", r.text, re.I) and "<form" not in r.text:
                    return
                action = re.search(r'<form[^>]*action="([^"]+)"', r.text)
                assert action, f"no form on the provider's page: {r.text[:400]}"
                fields = dict(hidden.findall(r.text))
                if 'name="login"' in r.text:
                    fields.update(login=login, password="any")
                elif 'name="confirm"' in r.text:
                    fields["confirm"] = "yes"
                r = browser.post(urllib.parse.urljoin(str(r.url), html.unescape(action.group(1))), data=fields)
            raise AssertionError(f"the device confirmation did not finish: {r.text[:400]}")

    def mint(self, claims, key=None, headers=None):
        """A token signed with one of the provider's own keys (default: its first)."""
        key = key or self.keys[0]
        signing = (RSAAlgorithm if key["kty"] == "RSA" else ECAlgorithm).from_jwk(json.dumps(key))
        now = int(time.time())
        body = {"iss": self.issuer, "aud": CLIENT_ID, "sub": "minted", "iat": now, "exp": now + 300, **claims}
        return jwt.encode(body, signing, algorithm=key["alg"], headers={"kid": key["kid"], **(headers or {})})
