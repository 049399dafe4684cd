//! An email address as it reaches us from Stripe, parsed once at the edge.

use std::fmt;

/// Trimmed, with exactly one `@`, something on both sides, no whitespace, at most 255 bytes
/// (the column is varchar(255)). Comparison elsewhere is case-insensitive (SQL `lower()`), and
/// `normalized()` is what new accounts are created with.
#[derive(Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Option<Self> {
        let s = raw.trim();
        let (local, domain) = s.split_once('@')?;
        let valid = !local.is_empty()
            && !domain.is_empty()
            && !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && s.len() <= 255
            && !s.chars().any(|c| c.is_whitespace() || c.is_control());
        valid.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

/// An address is personal data: `Debug` (and so any `{:?}` in a log line or an error) never
/// shows it, and there is no `Display`: `as_str` is the one way to write it somewhere.
impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Email([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_addresses_and_trims() {
        assert_eq!(
            Email::parse("  Buyer@Example.COM ").unwrap().as_str(),
            "Buyer@Example.COM"
        );
        assert_eq!(
            Email::parse("Buyer@Example.COM").unwrap().normalized(),
            "buyer@example.com"
        );
        assert!(Email::parse("a+tag@sub.example.co.uk").is_some());
    }

    #[test]
    fn debug_output_never_shows_the_address() {
        let email = Email::parse("ada.buyer@example.com").unwrap();
        let shown = format!("{email:?}");
        assert!(
            !shown.contains("ada") && !shown.contains("example"),
            "{shown}"
        );
    }

    #[test]
    fn rejects_what_is_not_an_address() {
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@b.com.",
            "a@.b.com",
        ] {
            assert!(Email::parse(bad).is_none(), "{bad}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(250))).is_none());
    }
}
