//! How long a card takes to draw (issue 13's aim: under 50 ms), and the sample cards themselves:
//! `cargo run --release -p spellcast-cards --example render_time -- [OUT_DIR]`. The first draw
//! includes parsing the font; the median is of the 20 after it.

use std::time::Instant;

use spellcast_cards::{render, Card};

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "test-output".into());
    std::fs::create_dir_all(&out).expect("the output folder");
    // A 256×256 picture, as the sigil tool makes them (RGB, rings of two colours).
    let mut sigil = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut sigil, 256, 256);
        encoder.set_color(png::ColorType::Rgb);
        let mut writer = encoder.write_header().expect("a PNG header");
        let pixels: Vec<u8> = (0..256 * 256)
            .flat_map(|i| {
                let (x, y) = (i % 256 - 128, i / 256 - 128);
                let ring = ((x * x + y * y) as f32).sqrt() as i32 / 16 % 2 == 0;
                if ring {
                    [120, 220, 80]
                } else {
                    [10, 30, 20]
                }
            })
            .collect();
        writer.write_image_data(&pixels).expect("the pixels");
    }
    let cards = [
        ("text", Card { title: "The Slow Scroll", excerpt: Some("1. Owls watch the night.\n2. The night watches back. Dragons hoard the quiet."), image_png: None, footer: "Spellcast · a shared run" }),
        ("image", Card { title: "Hello, Sigil", excerpt: Some("Hello, Ada! The sigils shine for you."), image_png: Some(&sigil), footer: "Spellcast · a shared run" }),
        ("hostile", Card { title: "<script>alert(1)</script> שלום עולם and a title far too long to fit on three lines of a card however it is wrapped", excerpt: Some(&"x".repeat(5000)), image_png: None, footer: "Spellcast" }),
    ];
    for (name, card) in &cards {
        let first = Instant::now();
        let png = render(card).expect("a card");
        let first = first.elapsed();
        let mut times: Vec<f64> = (0..20)
            .map(|_| {
                let t = Instant::now();
                render(card).expect("a card");
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let path = format!("{out}/card-{name}.png");
        std::fs::write(&path, &png).expect("the card written");
        println!(
            "{name}: first {:.1} ms, median {:.1} ms, {} bytes -> {path}",
            first.as_secs_f64() * 1000.0,
            times[times.len() / 2],
            png.len()
        );
    }
}
