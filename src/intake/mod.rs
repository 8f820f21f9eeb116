//! CSV intake: turns an uploaded file into validated payout rows, streaming.
//!
//! Guarantees: a file is either accepted whole or rejected whole with every bad row named
//! (the physical line a text editor shows, column, reason). Nothing here touches the store.
//! Storing a file (`app::submit`) reads it once through [`RowReader`] in constant memory and
//! leaves "one row per payee" to the store's unique index; the full check, [`validate_with`],
//! runs for dry runs and to explain a rejected file, and holds one 16-byte fingerprint per
//! payee to name every repeated one.

use std::collections::HashMap;
use std::io::Read;

use sha2::{Digest, Sha256};

use crate::config::Limits;

mod prefetch;
mod reader;
mod scan;
mod text;

pub use crate::batch::grouped;
pub use crate::batch::{Contact, Row, RowError, clip};
pub use prefetch::Prefetch;
pub use reader::{COLUMNS, RowReader};
pub use scan::MAX_RECORD_BYTES;

/// Why a file was rejected. Always permanent: fix the file and submit again.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad header: {0}")]
    Header(String),
    /// The first [`KEPT_ERRORS`] problems, in file order, and how many there were in all.
    #[error("{total} bad row(s); the whole file was rejected and nothing was stored:\n{}", render(.errors, *.total))]
    Rows { errors: Vec<RowError>, total: u64 },
    #[error("the file has no rows")]
    Empty,
    #[error(
        "the batch totals {total}, above the maximum of {max} per batch; split it or raise limits.max_batch_cents"
    )]
    BatchTooLarge { total: String, max: String },
}

/// How many problems a rejected file's error keeps (the rest are only counted).
pub const KEPT_ERRORS: usize = 1000;

fn render(errors: &[RowError], total: u64) -> String {
    const SHOWN: usize = 50;
    let mut s: Vec<String> = errors
        .iter()
        .take(SHOWN)
        .map(|e| format!("  {e}"))
        .collect();
    let shown = s.len() as u64;
    if total > shown {
        s.push(format!("  ... and {} more", total - shown));
    }
    s.join("\n")
}

/// What pass one learned about an accepted file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub rows: u64,
    pub total_cents: i64,
    pub content_hash: String,
    /// Rows with neither a `dots_user_id` nor contact details: the store must know the payee.
    pub rows_needing_known_payee: u64,
}

/// Pass one with no limits (see [`validate_with`]).
pub fn validate<R: Read>(input: R) -> Result<Summary, IntakeError> {
    validate_with(input, &Limits::default())
}

/// Pass one: validate every row of `input` against `limits` and hash its bytes. Holds no rows
/// in memory.
pub fn validate_with<R: Read>(input: R, limits: &Limits) -> Result<Summary, IntakeError> {
    let mut hashing = HashingReader {
        inner: input,
        hasher: Sha256::new(),
    };
    let mut errors = Vec::new();
    let mut total_errors = 0u64;
    let mut note = |e: RowError| {
        total_errors += 1;
        if errors.len() < KEPT_ERRORS {
            errors.push(e);
        }
    };
    let mut seen: HashMap<u128, u64> = HashMap::new();
    let mut rows = 0u64;
    let mut total: i64 = 0;
    let mut needing_known = 0u64;
    {
        let mut reader = RowReader::new(&mut hashing)?;
        while let Some(res) = reader.next_row() {
            rows += 1;
            // Uniqueness is checked on every row, even one with other errors.
            if let Some(payee) = reader.current_payee() {
                let line = reader.current_line();
                if let Some(first) = seen.insert(fingerprint(payee), line) {
                    note(RowError {
                        line,
                        column: "payee_id".into(),
                        reason: format!("payee {:?} already appears on line {first}", clip(payee)),
                    });
                }
            }
            match res {
                Ok(row) => match item_over_limit(&row, limits) {
                    Some(e) => note(e),
                    None => {
                        total = total.saturating_add(row.amount.get());
                        if row.dots_user_id.is_none() && row.contact.is_none() {
                            needing_known += 1;
                        }
                    }
                },
                Err(e) => e.into_iter().for_each(&mut note),
            }
        }
    }
    if total_errors > 0 {
        return Err(IntakeError::Rows {
            errors,
            total: total_errors,
        });
    }
    // The reader has read to the end: the hash covers the whole file. (After an error it
    // may have stopped early, at a record over the size cap, and the hash is not wanted.)
    if rows == 0 {
        return Err(IntakeError::Empty);
    }
    if let Some(e) = total_over_limit(total, limits) {
        return Err(e);
    }
    Ok(Summary {
        rows,
        total_cents: total,
        content_hash: hex::encode(hashing.hasher.finalize()),
        rows_needing_known_payee: needing_known,
    })
}

/// The row's amount is over `limits`' per-item maximum.
pub fn item_over_limit(row: &Row, limits: &Limits) -> Option<RowError> {
    (limits.max_item_cents > 0 && row.amount.get() > limits.max_item_cents).then(|| RowError {
        line: row.line,
        column: "amount".into(),
        reason: format!(
            "{} is above the maximum of {} per item",
            row.amount,
            crate::money::format_cents(limits.max_item_cents)
        ),
    })
}

/// A batch totalling `total` is over `limits`' per-batch maximum.
pub fn total_over_limit(total: i64, limits: &Limits) -> Option<IntakeError> {
    (limits.max_batch_cents > 0 && total > limits.max_batch_cents).then(|| {
        IntakeError::BatchTooLarge {
            total: crate::money::format_cents(total),
            max: crate::money::format_cents(limits.max_batch_cents),
        }
    })
}

fn fingerprint(payee_id: &str) -> u128 {
    let d = Sha256::digest(payee_id.as_bytes());
    u128::from_le_bytes(d[..16].try_into().expect("16 bytes"))
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod edge_tests;

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        "payee_id,amount,dots_user_id,first_name,last_name,email,country_code,phone_number,memo
s1,12.34,,Ada,Lovelace,ada@example.com,1,5550001,hello
s2,5,6f1c1f0e-8b1e-4a4c-9a51-2b0d2f7d9a10,,,,,,
s3,0.01,,,,,,,
";

    #[test]
    fn a_good_file_validates_with_totals_and_a_hash() {
        let s = validate(GOOD.as_bytes()).unwrap();
        assert_eq!(s.rows, 3);
        assert_eq!(s.total_cents, 1234 + 500 + 1);
        assert_eq!(s.rows_needing_known_payee, 1);
        assert_eq!(s.content_hash.len(), 64);
        let again = validate(GOOD.as_bytes()).unwrap();
        assert_eq!(s.content_hash, again.content_hash);
    }

    #[test]
    fn every_bad_row_is_named_with_line_column_and_reason() {
        let bad = "payee_id,amount,email,first_name,last_name,country_code,phone_number
s1,12.345,,,,,
s2,-3,,,,,
s1,1,,,,,
s4,1,nope,A,B,1,55
";
        let IntakeError::Rows { errors, .. } = validate(bad.as_bytes()).unwrap_err() else {
            panic!("expected row errors")
        };
        let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert!(
            shown
                .iter()
                .any(|e| e.starts_with("line 2, column amount") && e.contains("2 decimal")),
            "{shown:?}"
        );
        assert!(
            shown.iter().any(|e| e.starts_with("line 3, column amount")),
            "{shown:?}"
        );
        assert!(
            shown
                .iter()
                .any(|e| e.starts_with("line 4, column payee_id") && e.contains("line 2")),
            "{shown:?}"
        );
        assert!(
            shown.iter().any(|e| e.starts_with("line 5, column email")),
            "{shown:?}"
        );
    }

    #[test]
    fn unknown_and_missing_columns_are_header_errors() {
        let e = validate("payee,ammount\nx,1\n".as_bytes()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("unknown column \"ammount\""), "{msg}");
        assert!(
            msg.contains("required column \"payee_id\" is missing"),
            "{msg}"
        );
    }

    #[test]
    fn limits_reject_large_items_and_batches() {
        let limits = Limits {
            max_item_cents: 1000,
            max_batch_cents: 1500,
            approval_threshold_cents: 0,
        };
        let e = validate_with("payee_id,amount\na,10.01\nb,1\n".as_bytes(), &limits).unwrap_err();
        assert!(
            e.to_string()
                .contains("line 2, column amount: 10.01 is above the maximum of 10.00 per item"),
            "{e}"
        );
        let e = validate_with("payee_id,amount\na,10\nb,6\n".as_bytes(), &limits).unwrap_err();
        assert!(matches!(e, IntakeError::BatchTooLarge { .. }), "{e}");
        assert!(validate_with("payee_id,amount\na,10\nb,5\n".as_bytes(), &limits).is_ok());
    }

    #[test]
    fn partial_contact_details_are_rejected() {
        let e = validate("payee_id,amount,first_name\nx,1,Ann\n".as_bytes()).unwrap_err();
        assert!(
            e.to_string()
                .contains("column email: is required when any contact"),
            "{e}"
        );
    }
}
