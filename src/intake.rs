//! CSV intake: turns an uploaded file into validated payout rows, streaming.
//!
//! Guarantees: a file is either accepted whole or rejected whole with every bad row named
//! (line number as a spreadsheet shows it, column, reason). Nothing here touches the store.
//! Storing a file (`app::submit`) reads it once through [`RowReader`] in constant memory and
//! leaves "one row per payee" to the store's unique index; the full check, [`validate_with`],
//! runs for dry runs and to explain a rejected file, and holds one 16-byte fingerprint per
//! payee to name every repeated one.

use std::collections::HashMap;
use std::io::Read;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::Limits;
use crate::money::Cents;

/// Columns the file may carry. `payee_id` and `amount` are required.
pub const COLUMNS: &[&str] = &[
    "payee_id",
    "amount",
    "dots_user_id",
    "first_name",
    "last_name",
    "email",
    "country_code",
    "phone_number",
    "memo",
];
// Positions in COLUMNS.
const PAYEE: usize = 0;
const AMOUNT: usize = 1;
const USER: usize = 2;
const FIRST: usize = 3;
const LAST: usize = 4;
const EMAIL: usize = 5;
const COUNTRY: usize = 6;
const PHONE: usize = 7;
const MEMO: usize = 8;
/// The contact columns: all or none.
const CONTACT: [usize; 5] = [FIRST, LAST, EMAIL, COUNTRY, PHONE];

/// How we reach a payee who has no Dots user yet (sent to Dots when onboarding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub country_code: String,
    pub phone_number: String,
}

/// One validated row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Line in the file (the header is line 1).
    pub line: u64,
    pub payee_id: String,
    pub amount: Cents,
    pub dots_user_id: Option<Uuid>,
    pub contact: Option<Contact>,
    pub memo: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub column: String,
    pub reason: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.reason
        )
    }
}

/// Why a file was rejected. Always permanent: fix the file and submit again.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad header: {0}")]
    Header(String),
    #[error("{} bad row(s); the whole file was rejected and nothing was stored:\n{}", .errors.len(), render(.errors))]
    Rows { errors: Vec<RowError> },
    #[error("the file has no rows")]
    Empty,
    #[error(
        "the batch totals {total}, above the maximum of {max} per batch; split it or raise limits.max_batch_cents"
    )]
    BatchTooLarge { total: String, max: String },
}

fn render(errors: &[RowError]) -> String {
    const SHOWN: usize = 50;
    let mut s: Vec<String> = errors
        .iter()
        .take(SHOWN)
        .map(|e| format!("  {e}"))
        .collect();
    if errors.len() > SHOWN {
        s.push(format!("  ... and {} more", errors.len() - SHOWN));
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
                    errors.push(RowError {
                        line,
                        column: "payee_id".into(),
                        reason: format!("payee {payee:?} already appears on line {first}"),
                    });
                }
            }
            match res {
                Ok(row)
                    if limits.max_item_cents > 0 && row.amount.get() > limits.max_item_cents =>
                {
                    errors.push(RowError {
                        line: row.line,
                        column: "amount".into(),
                        reason: format!(
                            "{} is above the maximum of {} per item",
                            row.amount,
                            crate::money::format_cents(limits.max_item_cents)
                        ),
                    });
                }
                Ok(row) => {
                    total = total.saturating_add(row.amount.get());
                    if row.dots_user_id.is_none() && row.contact.is_none() {
                        needing_known += 1;
                    }
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
    }
    // Read to the end so the hash covers the whole file even after a CSV error.
    std::io::copy(&mut hashing, &mut std::io::sink())?;
    if !errors.is_empty() {
        return Err(IntakeError::Rows { errors });
    }
    if rows == 0 {
        return Err(IntakeError::Empty);
    }
    if limits.max_batch_cents > 0 && total > limits.max_batch_cents {
        return Err(IntakeError::BatchTooLarge {
            total: crate::money::format_cents(total),
            max: crate::money::format_cents(limits.max_batch_cents),
        });
    }
    Ok(Summary {
        rows,
        total_cents: total,
        content_hash: hex::encode(hashing.hasher.finalize()),
        rows_needing_known_payee: needing_known,
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

/// Pass two (and the parser behind pass one): yields validated rows one at a time.
pub struct RowReader<R: Read> {
    reader: csv::Reader<R>,
    /// Where each of COLUMNS is in the file.
    index: [Option<usize>; COLUMNS.len()],
    record: csv::StringRecord,
}

impl<R: Read> RowReader<R> {
    pub fn new(input: R) -> Result<Self, IntakeError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .trim(csv::Trim::All)
            .buffer_capacity(1 << 16)
            .from_reader(input);
        let headers = reader
            .headers()
            .map_err(|e| IntakeError::Header(e.to_string()))?
            .clone();
        let mut index = [None; COLUMNS.len()];
        let mut problems = Vec::new();
        for (i, h) in headers.iter().enumerate() {
            let name = h.trim_start_matches('\u{feff}');
            match COLUMNS.iter().position(|c| *c == name) {
                Some(c) => {
                    if index[c].replace(i).is_some() {
                        problems.push(format!("column {name:?} appears twice"));
                    }
                }
                None => problems.push(format!(
                    "unknown column {name:?} (expected some of: {})",
                    COLUMNS.join(", ")
                )),
            }
        }
        for required in [PAYEE, AMOUNT] {
            if index[required].is_none() {
                problems.push(format!(
                    "required column {:?} is missing",
                    COLUMNS[required]
                ));
            }
        }
        if !problems.is_empty() {
            return Err(IntakeError::Header(problems.join("; ")));
        }
        Ok(RowReader {
            reader,
            index,
            record: csv::StringRecord::new(),
        })
    }

    /// The next row, or every problem found on it.
    pub fn next_row(&mut self) -> Option<Result<Row, Vec<RowError>>> {
        match self.reader.read_record(&mut self.record) {
            Ok(false) => None,
            Ok(true) => {
                let line = self.record.position().map_or(0, |p| p.line());
                Some(self.parse(line))
            }
            Err(e) => {
                self.record.clear();
                let line = e.position().map_or(0, |p| p.line());
                Some(Err(vec![RowError {
                    line,
                    column: "-".into(),
                    reason: format!("unreadable CSV: {e}"),
                }]))
            }
        }
    }

    /// The `payee_id` of the row last read, if it has one.
    pub fn current_payee(&self) -> Option<&str> {
        self.get(PAYEE)
    }

    /// The line of the row last read.
    pub fn current_line(&self) -> u64 {
        self.record.position().map_or(0, |p| p.line())
    }

    fn get(&self, col: usize) -> Option<&str> {
        let i = self.index[col]?;
        self.record.get(i).filter(|v| !v.is_empty())
    }

    fn parse(&self, line: u64) -> Result<Row, Vec<RowError>> {
        let mut errs = Vec::new();
        let mut err = |column: &str, reason: String| {
            errs.push(RowError {
                line,
                column: column.to_string(),
                reason,
            })
        };
        let payee_id = match self.get(PAYEE) {
            None => {
                err("payee_id", "is required".into());
                String::new()
            }
            Some(p) if p.len() > 200 => {
                err("payee_id", "is longer than 200 characters".into());
                String::new()
            }
            Some(p) => p.to_string(),
        };
        let amount = match self.get(AMOUNT).map(str::parse::<Cents>) {
            None => {
                err("amount", "is required".into());
                None
            }
            Some(Err(e)) => {
                err("amount", e.to_string());
                None
            }
            Some(Ok(c)) => Some(c),
        };
        let dots_user_id = match self.get(USER).map(Uuid::parse_str) {
            None => None,
            Some(Ok(u)) => Some(u),
            Some(Err(_)) => {
                err("dots_user_id", "is not a UUID".into());
                None
            }
        };
        let present = CONTACT.iter().filter(|c| self.get(**c).is_some()).count();
        let contact = if present == 0 {
            None
        } else if present < CONTACT.len() {
            for c in CONTACT.iter().filter(|c| self.get(**c).is_none()) {
                err(
                    COLUMNS[*c],
                    "is required when any contact detail is given".into(),
                );
            }
            None
        } else {
            let c = Contact {
                first_name: self.get(FIRST).unwrap_or_default().to_string(),
                last_name: self.get(LAST).unwrap_or_default().to_string(),
                email: self.get(EMAIL).unwrap_or_default().to_string(),
                country_code: self.get(COUNTRY).unwrap_or_default().to_string(),
                phone_number: self.get(PHONE).unwrap_or_default().to_string(),
            };
            for (col, v) in [("first_name", &c.first_name), ("last_name", &c.last_name)] {
                if v.chars().count() > 50 {
                    err(col, "is longer than 50 characters".into());
                }
            }
            if !looks_like_email(&c.email) {
                err("email", format!("{:?} is not an email address", c.email));
            }
            if !digits(&c.country_code, 1, 3) {
                err(
                    "country_code",
                    format!("{:?} must be 1-3 digits, e.g. 1", c.country_code),
                );
            }
            if !digits(&c.phone_number, 1, 20) {
                err(
                    "phone_number",
                    format!("{:?} must be 1-20 digits", c.phone_number),
                );
            }
            Some(c)
        };
        let memo = self.get(MEMO).map(str::to_string);
        if memo.as_ref().is_some_and(|m| m.chars().count() > 500) {
            err("memo", "is longer than 500 characters".into());
        }
        match (errs.is_empty(), amount) {
            (true, Some(amount)) => Ok(Row {
                line,
                payee_id,
                amount,
                dots_user_id,
                contact,
                memo,
            }),
            _ => Err(errs),
        }
    }
}

fn digits(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !s.contains(' ')
        }
        None => false,
    }
}

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
        let IntakeError::Rows { errors } = validate(bad.as_bytes()).unwrap_err() else {
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
