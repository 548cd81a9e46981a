//! The og page: complete HTML with OpenGraph and Twitter tags for crawlers, rendered by askama,
//! which HTML-escapes every field (spell text is data, never markup).

use askama::Template;

use spellcast_domain::catalog::Spell;

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
    cast_url: &'a str,
    spell_title: &'a str,
}

#[derive(Template)]
#[template(path = "not_found.html")]
struct NotFoundPage<'a> {
    site_name: &'a str,
    heading: &'a str,
    message: &'a str,
}

/// A rendered card's size (`spellcast_cards::WIDTH` × `HEIGHT`; the og function draws them).
pub const CARD_WIDTH: u32 = 1200;
/// See [`CARD_WIDTH`].
pub const CARD_HEIGHT: u32 = 630;

/// The canonical URL of a spell's page on the site at `origin` (`https://host`).
pub fn canonical_url(origin: &str, spell: &Spell) -> String {
    format!("{origin}/spells/{}", spell.slug)
}

/// The absolute URL of a spell's share image on the site at `origin`: its own picture, else the
/// card the server draws for it.
pub fn image_url(origin: &str, spell: &Spell) -> String {
    match &spell.def.og {
        Some(og) if og.image.starts_with('/') => format!("{origin}{}", og.image),
        Some(og) => og.image.clone(),
        None => format!("{origin}/spells/{}/og.png", spell.slug),
    }
}

/// The og page of a spell on the site at `origin`.
pub fn render(site_name: &str, origin: &str, spell: &Spell) -> String {
    let url = canonical_url(origin, spell);
    let image = image_url(origin, spell);
    let alt = match &spell.def.og {
        Some(og) => og.image_alt.clone(),
        None => format!("A card with the spell's title, {}", spell.def.title),
    };
    let page = OgPage {
        site_name,
        title: &spell.def.title,
        description: &spell.def.summary,
        url: &url,
        image: &image,
        image_width: spell.def.og.as_ref().map_or(CARD_WIDTH, |o| o.image_width),
        image_height: spell
            .def
            .og
            .as_ref()
            .map_or(CARD_HEIGHT, |o| o.image_height),
        image_alt: &alt,
        cast_url: &url,
        spell_title: &spell.def.title,
    };
    page.render().unwrap_or_default()
}

/// The og page of a shared run (`/r/{shareId}`) on the site at `origin`: the spell's title, a
/// description of the run, and its rendered card as the image.
pub fn render_share(
    site_name: &str,
    origin: &str,
    share_path: &str,
    spell: &Spell,
    description: &str,
) -> String {
    let url = format!("{origin}{share_path}");
    let image = format!("{url}/og.png");
    let title = format!("{} — a run shared on {}", spell.def.title, site_name);
    let alt = format!("A card of a run of {}", spell.def.title);
    let cast_url = canonical_url(origin, spell);
    let page = OgPage {
        site_name,
        title: &title,
        description,
        url: &url,
        image: &image,
        image_width: CARD_WIDTH,
        image_height: CARD_HEIGHT,
        image_alt: &alt,
        cast_url: &cast_url,
        spell_title: &spell.def.title,
    };
    page.render().unwrap_or_default()
}

/// The page for a shared run that does not exist (or no longer: unshared).
pub fn render_share_not_found(site_name: &str) -> String {
    let page = NotFoundPage {
        site_name,
        heading: "Shared run not found",
        message: "This link does not lead to a shared run: it may have been unshared.",
    };
    page.render().unwrap_or_default()
}

/// The page for a spell that does not exist.
pub fn render_not_found(site_name: &str, slug: &str) -> String {
    let message = format!("There is no spell called “{slug}”.");
    let page = NotFoundPage {
        site_name,
        heading: "Spell not found",
        message: &message,
    };
    page.render().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use spellcast_domain::catalog::SpellDef;

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
        let html = render("Spellcast", "https://s.example", &spell);
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
