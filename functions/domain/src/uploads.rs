//! File inputs (SPEC §7.3): a spell's input property `{"type": "string", "format":
//! "spellcast-upload", "contentMediaType": ..., "maxBytes": N}` takes a file the user uploaded
//! first. Asking for an upload records who may use it and hands back where to PUT the bytes (an
//! S3 presigned PUT, or the local server's own endpoint); the cast then checks the upload
//! against the property — its owner, that its bytes arrived, its size, and its type as sniffed
//! from the bytes — and keeps it with the run. An upload no cast used goes after a day.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{UploadId, UserId};

/// The largest file any input may take (a property's `maxBytes` is at most this).
pub const MAX_UPLOAD_BYTES: u64 = 10 * 1024 * 1024;
/// How long the URL to PUT the bytes to stays good.
pub const PUT_TTL_SECS: i64 = 15 * 60;
/// How long an upload stays usable by a cast unless configured otherwise; one no cast used is
/// deleted then (the store's TTL and the bucket's lifecycle rule on AWS, the sweeper locally).
pub const UNUSED_TTL_SECS: i64 = 24 * 60 * 60;
/// How many leading bytes are read to tell a file's type.
pub const SNIFF_BYTES: usize = 4096;
/// The `format` that marks an input property as a file.
pub const UPLOAD_FORMAT: &str = "spellcast-upload";

/// Where an upload's bytes are PUT, until a cast uses it.
pub fn pending_key(id: &UploadId) -> String {
    format!("uploads/{id}")
}

/// Where a used upload's bytes are kept, as long as its run (outside the prefix that expires).
pub fn kept_key(id: &UploadId) -> String {
    format!("inputs/{id}")
}

/// An upload as the store keeps it: who asked, for what, until when it may be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Upload {
    /// Its id.
    pub upload_id: UploadId,
    /// Who may use it.
    pub user_id: UserId,
    /// The media type the client declared (the cast judges by the bytes, not by this).
    pub mime: String,
    /// The size the client declared: the PUT must send exactly this many bytes.
    pub bytes: u64,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// After this no cast may use it.
    pub expires_at: DateTime<Utc>,
}

/// An upload a run took as one of its inputs, as the run keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunUpload {
    /// The input property it was given for.
    pub input: String,
    /// The upload.
    pub upload_id: UploadId,
    /// Its media type, as sniffed from its bytes.
    pub mime: String,
    /// Its size.
    pub bytes: u64,
}

impl RunUpload {
    /// Where its bytes are kept.
    pub fn key(&self) -> String {
        kept_key(&self.upload_id)
    }
}

/// A file input a spell declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInput {
    /// The input property.
    pub name: String,
    /// The media types it takes: `image/png`, or a whole family as `image/*`.
    pub accept: String,
    /// The largest file it takes.
    pub max_bytes: u64,
}

impl FileInput {
    /// The file inputs of an `inputs` schema, checked (at load): each is a string property with
    /// a `contentMediaType` and a `maxBytes` of 1 to [`MAX_UPLOAD_BYTES`].
    pub fn of_schema(inputs: &Value) -> Result<Vec<FileInput>, String> {
        let Some(properties) = inputs.get("properties").and_then(Value::as_object) else {
            return Ok(Vec::new());
        };
        let mut files = Vec::new();
        for (name, property) in properties {
            if property.get("format").and_then(Value::as_str) != Some(UPLOAD_FORMAT) {
                continue;
            }
            let fail = |why: &str| Err(format!("input `{name}` ({UPLOAD_FORMAT}): {why}"));
            if property.get("type").and_then(Value::as_str) != Some("string") {
                return fail("`type` must be \"string\" (the upload's id)");
            }
            let Some(accept) = property.get("contentMediaType").and_then(Value::as_str) else {
                return fail(
                    "`contentMediaType` (such as \"image/png\" or \"image/*\") is required",
                );
            };
            if !is_media_range(accept) {
                return fail(
                    "`contentMediaType` must be a media type such as \"image/png\" or \"image/*\"",
                );
            }
            let max_bytes = property.get("maxBytes").and_then(Value::as_u64);
            let Some(max_bytes) = max_bytes.filter(|n| (1..=MAX_UPLOAD_BYTES).contains(n)) else {
                return fail(&format!(
                    "`maxBytes` must be a whole number from 1 to {MAX_UPLOAD_BYTES}"
                ));
            };
            files.push(FileInput {
                name: name.clone(),
                accept: accept.to_owned(),
                max_bytes,
            });
        }
        Ok(files)
    }

    /// Whether a file of media type `mime` fits.
    pub fn accepts(&self, mime: &str) -> bool {
        match self.accept.strip_suffix("/*") {
            Some(family) => mime
                .split_once('/')
                .is_some_and(|(kind, _)| kind.eq_ignore_ascii_case(family)),
            None => mime.eq_ignore_ascii_case(&self.accept),
        }
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 127
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
}

/// Whether `mime` is a plain media type (`type/subtype`, RFC 6838 characters, no parameters).
pub fn is_media_type(mime: &str) -> bool {
    mime.split_once('/')
        .is_some_and(|(kind, sub)| is_token(kind) && is_token(sub))
}

/// Whether `range` is a media type or a family of them (`image/*`).
fn is_media_range(range: &str) -> bool {
    match range.strip_suffix("/*") {
        Some(kind) => is_token(kind),
        None => is_media_type(range),
    }
}

/// A file's media type as its leading bytes show it (magic numbers; UTF-8 text is
/// `text/plain`), whatever it was called: what the cast judges a file input by.
pub fn sniff(first: &[u8]) -> String {
    if let Some(kind) = infer::get(first) {
        return kind.mime_type().to_owned();
    }
    // The sample may end inside a character: only the last three bytes may be a cut one.
    let text = match std::str::from_utf8(first) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && first.len() - e.valid_up_to() < 4,
    };
    if text && !first.contains(&0) {
        "text/plain".to_owned()
    } else {
        "application/octet-stream".to_owned()
    }
}

/// Where the client PUTs an upload's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadTicket {
    /// The upload, to give as the input's value.
    pub upload_id: UploadId,
    /// Where to PUT the bytes.
    pub url: String,
    /// Always `PUT`.
    pub method: &'static str,
    /// The headers the PUT must carry (the signature binds them).
    pub headers: BTreeMap<String, String>,
    /// After this the URL is refused.
    pub expires_at: DateTime<Utc>,
    /// The PUT must send exactly this many bytes.
    pub max_bytes: u64,
}

/// A URL a client may PUT bytes to directly, as the blob store signs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPut {
    /// The URL.
    pub url: String,
    /// The headers it was signed with, which the PUT must carry.
    pub headers: BTreeMap<String, String>,
}

/// Claims of the token in a local upload URL: the upload, its owner, type and size, and until
/// when the PUT is taken — what an S3 presigned URL binds, for the local server's endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadClaims {
    /// The upload id.
    pub jti: UploadId,
    /// Its owner.
    pub sub: UserId,
    /// The `Content-Type` the PUT must carry.
    pub mime: String,
    /// The exact number of bytes the PUT must send.
    pub len: u64,
    /// Issued at.
    pub iat: i64,
    /// Expiry.
    pub exp: i64,
    /// Always the application's upload token audience.
    pub aud: String,
    /// The issuer.
    pub iss: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn file_inputs_are_checked_at_load() {
        let ok = json!({"properties": {
            "photo": {"type": "string", "format": "spellcast-upload",
                      "contentMediaType": "image/*", "maxBytes": 1000},
            "name": {"type": "string"}
        }});
        let files = FileInput::of_schema(&ok).unwrap();
        assert_eq!(
            files,
            vec![FileInput {
                name: "photo".into(),
                accept: "image/*".into(),
                max_bytes: 1000
            }]
        );
        for (bad, says) in [
            (
                json!({"type": "integer", "format": "spellcast-upload", "contentMediaType": "image/png", "maxBytes": 1}),
                "`type`",
            ),
            (
                json!({"type": "string", "format": "spellcast-upload", "maxBytes": 1}),
                "`contentMediaType`",
            ),
            (
                json!({"type": "string", "format": "spellcast-upload", "contentMediaType": "png", "maxBytes": 1}),
                "`contentMediaType`",
            ),
            (
                json!({"type": "string", "format": "spellcast-upload", "contentMediaType": "image/png"}),
                "`maxBytes`",
            ),
            (
                json!({"type": "string", "format": "spellcast-upload", "contentMediaType": "image/png", "maxBytes": MAX_UPLOAD_BYTES + 1}),
                "`maxBytes`",
            ),
        ] {
            let err = FileInput::of_schema(&json!({"properties": {"f": bad}})).unwrap_err();
            assert!(err.contains(says) && err.contains("`f`"), "{err}");
        }
    }

    #[test]
    fn media_ranges_match_families_and_exact_types() {
        let input = |accept: &str| FileInput {
            name: "f".into(),
            accept: accept.into(),
            max_bytes: 1,
        };
        assert!(input("image/*").accepts("image/png"));
        assert!(input("image/*").accepts("image/jpeg"));
        assert!(!input("image/*").accepts("text/plain"));
        assert!(input("image/png").accepts("image/png"));
        assert!(!input("image/png").accepts("image/jpeg"));
        assert!(is_media_type("image/svg+xml"));
        assert!(!is_media_type("image/png; charset=x"));
        assert!(!is_media_type("image"));
        assert!(!is_media_type("/png"));
    }

    #[test]
    fn content_is_told_by_its_bytes() {
        let png = [
            0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, b'I', b'H', b'D', b'R',
        ];
        assert_eq!(sniff(&png), "image/png");
        assert_eq!(sniff(&[0xff, 0xd8, 0xff, 0xe0, 0, 0x10]), "image/jpeg");
        assert_eq!(sniff(b"just some words"), "text/plain");
        // A sample cut inside a character is still text.
        assert_eq!(
            sniff("caf\u{e9}".as_bytes().split_last().unwrap().1),
            "text/plain"
        );
        assert_eq!(sniff(&[0, 1, 2, 0xfe, 0xff]), "application/octet-stream");
        // A name or a declared type changes nothing: text called a PNG is text.
        assert_eq!(sniff(b"<?php echo 1; ?>"), "text/plain");
    }
}
