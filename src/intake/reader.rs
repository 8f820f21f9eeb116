//! The CSV row parser: one validated `Row` (or every problem on it) at a time, holding only
//! the current record.

use std::io::Read;

use uuid::Uuid;

use super::{Contact, IntakeError, Row, RowError};
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
