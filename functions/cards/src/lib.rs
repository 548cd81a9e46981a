//! Share cards (SPEC §3.14): the 1200×630 PNG a chat app shows for a link — a spell's, or a
//! shared run's — drawn from an SVG by resvg with its one font embedded (DejaVu Sans: no system
//! font is assumed, on Lambda or anywhere). Text is data: escaped into the SVG, control
//! characters dropped, wrapped by measuring each glyph, clipped to a few lines with an ellipsis;
//! right-to-left lines are set from the right. An image output is drawn beside the text when
//! there is one: a PNG, decoded here within a size limit (anything else is left out), so resvg
//! needs none of its raster decoders.

use std::sync::{Arc, OnceLock};

use resvg::{tiny_skia, usvg};

/// The card's size: what OpenGraph and X ask for.
pub const WIDTH: u32 = 1200;
/// The card's height.
pub const HEIGHT: u32 = 630;

const FONT: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");
const FAMILY: &str = "DejaVu Sans";
const MARGIN: f32 = 80.0;
const IMAGE_SIZE: f32 = 430.0;
const IMAGE_TOP: f32 = 100.0;

/// What a card shows.
#[derive(Debug, Clone, Default)]
pub struct Card<'a> {
    /// The big text: a spell's title.
    pub title: &'a str,
    /// Smaller text under it: a run's text output, or the spell's summary.
    pub excerpt: Option<&'a str>,
    /// A PNG drawn beside the text: a run's first image output.
    pub image_png: Option<&'a [u8]>,
    /// The line at the bottom: the site's name.
    pub footer: &'a str,
}

/// Why a card could not be drawn (never the text's fault: it is escaped and clipped).
#[derive(Debug)]
pub struct CardError(pub String);

impl std::fmt::Display for CardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "card: {}", self.0)
    }
}

impl std::error::Error for CardError {}

/// The embedded font, parsed once: for drawing, and for measuring text to wrap it.
struct Fonts {
    db: Arc<usvg::fontdb::Database>,
    face: ttf_parser::Face<'static>,
}

fn fonts() -> &'static Fonts {
    static FONTS: OnceLock<Fonts> = OnceLock::new();
    FONTS.get_or_init(|| {
        let mut db = usvg::fontdb::Database::new();
        db.load_font_data(FONT.to_vec());
        db.set_sans_serif_family(FAMILY);
        // Flat colours, not a gradient: a flat card compresses to a fraction of the bytes.
        // The font is part of the binary and parses (the tests draw with it).
        let face = ttf_parser::Face::parse(FONT, 0).unwrap_or_else(|_| unreachable_font());
        Fonts {
            db: Arc::new(db),
            face,
        }
    })
}

#[cold]
fn unreachable_font() -> ttf_parser::Face<'static> {
    panic!("the embedded font does not parse")
}

/// Draws `card` as a PNG.
pub fn render(card: &Card) -> Result<Vec<u8>, CardError> {
    let svg = svg(card);
    let mut options = usvg::Options {
        fontdb: fonts().db.clone(),
        font_family: FAMILY.into(),
        ..usvg::Options::default()
    };
    options.resources_dir = None;
    let tree = usvg::Tree::from_str(&svg, &options).map_err(|e| CardError(e.to_string()))?;
    let mut pixmap =
        tiny_skia::Pixmap::new(WIDTH, HEIGHT).ok_or_else(|| CardError("no pixmap".into()))?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    if let Some(image) = card.image_png.and_then(decode) {
        // Fitted into its square beside the text, centred.
        let scale = IMAGE_SIZE / image.width().max(image.height()) as f32;
        let x =
            WIDTH as f32 - MARGIN - IMAGE_SIZE + (IMAGE_SIZE - image.width() as f32 * scale) / 2.0;
        let y = IMAGE_TOP + (IMAGE_SIZE - image.height() as f32 * scale) / 2.0;
        pixmap.draw_pixmap(
            0,
            0,
            image.as_ref(),
            &tiny_skia::PixmapPaint {
                quality: tiny_skia::FilterQuality::Nearest,
                ..Default::default()
            },
            tiny_skia::Transform::from_row(scale, 0.0, 0.0, scale, x, y),
            None,
        );
    }
    encode(&pixmap)
}

/// Pictures larger than this on a side are left out (a card shows them at 430 px): decoding one
/// costs its side squared times 4 bytes, twice (16 MiB each at this size, not 64 at 4096).
const MAX_IMAGE_SIDE: u32 = 2048;

/// Characters of a title or an excerpt looked at, at most: far more than five lines hold, and
/// the bound on the wrapping's work whatever the text (zero-width characters never fill a line).
const MAX_TEXT_CHARS: usize = 1000;

/// The first [`MAX_TEXT_CHARS`] characters of `text`.
fn capped(text: &str) -> &str {
    match text.char_indices().nth(MAX_TEXT_CHARS) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// A PNG as premultiplied RGBA pixels, if it is one of a sane size.
fn decode(png_bytes: &[u8]) -> Option<tiny_skia::Pixmap> {
    let limits = png::Limits {
        bytes: (MAX_IMAGE_SIDE * MAX_IMAGE_SIDE * 4) as usize,
    };
    let mut decoder = png::Decoder::new_with_limits(std::io::Cursor::new(png_bytes), limits);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().ok()?;
    let (w, h) = reader.info().size();
    if w == 0 || h == 0 || w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE {
        return None;
    }
    let mut buf = vec![0; reader.output_buffer_size()?];
    let info = reader.next_frame(&mut buf).ok()?;
    let pixels = &buf[..info.buffer_size()];
    let rgba: Vec<u8> = match info.color_type {
        png::ColorType::Rgba => pixels.to_vec(),
        png::ColorType::Rgb => pixels
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect(),
        png::ColorType::GrayscaleAlpha => pixels
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0], p[1]])
            .collect(),
        png::ColorType::Grayscale => pixels.iter().flat_map(|g| [*g, *g, *g, 255]).collect(),
        png::ColorType::Indexed => return None, // expanded by the transformation above
    };
    let premultiplied: Vec<u8> = rgba
        .chunks_exact(4)
        .flat_map(|p| {
            let a = u16::from(p[3]);
            let m = |c: u8| ((u16::from(c) * a + 127) / 255) as u8;
            [m(p[0]), m(p[1]), m(p[2]), p[3]]
        })
        .collect();
    tiny_skia::Pixmap::from_vec(premultiplied, tiny_skia::IntSize::from_wh(w, h)?)
}

/// The pixels as an RGB PNG (a fifth of tiny-skia's RGBA default, measured): the card is opaque (its alpha is all 255, so the
/// premultiplied colours are the colours), and a chat app fetches it over mobile links.
fn encode(pixmap: &tiny_skia::Pixmap) -> Result<Vec<u8>, CardError> {
    let rgb: Vec<u8> = pixmap
        .data()
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Balanced);
    let mut writer = encoder
        .write_header()
        .map_err(|e| CardError(e.to_string()))?;
    writer
        .write_image_data(&rgb)
        .map_err(|e| CardError(e.to_string()))?;
    writer.finish().map_err(|e| CardError(e.to_string()))?;
    Ok(png)
}

/// The card as SVG (every text escaped).
fn svg(card: &Card) -> String {
    let image = card
        .image_png
        .filter(|png| png.starts_with(b"\x89PNG\r\n\x1a\n"));
    let column = if image.is_some() {
        WIDTH as f32 - 2.0 * MARGIN - IMAGE_SIZE - 50.0
    } else {
        WIDTH as f32 - 2.0 * MARGIN
    };
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}"><rect width="{WIDTH}" height="{HEIGHT}" fill="#1d1532"/><rect width="{WIDTH}" height="12" fill="#b9a6ff"/>"##
    );
    let mut y = 150.0;
    for line in wrap(card.title, 60.0, column, 3) {
        out.push_str(&text_line(&line, MARGIN, column, y, 60.0, "#f5f0ff"));
        y += 74.0;
    }
    if let Some(excerpt) = card.excerpt.filter(|e| !e.trim().is_empty()) {
        y += 16.0;
        let room = (((HEIGHT as f32 - 130.0) - y) / 42.0).max(0.0) as usize + 1;
        for line in wrap(excerpt, 30.0, column, room.min(5)) {
            out.push_str(&text_line(&line, MARGIN, column, y, 30.0, "#d4cbee"));
            y += 42.0;
        }
    }
    out.push_str(&text_line(
        &clip_to(card.footer, 28.0, column),
        MARGIN,
        column,
        HEIGHT as f32 - 70.0,
        28.0,
        "#b9a6ff",
    ));
    out.push_str("</svg>");
    out
}

/// One line of text at (`x`, `y`) in a column `width` wide; set from the right when the line
/// reads right to left.
fn text_line(line: &str, x: f32, width: f32, y: f32, size: f32, fill: &str) -> String {
    let (x, anchor) = if is_rtl(line) {
        (x + width, "end")
    } else {
        (x, "start")
    };
    format!(
        r#"<text x="{x}" y="{y}" font-family="{FAMILY}" font-size="{size}" fill="{fill}" text-anchor="{anchor}">{}</text>"#,
        escape(line)
    )
}

/// Whether a line's first strong letter reads right to left (Hebrew, Arabic and their kin).
fn is_rtl(line: &str) -> bool {
    line.chars()
        .find(|c| c.is_alphabetic())
        .is_some_and(|c| matches!(c as u32, 0x0590..=0x08FF | 0xFB1D..=0xFDFF | 0xFE70..=0xFEFF))
}

/// Text as XML character data: markup escaped, characters XML cannot hold dropped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() || matches!(c, '\u{FFFE}' | '\u{FFFF}') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// How wide `text` is at `size` pixels.
fn width(text: &str, size: f32) -> f32 {
    let face = &fonts().face;
    let per_unit = size / f32::from(face.units_per_em());
    text.chars()
        .map(|c| {
            face.glyph_index(c)
                .and_then(|g| face.glyph_hor_advance(g))
                .unwrap_or(face.units_per_em() / 2)
        })
        .map(|a| f32::from(a) * per_unit)
        .sum()
}

/// `text` cut to fit `max` wide, with an ellipsis if anything was cut.
fn clip_to(text: &str, size: f32, max: f32) -> String {
    let text = capped(text);
    if width(text, size) <= max {
        return text.to_owned();
    }
    let mut out = String::new();
    for c in text.chars() {
        if width(&format!("{out}{c}…"), size) > max {
            break;
        }
        out.push(c);
    }
    out.truncate(out.trim_end().len());
    out.push('…');
    out
}

/// `text` in lines at most `max` wide, at most `lines` of them (the last ends in an ellipsis if
/// text was left out). Words too wide for a line are broken.
fn wrap(text: &str, size: f32, max: f32, lines: usize) -> Vec<String> {
    let text = capped(text);
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut rest = words.iter().peekable();
    for word in rest.by_ref() {
        let candidate = if current.is_empty() {
            (*word).to_owned()
        } else {
            format!("{current} {word}")
        };
        if width(&candidate, size) <= max {
            current = candidate;
            continue;
        }
        if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        // A word wider than a line: as much of it as fits, the rest on the next.
        let mut piece = String::new();
        for c in word.chars() {
            if !piece.is_empty() && width(&format!("{piece}{c}"), size) > max {
                out.push(std::mem::take(&mut piece));
                if out.len() > lines {
                    break; // the rest would be cut anyway
                }
            }
            piece.push(c);
        }
        current = piece;
        if out.len() >= lines {
            break;
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    let cut = out.len() > lines || (out.len() == lines && rest.peek().is_some());
    out.truncate(lines);
    if cut {
        if let Some(last) = out.last_mut() {
            *last = clip_to(&format!("{last} …"), size, max);
            if !last.ends_with('…') {
                last.push('…');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_size(png: &[u8]) -> (u32, u32) {
        let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
        (w, h)
    }

    #[test]
    fn a_card_is_a_1200_by_630_png_under_300_kb() {
        let png = render(&Card {
            title: "Hello, Sigil",
            excerpt: Some("Hello, Ada! The sigils shine for you."),
            image_png: None,
            footer: "Spellcast",
        })
        .unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert_eq!(png_size(&png), (WIDTH, HEIGHT));
        assert!(png.len() < 300 * 1024, "{} bytes", png.len());
    }

    #[test]
    fn markup_long_and_right_to_left_text_is_drawn_safely() {
        let nasty = "<script>alert(1)</script> & \"quotes\" ' ]]> <!-- \u{0}\u{7}\u{1b}[31m";
        let long = "word ".repeat(500) + &"x".repeat(3000);
        for title in [
            nasty,
            long.as_str(),
            "שלום עולם, זהו לחש ארוך מאוד",
            "سحر طويل جدا جدا",
            "",
            "😀🪄✨",
        ] {
            let svg = svg(&Card {
                title,
                excerpt: Some(title),
                image_png: Some(b"not a png"),
                footer: "Spellcast",
            });
            assert!(!svg.contains("<script"), "escaped");
            let png = render(&Card {
                title,
                excerpt: Some(title),
                image_png: None,
                footer: "Spellcast",
            })
            .unwrap();
            assert_eq!(png_size(&png), (WIDTH, HEIGHT));
        }
        let lines = wrap(&long, 60.0, 1040.0, 3);
        assert_eq!(lines.len(), 3);
        assert!(lines[2].ends_with('…'));
        assert!(
            lines.iter().all(|l| width(l, 60.0) <= 1040.0 + 1.0),
            "{lines:?}"
        );
        assert!(
            text_line("שלום", 80.0, 500.0, 100.0, 30.0, "#fff").contains(r#"text-anchor="end""#)
        );
        assert!(
            text_line("Hello", 80.0, 500.0, 100.0, 30.0, "#fff").contains(r#"text-anchor="start""#)
        );
    }

    /// The colour of the card's pixel at (`x`, `y`).
    fn pixel(png_bytes: &[u8], x: u32, y: u32) -> [u8; 3] {
        let mut reader = png::Decoder::new(std::io::Cursor::new(png_bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut buf).unwrap();
        let at = ((y * WIDTH + x) * 3) as usize;
        [buf[at], buf[at + 1], buf[at + 2]]
    }

    #[test]
    fn short_text_is_kept_whole_and_an_image_is_drawn_beside_it() {
        assert_eq!(wrap("Hello, Sigil", 60.0, 1040.0, 3), vec!["Hello, Sigil"]);
        assert!(wrap("   ", 60.0, 1040.0, 3).is_empty());
        let mut image = Vec::new();
        {
            // A green 2×2 PNG, RGB as the sigil tool writes them.
            let mut encoder = png::Encoder::new(&mut image, 2, 2);
            encoder.set_color(png::ColorType::Rgb);
            let mut writer = encoder.write_header().unwrap();
            writer.write_image_data(&[0, 200, 80].repeat(4)).unwrap();
        }
        let centre = (
            WIDTH - MARGIN as u32 - IMAGE_SIZE as u32 / 2,
            IMAGE_TOP as u32 + IMAGE_SIZE as u32 / 2,
        );
        let with = render(&Card {
            title: "The Slow Scroll",
            excerpt: None,
            image_png: Some(&image),
            footer: "Spellcast",
        })
        .unwrap();
        assert_eq!(png_size(&with), (WIDTH, HEIGHT));
        assert_eq!(
            pixel(&with, centre.0, centre.1),
            [0, 200, 80],
            "the image, beside the text"
        );
        // Not a PNG, or an absurd one: left out, the card still drawn.
        for bad in [&b"not a png"[..], &image[..20]] {
            let without = render(&Card {
                title: "The Slow Scroll",
                excerpt: None,
                image_png: Some(bad),
                footer: "Spellcast",
            })
            .unwrap();
            assert_eq!(
                pixel(&without, centre.0, centre.1),
                [0x1d, 0x15, 0x32],
                "the background"
            );
        }
    }

    #[test]
    fn text_is_capped_before_it_is_wrapped_and_huge_pictures_left_out() {
        // A million zero-width characters never fill a line: only the first thousand are
        // looked at (without the cap this test would take hours: each character re-measures
        // the line so far).
        let endless = format!("{}TAIL", "\u{200b}".repeat(1_000_000));
        let lines = wrap(&endless, 30.0, 700.0, 5);
        assert!(lines.len() <= 5 && lines.iter().all(|l| !l.contains("TAIL")));
        assert!(!clip_to(&endless, 28.0, 700.0).contains("TAIL"));
        let card = render(&Card {
            title: &endless,
            excerpt: Some(&endless),
            image_png: None,
            footer: &endless,
        })
        .unwrap();
        assert_eq!(png_size(&card), (WIDTH, HEIGHT));
        // A picture over the side limit is left out before its pixels are decoded.
        let wide = |w: u32| {
            let mut out = Vec::new();
            let mut encoder = png::Encoder::new(&mut out, w, 1);
            encoder.set_color(png::ColorType::Grayscale);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().unwrap();
            writer.write_image_data(&vec![128; w as usize]).unwrap();
            drop(writer);
            out
        };
        assert!(decode(&wide(MAX_IMAGE_SIDE)).is_some());
        assert!(decode(&wide(MAX_IMAGE_SIDE + 1)).is_none());
    }
}
