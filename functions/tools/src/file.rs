//! `file.show`: puts one of the run's file inputs (SPEC §7.3) in the gallery, by reference — the
//! output is the upload's kept bytes, not a copy, captioned by the step's `title` — with what it is: its type as sniffed, its
//! size and its SHA-256, as JSON later steps can read (`steps.<id>.json.sha256`).

use async_trait::async_trait;
use serde_json::json;
use sha2::{Digest, Sha256};
use spellcast_application::tools::{Progress, Tool, ToolCall, ToolError, ToolResult};
use spellcast_domain::run::{FileBody, NewOutput, OutputKind};
use spellcast_domain::tool_kinds::str_param;

/// The `file.show` tool.
pub struct FileShow;

#[async_trait]
impl Tool for FileShow {
    async fn call(
        &self,
        call: ToolCall<'_>,
        _progress: &dyn Progress,
    ) -> Result<ToolResult, ToolError> {
        let input = str_param(call.params, "input").unwrap_or_default();
        // An optional input left out: nothing to show.
        let Some(upload) = call.uploads.iter().find(|u| u.input == input) else {
            return Ok(ToolResult::done(vec![], 1));
        };
        let key = upload.key();
        let bytes = call
            .blobs
            .get(&key)
            .await
            .map_err(|e| ToolError::transient(format!("the file could not be read: {e}")))?
            .ok_or_else(|| ToolError::Failed("the uploaded file is gone".into()))?;
        let kind = if upload.mime.starts_with("image/") {
            OutputKind::Image
        } else {
            OutputKind::File
        };
        let facts = json!({
            "input": upload.input,
            "mime": upload.mime,
            "bytes": bytes.len(),
            "sha256": hex::encode(Sha256::digest(&bytes)),
        });
        Ok(ToolResult::done(
            vec![
                NewOutput {
                    kind,
                    mime: upload.mime.clone(),
                    // The step's `title`, else the input's name.
                    title: Some(crate::title(&call)?.unwrap_or_else(|| upload.input.clone())),
                    value: None,
                    file: Some(FileBody::Blob(key)),
                },
                NewOutput {
                    kind: OutputKind::Json,
                    mime: "application/json".into(),
                    title: Some(format!("About {}", upload.input)),
                    value: Some(facts),
                    file: None,
                },
            ],
            1,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Files, Recorded};
    use spellcast_application::ports::Blobs;
    use spellcast_domain::uploads::RunUpload;

    #[tokio::test]
    async fn the_file_is_shown_by_reference_with_its_facts() {
        let files = Files::default();
        let upload = RunUpload {
            input: "photo".into(),
            upload_id: "upl_1".into(),
            mime: "image/png".into(),
            bytes: 3,
        };
        files
            .put(&upload.key(), "image/png", vec![1, 2, 3])
            .await
            .unwrap();
        let params = json!({"input": "photo"});
        let uploads = [upload];
        let call = ToolCall {
            params: &params,
            context: &json!({}),
            run_id: &"r".into(),
            uploads: &uploads,
            blobs: &files,
            call_back: None,
        };
        let out = FileShow.call(call, &Recorded::default()).await.unwrap();
        assert_eq!(out.outputs[0].kind, OutputKind::Image);
        assert_eq!(
            out.outputs[0].file,
            Some(FileBody::Blob("inputs/upl_1".into()))
        );
        let facts = out.outputs[1].value.as_ref().unwrap();
        assert_eq!(facts["bytes"], 3);
        assert_eq!(
            facts["sha256"],
            "039058c6f2c0cb492c533b0a4d14ef77cc0f78abccced5287d84a1a2011cfb81"
        );

        // A file that went missing fails the step, plainly.
        let gone = Files::default();
        let call = ToolCall {
            params: &params,
            context: &json!({}),
            run_id: &"r".into(),
            uploads: &uploads,
            blobs: &gone,
            call_back: None,
        };
        let err = FileShow.call(call, &Recorded::default()).await.unwrap_err();
        assert!(err.to_string().contains("gone"), "{err}");
    }
}
