//! The CSV row parser: one validated `Row` (or every problem on it) at a time, holding only
//! the current record. Lines are the ones a text editor shows, from [`Scanner`]; a record
//! over [`MAX_RECORD_BYTES`] or a quote left open at the end of the file ends the file there.

use std::io::Read;

use uuid::Uuid;

use super::scan::{Fault, MAX_RECORD_BYTES, Scanner, Start};
use super::text::{clip, describe, may_refuse, refused};
use super::{Contact, IntakeError, Row, RowError};
use crate::money::{Cents, MoneyError};

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

/// Pass two (and the parser behind pass one): yields validated rows one at a time.
pub struct RowReader<R: Read> {
    reader: csv::Reader<Scanner<R>>,
    /// Where each of COLUMNS is in the file.
    index: [Option<usize>; COLUMNS.len()],
    /// The name of each of the file's columns.
    names: Vec<&'static str>,
    /// The record last read, as bytes: checked as UTF-8 once, whole, and trimmed field by
    /// field as read (the `csv` crate's trimming copies every record, twice for text).
    record: csv::ByteRecord,
    /// The physical line the record last read starts on.
    line: u64,
    /// The file was found broken (or unreadable) and reported: no more rows.
    ended: bool,
}

impl<R: Read> RowReader<R> {
    pub fn new(input: R) -> Result<Self, IntakeError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .buffer_capacity(1 << 16)
            .from_reader(Scanner::new(input));
        let headers = reader.headers().cloned();
        let start = reader.get_mut().take_start(0);
        if let Some((at, fault)) = reader.get_ref().fault()
            && start.is_none_or(|s| s == at)
        {
            let (column, reason) = fault_error(fault, at.line, |f| format!("{}", f + 1));
            let e = RowError {
                line: at.line,
                column,
                reason,
            };
            return Err(IntakeError::Header(e.to_string()));
        }
        let headers = headers.map_err(|e| IntakeError::Header(e.to_string()))?;
        let mut index = [None; COLUMNS.len()];
        let mut names = Vec::with_capacity(headers.len());
        let mut problems = Vec::new();
        for (i, h) in headers.iter().enumerate() {
            let name = h.trim().trim_start_matches('\u{feff}');
            match COLUMNS.iter().position(|c| *c == name) {
                Some(c) => {
                    names.push(COLUMNS[c]);
                    if index[c].replace(i).is_some() {
                        problems.push(format!("column {name:?} appears twice"));
                    }
                }
                None => problems.push(format!(
                    "unknown column {:?} (expected some of: {})",
                    clip(name),
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
            names,
            record: csv::ByteRecord::new(),
            line: 1,
            ended: false,
        })
    }

    /// The next row, or every problem found on it.
    pub fn next_row(&mut self) -> Option<Result<Row, Vec<RowError>>> {
        if self.ended {
            return None;
        }
        let read = self.reader.read_byte_record(&mut self.record);
        let position = match &read {
            Ok(_) => self.record.position(),
            Err(e) => e.position(),
        };
        let start: Option<Start> =
            position.and_then(|p| self.reader.get_mut().take_start(p.byte()));
        self.line = start.map_or_else(|| self.reader.get_ref().line(), |s| s.line);
        if let Some((at, fault)) = self.reader.get_ref().fault()
            && start.is_none_or(|s| s == at)
        {
            // The record the input broke in is the last one the parser gives.
            self.line = at.line;
            return self.end(fault_error(fault, at.line, |f| self.column_name(f)));
        }
        match read {
            Ok(false) => None,
            Ok(true) => match bad_utf8_field(&self.record) {
                None => Some(self.parse(self.line)),
                Some(field) => {
                    self.record.clear();
                    Some(Err(vec![RowError {
                        line: self.line,
                        column: self.column_name(field),
                        reason: "is not valid UTF-8 text".into(),
                    }]))
                }
            },
            Err(e) => {
                self.record.clear();
                let (column, reason) = match e.kind() {
                    csv::ErrorKind::UnequalLengths {
                        expected_len, len, ..
                    } => (
                        "-".into(),
                        format!("has {len} fields, but the header has {expected_len}"),
                    ),
                    csv::ErrorKind::Io(e) => {
                        return self.end(("-".into(), format!("cannot read the file: {e}")));
                    }
                    _ => ("-".into(), format!("unreadable CSV: {e}")),
                };
                Some(Err(vec![RowError {
                    line: self.line,
                    column,
                    reason,
                }]))
            }
        }
    }

    /// Reports `(column, reason)` on the current line, and ends the file there.
    fn end(&mut self, (column, reason): (String, String)) -> Option<Result<Row, Vec<RowError>>> {
        self.ended = true;
        self.record.clear();
        Some(Err(vec![RowError {
            line: self.line,
            column,
            reason,
        }]))
    }

    fn column_name(&self, field: usize) -> String {
        self.names
            .get(field)
            .map_or_else(|| format!("{}", field + 1), |n| n.to_string())
    }

    /// The `payee_id` of the row last read, if it has one.
    pub fn current_payee(&self) -> Option<&str> {
        self.get(PAYEE)
    }

    /// The line of the row last read.
    pub fn current_line(&self) -> u64 {
        self.line
    }

    fn get(&self, col: usize) -> Option<&str> {
        self.field(self.index[col]?).filter(|v| !v.is_empty())
    }

    /// Field `i` of the record last read, trimmed (of Unicode white space, as the `csv`
    /// crate's `Trim::All` did). The record was checked as UTF-8 when read.
    fn field(&self, i: usize) -> Option<&str> {
        std::str::from_utf8(self.record.get(i)?)
            .ok()
            .map(str::trim)
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
            Some(p) if p.chars().count() > 200 => {
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
                err("amount", clip_money(e).to_string());
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
                err(
                    "email",
                    format!("{:?} is not an email address", clip(&c.email)),
                );
            }
            if !digits(&c.country_code, 1, 3) {
                err(
                    "country_code",
                    format!("{:?} must be 1-3 digits, e.g. 1", clip(&c.country_code)),
                );
            }
            if !digits(&c.phone_number, 1, 20) {
                err(
                    "phone_number",
                    format!("{:?} must be 1-20 digits", clip(&c.phone_number)),
                );
            }
            Some(c)
        };
        let memo = self.get(MEMO).map(str::to_string);
        if memo.as_ref().is_some_and(|m| m.chars().count() > 500) {
            err("memo", "is longer than 500 characters".into());
        }
        if may_refuse(self.record.as_slice()) {
            for i in 0..self.record.len() {
                let v = self.field(i).unwrap_or_default();
                if let Some((at, c)) = refused(v, Some(i) == self.index[MEMO]) {
                    let reason = format!("contains {} at character {at}", describe(c));
                    err(self.names.get(i).copied().unwrap_or("-"), reason);
                }
            }
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

/// The error for `fault`, found in the record starting on `line`, as `(column, reason)`.
fn fault_error(fault: Fault, line: u64, column: impl Fn(usize) -> String) -> (String, String) {
    match fault {
        Fault::TooLong => (
            "-".into(),
            format!("record longer than {MAX_RECORD_BYTES} bytes"),
        ),
        Fault::OpenQuote { line: at, field } => {
            let opened = if at == line {
                String::new()
            } else {
                format!(" on line {at}")
            };
            (
                column(field),
                format!(
                    "the quote opened{opened} is never closed: the rest of the file would be \
                     part of this field (close it; a quote inside a quoted field is written \"\")"
                ),
            )
        }
    }
}

/// The first field of `record` that is not UTF-8 text, if any: all-ASCII records (most) are
/// checked whole, others field by field (their fields lie end to end in `as_slice`, so two
/// halves of a character split by a comma would pass as one).
fn bad_utf8_field(record: &csv::ByteRecord) -> Option<usize> {
    if record.as_slice().is_ascii() {
        return None;
    }
    record
        .iter()
        .position(|f| std::str::from_utf8(f).is_err())
}

/// `e` with the value it echoes cut short.
fn clip_money(e: MoneyError) -> MoneyError {
    let c = |s: String| clip(&s).into_owned();
    match e {
        MoneyError::Empty => MoneyError::Empty,
        MoneyError::Malformed(s) => MoneyError::Malformed(c(s)),
        MoneyError::TooPrecise(s) => MoneyError::TooPrecise(c(s)),
        MoneyError::NotPositive(s) => MoneyError::NotPositive(c(s)),
        MoneyError::TooLarge(s) => MoneyError::TooLarge(c(s)),
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
