//! Lenient pieces shared by the narrow object types handlers read.

use serde::{Deserialize, Deserializer};

/// A field Stripe sends either as an id string or, when expanded, as an object with an `id`.
pub fn expandable_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum IdOrObject {
        Id(String),
        Object { id: String },
        Other(serde::de::IgnoredAny),
    }
    Ok(match Option::<IdOrObject>::deserialize(d)? {
        Some(IdOrObject::Id(id)) | Some(IdOrObject::Object { id }) => Some(id),
        _ => None,
    })
}

/// Metadata is a string map in every API version; anything else counts as empty.
pub fn metadata<'de, D: Deserializer<'de>>(d: D) -> Result<serde_json::Value, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        Some(obj @ serde_json::Value::Object(_)) => obj,
        _ => serde_json::Value::Object(Default::default()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        #[serde(default, deserialize_with = "expandable_id")]
        product: Option<String>,
    }

    #[test]
    fn ids_and_expanded_objects_both_give_the_id() {
        let a: T = serde_json::from_str(r#"{"product":"prod_1"}"#).unwrap();
        let b: T = serde_json::from_str(r#"{"product":{"id":"prod_1","name":"x"}}"#).unwrap();
        let c: T = serde_json::from_str(r#"{"product":null}"#).unwrap();
        let d: T = serde_json::from_str(r#"{}"#).unwrap();
        let e: T = serde_json::from_str(r#"{"product":42}"#).unwrap();
        assert_eq!(a.product.as_deref(), Some("prod_1"));
        assert_eq!(b.product.as_deref(), Some("prod_1"));
        assert_eq!((c.product, d.product, e.product), (None, None, None));
    }
}
