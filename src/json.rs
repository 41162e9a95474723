//! Strict JSON parsing for everything that comes from outside: tokens, IdP responses and the
//! filter configuration.
//!
//! `serde_json::Value` silently keeps the last of two members with the same name and allows
//! nesting up to 128 levels. A JWT whose payload says `"aud":"a","aud":"b"` must not be read
//! one way by us and another way by the upstream (RFC 8725 §3.4 on ambiguous parsing), so
//! duplicates are an error here, and depth is bounded by the caller.

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError(pub String);

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses `bytes` as one JSON value, refusing invalid UTF-8, duplicate member names, nesting
/// deeper than `max_depth` and trailing data.
pub fn parse_strict(bytes: &[u8], max_depth: usize) -> Result<Value, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Seed {
        depth: 0,
        max_depth,
    }
    .deserialize(&mut de)
    .map_err(|e| JsonError(e.to_string()))?;
    de.end().map_err(|e| JsonError(e.to_string()))?;
    Ok(value)
}

#[derive(Clone, Copy)]
struct Seed {
    depth: usize,
    max_depth: usize,
}

impl Seed {
    fn nested<E: serde::de::Error>(self) -> Result<Seed, E> {
        if self.depth >= self.max_depth {
            return Err(E::custom(format!(
                "nesting deeper than {} levels",
                self.max_depth
            )));
        }
        Ok(Seed {
            depth: self.depth.saturating_add(1),
            max_depth: self.max_depth,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Seed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let value = access.next_value_seed(inner)?;
            match map.entry(key) {
                serde_json::map::Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                serde_json::map::Entry::Occupied(slot) => {
                    let key = slot.key();
                    return Err(A::Error::custom(format!("duplicate member name {key:?}")));
                }
            }
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_documents() {
        let v = parse_strict(br#"{"a":[1,2.5,"x",null,true],"b":{"c":-3}}"#, 8).unwrap();
        assert_eq!(v["b"]["c"], -3);
    }

    #[test]
    fn refuses_duplicate_member_names() {
        let e = parse_strict(br#"{"aud":"a","aud":"b"}"#, 8).unwrap_err();
        assert!(e.0.contains("duplicate member name \"aud\""), "{e}");
        assert!(parse_strict(br#"{"x":{"k":1,"k":1}}"#, 8).is_err());
    }

    #[test]
    fn refuses_deep_nesting_at_the_limit() {
        assert!(parse_strict(b"[[[1]]]", 3).is_ok());
        assert!(parse_strict(b"[[[[1]]]]", 3).is_err());
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_strict(deep.as_bytes(), 32).is_err());
    }

    #[test]
    fn refuses_invalid_utf8_and_trailing_data() {
        assert!(parse_strict(b"\"\xe9\"", 4).is_err());
        assert!(parse_strict(b"{} {}", 4).is_err());
        assert!(parse_strict(b"", 4).is_err());
    }
}
