//! Strict JSON parsing for everything that comes from outside: tokens, IdP responses and the
//! filter configuration.
//!
//! `serde_json::Value` silently keeps the last of two members with the same name and allows
//! nesting up to 128 levels. A JWT whose payload says `"aud":"a","aud":"b"` must not be read
//! one way by us and another way by the upstream (RFC 8725 §3.4 on ambiguous parsing), so
//! duplicates are an error here, and depth is bounded by the caller.

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::{Cell, RefCell};
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
    read(bytes, max_depth, None)
}

/// [`parse_strict`] for a document with one large array in a top-level member (the
/// configuration's `applications`): each element of that array is handed to `each` as soon as
/// it is read, and not kept, so the whole list never exists as one tree of values. The document
/// comes back with that member as an empty array; the return's second part says whether its
/// elements went to `each` (false: the member is absent or not an array, and is returned as
/// read). Every rule of [`parse_strict`] holds as before, in the streamed elements too.
pub fn parse_strict_streaming(
    bytes: &[u8],
    max_depth: usize,
    member: &str,
    each: &mut dyn FnMut(Value),
) -> Result<(Value, bool), JsonError> {
    let stream = Stream {
        member,
        each: RefCell::new(each),
        streamed: Cell::new(false),
    };
    let value = read(bytes, max_depth, Some((&stream, Role::Document)))?;
    Ok((value, stream.streamed.get()))
}

fn read(
    bytes: &[u8],
    max_depth: usize,
    stream: Option<(&Stream<'_>, Role)>,
) -> Result<Value, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Seed {
        depth: 0,
        max_depth,
        stream,
    }
    .deserialize(&mut de)
    .map_err(|e| JsonError(e.to_string()))?;
    de.end().map_err(|e| JsonError(e.to_string()))?;
    Ok(value)
}

/// What [`parse_strict_streaming`] hands over, and to whom.
struct Stream<'a> {
    member: &'a str,
    each: RefCell<&'a mut dyn FnMut(Value)>,
    streamed: Cell<bool>,
}

/// Where a value stands for a stream: the document itself, or the streamed member's value.
#[derive(Clone, Copy)]
enum Role {
    Document,
    Elements,
}

/// One reader for every value (one copy of the deserializer's code, streaming or not); only
/// the document and the streamed member's value carry the stream.
#[derive(Clone, Copy)]
struct Seed<'s, 'a> {
    depth: usize,
    max_depth: usize,
    stream: Option<(&'s Stream<'a>, Role)>,
}

impl<'s, 'a> Seed<'s, 'a> {
    fn nested<E: serde::de::Error>(self) -> Result<Seed<'s, 'a>, E> {
        if self.depth >= self.max_depth {
            return Err(E::custom(format!(
                "nesting deeper than {} levels",
                self.max_depth
            )));
        }
        Ok(Seed {
            depth: self.depth.saturating_add(1),
            max_depth: self.max_depth,
            stream: None,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_, '_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_, '_> {
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
        if let Some((stream, Role::Elements)) = self.stream {
            // Only this loop takes `each`, and the elements it reads carry no stream.
            let Ok(mut each) = stream.each.try_borrow_mut() else {
                return Err(A::Error::custom("a streamed array inside a streamed array"));
            };
            while let Some(item) = seq.next_element_seed(inner)? {
                (*each)(item);
            }
            stream.streamed.set(true);
            return Ok(Value::Array(Vec::new()));
        }
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let streamed_member = match self.stream {
            Some((stream, Role::Document)) => Some(stream),
            _ => None,
        };
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let value = match streamed_member {
                Some(stream) if key == stream.member => access.next_value_seed(Seed {
                    stream: Some((stream, Role::Elements)),
                    ..inner
                })?,
                _ => access.next_value_seed(inner)?,
            };
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

    /// Streams `doc`'s member `m`, then puts the elements back: what `parse_strict` reads.
    fn streamed(doc: &str, m: &str, depth: usize) -> Result<(Value, bool), JsonError> {
        let mut seen = Vec::new();
        let (mut v, streamed) =
            parse_strict_streaming(doc.as_bytes(), depth, m, &mut |e| seen.push(e))?;
        if streamed {
            assert_eq!(v[m], Value::Array(vec![]), "{doc}");
            v[m] = Value::Array(seen);
        } else {
            assert!(seen.is_empty(), "{doc}");
        }
        Ok((v, streamed))
    }

    #[test]
    fn streaming_hands_over_the_elements_in_order_and_reads_the_rest_as_before() {
        for (doc, is_streamed) in [
            (
                r#"{"apps":[{"id":1},{"id":2},[3],"x"],"b":{"apps":[9]}}"#,
                true,
            ),
            (r#"{"b":1,"apps":[]}"#, true),
            (r#"{"b":1}"#, false),
            (r#"{"apps":{"id":1}}"#, false),
            (r#"{"apps":"x","b":[{"apps":[1]}]}"#, false),
            (r#"[{"apps":[1]}]"#, false),
            (r#""apps""#, false),
        ] {
            let (v, streamed) = streamed(doc, "apps", 8).unwrap();
            assert_eq!(streamed, is_streamed, "{doc}");
            assert_eq!(v, parse_strict(doc.as_bytes(), 8).unwrap(), "{doc}");
        }
    }

    #[test]
    fn streaming_keeps_every_refusal() {
        for (doc, depth) in [
            (r#"{"apps":[1],"apps":[2]}"#, 8),
            (r#"{"apps":[{"k":1,"k":2}]}"#, 8),
            (r#"{"apps":[[[1]]]}"#, 3),
            (r#"{"apps":[1]} x"#, 8),
            (r#"{"apps":[1,]}"#, 8),
        ] {
            assert!(parse_strict(doc.as_bytes(), depth).is_err(), "{doc}");
            assert!(streamed(doc, "apps", depth).is_err(), "{doc}");
        }
        assert!(streamed(r#"{"apps":[[1]]}"#, "apps", 3).is_ok());
        let not_utf8 = b"{\"apps\":[\"\xe9\"]}";
        assert!(parse_strict_streaming(not_utf8, 8, "apps", &mut |_| {}).is_err());
    }

    #[test]
    fn refuses_invalid_utf8_and_trailing_data() {
        assert!(parse_strict(b"\"\xe9\"", 4).is_err());
        assert!(parse_strict(b"{} {}", 4).is_err());
        assert!(parse_strict(b"", 4).is_err());
    }
}
