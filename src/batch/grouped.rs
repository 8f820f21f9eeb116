//! Rendering a list of bad rows for a person: rows failing for the same reason are one line
//! with a count and their first few line numbers, so 50 rows with one problem read as one
//! problem (`50 rows, column payee_id: payee has no known Dots user ... (lines 2, 3, 4, 5, 6, …)`)
//! and not as a 50-line wall.
//!
//! Two rows share a reason when their column is the same and their reasons are equal once the
//! quoted values they name (`"seller-001"`, `"1.234"`) are left out. A reason seen once is
//! shown as it is.

use super::RowError;

/// Line numbers shown per group.
const LINES_SHOWN: usize = 5;
/// Groups shown in all (the rest are counted).
const GROUPS_SHOWN: usize = 50;

/// The reason without its quoted values: `payee "x" has no known Dots user` → `payee has no
/// known Dots user`.
fn reason_kind(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut rest = reason;
    while let Some(open) = rest.find('"') {
        let Some(close) = rest[open + 1..].find('"') else {
            break;
        };
        out.push_str(rest[..open].trim_end());
        rest = &rest[open + 1 + close + 1..];
        if !out.is_empty() && !rest.starts_with([' ', ':', ',', ';', ')']) && !rest.is_empty() {
            out.push(' ');
        }
    }
    out.push_str(rest);
    out.trim().to_string()
}

/// One line per reason, each indented by two spaces, in order of first appearance.
pub fn render_grouped(errors: &[RowError]) -> String {
    let mut groups: Vec<(String, String, Vec<&RowError>)> = Vec::new();
    for e in errors {
        let kind = reason_kind(&e.reason);
        match groups
            .iter_mut()
            .find(|(col, k, _)| *col == e.column && *k == kind)
        {
            Some((_, _, rows)) => rows.push(e),
            None => groups.push((e.column.clone(), kind, vec![e])),
        }
    }
    let mut out: Vec<String> = groups
        .iter()
        .take(GROUPS_SHOWN)
        .map(|(column, kind, rows)| match rows.as_slice() {
            [one] => format!("  {one}"),
            many => {
                let mut lines: Vec<String> = many
                    .iter()
                    .take(LINES_SHOWN)
                    .map(|r| r.line.to_string())
                    .collect();
                if many.len() > LINES_SHOWN {
                    lines.push("…".into());
                }
                format!(
                    "  {} rows, column {column}: {kind} (lines {})",
                    many.len(),
                    lines.join(", ")
                )
            }
        })
        .collect();
    if groups.len() > GROUPS_SHOWN {
        let rest: usize = groups[GROUPS_SHOWN..].iter().map(|g| g.2.len()).sum();
        out.push(format!("  ... and {rest} more row(s)"));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: u64, column: &str, reason: &str) -> RowError {
        RowError {
            line,
            column: column.into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn quoted_values_are_left_out_of_a_reason_kind() {
        assert_eq!(
            reason_kind(r#"payee "seller-001" has no known Dots user: give x"#),
            "payee has no known Dots user: give x"
        );
        assert_eq!(
            reason_kind(r#""1.234" has more than 2 decimal places"#),
            "has more than 2 decimal places"
        );
        assert_eq!(reason_kind("must not be empty"), "must not be empty");
    }

    #[test]
    fn rows_with_one_reason_are_one_line_with_a_count_and_their_first_lines() {
        let mut errors: Vec<RowError> = (2..=51)
            .map(|l| {
                err(
                    l,
                    "payee_id",
                    &format!("payee \"s{l}\" has no known Dots user"),
                )
            })
            .collect();
        errors.push(err(60, "amount", "\"x\" is not an amount"));
        let text = render_grouped(&errors);
        assert_eq!(
            text,
            "  50 rows, column payee_id: payee has no known Dots user (lines 2, 3, 4, 5, 6, …)\n  line 60, column amount: \"x\" is not an amount"
        );
    }
}
