"""What each Lambda links, from `cargo tree` of its arm64 build: one TLS stack and one crypto
provider (hyper 1 + rustls 0.23 on ring; never the SDK's legacy hyper 0.14 + rustls 0.21 client,
aws-lc, or aws-config's SSO clients), for tokens HS256 and the OpenID provider's RS256 and ES256
only (no EdDSA or P-384 code), the tools' code (minijinja) only in the
function that executes runs, an outbound HTTP client (reqwest) only there and in the one that sends
webhooks, and the card renderer (resvg, png) only in the og function (png also in the runner)."""
import pathlib
import re
import subprocess

import pytest

from test_template import crate_binaries

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = "aarch64-unknown-linux-gnu"

# (crate, version prefix or None for any version, why it must not be linked)
NEVER = [
    ("rustls", "0.21", "the SDK's legacy TLS stack"),
    ("hyper", "0.14", "the SDK's legacy HTTP client"),
    ("aws-sdk-sso", None, "aws-config's SSO credentials (not used on Lambda)"),
    ("aws-sdk-ssooidc", None, "aws-config's SSO credentials (not used on Lambda)"),
    ("aws-lc-sys", None, "a second crypto provider beside ring"),
    ("ed25519-dalek", None, "JWT algorithms other than HS256, RS256 and ES256"),
    ("p384", None, "JWT algorithms other than HS256, RS256 and ES256"),
]
# crate: the only functions that may link it
ONLY_IN = {
    "png": {"runner", "og"}, "minijinja": {"runner"}, "spellcast-tools": {"runner"},
    "reqwest": {"runner", "webhooks"}, "spellcast-deliveries": {"webhooks"},
    "resvg": {"og"}, "spellcast-cards": {"og"},
}


def package_of(crate_dir):
    manifest = (ROOT / "functions" / crate_dir / "Cargo.toml").read_text()
    return re.search(r'^name\s*=\s*"([^"]+)"', manifest, re.M).group(1)


def linked(package):
    """{crate name: {versions}} of the normal dependencies of `package` built for arm64."""
    out = subprocess.run(
        ["cargo", "tree", "-e", "normal", "--target", TARGET, "-p", package, "--prefix", "none", "--locked"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    crates = {}
    for line in out.splitlines():
        m = re.match(r"(\S+) v(\S+)", line)
        if m:
            crates.setdefault(m.group(1), set()).add(m.group(2))
    return crates


@pytest.mark.parametrize("binary,crate_dir", sorted(crate_binaries().items()))
def test_each_lambda_links_one_tls_stack_and_only_what_it_serves(binary, crate_dir):
    crates = linked(package_of(crate_dir))
    assert "lambda_runtime" in crates, "not a Lambda?"
    found = []
    for name, version, why in NEVER:
        for v in crates.get(name, ()):
            if version is None or v.startswith(version + "."):
                found.append(f"{name} {v} ({why})")
    found += [f"{name} (only for {', '.join(sorted(allowed))})" for name, allowed in ONLY_IN.items()
              if name in crates and binary not in allowed]
    assert not found, f"{binary} links " + ", ".join(found)


def test_the_runner_links_the_tools():
    assert "spellcast-tools" in linked("spellcast-runner")
