//! The static site in memory: every file under `static/` is read once at start, compressed once
//! (brotli and gzip) and served under a content-hashed name
//! (`/static/js/spell-execute.1a2b3c4d5e.js`) that browsers and CloudFront may keep forever. The
//! HTML pages name the hashed files and revalidate with an ETag, so a new version of an asset is
//! picked up by the next page load without any cache invalidation. `--write-site DIR` writes the
//! same files and names for `scripts/upload-static`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use sha2::{Digest, Sha256};

/// How long a content-hashed file may be kept: its name changes with its content.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Pages are kept but asked about again (a 304 with the ETag when unchanged).
pub const REVALIDATE: &str = "no-cache";
/// A file asked for by its plain name (an `og:image` a chat app saved, an old page): briefly.
pub const SHORT: &str = "public, max-age=300";

/// Bodies at least this much smaller compressed are served compressed.
const WORTH_COMPRESSING: usize = 64;

/// One file as served: its bytes in each encoding and the headers that go with them, all made
/// once at start.
#[derive(Debug)]
pub struct Asset {
    content_type: HeaderValue,
    /// The content's validator (each encoding's ETag adds a suffix to it).
    hash: String,
    identity: Variant,
    gzip: Option<Variant>,
    br: Option<Variant>,
}

/// The file in one content coding.
#[derive(Debug)]
struct Variant {
    coding: Option<&'static str>,
    body: Bytes,
    etag: HeaderValue,
}

impl Variant {
    fn new(hash: &str, coding: Option<&'static str>, body: Bytes) -> Variant {
        let suffix = coding.map(|c| format!("-{c}")).unwrap_or_default();
        // Hex digits and a coding name: always a valid header value.
        let etag = HeaderValue::from_str(&format!("\"{hash}{suffix}\""))
            .unwrap_or(HeaderValue::from_static("\"\""));
        Variant { coding, body, etag }
    }
}

/// Where a URL path leads, and how long it may be cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caching {
    /// A content-hashed name.
    Immutable,
    /// An HTML page.
    Revalidate,
    /// A file under its plain name.
    Short,
}

impl Caching {
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Caching::Immutable => IMMUTABLE,
            Caching::Revalidate => REVALIDATE,
            Caching::Short => SHORT,
        })
    }
}

/// The site: URL path → file.
#[derive(Debug, Default)]
pub struct Site {
    routes: HashMap<String, (usize, Caching)>,
    assets: Vec<Asset>,
    /// Plain path under `/static/` → hashed path, for pages and for `--write-site`.
    hashed: Vec<(String, String)>,
}

/// A path's place among the files to rewrite: pages name everything, stylesheets and scripts
/// may name images, images name nothing.
fn rank(path: &str) -> u8 {
    match Path::new(path).extension().and_then(|e| e.to_str()) {
        Some("html") => 2,
        Some("css" | "js" | "mjs") => 1,
        _ => 0,
    }
}

fn is_text(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || content_type.contains("javascript")
        || content_type.contains("json")
        || content_type.contains("svg")
}

impl Site {
    /// Reads every file under `dir`.
    pub fn load(dir: &Path) -> std::io::Result<Site> {
        let mut files = Vec::new();
        collect(dir, dir, &mut files)?;
        Ok(Site::build(files))
    }

    /// Builds the site from (path relative to the static dir, bytes) pairs.
    pub fn build(mut files: Vec<(String, Vec<u8>)>) -> Site {
        files.sort_by(|a, b| rank(&a.0).cmp(&rank(&b.0)).then(a.0.cmp(&b.0)));
        let mut site = Site::default();
        for (path, bytes) in files {
            let content_type = mime_guess::from_path(&path)
                .first_or_octet_stream()
                .essence_str()
                .to_owned();
            // References to files already hashed take their hashed names.
            let bytes = if rank(&path) > 0 {
                match String::from_utf8(bytes) {
                    Ok(text) => site.rewrite(&text).into_bytes(),
                    Err(e) => e.into_bytes(),
                }
            } else {
                bytes
            };
            let asset = Asset::new(&content_type, bytes);
            let index = site.assets.len();
            if rank(&path) == 2 {
                site.routes
                    .insert(format!("/static/{path}"), (index, Caching::Revalidate));
            } else {
                let hashed = hashed_name(&path, &asset.hash);
                site.routes
                    .insert(format!("/static/{hashed}"), (index, Caching::Immutable));
                site.routes
                    .insert(format!("/static/{path}"), (index, Caching::Short));
                site.hashed.push((path, hashed));
                site.hashed
                    .sort_by_key(|(plain, _)| std::cmp::Reverse(plain.len()));
            }
            site.assets.push(asset);
        }
        site
    }

    /// `text` with every `/static/{plain}` reference to a hashed file replaced by its hashed
    /// name, in one pass (the longest name that ends where the reference ends wins).
    fn rewrite(&self, text: &str) -> String {
        const PREFIX: &str = "/static/";
        let ends_name = |rest: &str| {
            !rest
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
        };
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find(PREFIX) {
            out.push_str(&rest[..at + PREFIX.len()]);
            rest = &rest[at + PREFIX.len()..];
            let found = self
                .hashed
                .iter()
                .find(|(plain, _)| rest.strip_prefix(plain.as_str()).is_some_and(ends_name));
            if let Some((plain, hashed)) = found {
                out.push_str(hashed);
                rest = &rest[plain.len()..];
            }
        }
        out.push_str(rest);
        out
    }

    /// The hashed URL path of a file given by its path under the static dir.
    #[cfg(test)]
    fn hashed_path(&self, plain: &str) -> Option<String> {
        self.hashed
            .iter()
            .find(|(p, _)| p == plain)
            .map(|(_, h)| format!("/static/{h}"))
    }

    /// The answer to a GET or HEAD of `path`, or `None` when the site has no such file.
    pub fn serve(&self, path: &str, request: &HeaderMap) -> Option<Response<Bytes>> {
        let (index, caching) = *self.routes.get(path)?;
        Some(self.assets[index].respond(caching, request))
    }

    /// Writes the site for an upload, one folder per cache class: `immutable/static/…` (hashed
    /// names), `short/static/…` (plain names) and `revalidate/static/…` (pages).
    pub fn write(&self, out: &Path) -> std::io::Result<()> {
        for (path, (index, caching)) in &self.routes {
            let class = match caching {
                Caching::Immutable => "immutable",
                Caching::Revalidate => "revalidate",
                Caching::Short => "short",
            };
            let file: PathBuf = out.join(class).join(path.trim_start_matches('/'));
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(file, &self.assets[*index].identity.body)?;
        }
        Ok(())
    }
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(root, &path, out)?;
        } else {
            let relative = path
                .strip_prefix(root)
                .map_err(std::io::Error::other)?
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push((relative, std::fs::read(&path)?));
        }
    }
    Ok(())
}

/// `js/app.js` with hash `0123456789…` → `js/app.0123456789.js`.
fn hashed_name(path: &str, hash: &str) -> String {
    let short = &hash[..10];
    let (dir, file) = path.rsplit_once('/').map_or(("", path), |(d, f)| (d, f));
    let named = match file.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}.{short}.{ext}"),
        _ => format!("{file}.{short}"),
    };
    if dir.is_empty() {
        named
    } else {
        format!("{dir}/{named}")
    }
}

impl Asset {
    fn new(content_type: &str, bytes: Vec<u8>) -> Asset {
        let hash = hex::encode(&Sha256::digest(&bytes)[..10]);
        let worth = |coding, compressed: Vec<u8>| {
            (compressed.len() + WORTH_COMPRESSING <= bytes.len())
                .then(|| Variant::new(&hash, Some(coding), Bytes::from(compressed)))
        };
        let (gzip, br) = if is_text(content_type) {
            (worth("gzip", gzip(&bytes)), worth("br", brotli(&bytes)))
        } else {
            (None, None)
        };
        let content_type = if content_type.starts_with("text/")
            || content_type.contains("javascript")
            || content_type.ends_with("svg+xml")
        {
            format!("{content_type}; charset=utf-8")
        } else {
            content_type.to_owned()
        };
        Asset {
            content_type: HeaderValue::from_str(&content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
            identity: Variant::new(&hash, None, Bytes::from(bytes)),
            hash,
            gzip,
            br,
        }
    }

    fn respond(&self, caching: Caching, request: &HeaderMap) -> Response<Bytes> {
        let accepted = request
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let variant = match (&self.br, &self.gzip) {
            (Some(br), _) if accepts(accepted, "br") => br,
            (_, Some(gz)) if accepts(accepted, "gzip") => gz,
            _ => &self.identity,
        };
        let fresh = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| matches_etag(v, &self.hash));
        let mut response = Response::new(if fresh {
            Bytes::new()
        } else {
            variant.body.clone()
        });
        if fresh {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
        }
        *response.headers_mut() = HeaderMap::with_capacity(spellcast_http::RESPONSE_HEADERS);
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, self.content_type.clone());
        headers.insert(header::CACHE_CONTROL, caching.header());
        headers.insert(header::ETAG, variant.etag.clone());
        if self.gzip.is_some() || self.br.is_some() {
            headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        if let Some(coding) = variant.coding {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
        }
        response
    }
}

/// Whether an `Accept-Encoding` value accepts `coding` (named with a q-value above zero, or
/// through `*`).
fn accepts(accept_encoding: &str, coding: &str) -> bool {
    let mut star = false;
    for item in accept_encoding.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if name.eq_ignore_ascii_case(coding) {
            return q > 0.0;
        }
        if name == "*" {
            star = q > 0.0;
        }
    }
    star
}

/// Whether an `If-None-Match` value names this content, in any of its encodings.
fn matches_etag(if_none_match: &str, hash: &str) -> bool {
    if_none_match.split(',').any(|tag| {
        let tag = tag.trim();
        let tag = tag.strip_prefix("W/").unwrap_or(tag).trim_matches('"');
        tag == "*" || tag.split('-').next() == Some(hash)
    })
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

fn brotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut writer = brotli::CompressorWriter::new(&mut out, 4096, 11, 22);
        let _ = writer.write_all(bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn site() -> Site {
        let css = b"body{background:url(/static/img/a.png)}".repeat(10);
        Site::build(vec![
            (
                "page.html".into(),
                br#"<link href="/static/css/app.css"><img src="/static/img/aa.png"><img src="/static/img/a.png">"#.to_vec(),
            ),
            ("css/app.css".into(), css),
            ("img/a.png".into(), vec![1, 2, 3]),
            ("img/aa.png".into(), vec![4, 5, 6]),
            ("img/a.png.txt".into(), b"not the png".to_vec()),
        ])
    }

    fn get(site: &Site, path: &str, headers: &[(&'static str, &str)]) -> Response<Bytes> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        site.serve(path, &map).expect("a file")
    }

    #[test]
    fn pages_name_hashed_files_that_are_cached_forever() {
        let site = site();
        let page = get(&site, "/static/page.html", &[]);
        assert_eq!(page.headers()[header::CACHE_CONTROL], REVALIDATE);
        let html = String::from_utf8(page.body().to_vec()).unwrap();
        let css = site.hashed_path("css/app.css").unwrap();
        let a = site.hashed_path("img/a.png").unwrap();
        let aa = site.hashed_path("img/aa.png").unwrap();
        assert_eq!(
            html,
            format!(r#"<link href="{css}"><img src="{aa}"><img src="{a}">"#)
        );
        assert!(css.starts_with("/static/css/app.") && css.ends_with(".css"));
        let asset = get(&site, &css, &[]);
        assert_eq!(asset.headers()[header::CACHE_CONTROL], IMMUTABLE);
        assert_eq!(
            asset.headers()[header::CONTENT_TYPE],
            "text/css; charset=utf-8"
        );
        // The stylesheet's own reference is hashed too.
        assert!(String::from_utf8(asset.body().to_vec())
            .unwrap()
            .contains(&a));
        // The plain name still answers, briefly cached.
        assert_eq!(
            get(&site, "/static/img/a.png", &[]).headers()[header::CACHE_CONTROL],
            SHORT
        );
        assert!(site.serve("/static/nope.js", &HeaderMap::new()).is_none());
    }

    #[test]
    fn a_hash_follows_the_content() {
        let one = Site::build(vec![("a.js".into(), b"1".to_vec())]);
        let two = Site::build(vec![("a.js".into(), b"2".to_vec())]);
        assert_ne!(one.hashed_path("a.js"), two.hashed_path("a.js"));
        assert_eq!(
            one.hashed_path("a.js"),
            Site::build(vec![("a.js".into(), b"1".to_vec())]).hashed_path("a.js")
        );
    }

    #[test]
    fn compressed_bodies_decode_to_the_file() {
        let site = site();
        let css = site.hashed_path("css/app.css").unwrap();
        let plain = get(&site, &css, &[]).into_body();
        let gz = get(&site, &css, &[("accept-encoding", "gzip")]);
        assert_eq!(gz.headers()[header::CONTENT_ENCODING], "gzip");
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz.body()[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, plain);
        let br = get(
            &site,
            &css,
            &[("accept-encoding", "gzip, deflate, br, zstd")],
        );
        assert_eq!(br.headers()[header::CONTENT_ENCODING], "br");
        let mut out = Vec::new();
        brotli::Decompressor::new(&br.body()[..], 4096)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, plain);
        assert!(br.body().len() < plain.len());
        // Refused codings are not used; images are not compressed.
        let refused = get(&site, &css, &[("accept-encoding", "br;q=0, gzip;q=0")]);
        assert!(refused.headers().get(header::CONTENT_ENCODING).is_none());
        let png = get(&site, "/static/img/a.png", &[("accept-encoding", "br")]);
        assert!(png.headers().get(header::CONTENT_ENCODING).is_none());
    }

    #[test]
    fn a_known_etag_gets_not_modified() {
        let site = site();
        let first = get(&site, "/static/page.html", &[("accept-encoding", "br")]);
        let tag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
        let again = get(&site, "/static/page.html", &[("if-none-match", &tag)]);
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(again.body().is_empty());
        let other = get(&site, "/static/page.html", &[("if-none-match", "\"abc\"")]);
        assert_eq!(other.status(), StatusCode::OK);
    }

    #[test]
    fn accept_encoding_is_read_with_its_q_values() {
        assert!(accepts("gzip, br", "br"));
        assert!(accepts("*", "br"));
        assert!(!accepts("*;q=0", "br"));
        assert!(!accepts("br;q=0, *", "br"));
        assert!(!accepts("identity", "gzip"));
        assert!(accepts("GZIP;q=0.5", "gzip"));
        assert!(!accepts("", "gzip"));
    }

    #[test]
    fn hashed_names_keep_the_extension() {
        assert_eq!(
            hashed_name("js/a.js", "0123456789abcdef"),
            "js/a.0123456789.js"
        );
        assert_eq!(
            hashed_name("favicon.svg", "0123456789ab"),
            "favicon.0123456789.svg"
        );
        assert_eq!(hashed_name("LICENSE", "0123456789ab"), "LICENSE.0123456789");
    }
}
