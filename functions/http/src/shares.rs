//! Shareable runs (SPEC §3.14): the owner shares, looks up and unshares a finished run
//! (`/api/v1/runs/{runId}/share`); anyone reads a shared run (`/api/v1/shares/{shareId}`) and
//! its output files. Public answers are cached briefly, so an unshare is honoured within a
//! minute at the CDN.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::{json, parse_object, session, Body, Handled, Problem};
use crate::Api;
use spellcast_application::viewing::{ViewError, Viewer};
use spellcast_domain::ids::{RunId, ShareId};
use spellcast_domain::run::Run;
use spellcast_domain::sharing::Share;

/// How long a shared run's public answers may be kept: a minute at the CDN (an unshare takes
/// effect within it), not at all in browsers (they ask again, a 304 when nothing changed).
pub const SHARED_CACHE: &str = "public, max-age=0, s-maxage=60";

fn share_json(share: &Share) -> Value {
    json!({
        "shareId": share.share_id,
        "url": share.path(),
        "includeInputs": share.include_inputs,
        "createdAt": share.created_at,
    })
}

/// `GET|POST|DELETE /api/v1/runs/{runId}/share`: the owner's session only.
pub async fn share(
    app: &Arc<Api>,
    req: &http::request::Parts,
    raw_run_id: &str,
    body: &Bytes,
) -> Handled {
    let user = session(app, req).await?.sub;
    let run_id = RunId::parse(raw_run_id).ok_or_else(Problem::run_not_found)?;
    let sharing = app.sharing();
    match req.method {
        Method::POST => {
            let include_inputs = if body.is_empty() {
                false
            } else {
                match parse_object(body)?.get("includeInputs") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => {
                        return Err(Problem::bad_field(
                            "/includeInputs",
                            "must be true or false",
                        ))
                    }
                }
            };
            let share = sharing.share(&user, &run_id, include_inputs).await?;
            Ok(json(StatusCode::OK, &share_json(&share)))
        }
        Method::DELETE => {
            sharing.unshare(&user, &run_id).await?;
            let mut r = http::Response::new(Body::Full(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            Ok(r)
        }
        _ => match sharing.of_run(&user, &run_id).await? {
            Some(share) => Ok(json(StatusCode::OK, &share_json(&share))),
            None => Err(Problem::share_not_found()),
        },
    }
}

/// A shared run as the public sees it: the spell, how it ended and its outputs (files by their
/// public URLs); its inputs only if the owner said so. Never who cast it, or what it cost.
pub fn public_json(app: &Api, share: &Share, run: &Run) -> Value {
    let spell = app.catalog().get(&run.slug);
    let outputs: Vec<Value> = run
        .outputs
        .iter()
        .enumerate()
        .map(|(n, o)| {
            let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
            if o.url.is_some() {
                v["url"] = json!(format!("/api/v1/shares/{}/outputs/{n}", share.share_id));
            }
            v
        })
        .collect();
    let mut body = json!({
        "shareId": share.share_id,
        "slug": run.slug,
        "title": spell.as_ref().map_or(run.slug.as_str(), |s| s.def.title.as_str()),
        "summary": spell.as_ref().map(|s| s.def.summary.clone()),
        "status": run.status,
        "outputs": outputs,
        "finishedAt": run.finished_at,
        "durationMs": run.duration_ms(),
    });
    if share.include_inputs {
        body["inputs"] = run.context.clone();
    }
    body
}

fn cached(mut r: http::Response<Body>) -> http::Response<Body> {
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static(SHARED_CACHE),
    );
    r
}

/// `GET /api/v1/shares/{shareId}`: anyone.
pub async fn shared(app: &Arc<Api>, raw_share_id: &str) -> Handled {
    let id = ShareId::parse(raw_share_id).ok_or_else(Problem::share_not_found)?;
    let (share, run) = app.sharing().shared(&id).await?;
    Ok(cached(json(
        StatusCode::OK,
        &public_json(app, &share, &run),
    )))
}

/// `GET /api/v1/shares/{shareId}/outputs/{n}`: anyone, a shared run's file.
pub async fn shared_output(app: &Arc<Api>, raw_share_id: &str, n: &str) -> Handled {
    let id = ShareId::parse(raw_share_id).ok_or_else(Problem::share_not_found)?;
    let (_, run) = app.sharing().shared(&id).await?;
    let n = n
        .parse::<usize>()
        .map_err(|_| Problem::from(ViewError::NoSuchOutput))?;
    // The owner's view of their own run: the share stands for them.
    let file = app
        .viewing()
        .output(&Viewer::User(run.user_id.clone()), &run.run_id, n)
        .await?;
    super::runs::file_answer(file, SHARED_CACHE)
}

/// What a shared run's card and og page say under the title: its first non-blank text output
/// (or JSON), else the spell's summary.
fn excerpt(app: &Api, run: &Run) -> String {
    let text = run.outputs.iter().find_map(|o| match &o.value {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(Value::String(_)) => None,
        Some(v) if o.url.is_none() => Some(v.to_string()),
        _ => None,
    });
    text.or_else(|| app.catalog().get(&run.slug).map(|s| s.def.summary.clone()))
        .unwrap_or_default()
}

/// `GET|HEAD /r/{shareId}/og`: the shared run's og page, for crawlers (a 404 page once
/// unshared: crawlers show what they get).
pub async fn og(app: &Arc<Api>, req: &http::request::Parts, raw_share_id: &str) -> Handled {
    let found = match ShareId::parse(raw_share_id) {
        Some(id) => match app.sharing().shared(&id).await {
            Ok(found) => Some(found),
            Err(spellcast_application::sharing::ShareError::NotFound) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let spell = found
        .as_ref()
        .and_then(|(_, run)| app.catalog().get(&run.slug).map(|s| (s, run)));
    let Some((spell, run)) = spell else {
        let mut r = super::respond(
            StatusCode::NOT_FOUND,
            "text/html; charset=utf-8",
            crate::og::render_share_not_found(&app.site_name),
        );
        r.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static(SHARED_CACHE),
        );
        return Ok(r);
    };
    let origin = super::public_origin(app, req);
    let share_path = format!("/r/{raw_share_id}");
    let description: String = excerpt(app, run).chars().take(200).collect();
    let page = crate::og::render_share(&app.site_name, &origin, &share_path, &spell, &description);
    let rendered = crate::memo::Rendered::new(page);
    Ok(super::spells::cacheable(
        req,
        "text/html; charset=utf-8",
        SHARED_CACHE,
        rendered,
    ))
}

/// `GET|HEAD /r/{shareId}/og.png`: the shared run's card (the spell's title, its first image
/// output or a text excerpt), drawn once per process and kept while the run stays shared.
#[cfg(feature = "cards")]
pub async fn card(app: &Arc<Api>, req: &http::request::Parts, raw_share_id: &str) -> Handled {
    use crate::memo::Key;

    let id = ShareId::parse(raw_share_id).ok_or_else(Problem::share_not_found)?;
    // Looked up on every request: an unshared run is never answered from the memo.
    let (share, run) = app.sharing().shared(&id).await?;
    let key = Key {
        answer: "share-card",
        slug: run.slug.clone(),
        origin: String::new(),
        price: None,
        share: Some(share.share_id.clone()),
    };
    super::cards::card_answer(app, req, key, SHARED_CACHE, || async {
        // The first image output, when its bytes are beside the run (a large one in the blob
        // store is left out: the card shows the text instead).
        let image_png = app.sharing().first_inline_image(&run).await?;
        Ok(super::cards::CardText {
            title: app
                .catalog()
                .get(&run.slug)
                .map_or(run.slug.to_string(), |s| s.def.title.clone()),
            excerpt: Some(excerpt(app, &run)),
            image_png,
            footer: format!("{} · a shared run", app.site_name),
        })
    })
    .await
}
