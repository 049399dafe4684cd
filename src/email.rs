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

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.0)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
