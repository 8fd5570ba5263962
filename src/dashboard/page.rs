//! The dashboard page: one self-contained HTML file (its style and script
//! inline), served at `/` by a node's endpoint and by `troupe dashboard`.
//! It reads `v1/dashboard/events` relative to where it was loaded from.

use std::sync::LazyLock;

const HTML: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");

/// The page, ready to serve (`text/html; charset=utf-8`).
pub static PAGE: LazyLock<String> = LazyLock::new(|| HTML.replacen("/*SCRIPT*/", SCRIPT, 1));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_carries_its_script_and_nothing_from_the_network() {
        assert!(PAGE.contains("v1/dashboard/events"));
        assert!(!PAGE.contains("/*SCRIPT*/"));
        for remote in ["http://", "https://", "src=\"//"] {
            assert!(!PAGE.contains(remote), "the page must not load {remote}...");
        }
    }
}
