//! Safe output of stored text: strings that came from a CSV, a marketplace database or Dots
//! (payee ids, names, memos, errors, sources) are shown to people on terminals, in HTML and in
//! spreadsheets, where some characters are instructions rather than text.
//!
//! - [`printable`] renders control characters (Unicode Cc: ANSI/OSC escapes start with one)
//!   and bidirectional controls (which make `evil\u{202e}gnp.exe` display as another name) as
//!   visible `\u{..}` escapes, so a terminal or a browser shows what is stored, not what it
//!   says. [`printable_lines`] does the same but keeps line breaks, for multi-line messages.
//! - [`csv_cell`] neutralises spreadsheet formulas (CSV injection): a cell starting with `=`,
//!   `+`, `-`, `@`, tab or carriage return gets a leading `'`, as OWASP advises.
//!
//! Intake refuses such characters in new rows; these functions are for rows stored before,
//! or arriving by paths intake does not see, so that output is safe whatever the store holds.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Bidirectional formatting characters: embeddings and overrides (U+202A–U+202E), isolates
/// (U+2066–U+2069), the marks U+200E, U+200F and U+061C. Intake refuses them in every field.
pub fn is_bidi_formatting(c: char) -> bool {
    matches!(
        c,
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
    )
}

/// The bidi formatting characters, plus the line and paragraph separators U+2028/U+2029,
/// which break lines where no newline shows: what output never shows as itself.
pub fn is_bidi_control(c: char) -> bool {
    is_bidi_formatting(c) || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Whether `c` must not reach a terminal or a page as itself.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control() || is_bidi_control(c)
}

fn escape(s: &str, keep_newlines: bool) -> Cow<'_, str> {
    let unsafe_here = |c: char| is_unsafe_char(c) && !(keep_newlines && c == '\n');
    if !s.chars().any(unsafe_here) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_here(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `s` with every control and bidi character shown as `\u{..}` (newlines and tabs too).
pub fn printable(s: &str) -> Cow<'_, str> {
    escape(s, false)
}

/// Like [`printable`], but line breaks stay line breaks (for messages of several lines).
pub fn printable_lines(s: &str) -> Cow<'_, str> {
    escape(s, true)
}

/// A CSV cell safe to open in a spreadsheet: a leading `=`, `+`, `-`, `@`, tab or carriage
/// return (which spreadsheets read as a formula) is defused with a `'` in front.
pub fn csv_cell(s: &str) -> Cow<'_, str> {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => Cow::Owned(format!("'{s}")),
        _ => Cow::Borrowed(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_passes_unchanged_and_unborrowed() {
        for s in ["seller-017", "Zoë Ağaoğlu", "李小龙", "a b", ""] {
            assert!(matches!(printable(s), Cow::Borrowed(_)), "{s}");
            assert_eq!(printable(s), s);
        }
    }

    #[test]
    fn control_and_bidi_characters_become_visible_escapes() {
        assert_eq!(
            printable("\u{1b}]8;;http://x\u{7}evil\u{1b}[0m"),
            "\\u{1b}]8;;http://x\\u{7}evil\\u{1b}[0m"
        );
        assert_eq!(printable("abc\u{202e}gpj.exe"), "abc\\u{202e}gpj.exe");
        for c in [
            '\u{0}', '\u{7f}', '\u{9b}', '\u{202a}', '\u{2066}', '\u{2069}', '\u{200e}',
            '\u{200f}', '\u{61c}', '\n', '\r', '\t',
        ] {
            let shown = printable(&c.to_string()).into_owned();
            assert_eq!(shown, format!("\\u{{{:x}}}", c as u32));
        }
        assert_eq!(printable_lines("a\nb\u{1b}"), "a\nb\\u{1b}");
    }

    #[test]
    fn formula_cells_get_a_quote_and_others_do_not() {
        for s in [
            "=HYPERLINK(\"x\")",
            "+cmd|' /C calc'!A0",
            "-2+3",
            "@SUM(A1)",
            "\tx",
            "\rx",
        ] {
            assert_eq!(csv_cell(s), format!("'{s}"));
        }
        for s in ["seller-1", "12.34", "", "a=b"] {
            assert_eq!(csv_cell(s), s);
        }
    }
}
