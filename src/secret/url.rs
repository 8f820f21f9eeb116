//! Database URLs made safe to print (re-exported by `store`). A URL holds the database password
//! (`postgres://user:PASSWORD@host/db`, or `?password=` in the query), and the URL an operator
//! typed may not even parse (a bad port, an unencoded `@` or `#` in the password), so the
//! redaction works on the text itself, never on a successful parse.
//!
//! Rules: `sqlite:` URLs (file paths, no credentials) are returned unchanged. Otherwise the
//! userinfo is everything between `://` and the **last** `@` (a password may hold `@`, `#`,
//! `/`, `?`); if it has a `:`, what follows the first `:` is replaced with `***`. A
//! `password=` query parameter's value is replaced too. A URL without `://` but with an `@`
//! loses everything before the last `@`. Over-redacting (an `@` in the query) is accepted:
//! never printing a password is the point.

/// A database URL with any password replaced by `***`, safe to print.
pub fn redact_url(url: &str) -> String {
    if url.starts_with("sqlite:") {
        return url.to_string();
    }
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return match url.rfind('@') {
            Some(at) => format!("***{}", redact_query(&url[at..])),
            None => redact_query(url),
        };
    };
    let (scheme, rest) = url.split_at(start);
    let mut out = scheme.to_string();
    let tail = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push_str(":***@");
                }
                None => {
                    out.push_str(userinfo);
                    out.push('@');
                }
            }
            &rest[at + 1..]
        }
        None => rest,
    };
    out.push_str(&redact_query(tail));
    out
}

/// `password=` query parameters with their values replaced.
fn redact_query(s: &str) -> String {
    let Some((head, query)) = s.split_once('?') else {
        return s.to_string();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => p.to_string(),
        })
        .collect();
    format!("{head}?{}", params.join("&"))
}

/// The strings of `url` that could be (part of) its password: what `redact_url` hides, its
/// percent-decoded form, and the pieces a parser splitting at `@`, `#`, `/`, `?` would see.
fn secrets(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    if url.starts_with("sqlite:") {
        return out;
    }
    let rest = url.find("://").map_or(url, |i| &url[i + 3..]);
    if let Some(at) = rest.rfind('@')
        && let Some((_, pw)) = rest[..at].split_once(':')
    {
        out.push(pw.to_string());
        out.extend(pw.split(['@', '#', '/', '?']).map(str::to_string));
    }
    if let Some((_, query)) = rest.split_once('?') {
        for p in query.split('&') {
            if let Some((k, v)) = p.split_once('=')
                && k.eq_ignore_ascii_case("password")
            {
                out.push(v.to_string());
            }
        }
    }
    if let Ok(u) = url::Url::parse(url)
        && let Some(pw) = u.password()
    {
        out.push(pw.to_string());
    }
    let decoded: Vec<String> = out.iter().filter_map(|s| percent_decode(s)).collect();
    out.extend(decoded);
    // Longest first, so a piece never leaves the rest of a longer secret behind.
    out.retain(|s| s.chars().count() >= 3);
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return None;
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|d| d.into_owned())
}

/// `message` (a driver's error text) with the raw `url` replaced by its redacted form and any
/// password in it replaced by `***`.
pub fn scrub(message: &str, url: &str) -> String {
    let mut m = message.replace(url, &redact_url(url));
    for s in secrets(url) {
        m = m.replace(&s, "***");
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_every_shape_of_url() {
        let cases = [
            (
                "postgres://u:s3cretpw@127.0.0.1:5432/db",
                "postgres://u:***@127.0.0.1:5432/db",
            ),
            (
                "postgres://u:s3cretpw@127.0.0.1:notaport/db",
                "postgres://u:***@127.0.0.1:notaport/db",
            ),
            (
                "postgres://u:s3cretpw@[::1]:5432/db",
                "postgres://u:***@[::1]:5432/db",
            ),
            (
                "postgres://u:pa@ss#word@host/db",
                "postgres://u:***@host/db",
            ),
            (
                "postgresql://u:p/a?s:s@host:5432/db?sslmode=require",
                "postgresql://u:***@host:5432/db?sslmode=require",
            ),
            ("postgres://u:%40enc%23@h/db", "postgres://u:***@h/db"),
            ("postgres://:only@h/db", "postgres://:***@h/db"),
            (
                "postgres://h/db?user=u&password=s3cretpw&sslmode=require",
                "postgres://h/db?user=u&password=***&sslmode=require",
            ),
            ("mysql://u:s3cretpw@h/db", "mysql://u:***@h/db"),
            ("postgres:u:s3cretpw@h/db", "***@h/db"),
            ("u:s3cretpw@h", "***@h"),
        ];
        for (url, want) in cases {
            let got = redact_url(url);
            assert_eq!(got, want, "{url}");
            for s in secrets(url) {
                assert!(!got.contains(&s), "{url} -> {got} shows {s}");
            }
        }
    }

    #[test]
    fn urls_without_a_password_and_sqlite_paths_stay_unchanged() {
        for url in [
            "postgres://payrun@db.internal.example:5432/payrun?sslmode=require",
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://127.0.0.1/db",
            "sqlite://data/payrun.db",
            "sqlite:///var/lib/payrun/a@b:c.db?mode=rwc",
            "sqlite::memory:",
            "sqlite://data/p:w@x.db",
            "",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn scrub_removes_the_url_and_the_password_from_driver_messages() {
        let url = "postgres://u:pa@ss#word@127.0.0.1/db";
        let m = format!("cannot connect to {url}: host ss#word@127.0.0.1 not found (pa@ss#word)");
        let s = scrub(&m, url);
        assert!(!s.contains("ss#word") && !s.contains("pa@ss"), "{s}");
        let url = "postgres://u:s%40cret%23pw@h/db";
        let s = scrub("password s@cret#pw was refused", url);
        assert!(!s.contains("s@cret#pw"), "{s}");
        assert_eq!(scrub("invalid port number", url), "invalid port number");
    }
}
