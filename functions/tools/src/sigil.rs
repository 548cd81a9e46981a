//! `image.sigil`: a procedural PNG derived from the inputs (a mirrored glyph on a ring).

use async_trait::async_trait;
use serde_json::Value;
use sha2::{Digest, Sha256};

use spellcast_application::tools::{Progress, Tool, ToolCall, ToolError, ToolResult};
use spellcast_domain::run::{FileBody, NewOutput, OutputKind};
use spellcast_domain::tool_kinds::str_param;

use crate::{check_template, render_template, title};

/// Draws a sigil for `seed` (a template over the inputs) at `size` pixels (64..=1024). Costs 5.
pub struct SigilImage;

#[async_trait]
impl Tool for SigilImage {
    fn check(&self, params: &Value) -> Result<(), String> {
        str_param(params, "seed").map_or(Ok(()), check_template)
    }

    async fn call(
        &self,
        call: ToolCall<'_>,
        progress: &dyn Progress,
    ) -> Result<ToolResult, ToolError> {
        let seed = render_template(
            str_param(call.params, "seed").unwrap_or_default(),
            call.context,
        )?;
        let size = call
            .params
            .get("size")
            .and_then(Value::as_u64)
            .unwrap_or(256) as u32;
        progress.report(0.5, Some("Drawing the sigil".into())).await;
        let png = draw_sigil(&seed, size).map_err(|e| ToolError::Failed(e.to_string()))?;
        progress.report(1.0, None).await;
        Ok(ToolResult::done(
            vec![NewOutput {
                kind: OutputKind::Image,
                mime: "image/png".into(),
                title: Some(title(&call)?.unwrap_or_else(|| format!("Sigil of {seed}"))),
                value: None,
                file: Some(FileBody::Inline(png)),
            }],
            5,
        ))
    }
}

/// Draws the sigil as PNG bytes: same seed, same picture.
pub fn draw_sigil(seed: &str, size: u32) -> Result<Vec<u8>, png::EncodingError> {
    let hash = Sha256::digest(seed.as_bytes());
    let ink = [hash[0] | 0x40, hash[1] | 0x40, hash[2] | 0x40];
    let paper = [hash[3] / 6, hash[4] / 6, hash[5] / 5 + 10];
    let cells = 7u32;
    let cell = size as f64 / (cells as f64 + 2.0);
    let centre = size as f64 / 2.0;
    let mut pixels = Vec::with_capacity((size * size * 3) as usize);
    for y in 0..size {
        for x in 0..size {
            let (dx, dy) = (x as f64 - centre, y as f64 - centre);
            let r = (dx * dx + dy * dy).sqrt() / centre;
            let ring = (0.86..0.93).contains(&r);
            let gx = ((x as f64 / cell) - 1.0).floor();
            let gy = ((y as f64 / cell) - 1.0).floor();
            let in_grid = (0.0..cells as f64).contains(&gx) && (0.0..cells as f64).contains(&gy);
            let glyph = in_grid && r < 0.8 && {
                // Mirror left-right so the glyph is symmetric, like a seal.
                let col = (gx as u32).min(cells - 1 - gx as u32);
                let bit = (gy as u32) * 4 + col;
                hash[(bit / 8) as usize + 6] >> (bit % 8) & 1 == 1
            };
            pixels.extend_from_slice(if ring || glyph { &ink } else { &paper });
        }
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, size, size);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&pixels)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_png_and_another_seed_another() {
        let a = draw_sigil("Ada", 64).unwrap();
        assert_eq!(&a[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(a, draw_sigil("Ada", 64).unwrap());
        assert_ne!(a, draw_sigil("Grace", 64).unwrap());
        let decoder = png::Decoder::new(std::io::Cursor::new(a));
        let reader = decoder.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (64, 64));
    }
}
