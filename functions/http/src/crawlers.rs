//! Which user agents get the og page instead of the execution page. The list lives in
//! `infra/edge/crawlers.json`, shared with the CloudFront Function, so both route alike.

use std::sync::OnceLock;

/// The shared list: lowercase substrings of crawler user agents.
const LIST: &str = include_str!("../../../infra/edge/crawlers.json");

fn patterns() -> &'static [String] {
    static PATTERNS: OnceLock<Vec<String>> = OnceLock::new();
    // The file is checked by the unit test below, so parsing cannot fail in a built binary.
    PATTERNS.get_or_init(|| serde_json::from_str(LIST).unwrap_or_default())
}

/// Whether `user_agent` is a link-preview crawler or search bot.
pub fn is_crawler(user_agent: &str) -> bool {
    let ua = user_agent.to_ascii_lowercase();
    patterns().iter().any(|p| ua.contains(p.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_parses_and_is_lowercase() {
        let list: Vec<String> = serde_json::from_str(LIST).unwrap();
        assert!(list.len() > 10);
        assert!(list
            .iter()
            .all(|p| !p.is_empty() && *p == p.to_ascii_lowercase()));
    }

    #[test]
    fn crawlers_are_told_from_people() {
        assert!(is_crawler(
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"
        ));
        assert!(is_crawler(
            "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)"
        ));
        assert!(is_crawler(
            "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"
        ));
        assert!(is_crawler("Twitterbot/1.0"));
        assert!(!is_crawler(
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
        ));
        assert!(!is_crawler(""));
    }
}
