"""Meta caching, the og page, removed endpoints, the stats webhook, metrics, request ids."""
import hashlib
import hmac
import html.parser
import json
import re
import shutil
import struct
import subprocess
import time

import extruct
import httpx
import pytest

from conftest import ROOT, binary


def test_meta_is_cacheable_with_a_strong_etag(server):
    r = server.http.get("/api/v1/spells/hello-sigil/meta")
    assert r.status_code == 200
    meta = r.json()
    assert meta["slug"] == "hello-sigil" and meta["version"] == 3
    assert meta["inputs"]["type"] == "object" and meta["steps"][0]["id"] == "greet"
    assert meta["assets"] == [{"asset": "PTS", "ptsPerUnit": "1"}]
    assert meta["og"]["url"] == f"{server.url}/spells/hello-sigil"
    assert isinstance(meta["avgCostPtsCached"], int) and meta["avgCostPtsCached"] > 0
    cache = r.headers["cache-control"]
    assert "public" in cache and "stale-while-revalidate" in cache
    smax = int(cache.split("s-maxage=")[1].split(",")[0])
    assert 0 < smax <= 900
    etag = r.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    again = server.http.get("/api/v1/spells/hello-sigil/meta", headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag


def test_the_catalog_lists_every_spell_at_the_price_its_meta_shows(server):
    """SPEC §3.11a: GET /api/v1/spells, public and cacheable like meta."""
    r = server.http.get("/api/v1/spells")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    spells = r.json()["spells"]
    slugs = [s["slug"] for s in spells]
    assert {"hello-sigil", "slow-scroll", "fizzle"} <= set(slugs) and slugs == sorted(slugs)
    for spell in spells:
        meta = server.http.get(f"/api/v1/spells/{spell['slug']}/meta").json()
        assert spell["avgCostPtsCached"] == meta["avgCostPtsCached"]
        assert (spell["title"], spell["summary"], spell["version"]) == (meta["title"], meta["summary"], meta["version"])
        assert spell["og"]["image"] == meta["og"]["image"]
    assert "public" in r.headers["cache-control"]
    again = server.http.get("/api/v1/spells", headers={"if-none-match": r.headers["etag"]})
    assert again.status_code == 304


def test_my_runs_are_listed_newest_first_in_pages(server):
    """SPEC §3.11a: GET /api/v1/me/runs, the signed-in user's runs and only theirs."""
    user = server.session(grant=500)
    auth = {"authorization": f"Bearer {user['token']}"}
    cast = []
    for slug, context in [("hello-sigil", {"name": "A"}), ("fizzle", {}), ("hello-sigil", {"name": "B"})]:
        _, c = server.quote_and_cast(user["token"], slug, context)
        server.wait_for_status(user["token"], c["runId"])
        cast.append((slug, c))
    stranger = server.session(grant=0)
    assert server.http.get("/api/v1/me/runs", headers={"authorization": f"Bearer {stranger['token']}"}).json() == {"runs": []}

    first = server.http.get("/api/v1/me/runs", params={"limit": 2}, headers=auth)
    assert first.status_code == 200 and first.headers["cache-control"] == "no-store"
    page = first.json()
    assert [r["runId"] for r in page["runs"]] == [cast[2][1]["runId"], cast[1][1]["runId"]]
    newest = page["runs"][0]
    assert (newest["slug"], newest["title"], newest["status"]) == ("hello-sigil", "Hello, Sigil", "succeeded")
    assert newest["creditTxId"] == cast[2][1]["creditTxId"] and newest["costPts"] > 0
    assert newest["createdAt"].endswith("Z") and newest["finishedAt"].endswith("Z")
    failed = page["runs"][1]
    assert failed["status"] == "failed" and failed["refundedPts"] == failed["costPts"]
    rest = server.http.get("/api/v1/me/runs", params={"limit": 2, "cursor": page["nextCursor"]}, headers=auth).json()
    assert [r["runId"] for r in rest["runs"]] == [cast[0][1]["runId"]] and "nextCursor" not in rest

    for params in ({"limit": 0}, {"limit": 101}, {"limit": "x"}, {"cursor": "has space"}):
        r = server.http.get("/api/v1/me/runs", params=params, headers=auth)
        assert r.status_code == 400 and r.json()["code"] == "bad_json", params
    assert server.http.get("/api/v1/me/runs").status_code == 401


def test_each_user_has_a_webhook_secret_to_read_and_rotate(server):
    """SPEC §3.13: GET /api/v1/me/webhook-secret makes it once; POST rotates it."""
    user = server.session(grant=0)
    auth = {"authorization": f"Bearer {user['token']}"}
    first = server.http.get("/api/v1/me/webhook-secret", headers=auth)
    assert first.status_code == 200 and first.headers["cache-control"] == "no-store"
    secret = first.json()["secret"]
    assert secret.startswith("whsec_") and len(secret) > 20
    assert server.http.get("/api/v1/me/webhook-secret", headers=auth).json()["secret"] == secret
    rotated = server.http.post("/api/v1/me/webhook-secret", headers=auth).json()["secret"]
    assert rotated.startswith("whsec_") and rotated != secret
    assert server.http.get("/api/v1/me/webhook-secret", headers=auth).json()["secret"] == rotated
    other = server.session(grant=0)
    theirs = server.http.get("/api/v1/me/webhook-secret", headers={"authorization": f"Bearer {other['token']}"})
    assert theirs.json()["secret"] not in (secret, rotated)
    assert server.http.get("/api/v1/me/webhook-secret").status_code == 401
    assert server.http.delete("/api/v1/me/webhook-secret", headers=auth).status_code == 405


def test_request_ids_are_echoed_or_made(server):
    r = server.http.get("/api/v1/spells/hello-sigil/meta", headers={"x-request-id": "trace-123"})
    assert r.headers["x-request-id"] == "trace-123"
    a = server.http.get("/api/v1/spells/nope/meta").headers["x-request-id"]
    b = server.http.get("/api/v1/spells/nope/meta").headers["x-request-id"]
    assert a and b and a != b


def test_files_are_not_held_back_by_delayed_acks(server):
    """Issue 11: accepted sockets set TCP_NODELAY. Without it, a file's body (written after its
    headers) waits for the client's delayed ACK: ~40 ms a file on a kept-alive connection, while a
    JSON answer goes out in one write. A ratio in one connection, not a clock."""
    with httpx.Client(base_url=server.url) as client:
        def elapsed(path, n=20):
            assert client.get(path).status_code == 200
            started = time.perf_counter()
            for _ in range(n):
                assert client.get(path).status_code == 200
            return time.perf_counter() - started

        json_answers = elapsed("/api/v1/spells/hello-sigil/meta")
        for path in ("/spells/hello-sigil", "/static/css/spell.css"):
            ratio = elapsed(path) / json_answers
            assert ratio < 10, f"{path} took {ratio:.1f}x the JSON answers: Nagle?"


def hashed_references(page):
    return re.findall(r'(?:href|src)="(/static/[^"]+\.[0-9a-f]{10}\.[a-z]+)"', page)


def unhashed(content):
    """A served file with the hashed names it refers to (a module's imports) made plain again:
    the file on disk."""
    return re.sub(rb'(/static/[^"]+)\.[0-9a-f]{10}(\.[a-z]+)"', rb'\1\2"', content)


def test_assets_have_hashed_names_kept_forever_and_pages_revalidate(server):
    """Issue 11: the pages name their assets by content hash; those are served from memory,
    precompressed, with a year's immutable caching; the pages themselves revalidate (ETag)."""
    page = server.http.get("/spells/hello-sigil", headers={"accept-encoding": "br"})
    assert page.headers["content-encoding"] == "br" and page.headers["cache-control"] == "no-cache"
    assets = hashed_references(page.text)
    assert {a.split("/")[2] for a in assets} >= {"css", "js"}, assets
    assert any(a.startswith("/static/favicon.") for a in assets), assets
    for url in assets:
        plain = re.sub(r"\.[0-9a-f]{10}(\.[a-z]+)$", r"\1", url)
        expected = (ROOT / plain.lstrip("/")).read_bytes()
        for coding in ("br", "gzip", "identity"):
            r = server.http.get(url, headers={"accept-encoding": coding})
            assert r.status_code == 200, url
            assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert unhashed(r.content) == expected, f"{url} as {coding}"
            assert unhashed(r.content) == r.content or url.endswith(".js"), "only modules name others"
            if url.endswith((".js", ".css")):
                assert r.headers.get("content-encoding", "identity") == coding
                assert "charset=utf-8" in r.headers["content-type"]
        # The hash is the content's: a name that was never served is a 404.
        assert server.http.get(url.replace(url.split(".")[-2], "0123456789")).status_code == 404
    # The plain names still answer (an og:image saved by a chat app), briefly cached.
    plain = server.http.get("/static/favicon.svg")
    assert plain.status_code == 200 and plain.headers["cache-control"] == "public, max-age=300"
    # Pages: a known ETag is a 304 without a body.
    again = server.http.get("/spells/hello-sigil", headers={"if-none-match": page.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    home = server.http.get("/")
    assert home.headers["cache-control"] == "no-cache" and hashed_references(home.text)
    assert server.http.head("/static/js/spell-execute.js").status_code == 200


def test_the_site_written_for_the_bucket_is_the_site_served(server, tmp_path):
    """`--write-site` (scripts/upload-static's source) writes the names the server serves, one
    folder per cache class."""
    subprocess.run([binary(), "--static-dir", str(ROOT / "static"), "--write-site", str(tmp_path)],
                   check=True, capture_output=True, timeout=60)
    page = (tmp_path / "revalidate/static/spell.html").read_text()
    assert page == server.http.get("/spells/hello-sigil").text
    for url in hashed_references(page):
        assert (tmp_path / "immutable" / url.lstrip("/")).read_bytes() == server.http.get(url).content
        if url.endswith(".js") and b"import " in server.http.get(url).content:
            # A module names what it imports by hashed name too: those are in the bucket as well.
            for imported in re.findall(r'from "(/static/[^"]+)"', server.http.get(url).text):
                assert (tmp_path / "immutable" / imported.lstrip("/")).is_file(), imported
    assert unhashed((tmp_path / "short/static/js/spell-execute.js").read_bytes()) == \
        (ROOT / "static/js/spell-execute.js").read_bytes()
    # The upload gives each folder the caching the server gives it.
    script = (ROOT / "scripts/upload-static").read_text()
    for folder, url in (("immutable", hashed_references(page)[0]), ("short", "/static/css/spell.css"),
                        ("revalidate", "/spells/hello-sigil")):
        cache = server.http.get(url).headers["cache-control"]
        assert f'"$out/{folder}/" "s3://$bucket/" --recursive' in script
        assert re.search(rf'"\$out/{folder}/"[^\n]*\n?[^\n]*--cache-control "{re.escape(cache)}"', script), folder


def test_every_response_is_nosniff_and_every_page_has_a_strict_csp(server):
    """SPEC 2: nosniff everywhere; HTML pages with a CSP that allows no inline or eval'd script
    and no framing, and a Referrer-Policy."""
    user = server.session()
    inv, cast = server.quote_and_cast(user["token"], "hello-sigil", {"name": "Headers"})
    run = server.wait_for_status(user["token"], cast["runId"])
    image = [o for o in run["outputs"] if o["kind"] == "image"][0]
    auth = {"authorization": f"Bearer {user['token']}"}
    answers = {
        "page": server.http.get("/spells/hello-sigil"),
        "home": server.http.get("/"),
        "me": server.http.get("/me"),
        "run page": server.http.get(f"/runs/{cast['runId']}"),
        "og": server.http.get("/spells/hello-sigil/og"),
        "asset": server.http.get("/static/js/spell-execute.js"),
        "meta": server.http.get("/api/v1/spells/hello-sigil/meta"),
        "problem": server.http.get("/api/v1/spells/NOPE/meta"),
        "snapshot": server.http.get(f"/api/v1/runs/{cast['runId']}", headers=auth),
        "output": server.http.get(image["url"], headers=auth),
        "stream": server.http.get(f"{cast['streamUrl']}&token={inv['invoiceId']}"),
        "unknown": server.http.get("/api/v1/nothing-here"),
    }
    for name, r in answers.items():
        assert r.headers.get("x-content-type-options") == "nosniff", name
    for name in ("page", "home", "me", "run page", "og"):
        r = answers[name]
        assert r.headers["content-type"].startswith("text/html"), name
        csp = {d.split()[0]: d.split()[1:] for d in r.headers["content-security-policy"].split(";") if d.strip()}
        assert csp["frame-ancestors"] == ["'none'"], name
        assert csp["script-src"] == ["'self'"], name
        assert "'unsafe-inline'" not in sum(csp.values(), []), name
        assert r.headers["referrer-policy"] == "strict-origin-when-cross-origin", name
    # An output file is content, not a page: opened directly it is sandboxed.
    assert answers["output"].status_code == 200
    assert "sandbox" in answers["output"].headers["content-security-policy"]


def test_removed_endpoints_answer_410_with_deprecation_headers(server):
    for path in ("/api/v1/payments/prepare-spell", "/api/v1/payments/confirm"):
        r = server.http.post(path, json={})
        assert r.status_code == 410 and r.json()["code"] == "endpoint_removed"
        assert r.headers["deprecation"] and r.headers["sunset"]
        assert r.headers["link"] == '</api/v1/payments/invoice>; rel="successor-version"'


class Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def og_properties(page):
    data = extruct.extract(page, syntaxes=["opengraph"], uniform=True)
    assert data["opengraph"], "no OpenGraph data found"
    return data["opengraph"][0]


def test_og_page_carries_every_tag(server):
    r = server.http.get("/spells/hello-sigil/og")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    og = og_properties(r.text)
    assert og["og:title"] == "Hello, Sigil"
    assert og["@type"] == "website"  # extruct's uniform form of og:type
    assert og["og:url"] == f"{server.url}/spells/hello-sigil"
    assert og["og:description"].startswith("Greets you by name")
    assert og["og:site_name"] == "Spellcast"
    assert og["og:image"] == f"{server.url}/spells/hello-sigil/og.png"
    assert og["og:image:width"] == "1200" and og["og:image:height"] == "630"
    assert og["og:image:alt"]
    parser = Tags()
    parser.feed(r.text)
    metas = {a.get("name") or a.get("property"): a.get("content") for t, a in parser.tags if t == "meta"}
    assert metas["twitter:card"] == "summary_large_image"
    assert metas["description"] == og["og:description"]
    links = [a for t, a in parser.tags if t == "link" and a.get("rel") == "canonical"]
    assert links == [{"rel": "canonical", "href": f"{server.url}/spells/hello-sigil"}]
    assert "<title>Hello, Sigil · Spellcast</title>" in r.text
    image = server.http.get(og["og:image"].removeprefix(server.url))
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert struct.unpack(">II", image.content[16:24]) == (1200, 630)
    cache = r.headers["cache-control"]
    for directive in ("public", "s-maxage=", "stale-while-revalidate=", "stale-if-error="):
        assert directive in cache
    etag = r.headers["etag"]
    assert server.http.get("/spells/hello-sigil/og", headers={"if-none-match": etag}).status_code == 304
    head = server.http.head("/spells/hello-sigil/og")
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == etag


def test_og_page_renders_markup_in_spell_text_inert(server):
    r = server.http.get("/spells/evil-markup/og")
    assert r.status_code == 200
    parser = Tags()
    parser.feed(r.text)
    names = [t for t, _ in parser.tags]
    assert "script" not in names and "iframe" not in names and "b" not in names
    assert names.count("img") == 1, "only the share image"
    assert all(not k.startswith("on") for _, attrs in parser.tags for k in attrs)
    og = og_properties(r.text)
    assert og["og:title"] == '<script>window.pwned=1</script>"><b>Bold</b>'
    assert og["og:image:alt"] == '"><script>alert(6)</script>'


def sign(body, ts=None, secret="test-webhook-secret"):
    ts = str(ts if ts is not None else int(time.time()))
    sig = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {"x-spellcast-timestamp": ts, "x-spellcast-signature": f"sha256={sig}", "content-type": "application/json"}


def test_stats_webhook_recomputes_prices_and_refreshes_meta(server):
    before = server.http.get("/api/v1/spells/wordy/meta")
    assert before.json()["avgCostPtsCached"] == 1
    user = server.session()
    inv, cast = server.quote_and_cast(user["token"], "wordy", {"n": 400})  # 2000 characters: 4 points
    assert inv["costPts"] == 1, "the quote binds, whatever the run costs"
    server.wait_for_status(user["token"], cast["runId"])
    body = b"{}"
    for bad in (sign(body, secret="wrong"), sign(body, ts=int(time.time()) - 600), {"x-spellcast-signature": "sha256=00"}):
        r = server.http.post("/api/v1/internal/stats/refresh", content=body, headers=bad)
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    assert server.http.get("/api/v1/spells/wordy/meta").json()["avgCostPtsCached"] == 1
    r = server.http.post("/api/v1/internal/stats/refresh", content=body, headers=sign(body))
    assert r.status_code == 200, r.text
    after = server.http.get("/api/v1/spells/wordy/meta")
    assert after.json()["avgCostPtsCached"] == 4
    assert after.json()["statsUpdatedAt"] != before.json()["statsUpdatedAt"]
    assert after.headers["etag"] != before.headers["etag"]
    assert server.invoice(user["token"], "wordy").json()["costPts"] == 4


def test_metrics_pass_promtool(server):
    user = server.session()
    for slug, context in (("hello-sigil", {"name": "M"}), ("fizzle", {})):
        _, cast = server.quote_and_cast(user["token"], slug, context)
        server.wait_for_status(user["token"], cast["runId"])
    r = server.http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'spell_execution_started_total{spell="hello-sigil"} 1' in text
    assert 'spell_execution_finished_total{spell="hello-sigil"} 1' in text
    assert 'spell_execution_error_total{spell="fizzle"} 1' in text
    assert "# TYPE spell_run_duration_seconds histogram" in text
    assert 'spell_run_duration_seconds_bucket{spell="fizzle",outcome="failed",le="+Inf"} 1' in text
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: scripts/test installs it (Debian package prometheus)")
    check = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


CRAWLERS = [
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Twitterbot/1.0",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
]


@pytest.mark.parametrize("agent", CRAWLERS)
def test_crawlers_asking_for_a_spell_get_the_og_page(server, agent):
    r = server.http.get("/spells/slow-scroll", headers={"user-agent": agent})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    og = og_properties(r.text)
    assert og["og:title"] == "The Slow Scroll"
    assert og["og:url"] == f"{server.url}/spells/slow-scroll"
    image = server.http.get(og["og:image"].removeprefix(server.url), headers={"user-agent": agent})
    assert image.status_code == 200
    assert struct.unpack(">II", image.content[16:24]) == (int(og["og:image:width"]), int(og["og:image:height"]))


def test_a_runs_page_is_the_execution_page_and_me_the_account_page(server):
    """The pages find what they show through the API with the user's session: the server serves
    the same page for any run id (no run is read, no one told whether it exists), and a 404 for
    what cannot be a run id."""
    page = server.http.get("/spells/hello-sigil").text
    for path in ("/runs/run_01m8da1d0vzgn5dg0m9e71f6nj", "/runs/run_x/", "/runs/anything-shaped-like-an-id"):
        r = server.http.get(path)
        assert r.status_code == 200 and r.text == page, path
    me = server.http.get("/me")
    assert me.status_code == 200 and re.search(r'src="/static/js/me\.[0-9a-f]{10}\.js"', me.text)
    assert server.http.get("/me/").text == me.text
    for path in ("/runs/", "/runs/a/b", "/runs/bad.id", "/me/x"):
        r = server.http.get(path)
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json", path


def test_people_asking_for_a_spell_get_the_execution_page(server):
    chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
    r = server.http.get("/spells/slow-scroll", headers={"user-agent": chrome})
    assert r.status_code == 200
    assert re.search(r'<script type="module" src="/static/js/spell-execute\.[0-9a-f]{10}\.js">', r.text)
    assert 'property="og:title"' not in r.text


def test_page_weight_is_within_the_budget():
    """The ADR's budget: each page's JS and CSS together at most 8 KB gzipped — what the page
    itself names."""
    import gzip
    from conftest import ROOT
    for page in ("spell.html", "index.html", "me.html", "share.html"):
        html = (ROOT / "static" / page).read_text()
        assets = re.findall(r'(?:src|href)="/static/((?:js|css)/[^"]+)"', html)
        assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets), page
        for script in [a for a in assets if a.endswith(".js")]:  # and the modules they import
            assets += re.findall(r'from "/static/(js/[^"]+)"', (ROOT / "static" / script).read_text())
        total = sum(len(gzip.compress((ROOT / "static" / a).read_bytes(), 9)) for a in set(assets))
        assert total <= 8 * 1024, f"{page}: {total} bytes gzipped"
