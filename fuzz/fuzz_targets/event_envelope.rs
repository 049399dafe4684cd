//! The event envelope parser never panics, and what it accepts has an id and a type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stripe_worker::envelope::EventEnvelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = EventEnvelope::parse(data) {
        assert!(!e.id.trim().is_empty() && !e.event_type.trim().is_empty());
        let _ = e.is_thin();
        let _ = e.object_as::<serde_json::Value>();
    }
});
