//! The byte scanner under the CSV parser: a `Read` wrapper that follows the same quoting rules
//! as the `csv` crate (RFC 4180: a field opened with `"` runs to the next lone `"`, `""` is a
//! quote inside it) over the bytes it hands on, in one tight loop.
//!
//! It knows what the parser does not tell: the physical line on which each record starts
//! (a text editor's line: LF, CRLF or a lone CR ends one, also inside a quoted field), a
//! quote still open at the end of the input (the parser would silently end the field there),
//! and a record longer than [`MAX_RECORD_BYTES`], where it stops the input at once so the
//! parser's buffer cannot grow without bound.

use std::collections::VecDeque;
use std::io::{self, Read};

/// The longest record accepted, in bytes, line end excluded (a quoted field's line ends count).
pub const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// Where a record starts: its byte offset in the input and its physical line (header = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    pub offset: u64,
    pub line: u64,
}

/// Why the scanner ended the input early or found it broken at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The record is longer than [`MAX_RECORD_BYTES`]; nothing after it was read.
    TooLong,
    /// A quote opened on `line`, in field `field` (0-based) of the record, is never closed.
    OpenQuote { line: u64, field: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between records (line ends here are empty lines, skipped like the parser does).
    RecordStart,
    FieldStart,
    /// In an unquoted field (a `"` here is an ordinary character, as for the parser).
    InField,
    InQuoted,
    /// Just after a `"` inside a quoted field: the closing quote, or the first of `""`.
    QuoteInQuoted,
}

const OTHER: u8 = 0;
const QUOTE: u8 = 1;
const COMMA: u8 = 2;
const LF: u8 = 3;
const CR: u8 = 4;

const CLASS: [u8; 256] = {
    let mut t = [OTHER; 256];
    t[b'"' as usize] = QUOTE;
    t[b',' as usize] = COMMA;
    t[b'\n' as usize] = LF;
    t[b'\r' as usize] = CR;
    t
};

pub struct Scanner<R> {
    inner: R,
    state: State,
    /// Bytes handed on so far.
    offset: u64,
    /// The physical line of the next byte.
    line: u64,
    prev_cr: bool,
    /// Bytes of the current record so far.
    record_len: u64,
    field: usize,
    /// Line and field of the last opening quote.
    quote: (u64, usize),
    current: Start,
    /// Starts of records handed on but not yet taken by the parser's reader.
    starts: VecDeque<Start>,
    fault: Option<(Start, Fault)>,
    done: bool,
}

impl<R: Read> Scanner<R> {
    pub fn new(inner: R) -> Self {
        let first = Start { offset: 0, line: 1 };
        Scanner {
            inner,
            state: State::RecordStart,
            offset: 0,
            line: 1,
            prev_cr: false,
            record_len: 0,
            field: 0,
            quote: (1, 0),
            current: first,
            starts: VecDeque::new(),
            fault: None,
            done: false,
        }
    }

    /// The start of the record the parser reports at byte `position` (the byte after the
    /// previous record's line end): the first record start at or after it. Forgets earlier ones.
    pub fn take_start(&mut self, position: u64) -> Option<Start> {
        while let Some(s) = self.starts.front() {
            if s.offset >= position {
                return self.starts.pop_front();
            }
            self.starts.pop_front();
        }
        None
    }

    /// The record the input was found broken in, and how.
    pub fn fault(&self) -> Option<(Start, Fault)> {
        self.fault
    }

    /// The line the scanner has reached (for an error with no record position).
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Scans `bytes`; returns how many of them to hand on (fewer when a record is too long).
    fn scan(&mut self, bytes: &[u8]) -> usize {
        let (mut state, mut line, mut prev_cr) = (self.state, self.line, self.prev_cr);
        let (mut len, mut field) = (self.record_len, self.field);
        let mut kept = bytes.len();
        for (i, &b) in bytes.iter().enumerate() {
            let class = CLASS[b as usize];
            let at = line;
            if class >= LF {
                // A CR ends a line; an LF does unless it is CRLF's second half.
                line += (class == CR || !prev_cr) as u64;
            }
            prev_cr = class == CR;
            if state == State::RecordStart {
                if class >= LF {
                    continue;
                }
                self.current = Start {
                    offset: self.offset + i as u64,
                    line: at,
                };
                self.starts.push_back(self.current);
                (len, field, state) = (0, 0, State::FieldStart);
            }
            len += 1;
            if len > MAX_RECORD_BYTES && (class < LF || state == State::InQuoted) {
                self.fault = Some((self.current, Fault::TooLong));
                self.done = true;
                kept = i;
                break;
            }
            state = match (state, class) {
                (State::InQuoted, QUOTE) => State::QuoteInQuoted,
                (State::InQuoted, _) => State::InQuoted,
                (State::QuoteInQuoted, QUOTE) => State::InQuoted,
                (State::FieldStart, QUOTE) => {
                    self.quote = (at, field);
                    State::InQuoted
                }
                (_, COMMA) => {
                    field += 1;
                    State::FieldStart
                }
                (_, LF | CR) => State::RecordStart,
                _ => State::InField,
            };
        }
        (self.state, self.line, self.prev_cr) = (state, line, prev_cr);
        (self.record_len, self.field) = (len, field);
        self.offset += kept as u64;
        kept
    }
}

impl<R: Read> Read for Scanner<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.done = true;
            if self.state == State::InQuoted {
                let (line, field) = self.quote;
                self.fault = Some((self.current, Fault::OpenQuote { line, field }));
            }
            return Ok(0);
        }
        Ok(self.scan(&buf[..n]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `input` through a scanner in chunks of `chunk` bytes; returns the bytes handed on,
    /// every record start and the fault.
    fn scan(input: &[u8], chunk: usize) -> (usize, Vec<Start>, Option<(Start, Fault)>) {
        let mut s = Scanner::new(input);
        let (mut buf, mut total) = (vec![0; chunk], 0);
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n;
        }
        (total, s.starts.drain(..).collect(), s.fault())
    }

    fn lines(input: &str) -> Vec<u64> {
        let (_, starts, fault) = scan(input.as_bytes(), 3);
        assert_eq!(fault, None);
        starts.iter().map(|s| s.line).collect()
    }

    #[test]
    fn records_start_on_the_lines_an_editor_shows() {
        assert_eq!(lines("h\na\nb\n"), [1, 2, 3]);
        assert_eq!(lines("h\r\na\r\nb\r\n"), [1, 2, 3]);
        assert_eq!(lines("h\ra\rb"), [1, 2, 3]);
        assert_eq!(lines("h\n\n\r\n\ra\n"), [1, 5]);
        assert_eq!(lines("h\r\n\"x\r\ny\ry\",\"\"\"\r\n\"\r\nb\r\n"), [1, 2, 6]);
        assert_eq!(lines("\u{feff}h\r\na\r\n"), [1, 2]);
    }

    #[test]
    fn a_record_start_is_the_offset_of_its_first_byte() {
        let (_, starts, _) = scan(b"ab\r\n\r\ncd\n", 2);
        assert_eq!(starts[1], Start { offset: 6, line: 3 });
    }

    #[test]
    fn a_quote_open_at_the_end_is_a_fault_and_a_closed_one_is_not() {
        let (_, _, fault) = scan(b"h,m\ns1,\"oops\ns2,fine\n", 4);
        let start = Start { offset: 4, line: 2 };
        assert_eq!(fault, Some((start, Fault::OpenQuote { line: 2, field: 1 })));
        for ok in [&b"a,\"b\"\"\""[..], b"a,\"\"", b"a,b\"c\n", b"a,\"b\"\n"] {
            assert_eq!(scan(ok, 1).2, None, "{:?}", String::from_utf8_lossy(ok));
        }
        assert!(matches!(
            scan(b"a,\"b\"\"", 1).2,
            Some((_, Fault::OpenQuote { .. }))
        ));
    }

    #[test]
    fn a_record_over_the_cap_stops_the_input_there() {
        let max = MAX_RECORD_BYTES as usize;
        let mut input = b"h\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', max));
        input.extend(b"\ny\n");
        let (total, _, fault) = scan(&input, 1000);
        assert_eq!(
            (total, fault),
            (input.len(), None),
            "exactly the cap is fine"
        );
        let zeros = vec![0u8; 1 << 20];
        let (total, _, fault) = scan(&zeros, 1 << 16);
        assert_eq!(total, max);
        assert_eq!(fault, Some((Start { offset: 0, line: 1 }, Fault::TooLong)));
        let mut quoted = b"h\n\"".to_vec();
        quoted.extend(std::iter::repeat_n(b'\n', 2 * max));
        assert!(matches!(
            scan(&quoted, 4096).2,
            Some((Start { line: 2, .. }, Fault::TooLong))
        ));
    }
}
