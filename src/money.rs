//! Money as integer cents. `Cents` is built only by parsing a decimal string (exactly, no
//! floats) or from a stored/validated integer; it is always strictly positive.

use std::fmt;
use std::str::FromStr;

/// A strictly positive amount of US cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cents(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("is empty")]
    Empty,
    #[error("{0:?} is not a decimal amount like 12.34")]
    Malformed(String),
    #[error("{0:?} has more than 2 decimal places")]
    TooPrecise(String),
    #[error("{0:?} must be greater than zero")]
    NotPositive(String),
    #[error("{0:?} is too large")]
    TooLarge(String),
}

impl Cents {
    /// From an integer that was already validated (e.g. read back from the store).
    pub fn from_stored(cents: i64) -> Result<Cents, MoneyError> {
        if cents > 0 {
            Ok(Cents(cents))
        } else {
            Err(MoneyError::NotPositive(cents.to_string()))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }

    /// The signed amount Dots wants to credit a user: negative cents.
    pub fn as_credit(self) -> i64 {
        -self.0
    }
}

impl FromStr for Cents {
    type Err = MoneyError;

    /// Parses `12`, `12.3`, `12.34`, optionally with a leading `$`. Rejects signs, exponents,
    /// thousands separators and a third decimal place.
    fn from_str(raw: &str) -> Result<Cents, MoneyError> {
        let s = raw.trim();
        let s = s.strip_prefix('$').unwrap_or(s);
        if s.is_empty() {
            return Err(MoneyError::Empty);
        }
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, f),
            None => (s, ""),
        };
        let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !digits(int) || !digits(frac) || (s.contains('.') && frac.is_empty()) {
            return Err(MoneyError::Malformed(raw.to_string()));
        }
        if frac.len() > 2 {
            return Err(MoneyError::TooPrecise(raw.to_string()));
        }
        let too_large = || MoneyError::TooLarge(raw.to_string());
        let whole: i64 = int.parse().map_err(|_| too_large())?;
        let frac_cents: i64 = match frac.len() {
            0 => 0,
            1 => frac.parse::<i64>().map_err(|_| too_large())? * 10,
            _ => frac.parse().map_err(|_| too_large())?,
        };
        let cents = whole
            .checked_mul(100)
            .and_then(|c| c.checked_add(frac_cents))
            .ok_or_else(too_large)?;
        if cents == 0 {
            return Err(MoneyError::NotPositive(raw.to_string()));
        }
        Ok(Cents(cents))
    }
}

impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// Formats any signed cents total (e.g. a sum) as dollars.
pub fn format_cents(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let a = cents.unsigned_abs();
    format!("{sign}{}.{:02}", a / 100, a % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_parse_exactly_to_cents() {
        for (s, c) in [
            ("12.34", 1234),
            ("12.3", 1230),
            ("12", 1200),
            ("0.01", 1),
            ("$5.00", 500),
        ] {
            assert_eq!(s.parse::<Cents>().unwrap().get(), c, "{s}");
        }
        // 0.1 + 0.2 style float traps do not exist here.
        assert_eq!("1234567.89".parse::<Cents>().unwrap().get(), 123_456_789);
    }

    #[test]
    fn bad_amounts_are_rejected_with_a_reason() {
        assert_eq!("".parse::<Cents>(), Err(MoneyError::Empty));
        assert!(matches!(
            "1.234".parse::<Cents>(),
            Err(MoneyError::TooPrecise(_))
        ));
        assert!(matches!(
            "0.00".parse::<Cents>(),
            Err(MoneyError::NotPositive(_))
        ));
        for bad in ["-1", "1e3", "1,000", "abc", "1.", ".5", "+1"] {
            assert!(
                matches!(bad.parse::<Cents>(), Err(MoneyError::Malformed(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            "99999999999999999999".parse::<Cents>(),
            Err(MoneyError::TooLarge(_))
        ));
    }

    #[test]
    fn cents_display_as_dollars() {
        assert_eq!(Cents(1205).to_string(), "12.05");
        assert_eq!(format_cents(-5), "-0.05");
    }
}
