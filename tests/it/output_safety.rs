//! What payrun prints for people is safe whatever the store holds: the real binary's `show`,
//! `cancel` and `status` render control characters (ANSI/OSC escapes) and bidi controls
//! (U+202E...) of stored payee ids, errors and sources as visible `\u{..}` escapes, and
//! `payrun report` defuses cells a spreadsheet would run as a formula (a leading `'`).
//! The rows are planted with SQL, as an earlier version or a DB schedule could have stored
//! them (intake refuses such values in new files).

use crate::common::app::*;

on_both_backends!(
    show_and_cancel_print_stored_control_and_bidi_characters_as_visible_escapes,
    the_report_csv_defuses_cells_a_spreadsheet_would_read_as_formulas,
);

const UNSAFE: [char; 9] = [
    '\u{1b}', '\u{7}', '\u{9b}', '\u{202e}', '\u{202a}', '\u{2066}', '\u{200f}', '\u{61c}', '\r',
];

fn assert_no_raw_unsafe(what: &str, text: &str) {
    for c in UNSAFE {
        assert!(!text.contains(c), "{what} prints {c:?} raw:\n{text:?}");
    }
}

async fn show_and_cancel_print_stored_control_and_bidi_characters_as_visible_escapes(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let csv = format!(
        "{HEADER}{}{}",
        new_payee_row("seller-a", "3.00", "5550971"),
        new_payee_row("seller-b", "4.00", "5550972")
    );
    let batch = app.batch(&csv).await;
    let a = app.item(batch, "seller-a").await.id;
    let evil = "admin\u{202e}gpj.exe\u{1b}]8;;http://evil\u{7}\u{1b}[2J\u{9b}31m";
    let error = "boom\u{1b}[31m\u{2066}red\u{2069}\r\u{200f}\u{61c}";
    raw_exec(
        &app,
        &format!("UPDATE items SET payee_id = '{evil}', last_error = '{error}' WHERE id = '{a}'"),
    )
    .await;
    raw_exec(
        &app,
        &format!("UPDATE batches SET source = 'feed\u{202a}.csv\u{1b}[0m' WHERE id = '{batch}'"),
    )
    .await;

    let (code, out, err) = payrun(&app, &["show", &a.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_no_raw_unsafe("show", &format!("{out}{err}"));
    assert!(
        out.contains("admin\\u{202e}gpj.exe\\u{1b}]8;;http://evil\\u{7}\\u{1b}[2J\\u{9b}31m"),
        "show names the payee, escaped: {out}"
    );
    assert!(
        out.contains("boom\\u{1b}[31m\\u{2066}red\\u{2069}\\u{d}\\u{200f}\\u{61c}"),
        "show prints the error, escaped: {out}"
    );

    let (code, out, err) = payrun(&app, &["status", &batch.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_no_raw_unsafe("status", &format!("{out}{err}"));
    assert!(out.contains("feed\\u{202a}.csv\\u{1b}[0m"), "{out}");

    let (code, out, err) = payrun(&app, &["cancel", &batch.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_no_raw_unsafe("cancel", &format!("{out}{err}"));
    assert!(out.contains("canceled: 2 item(s)"), "{out}");
    assert!(out.contains("admin\\u{202e}gpj.exe"), "{out}");
}

async fn the_report_csv_defuses_cells_a_spreadsheet_would_read_as_formulas(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let formulas = [
        "=HYPERLINK(\"http://evil\",\"click\")",
        "+cmd|' /C calc'!A0",
        "-2+3+cmd|' /C calc'!A0",
        "@SUM(1+1)*cmd|' /C calc'!A0",
        "\tlooks-plain",
        "\r=1+1",
    ];
    let mut csv = HEADER.to_string();
    for n in 0..formulas.len() {
        csv.push_str(&new_payee_row(
            &format!("p{n}"),
            "1.00",
            &format!("55509{n:02}"),
        ));
    }
    csv.push_str(&new_payee_row("plain-seller", "2.50", "5550980"));
    let batch = app.batch(&csv).await;
    for (n, f) in formulas.iter().enumerate() {
        let id = app.item(batch, &format!("p{n}")).await.id;
        let f = f.replace('\'', "''");
        raw_exec(
            &app,
            &format!("UPDATE items SET payee_id = '{f}', last_error = '{f}' WHERE id = '{id}'"),
        )
        .await;
    }

    let (code, out, err) = payrun(&app, &["report", &batch.to_string()]);
    assert_eq!(code, 0, "{err}");
    let mut rows = csv::Reader::from_reader(out.as_bytes());
    let header = rows.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (payee, amount, last_error) = (col("payee_id"), col("amount"), col("last_error"));
    let rows: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), formulas.len() + 1);
    for f in formulas {
        let row = rows
            .iter()
            .find(|r| r[payee].ends_with(f))
            .unwrap_or_else(|| panic!("no row for {f:?}: {out}"));
        assert_eq!(&row[payee], format!("'{f}"), "payee_id cell");
        assert_eq!(&row[last_error], format!("'{f}"), "last_error cell");
        assert_eq!(&row[amount], "1.00", "amounts stay numbers");
    }
    let plain = rows.iter().find(|r| &r[payee] == "plain-seller").unwrap();
    assert_eq!(&plain[amount], "2.50");
    assert_eq!(&plain[last_error], "", "an empty cell stays empty");
}
