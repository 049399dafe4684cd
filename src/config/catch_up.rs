//! The catch-up's settings (it runs inside `serve` when STRIPE_SECRET_KEY is set) and the
//! durations they are written in.

use std::time::Duration;

use super::{parsed, ConfigError, Source};

/// How far back Stripe lists events (https://docs.stripe.com/api/events).
pub const STRIPE_EVENT_RETENTION: Duration = Duration::from_secs(30 * 86_400);

#[derive(Debug, Clone, PartialEq)]
pub struct CatchUpSettings {
    /// RECONCILE_INTERVAL_SECS: time between two runs.
    pub interval: Duration,
    /// RECONCILE_START_LOOKBACK: where the very first run starts (now minus this).
    pub start_lookback: Duration,
    /// RECONCILE_OVERLAP: each run lists again this much before the high-water mark, for
    /// events that became visible late.
    pub overlap: Duration,
    /// RECONCILE_READS_PER_SEC: Stripe API reads per second at most (the catch-up's and
    /// `reconcile`'s); Stripe allows 100 in live mode and 25 in test mode.
    pub reads_per_sec: f64,
}

impl CatchUpSettings {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let interval: f64 = parsed(src, "RECONCILE_INTERVAL_SECS", 600.0)?;
        let interval = Duration::try_from_secs_f64(interval)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or(ConfigError::Malformed {
                name: "RECONCILE_INTERVAL_SECS",
                reason: "must be more than 0 seconds".into(),
            })?;
        let reads_per_sec: f64 = parsed(src, "RECONCILE_READS_PER_SEC", 10.0)?;
        if !(reads_per_sec.is_finite() && reads_per_sec > 0.0) {
            return Err(ConfigError::Malformed {
                name: "RECONCILE_READS_PER_SEC",
                reason: "must be more than 0".into(),
            });
        }
        Ok(Self {
            interval,
            start_lookback: duration(
                src,
                "RECONCILE_START_LOOKBACK",
                Duration::from_secs(3 * 86_400),
            )?,
            overlap: duration(src, "RECONCILE_OVERLAP", Duration::from_secs(3_600))?,
            reads_per_sec,
        })
    }
}

fn duration(
    src: &dyn Source,
    name: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match src.get(name) {
        None => Ok(default),
        Some(raw) => parse_duration(&raw).map_err(|reason| ConfigError::Malformed { name, reason }),
    }
}

/// A duration as an operator writes it: whole seconds (`259200`) or a number with a unit,
/// `s`, `m`, `h` or `d` (`3d`, `72h`, `90m`); several parts add up (`1d12h`).
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let text = raw.trim();
    let malformed =
        || format!("expected seconds or a duration like 3d, 72h, 90m or 45s, got {text:?}");
    if text.is_empty() {
        return Err(malformed());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => return Err(malformed()),
        };
        let n: u64 = digits.parse().map_err(|_| malformed())?;
        total = n
            .checked_mul(unit)
            .and_then(|part| total.checked_add(part))
            .ok_or_else(malformed)?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(malformed());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn durations_are_seconds_or_numbers_with_units() {
        let d = |s: &str| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(d("259200"), Ok(259_200));
        assert_eq!(d("3d"), Ok(259_200));
        assert_eq!(d("72h"), Ok(259_200));
        assert_eq!(d(" 90m "), Ok(5_400));
        assert_eq!(d("45s"), Ok(45));
        assert_eq!(d("1d12h"), Ok(129_600));
        for bad in [
            "",
            "3 days",
            "h",
            "3x",
            "1.5h",
            "-3d",
            "3d4",
            "99999999999999999999d",
        ] {
            assert!(d(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults_and_malformed_values() {
        let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let s = CatchUpSettings::from_source(&env(&[])).unwrap();
        assert_eq!(s.interval, Duration::from_secs(600));
        assert_eq!(s.start_lookback, Duration::from_secs(3 * 86_400));
        assert_eq!(s.overlap, Duration::from_secs(3_600));
        assert_eq!(s.reads_per_sec, 10.0);
        let s = CatchUpSettings::from_source(&env(&[
            ("RECONCILE_START_LOOKBACK", "72h"),
            ("RECONCILE_OVERLAP", "600"),
        ]))
        .unwrap();
        assert_eq!(s.start_lookback, Duration::from_secs(3 * 86_400));
        assert_eq!(s.overlap, Duration::from_secs(600));
        for (name, value) in [
            ("RECONCILE_INTERVAL_SECS", "0"),
            ("RECONCILE_INTERVAL_SECS", "often"),
            ("RECONCILE_START_LOOKBACK", "three days"),
            ("RECONCILE_READS_PER_SEC", "0"),
        ] {
            let e = CatchUpSettings::from_source(&env(&[(name, value)])).unwrap_err();
            assert!(
                e.to_string().starts_with(&format!("{name} is malformed")),
                "{e}"
            );
        }
    }
}
