//! A row of a batch file as the domain sees it: a validated [`Row`] (payee, amount, how to
//! reach the payee), or a [`RowError`] naming a bad row's line, column and reason. Pure: intake
//! produces these, the store stores rows and reports rows it refuses, both through this module.

use std::borrow::Cow;

use uuid::Uuid;

use crate::money::Cents;

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
    /// `line 5, column amount: reason`, or `line 5: reason` for the record as a whole
    /// (column `-`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.column.as_str() {
            "-" => write!(f, "line {}: {}", self.line, self.reason),
            column => write!(f, "line {}, column {column}: {}", self.line, self.reason),
        }
    }
}

/// How much of a value a message echoes, in characters.
pub const SHOWN_CHARS: usize = 80;

/// `value` cut to [`SHOWN_CHARS`] characters, with an ellipsis when cut. Debug-format it
/// (`{:?}`) to echo it: that also escapes what a terminal would act on.
pub fn clip(value: &str) -> Cow<'_, str> {
    match value.char_indices().nth(SHOWN_CHARS) {
        None => Cow::Borrowed(value),
        Some((end, _)) => Cow::Owned(format!("{}\u{2026}", &value[..end])),
    }
}
