//! The og page: complete HTML with OpenGraph and Twitter tags for crawlers, rendered by askama,
//! which HTML-escapes every field (spell text is data, never markup).

use askama::Template;

use spellcast_core::catalog::Spell;
use spellcast_core::Config;

#[derive(Template)]
#[template(path = "og.html")]
struct OgPage<'a> {
    site_name: &'a str,
    title: &'a str,
    description: &'a str,
    url: &'a str,
    image: &'a str,
    image_width: u32,
    image_height: u32,
    image_alt: &'a str,
}

#[derive(Template)]
#[template(path = "not_found.html")]
struct NotFoundPage<'a> {
    site_name: &'a str,
    slug: &'a str,
}

/// The canonical URL of a spell's page on the site at `origin` (`https://host`).
pub fn canonical_url(origin: &str, spell: &Spell) -> String {
    format!("{origin}/spells/{}", spell.slug)
}

/// The absolute URL of a spell's share image on the site at `origin`.
pub fn image_url(origin: &str, spell: &Spell) -> String {
    let image = &spell.def.og.image;
    if image.starts_with('/') {
        format!("{origin}{image}")
    } else {
        image.clone()
    }
}

/// The og page of a spell on the site at `origin`.
pub fn render(config: &Config, origin: &str, spell: &Spell) -> String {
    let url = canonical_url(origin, spell);
    let image = image_url(origin, spell);
    let page = OgPage {
        site_name: &config.site_name,
        title: &spell.def.title,
        description: &spell.def.summary,
        url: &url,
        image: &image,
        image_width: spell.def.og.image_width,
        image_height: spell.def.og.image_height,
        image_alt: &spell.def.og.image_alt,
    };
    page.render().unwrap_or_default()
}

/// The page for a spell that does not exist.
pub fn render_not_found(config: &Config, slug: &str) -> String {
    let page = NotFoundPage {
        site_name: &config.site_name,
        slug,
    };
    page.render().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use spellcast_core::catalog::SpellDef;

    #[test]
    fn markup_in_spell_text_is_escaped() {
        let def: SpellDef = serde_json::from_value(json!({
            "slug": "evil", "version": 1, "title": "<script>alert(1)</script>",
            "summary": "\"><img src=x onerror=alert(2)>", "description": "d",
            "inputs": {"type": "object"},
            "steps": [{"id": "a", "title": "A", "tool": "fail"}],
            "og": {"image": "/x.png", "imageWidth": 1200, "imageHeight": 630, "imageAlt": "'alt'"}
        }))
        .unwrap();
        let spell = Spell::check(def).unwrap();
        let html = render(
            &Config::new("https://s.example"),
            "https://s.example",
            &spell,
        );
        assert!(!html.contains("<script>"));
        assert!(!html.contains("<img src=x"));
        assert!(
            html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{html}"
        );
        assert!(
            html.contains("&#34;&#62;&#60;img"),
            "quotes cannot end the attribute: {html}"
        );
        assert!(html.contains(r#"<link rel="canonical" href="https://s.example/spells/evil">"#));
        assert!(html.contains(r#"content="https://s.example/x.png""#));
    }
}
