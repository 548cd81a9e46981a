"""File inputs (SPEC §7.3): POST /api/v1/uploads, the PUT of the bytes (the local server's own
target on the embedded store; an S3 presigned PUT on moto's S3 in the DynamoDB pass), and the
cast's checks — owner, completeness, size, content sniffed from the bytes, expiry — each a 422
pointing at the property that changes nothing; a used upload lives with its run, an unused one
goes when it expires."""
import hashlib
import struct
import time
import urllib.parse
import zlib

import pytest

from conftest import ON_DYNAMODB


def png(width=2, height=2, seed=0):
    """A real PNG: signature, IHDR, one IDAT of RGB rows, IEND."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + bytes((seed + x * 40 + y * 80) % 256 for x in range(width * 3)) for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def ask(server, token, mime, size):
    return server.http.post("/api/v1/uploads", json={"mime": mime, "bytes": size},
                            headers={"authorization": f"Bearer {token}"})


def put(server, ticket, data, headers=None):
    assert ticket["method"] == "PUT"
    sent = dict(ticket["headers"], **(headers or {}))
    sent.pop("content-length", None)  # set from the body, as a browser does
    return server.http.put(ticket["url"], content=data, headers=sent)


def upload(server, token, data, mime="image/png"):
    r = ask(server, token, mime, len(data))
    assert r.status_code == 201, r.text
    ticket = r.json()
    done = put(server, ticket, data)
    assert done.status_code in (200, 204), done.text
    return ticket["uploadId"]


def refused(server, user, slug, context, pointer, says):
    """A cast refused as 422 at `pointer`, paying nothing."""
    before = server.balance(user["token"])
    inv = server.invoice(user["token"], slug)
    assert inv.status_code == 201, inv.text
    r = server.cast(user["token"], slug, inv.json()["invoiceId"], context)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "invalid_context", body
    assert [e["pointer"] for e in body["errors"]] == [pointer], body
    assert says in body["errors"][0]["message"], body
    assert server.balance(user["token"]) == before, "a refused cast pays nothing"
    return body


def fetch(server, output, invoice):
    r = server.http.get(output["url"], params={"token": invoice}, follow_redirects=True)
    assert r.status_code == 200, r.text
    return r.content


def test_a_picture_is_uploaded_cast_and_shown_by_reference(server):
    user = server.session()
    picture = png(4, 3, seed=7)
    r = ask(server, user["token"], "image/png", len(picture))
    assert r.status_code == 201, r.text
    ticket = r.json()
    assert ticket["maxBytes"] == len(picture) and ticket["headers"]["content-type"] == "image/png"
    if ON_DYNAMODB:
        # An S3 presigned PUT whose signature binds the size and the type.
        query = urllib.parse.parse_qs(urllib.parse.urlparse(ticket["url"]).query)
        signed = query["X-Amz-SignedHeaders"][0].split(";")
        assert "content-length" in signed and "content-type" in signed, signed
        assert not ticket["url"].startswith(server.url)
    else:
        assert ticket["url"].startswith(f"{server.url}/api/v1/uploads/{ticket['uploadId']}/content?token=")
    assert put(server, ticket, picture).status_code in (200, 204)

    inv, cast = server.quote_and_cast(user["token"], "looking-glass",
                                      {"picture": ticket["uploadId"], "caption": "Seen"})
    run = server.wait_for_status(user["token"], cast["runId"])
    assert run["status"] == "succeeded", run
    shown = next(o for o in run["outputs"] if o.get("title") == "What the glass sees")
    assert shown["kind"] == "image" and shown["mime"] == "image/png"
    assert fetch(server, shown, inv["invoiceId"]) == picture, "the gallery shows the very bytes"
    facts = next(o["value"] for o in run["outputs"] if o["kind"] == "json")
    digest = hashlib.sha256(picture).hexdigest()
    assert facts == {"input": "picture", "mime": "image/png", "bytes": len(picture), "sha256": digest}
    reading = next(o["value"] for o in run["outputs"] if o.get("title") == "The reading")
    assert reading == f"Seen: image/png, {len(picture)} bytes, sealed {digest[:12]}."

    # The same invoice and inputs again: the same run, not a second payment.
    again = server.cast(user["token"], "looking-glass", inv["invoiceId"],
                        {"picture": ticket["uploadId"], "caption": "Seen"})
    assert again.status_code == 200 and again.json()["runId"] == cast["runId"], again.text


def test_the_cast_refuses_every_upload_it_cannot_use(server):
    user, other = server.session(), server.session()
    small = png(2, 2)
    assert len(small) < 300
    # Not an upload id at all.
    refused(server, user, "small-frame", {"png": "not an id"}, "/context/png", "uploadId")
    # Somebody else's upload is as good as none.
    theirs = upload(server, other["token"], small)
    refused(server, user, "small-frame", {"png": theirs}, "/context/png", "no upload")
    # Asked for, never PUT.
    r = ask(server, user["token"], "image/png", len(small))
    refused(server, user, "small-frame", {"png": r.json()["uploadId"]}, "/context/png", "not complete")
    # Text declared as a PNG: judged by its bytes.
    text = upload(server, user["token"], b"<svg onload=alert(1)> not a png at all", mime="image/png")
    refused(server, user, "small-frame", {"png": text}, "/context/png", "content is text/plain")
    # A PNG over the input's maxBytes (bytes after IEND are still a PNG's).
    big = upload(server, user["token"], png(40, 40) + bytes(range(256)) * 2)
    refused(server, user, "small-frame", {"png": big}, "/context/png", "at most 300")
    # One good and one bad input: the bad one is named, nothing is paid.
    good = upload(server, user["token"], small)
    wrong = upload(server, user["token"], small)
    refused(server, user, "small-frame", {"png": good, "notes": wrong}, "/context/notes", "content is image/png")

    # And with the right files, the spell runs; the optional input left out shows nothing.
    inv, cast = server.quote_and_cast(user["token"], "small-frame", {"png": good})
    run = server.wait_for_status(user["token"], cast["runId"])
    assert run["status"] == "succeeded", run
    assert [o["mime"] for o in run["outputs"]] == ["image/png", "application/json"]
    notes = upload(server, user["token"], "caf\u00e9 notes".encode(), mime="text/plain")
    inv, cast = server.quote_and_cast(user["token"], "small-frame", {"png": good, "notes": notes})
    run = server.wait_for_status(user["token"], cast["runId"])
    assert run["status"] == "succeeded", run
    text_out = next(o for o in run["outputs"] if o.get("title") == "notes")
    assert text_out["kind"] == "file" and fetch(server, text_out, inv["invoiceId"]) == "caf\u00e9 notes".encode()
    # Anything but a plain image is a download, of the type its bytes are (on S3 too: the
    # presigned GET forces both), and a PNG is shown.
    text = server.http.get(text_out["url"], params={"token": inv["invoiceId"]}, follow_redirects=True)
    assert text.headers["content-disposition"] == "attachment", text.headers
    assert text.headers["content-type"].startswith("text/plain"), text.headers
    shown = next(o for o in run["outputs"] if o.get("title") == "png")
    image = server.http.get(shown["url"], params={"token": inv["invoiceId"]}, follow_redirects=True)
    assert "content-disposition" not in image.headers and image.headers["content-type"] == "image/png"


def test_asking_for_an_upload_takes_only_sane_requests(server):
    user = server.session()
    auth = {"authorization": f"Bearer {user['token']}"}
    assert server.http.post("/api/v1/uploads", json={"mime": "image/png", "bytes": 10}).status_code == 401
    for body, pointer in [({"mime": "png", "bytes": 10}, "/mime"),
                          ({"mime": "image/png; x=y", "bytes": 10}, "/mime"),
                          ({"mime": "image/png", "bytes": 0}, "/bytes"),
                          ({"mime": "image/png", "bytes": 10 * 1024 * 1024 + 1}, "/bytes"),
                          ({"mime": "image/png", "bytes": 1.5}, "/bytes"),
                          ({"mime": "image/png"}, "/bytes"),
                          ({"bytes": 10}, "/mime")]:
        r = server.http.post("/api/v1/uploads", json=body, headers=auth)
        assert r.status_code == 400, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert [e["pointer"] for e in r.json()["errors"]] == [pointer], (body, r.text)
    # A whole number written with a fraction is a whole number.
    assert server.http.post("/api/v1/uploads", json={"mime": "image/png", "bytes": 10.0}, headers=auth).status_code == 201


@pytest.mark.skipif(ON_DYNAMODB, reason="the local upload target; on AWS the PUT goes to S3, whose "
                                        "signature binds the same (checked in the test above)")
def test_the_local_upload_target_binds_the_type_the_size_and_the_time(server):
    user = server.session()
    data = png()
    ticket = ask(server, user["token"], "image/png", len(data)).json()
    assert put(server, ticket, data, {"content-type": "image/gif"}).json()["code"] == "upload_mismatch"
    assert put(server, ticket, data[:-1]).json()["code"] == "upload_mismatch"
    assert put(server, ticket, data + b"x").status_code == 413
    forged = ticket["url"].split("token=")[0] + "token=" + "x" * 40
    assert put(server, {**ticket, "url": forged}, data).status_code == 401
    other = ask(server, user["token"], "image/png", len(data)).json()
    swapped = ticket["url"].replace(ticket["uploadId"], other["uploadId"])
    assert put(server, {**ticket, "url": swapped}, data).status_code == 401
    # Nothing of that was kept: the cast still finds it incomplete.
    refused(server, user, "small-frame", {"png": ticket["uploadId"]}, "/context/png", "not complete")
    assert put(server, ticket, data).status_code == 204


@pytest.mark.skipif(ON_DYNAMODB, reason="DynamoDB's TTL and the bucket's lifecycle rule delete unused "
                                        "uploads on AWS (moto runs neither); the template test checks the rule")
def test_an_unused_upload_expires_and_goes_and_a_used_one_stays_with_its_run(start, tmp_path):
    data_dir = tmp_path / "data"
    server = start("--data-dir", str(data_dir), "--upload-ttl-secs", "2")
    user = server.session()
    used = upload(server, user["token"], png(3, 3))
    unused = upload(server, user["token"], png(2, 2))
    inv, cast = server.quote_and_cast(user["token"], "small-frame", {"png": used})
    run = server.wait_for_status(user["token"], cast["runId"])
    assert run["status"] == "succeeded", run
    blobs = data_dir / "blobs"
    assert (blobs / "inputs" / used).exists(), "the used upload was copied out of uploads/"
    deadline = time.monotonic() + 10
    while (blobs / "uploads" / unused).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (blobs / "uploads" / unused).exists(), "the unused upload is gone after its time"
    assert not (blobs / "uploads" / used).exists()
    refused(server, user, "small-frame", {"png": unused}, "/context/png", "no upload")
    # The run still shows its picture.
    shown = next(o for o in server.run(user["token"], cast["runId"])["outputs"] if o["kind"] == "image")
    assert fetch(server, shown, inv["invoiceId"]) == png(3, 3)


def test_an_upload_past_its_time_is_refused_as_expired(start):
    server = start("--upload-ttl-secs", "1", "--sweep-interval-ms", "60000")
    user = server.session()
    late = upload(server, user["token"], png())
    time.sleep(1.2)
    body = refused(server, user, "small-frame", {"png": late}, "/context/png", "")
    message = body["errors"][0]["message"]
    # Refused as expired, or, once the sweeper has been, as gone: never used.
    assert "expired" in message or "no upload" in message, message


def test_a_file_is_kept_and_served_as_what_its_bytes_are_not_as_declared(server):
    """A PNG declared as text/html passes an image input (its bytes are a PNG), and is served as
    image/png (on S3: the kept copy's own type, not the declared one) — never as a page."""
    user = server.session()
    picture = png(3, 2, seed=5)
    sneaky = upload(server, user["token"], picture, mime="text/html")
    inv, cast = server.quote_and_cast(user["token"], "looking-glass", {"picture": sneaky})
    run = server.wait_for_status(user["token"], cast["runId"])
    assert run["status"] == "succeeded", run
    shown = next(o for o in run["outputs"] if o["kind"] == "image")
    assert shown["mime"] == "image/png"
    r = server.http.get(shown["url"], params={"token": inv["invoiceId"]}, follow_redirects=True)
    assert r.status_code == 200 and r.content == picture
    assert r.headers["content-type"] == "image/png", r.headers
