"""Issue 13, item 4: shareable runs (SPEC §3.14) over real TCP, on both stores: the owner shares a
finished run (idempotently), anyone reads it — the spell, its outputs by public URLs, never who
cast it or what it cost, its inputs only if the owner said so — crawlers get its og page whose
image is the run's card (a 1200×630 PNG drawn by the server), and an unshare makes all of it 404."""
import struct

import extruct
import pytest

from test_bad_input import is_problem

CRAWLER = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"


def auth(token):
    return {"authorization": f"Bearer {token}"}


def png_size(content):
    assert content.startswith(b"\x89PNG\r\n\x1a\n")
    return struct.unpack(">II", content[16:24])


def finished_run(server, token, slug="hello-sigil", context=None):
    inv, cast = server.quote_and_cast(token, slug, context or {"name": "Ada"})
    return server.wait_for_status(token, cast["runId"])


def test_a_shared_run_is_public_until_unshared(server):
    token = server.session(grant=100)["token"]
    run = finished_run(server, token)
    path = f"/api/v1/runs/{run['runId']}/share"
    r = server.http.get(path, headers=auth(token))
    is_problem(r, 404, "share_not_found")
    shared = server.http.post(path, headers=auth(token))
    assert shared.status_code == 200, shared.text
    share = shared.json()
    assert share["url"] == f"/r/{share['shareId']}" and share["includeInputs"] is False
    assert len(share["shareId"]) >= 32, "unguessable"
    again = server.http.post(path, json={}, headers=auth(token)).json()
    assert again["shareId"] == share["shareId"], "sharing again keeps the link"
    assert server.http.get(path, headers=auth(token)).json()["shareId"] == share["shareId"]

    # Anyone (no token) reads it: the spell and the outputs, never its owner or its price.
    public = server.http.get(f"/api/v1/shares/{share['shareId']}")
    assert public.status_code == 200 and "public" in public.headers["cache-control"]
    body = public.json()
    assert (body["slug"], body["title"], body["status"]) == ("hello-sigil", "Hello, Sigil", "succeeded")
    assert "inputs" not in body and "userId" not in body and "costPts" not in body
    text = [o for o in body["outputs"] if o["kind"] == "text"][0]
    assert "Ada" in text["value"]
    image = [o for o in body["outputs"] if o["kind"] == "image"][0]
    assert image["url"].startswith(f"/api/v1/shares/{share['shareId']}/outputs/")
    pub_png = server.http.get(image["url"])
    own = [o for o in run["outputs"] if o["kind"] == "image"][0]
    assert pub_png.status_code == 200 and pub_png.content == server.http.get(own["url"], headers=auth(token)).content

    # The page: people get the public page, crawlers its og page with the run's card.
    page = server.http.get(share["url"], headers={"user-agent": CHROME})
    assert page.status_code == 200 and "/static/js/share." in page.text
    og = server.http.get(share["url"], headers={"user-agent": CRAWLER})
    assert og.status_code == 200 and og.headers["content-type"].startswith("text/html")
    tags = {p[0]: p[1] for p in extruct.extract(og.text, base_url=server.url, syntaxes=["opengraph"])["opengraph"][0]["properties"]}
    assert tags["og:title"].startswith("Hello, Sigil")
    assert "Ada" in tags["og:description"]
    assert tags["og:url"] == f"{server.url}{share['url']}"
    assert tags["og:image"] == f"{server.url}{share['url']}/og.png"
    card = server.http.get(tags["og:image"].replace(server.url, ""))
    assert card.status_code == 200 and card.headers["content-type"] == "image/png"
    assert png_size(card.content) == (int(tags["og:image:width"]), int(tags["og:image:height"])) == (1200, 630)
    assert len(card.content) < 300 * 1024
    assert "public" in card.headers["cache-control"]
    assert server.http.get(tags["og:image"].replace(server.url, ""), headers={"if-none-match": card.headers["etag"]}).status_code == 304

    # Shown with its inputs when the owner says so.
    server.http.post(path, json={"includeInputs": True}, headers=auth(token))
    assert server.http.get(f"/api/v1/shares/{share['shareId']}").json()["inputs"] == {"name": "Ada"}

    # Unshared: every public way in is a 404, at once.
    gone = server.http.delete(path, headers=auth(token))
    assert gone.status_code == 204
    is_problem(server.http.get(f"/api/v1/shares/{share['shareId']}"), 404, "share_not_found")
    is_problem(server.http.get(image["url"]), 404, "share_not_found")
    is_problem(server.http.get(f"{share['url']}/og.png"), 404, "share_not_found")
    og = server.http.get(share["url"], headers={"user-agent": CRAWLER})
    assert og.status_code == 404 and "Shared run not found" in og.text
    assert server.http.delete(path, headers=auth(token)).status_code == 204, "unsharing twice is fine"
    # Shared again: a new link; the old one stays dead.
    renewed = server.http.post(path, headers=auth(token)).json()
    assert renewed["shareId"] != share["shareId"]
    assert server.http.get(f"/api/v1/shares/{share['shareId']}").status_code == 404


def test_only_the_owner_shares_and_only_a_finished_run(start):
    server = start("--no-runner")  # a cast stays queued
    token = server.session(grant=100)["token"]
    _, cast = server.quote_and_cast(token, "hello-sigil", {"name": "Ada"})
    path = f"/api/v1/runs/{cast['runId']}/share"
    is_problem(server.http.post(path, headers=auth(token)), 409, "run_not_finished")
    stranger = server.session(grant=0)["token"]
    for method in ("get", "post", "delete"):
        is_problem(getattr(server.http, method)(path, headers=auth(stranger)), 403, "forbidden")
        is_problem(getattr(server.http, method)(path), 401, "unauthorized")
        is_problem(getattr(server.http, method)("/api/v1/runs/run_nope/share", headers=auth(token)), 404, "run_not_found")
    server.http.post(f"/api/v1/runs/{cast['runId']}/cancel", headers=auth(token))
    is_problem(server.http.post(path, json={"includeInputs": "yes"}, headers=auth(token)), 400, "bad_json")
    is_problem(server.http.post(path, content=b"[1]", headers=auth(token)), 400, "bad_json")
    assert server.http.post(path, headers=auth(token)).status_code == 200, "a canceled run has ended"


@pytest.mark.parametrize("share_id", ["sh_nope", "x" * 129, "a.b", "%00", "sh_" + "0" * 32])
def test_unknown_share_ids_are_404_everywhere(server, share_id):
    is_problem(server.http.get(f"/api/v1/shares/{share_id}"), 404, "share_not_found")
    is_problem(server.http.get(f"/api/v1/shares/{share_id}/outputs/0"), 404, "share_not_found")
    r = server.http.get(f"/r/{share_id}/og.png")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
