//! Intake at the edges: line ends of every kind, quotes left open, oversized records,
//! refused characters and the cap on kept errors.

use super::*;

fn errors_of(csv: &[u8]) -> (Vec<String>, u64) {
    match validate(csv) {
        Err(IntakeError::Rows { errors, total }) => {
            (errors.iter().map(|e| e.to_string()).collect(), total)
        }
        other => panic!("expected row errors, got {other:?}"),
    }
}

fn first_error(csv: &str) -> String {
    errors_of(csv.as_bytes()).0.remove(0)
}

#[test]
fn a_bad_row_is_named_on_the_line_an_editor_shows_whatever_the_line_ends() {
    // The bad row is on line 5, after a memo spanning lines 3 and 4.
    let lf = "payee_id,amount,memo\na,1,\nb,2,\"two\nlines\"\nc,1.001,\n";
    for (what, csv) in [
        ("LF", lf.to_string()),
        ("CRLF", lf.replace('\n', "\r\n")),
        ("CR", lf.replace('\n', "\r")),
        (
            "BOM and CRLF",
            format!("\u{feff}{}", lf.replace('\n', "\r\n")),
        ),
        (
            "CRLF, a lone LF in the memo",
            lf.replace('\n', "\r\n").replace("two\r\n", "two\n"),
        ),
    ] {
        assert_eq!(
            first_error(&csv),
            "line 5, column amount: \"1.001\" has more than 2 decimal places",
            "{what}"
        );
    }
    let blank_lines = "payee_id,amount\r\n\r\n\r\na,1.001\r\n";
    assert!(first_error(blank_lines).starts_with("line 4, column amount"));
}

#[test]
fn a_row_with_the_wrong_number_of_fields_is_named_on_its_own_line() {
    let csv = "payee_id,amount,memo\r\na,1,\r\nb,2\r\n";
    assert_eq!(
        first_error(csv),
        "line 3: has 2 fields, but the header has 3"
    );
}

#[test]
fn invalid_utf8_names_its_line_and_column() {
    let (errors, _) = errors_of(b"payee_id,amount,memo\r\na,1,\r\nb,2,\xff\r\n");
    assert_eq!(errors, ["line 3, column memo: is not valid UTF-8 text"]);
}

#[test]
fn a_character_split_across_two_fields_is_invalid_in_the_first() {
    // "\xc3\xa9" is "é" whole; cut by a comma, neither half is text.
    let (errors, _) = errors_of(b"payee_id,memo,amount\na\xc3,\xa9b,1\n");
    assert_eq!(errors, ["line 2, column payee_id: is not valid UTF-8 text"]);
    let ok = "payee_id,memo,amount\n\u{e9}t\u{e9},caf\u{e9},1\n";
    assert_eq!(validate(ok.as_bytes()).unwrap().rows, 1);
}

#[test]
fn fields_are_trimmed_of_unicode_white_space_and_headers_too() {
    let csv = " payee_id ,\tamount\u{3000}\n\u{a0}a\u{2003}, 1.50 \n";
    let s = validate(csv.as_bytes()).unwrap();
    assert_eq!((s.rows, s.total_cents), (1, 150));
    let mut reader = RowReader::new(csv.as_bytes()).unwrap();
    let row = reader.next_row().unwrap().unwrap();
    assert_eq!(row.payee_id, "a");
}

#[test]
fn a_quote_left_open_names_the_line_of_its_record_and_of_the_quote() {
    let csv = "payee_id,amount,memo\ns1,1.00,\"oops\ns2,200.00,fine\ns3,300.00,fine\n";
    let (errors, total) = errors_of(csv.as_bytes());
    assert_eq!(total, 1, "{errors:?}");
    assert!(
        errors[0].starts_with("line 2, column memo: the quote opened is never closed"),
        "{errors:?}"
    );
    let later = "payee_id,memo,amount\ns1,\"two\nlines\",\"1.00\ns2,x,1\n";
    assert!(
        first_error(later).starts_with("line 2, column amount: the quote opened on line 3 is"),
        "{}",
        first_error(later)
    );
    let header = validate("payee_id,amount,\"memo\na,1,x\n".as_bytes()).unwrap_err();
    assert!(
        header
            .to_string()
            .contains("line 1, column 3: the quote opened is never closed"),
        "{header}"
    );
}

#[test]
fn quotes_that_close_are_read_as_rfc_4180_says() {
    let csv = "payee_id,amount,memo\na,1,\"x, \"\"y\"\"\r\nz\"\nb,2,5\" screen\n";
    assert_eq!(validate(csv.as_bytes()).unwrap().rows, 2);
}

#[test]
fn a_record_over_the_size_cap_is_refused_and_nothing_after_it_is_read() {
    let mut csv = b"payee_id,amount,memo\na,1,x\n".to_vec();
    csv.extend(std::iter::repeat_n(0u8, 1 << 20));
    let (errors, total) = errors_of(&csv);
    assert_eq!(errors, ["line 3: record longer than 65536 bytes"]);
    assert_eq!(total, 1);
    let header = validate(&[b'x'; 100_000][..]).unwrap_err();
    assert_eq!(
        header.to_string(),
        "bad header: line 1: record longer than 65536 bytes"
    );
}

#[test]
fn refused_characters_are_named_with_line_column_and_position() {
    let csv = "payee_id,amount,memo\na\u{1b}[2J,1,ok\nb,1,\"multi\nline\ttabbed\"\nc,1,\u{202e}gpj.exe\nd,1,x\0\n";
    let (errors, _) = errors_of(csv.as_bytes());
    assert_eq!(
        errors,
        [
            "line 2, column payee_id: contains a control character U+001B at character 2",
            "line 5, column memo: contains a bidirectional control character U+202E at character 1",
            "line 6, column memo: contains a control character U+0000 at character 2",
        ]
    );
    let newline_in_payee = first_error("payee_id,amount\n\"a\nb\",1\n");
    assert!(
        newline_in_payee
            .starts_with("line 2, column payee_id: contains a control character U+000A"),
        "{newline_in_payee}"
    );
}

#[test]
fn only_the_first_thousand_errors_are_kept_but_all_are_counted() {
    let mut csv = String::from("payee_id,amount\n");
    for i in 0..2500 {
        csv.push_str(&format!("p{i},0\n"));
    }
    let e = validate(csv.as_bytes()).unwrap_err();
    let IntakeError::Rows { errors, total } = &e else {
        panic!("{e}")
    };
    assert_eq!((errors.len(), *total), (KEPT_ERRORS, 2500));
    let msg = e.to_string();
    assert!(msg.starts_with("2500 bad row(s)"), "{msg}");
    assert!(msg.ends_with("... and 2450 more"), "{msg}");
}

#[test]
fn echoed_values_are_cut_to_80_characters() {
    let long = "9".repeat(5000);
    let e = first_error(&format!("payee_id,amount\na,{long}.001\n"));
    assert_eq!(
        e,
        format!(
            "line 2, column amount: \"{}\u{2026}\" has more than 2 decimal places",
            &long[..80]
        )
    );
    let header = validate(format!("payee_id,amount,{long}\n").as_bytes()).unwrap_err();
    assert!(header.to_string().len() < 300, "{header}");
}
