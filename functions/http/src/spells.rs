//! Public spell endpoints: `meta` (JSON) and the og page (HTML for crawlers), both cacheable.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use serde_json::json;

use super::{not_modified, respond, slug, Body, Handled, Problem, Response};
use crate::memo::{Key, Rendered};
use crate::Api;

/// Metadata changes at most with each price recomputation (15 min): shared caches keep it 5 min.
const META_CACHE: &str = "public, max-age=60, s-maxage=300, stale-while-revalidate=600";
/// The og page changes only with the catalog: edges keep it long and serve stale on errors.
const OG_CACHE: &str =
    "public, max-age=300, s-maxage=900, stale-while-revalidate=86400, stale-if-error=86400";

/// A cacheable answer: 304 when the client has it, the body otherwise (none for HEAD).
pub(crate) fn cacheable(
    req: &http::request::Parts,
    content_type: &'static str,
    cache: &'static str,
    rendered: Rendered,
) -> Response {
    let etag = std::str::from_utf8(&rendered.etag).unwrap_or_default();
    let mut response = if not_modified(req, etag) {
        super::response(StatusCode::NOT_MODIFIED, Body::Full(Bytes::new()))
    } else if req.method == Method::HEAD {
        let mut r = respond(StatusCode::OK, content_type, Bytes::new());
        r.headers_mut().insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(rendered.body.len()),
        );
        r
    } else {
        respond(StatusCode::OK, content_type, rendered.body)
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(tag) = HeaderValue::from_maybe_shared(rendered.etag.clone()) {
        headers.insert(header::ETAG, tag);
    }
    response
}

/// `GET /api/v1/spells/{slug}/meta`.
pub async fn meta(app: &Arc<Api>, req: &http::request::Parts, raw_slug: &str) -> Handled {
    let slug = slug(raw_slug)?;
    let spell = app
        .catalog()
        .get(&slug)
        .ok_or_else(|| Problem::spell_not_found(raw_slug))?;
    let price = app.pricing().price(&spell).await?;
    let origin = super::public_origin(app, req);
    // Everything the document shows: the spell (fixed for the process), its price and when that
    // was computed, and the origin of its links.
    let key = Key {
        answer: "meta",
        slug: slug.clone(),
        origin: origin.clone(),
        price: Some((price.pts, price.updated_at)),
        share: None,
    };
    let rendered = app.memo.get_or_render(key, || {
        let def = &spell.def;
        let body = json!({
        "slug": def.slug,
        "version": def.version,
        "title": def.title,
        "summary": def.summary,
        "description": def.description,
        "inputs": def.inputs,
        "steps": def.steps.iter().map(|s| json!({"id": s.id, "title": s.title, "tool": s.tool})).collect::<Vec<_>>(),
        "avgCostPtsCached": price.pts,
        "statsUpdatedAt": price.updated_at,
        "assets": [{"asset": spellcast_domain::ledger::PTS, "ptsPerUnit": "1"}],
        "og": {
            "title": def.title,
            "description": def.summary,
            "image": crate::og::image_url(&origin, &spell),
            "url": crate::og::canonical_url(&origin, &spell),
        },
        });
        Ok::<_, Problem>(Rendered::new(body.to_string()))
    })?;
    Ok(cacheable(req, "application/json", META_CACHE, rendered))
}

/// `GET /api/v1/spells`: every spell of the catalog with its price, cacheable like meta (its
/// ETag changes with any price).
pub async fn catalog(app: &Arc<Api>, req: &http::request::Parts) -> Handled {
    let origin = super::public_origin(app, req);
    let mut spells = Vec::new();
    for spell in app.catalog().iter() {
        let price = app.pricing().price(spell).await?;
        let def = &spell.def;
        spells.push(json!({
            "slug": def.slug,
            "version": def.version,
            "title": def.title,
            "summary": def.summary,
            "avgCostPtsCached": price.pts,
            "og": {"image": crate::og::image_url(&origin, spell)},
        }));
    }
    let rendered = Rendered::new(json!({ "spells": spells }).to_string());
    Ok(cacheable(req, "application/json", META_CACHE, rendered))
}

/// `GET|HEAD /spells/{slug}/og`: a 404 is an HTML page too, since crawlers show what they get.
pub fn og(app: &Arc<Api>, req: &http::request::Parts, raw_slug: &str) -> Handled {
    let spell = super::Slug::parse(raw_slug).and_then(|s| app.catalog().get(&s));
    Ok(match spell {
        Some(spell) => {
            let origin = super::public_origin(app, req);
            let key = Key {
                answer: "og",
                slug: spell.slug.clone(),
                origin: origin.clone(),
                price: None,
                share: None,
            };
            let rendered = app.memo.get_or_render(key, || {
                Ok::<_, Problem>(Rendered::new(crate::og::render(
                    &app.site_name,
                    &origin,
                    &spell,
                )))
            })?;
            cacheable(req, "text/html; charset=utf-8", OG_CACHE, rendered)
        }
        None => {
            let mut r = respond(
                StatusCode::NOT_FOUND,
                "text/html; charset=utf-8",
                crate::og::render_not_found(&app.site_name, raw_slug),
            );
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=60"),
            );
            r
        }
    })
}

/// `GET|HEAD /spells/{slug}/og.png`: the card drawn for a spell that has no picture of its own
/// (its title and summary), once per process, cacheable like the og page.
#[cfg(feature = "cards")]
pub async fn card(app: &Arc<Api>, req: &http::request::Parts, raw_slug: &str) -> Handled {
    let spell = super::Slug::parse(raw_slug)
        .and_then(|s| app.catalog().get(&s))
        .ok_or_else(|| Problem::spell_not_found(raw_slug))?;
    let key = Key {
        answer: "spell-card",
        slug: spell.slug.clone(),
        origin: String::new(),
        price: None,
        share: None,
    };
    super::cards::card_answer(app, req, key, OG_CACHE, || async {
        Ok(super::cards::CardText {
            title: spell.def.title.clone(),
            excerpt: Some(spell.def.summary.clone()),
            image_png: None,
            footer: app.site_name.clone(),
        })
    })
    .await
}
