//! Checks on the text of a field: characters refused at intake (control characters, and
//! the invisible bidirectional controls that make a terminal or a spreadsheet show text other
//! than what it is), and values cut short for echoing in a message.

pub use crate::batch::clip;

/// Whether `bytes` may hold a refused character: a quick test on the whole record so that
/// only a record that fails it is checked field by field. Every refused character is a C0
/// control or DEL (one byte), a C1 control (`C2 80`-`C2 9F`), U+061C (`D8 9C`) or a mark,
/// embedding, override or isolate (`E2 80 8E`-`E2 81 A9`).
pub fn may_refuse(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |acc, &b| {
        acc | (b < 0x20) | (b == 0x7f) | (b == 0xc2) | (b == 0xd8) | (b == 0xe2)
    })
}

/// The first refused character of `value` and its position (1-based, in characters). Line
/// ends and tabs are allowed where `multi_line` (the memo, which may span lines when quoted).
pub fn refused(value: &str, multi_line: bool) -> Option<(usize, char)> {
    value
        .chars()
        .enumerate()
        .find(|(_, c)| is_refused(*c, multi_line))
        .map(|(i, c)| (i + 1, c))
}

/// Control characters (Unicode's Cc: C0, DEL, C1) and the bidi formatting characters that
/// output escapes too (`text::is_bidi_formatting`, one list for both).
fn is_refused(c: char, multi_line: bool) -> bool {
    match c {
        '\t' | '\n' | '\r' => !multi_line,
        _ => c.is_control() || crate::text::is_bidi_formatting(c),
    }
}

/// What kind of character `c` (a refused one) is, for a message.
pub fn describe(c: char) -> String {
    let kind = if c.is_control() {
        "a control character"
    } else {
        "a bidirectional control character"
    };
    format!("{kind} U+{:04X}", c as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::SHOWN_CHARS;

    #[test]
    fn clip_keeps_short_values_and_cuts_long_ones_on_a_character_boundary() {
        assert_eq!(clip("abc"), "abc");
        let long = "\u{20ac}".repeat(100);
        let cut = clip(&long);
        assert_eq!(cut.chars().count(), SHOWN_CHARS + 1);
        assert!(cut.ends_with("\u{20ac}\u{2026}"));
        assert_eq!(clip(&"x".repeat(SHOWN_CHARS)).len(), SHOWN_CHARS);
    }

    #[test]
    fn control_and_bidi_characters_are_refused_and_line_ends_only_in_a_memo() {
        for c in [
            '\0', '\u{1b}', '\u{7f}', '\u{85}', '\u{9b}', '\u{202e}', '\u{2067}', '\u{200f}',
            '\u{61c}',
        ] {
            let v = format!("ab{c}");
            assert_eq!(refused(&v, true), Some((3, c)), "{c:?}");
            assert!(may_refuse(v.as_bytes()), "{c:?}");
        }
        assert_eq!(refused("a\nb", false), Some((2, '\n')));
        assert_eq!(refused("a\r\n\tb", true), None);
        for ok in [
            "plain",
            "\u{20ac}1 caf\u{e9} \u{201c}q\u{201d} \u{a3} \u{5d0}\u{5d1}",
        ] {
            assert_eq!(refused(ok, false), None, "{ok}");
        }
        assert!(!may_refuse(b"s1,12.34,ada@example.com"));
        assert_eq!(describe('\u{1b}'), "a control character U+001B");
        assert_eq!(
            describe('\u{202e}'),
            "a bidirectional control character U+202E"
        );
    }
}
