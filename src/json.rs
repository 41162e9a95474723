//! Strict JSON parsing for everything that comes from outside: tokens, IdP responses and the
//! filter configuration.
//!
//! `serde_json::Value` silently keeps the last of two members with the same name and allows
//! nesting up to 128 levels. A JWT whose payload says `"aud":"a","aud":"b"` must not be read
//! one way by us and another way by the upstream (RFC 8725 §3.4 on ambiguous parsing), so
//! duplicates are an error here, and depth is bounded by the caller.

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
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

/// The deepest nesting serde_json itself takes (its recursion limit refuses the 128th
/// level), whatever `max_depth` says: [`Object`] refuses what [`parse_strict`] refuses.
const SERDE_MAX_DEPTH: usize = 127;

/// A JSON object read with every rule of [`parse_strict`], with the same verdict on every
/// document, whose members' values stay text until asked for: nothing is built for the
/// members nobody reads. A JWT's payload is read this way on every new token (the claims
/// map `parse_strict` built, its strings and its drop were a third of a new token's work).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    text: String,
    /// Each member, in document order (names are unique).
    members: Vec<Member>,
    /// Where the registered claims are in `members` (by [`registered`]): the member's index,
    /// or `ABSENT` (past any end). The claims rules ask for them by name a dozen times per token.
    registered: [usize; REGISTERED],
}

/// The claim names [`Object::get`] finds without a search: those every token's rules read.
const REGISTERED: usize = 10;
const ABSENT: usize = usize::MAX;

/// The slot of a registered claim's name.
fn registered(name: &[u8]) -> Option<usize> {
    Some(match *name {
        [b'i', b's', b's'] => 0,
        [b's', b'u', b'b'] => 1,
        [b'a', b'u', b'd'] => 2,
        [b'e', b'x', b'p'] => 3,
        [b'n', b'b', b'f'] => 4,
        [b'i', b'a', b't'] => 5,
        [b'j', b't', b'i'] => 6,
        [b'n', b'o', b'n', b'c', b'e'] => 7,
        [b's', b'c', b'o', b'p', b'e'] => 8,
        [b'c', b'l', b'i', b'e', b'n', b't', b'_', b'i', b'd'] => 9,
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    name: Name,
    /// Where the value's text is in `text`.
    value: (usize, usize),
}

/// A member's name: where it is in the text, or, when it has escapes, as they read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    At(usize, usize),
    Unescaped(Box<str>),
}

impl Member {
    /// Its name as it reads (`text`: the document it was found in).
    fn name<'a>(&'a self, text: &'a str) -> &'a [u8] {
        match &self.name {
            Name::At(start, end) => text.as_bytes().get(*start..*end).unwrap_or_default(),
            Name::Unescaped(name) => name.as_bytes(),
        }
    }
}

/// Byte by byte, lengths first: member names are a few bytes (most claim names three), and
/// a call to compare them costs more than the comparison.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

impl Object {
    /// Reads `bytes` as one JSON object (see [`parse_strict`] for the rules).
    pub fn parse(bytes: Vec<u8>, max_depth: usize) -> Result<Object, JsonError> {
        let text = String::from_utf8(bytes).map_err(|e| {
            JsonError(format!(
                "invalid UTF-8 at byte {}",
                e.utf8_error().valid_up_to()
            ))
        })?;
        let mut scan = Scanner {
            text: &text,
            pos: 0,
            max_depth: max_depth.min(SERDE_MAX_DEPTH),
        };
        scan.whitespace();
        if scan.peek() != Some(b'{') {
            // Not an object, or not JSON: say which as parse_strict would.
            return Err(parse_strict(text.as_bytes(), max_depth)
                .err()
                .unwrap_or_else(|| JsonError("the document is another JSON value".into())));
        }
        let mut members = Vec::with_capacity(16);
        scan.object(0, Some(&mut members))?;
        scan.whitespace();
        if scan.pos != text.len() {
            return Err(scan.error("trailing characters"));
        }
        let mut registered = [ABSENT; REGISTERED];
        for (i, member) in members.iter().enumerate() {
            if let Some(slot) = self::registered(member.name(&text)) {
                if let Some(slot) = registered.get_mut(slot) {
                    *slot = i;
                }
            }
        }
        Ok(Object {
            text,
            members,
            registered,
        })
    }

    /// The value of the member `name`.
    pub fn get(&self, name: &str) -> Option<Json<'_>> {
        let member = match registered(name.as_bytes()) {
            // An absent claim's slot is past the end.
            Some(slot) => self.members.get(*self.registered.get(slot)?)?,
            None => self.member(name)?,
        };
        self.text.get(member.value.0..member.value.1).map(Json)
    }

    /// The member named `name`, searched for.
    fn member(&self, name: &str) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| same(m.name(&self.text), name.as_bytes()))
    }

    /// The document as serde_json values (what the tests and the fuzz target compare with
    /// [`parse_strict`]'s reading).
    pub fn to_value(&self) -> Value {
        read_value(&self.text).unwrap_or(Value::Null)
    }
}

/// One JSON value's text, already checked: read as what it is, on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Json<'a>(&'a str);

impl<'a> Json<'a> {
    pub fn is_string(self) -> bool {
        self.0.starts_with('"')
    }

    pub fn is_number(self) -> bool {
        self.0.starts_with(|c: char| c == '-' || c.is_ascii_digit())
    }

    pub fn is_array(self) -> bool {
        self.0.starts_with('[')
    }

    pub fn is_null(self) -> bool {
        self.0 == "null"
    }

    pub fn as_bool(self) -> Option<bool> {
        match self.0 {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }

    /// A string's content: borrowed unless it has escapes.
    pub fn as_str(self) -> Option<Cow<'a, str>> {
        use crate::bytes::{equal, find_by_words};
        let inner = unquoted(self.0)?;
        // Claims' strings are short: a search of its own, not a call to `memchr`.
        let escape = find_by_words(inner.as_bytes(), |x| equal(x, b'\\'), |b| *b == b'\\');
        if escape.is_some() {
            match read_value(self.0)? {
                Value::String(s) => Some(Cow::Owned(s)),
                _ => None,
            }
        } else {
            Some(Cow::Borrowed(inner))
        }
    }

    /// A number serde_json reads as an unsigned integer (`Value::as_u64`): digits only, no
    /// fraction or exponent, at most `u64::MAX`.
    pub fn as_u64(self) -> Option<u64> {
        let digits = self.0.as_bytes();
        if digits.iter().all(u8::is_ascii_digit) {
            // Up to 19 digits cannot overflow (a time claim has 10): read in one pass.
            if (1..=19).contains(&digits.len()) {
                let read = |n: u64, d: &u8| n.wrapping_mul(10).wrapping_add(u64::from(d & 0x0f));
                return Some(digits.iter().fold(0, read));
            }
            return self.0.parse().ok();
        }
        if !self.is_number() {
            return None;
        }
        read_value(self.0)?.as_u64()
    }

    /// A number as serde_json writes it back (`Number`'s `Display`).
    pub fn number_text(self) -> Option<String> {
        if !self.is_number() {
            return None;
        }
        match read_value(self.0)? {
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// An array's elements.
    pub fn items(self) -> Option<Vec<Json<'a>>> {
        let mut scan = Scanner::over(self.0);
        if !scan.eat(b'[') {
            return None;
        }
        let mut items = Vec::new();
        scan.whitespace();
        if scan.eat(b']') {
            return Some(items);
        }
        loop {
            scan.whitespace();
            let start = scan.pos;
            scan.value(0).ok()?;
            items.push(Json(self.0.get(start..scan.pos)?));
            scan.whitespace();
            if scan.eat(b']') {
                return Some(items);
            }
            scan.require(b',').ok()?;
        }
    }

    /// An object's member `name`.
    pub fn get(self, name: &str) -> Option<Json<'a>> {
        let mut scan = Scanner::over(self.0);
        if !scan.eat(b'{') {
            return None;
        }
        scan.whitespace();
        if scan.eat(b'}') {
            return None;
        }
        loop {
            scan.whitespace();
            let (start, end, escaped) = scan.string().ok()?;
            let key = Json(self.0.get(start..end)?);
            scan.whitespace();
            scan.require(b':').ok()?;
            scan.whitespace();
            let value_start = scan.pos;
            scan.value(0).ok()?;
            let matches = if escaped {
                key.as_str().is_some_and(|k| k == name)
            } else {
                unquoted(self.0.get(start..end).unwrap_or_default()) == Some(name)
            };
            if matches {
                return self.0.get(value_start..scan.pos).map(Json);
            }
            scan.whitespace();
            if scan.eat(b'}') {
                return None;
            }
            scan.require(b',').ok()?;
        }
    }
}

/// A string's text between its quotes.
fn unquoted(quoted: &str) -> Option<&str> {
    quoted.strip_prefix('"')?.strip_suffix('"')
}

/// A value checked before, read as serde_json values: with [`parse_strict`]'s reader, the one
/// copy of serde_json's in the module.
fn read_value(text: &str) -> Option<Value> {
    parse_strict(text.as_bytes(), SERDE_MAX_DEPTH).ok()
}

/// A strict recursive-descent reader over JSON text (RFC 8259), refusing what
/// [`parse_strict`] refuses: recursion is bounded by `max_depth` (at most
/// [`SERDE_MAX_DEPTH`]). Escaped strings and numbers with a fraction, an exponent or many
/// digits, rare in the documents read this way, are checked by serde_json itself, so their
/// verdicts are its own.
struct Scanner<'t> {
    text: &'t str,
    pos: usize,
    max_depth: usize,
}

impl<'t> Scanner<'t> {
    /// Over text already checked (nested values are re-read to the depth they have).
    fn over(text: &'t str) -> Scanner<'t> {
        Scanner {
            text,
            pos: 0,
            max_depth: SERDE_MAX_DEPTH,
        }
    }

    fn advance(&mut self, bytes: usize) {
        self.pos = self.pos.saturating_add(bytes);
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn error(&self, what: &str) -> JsonError {
        JsonError(format!("{what} at byte {}", self.pos))
    }

    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.advance(1);
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        let here = self.peek() == Some(byte);
        if here {
            self.advance(1);
        }
        here
    }

    /// `byte` next, or an error that says it was missing (never a panic: not `expect`).
    #[inline]
    fn require(&mut self, byte: u8) -> Result<(), JsonError> {
        if self.eat(byte) {
            Ok(())
        } else {
            Err(self.missing(byte))
        }
    }

    #[cold]
    fn missing(&self, byte: u8) -> JsonError {
        self.error(&format!("expected `{}`", char::from(byte)))
    }

    /// One value, enclosed by `depth` arrays and objects.
    fn value(&mut self, depth: usize) -> Result<(), JsonError> {
        match self.peek() {
            Some(b'{') => self.object(depth, None),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(|_| ()),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.error("expected a value")),
        }
    }

    fn enter(&self, depth: usize) -> Result<(), JsonError> {
        if depth >= self.max_depth {
            return Err(self.error(&format!("nesting deeper than {} levels", self.max_depth)));
        }
        Ok(())
    }

    fn literal(&mut self, word: &str) -> Result<(), JsonError> {
        let end = self.pos.saturating_add(word.len());
        if self.text.get(self.pos..end) != Some(word) {
            return Err(self.error("expected a value"));
        }
        self.pos = end;
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.advance(1);
        }
        self.pos.saturating_sub(start)
    }

    fn number(&mut self) -> Result<(), JsonError> {
        let start = self.pos;
        self.eat(b'-');
        let plain = match self.peek() {
            Some(b'0') => {
                self.advance(1);
                true
            }
            Some(b'1'..=b'9') => self.digits() <= 18,
            _ => return Err(self.error("invalid number")),
        };
        let mut exact = plain;
        if self.eat(b'.') {
            exact = false;
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.advance(1);
            exact = false;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        if !exact {
            // Its range (a float that overflows is refused) as serde_json reads it.
            let text = self.text.get(start..self.pos).unwrap_or_default();
            parse_strict(text.as_bytes(), 1)?;
        }
        Ok(())
    }

    /// A string; returns its span (quotes included) and whether it has escapes.
    fn string(&mut self) -> Result<(usize, usize, bool), JsonError> {
        let start = self.pos;
        self.require(b'"')?;
        let bytes = self.text.as_bytes();
        let mut escaped = false;
        loop {
            let rest = bytes.get(self.pos..).unwrap_or_default();
            self.pos = self.pos.saturating_add(string_stop(rest));
            match bytes.get(self.pos) {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.advance(2);
                }
                Some(_) => return Err(self.error("control character in string")),
            }
        }
        self.advance(1);
        if escaped {
            // The escapes (and surrogate pairs) as serde_json reads them.
            let text = self.text.get(start..self.pos).unwrap_or_default();
            parse_strict(text.as_bytes(), 1)?;
        }
        Ok((start, self.pos, escaped))
    }

    fn array(&mut self, depth: usize) -> Result<(), JsonError> {
        self.enter(depth)?;
        self.require(b'[')?;
        self.whitespace();
        if self.eat(b']') {
            return Ok(());
        }
        loop {
            self.whitespace();
            self.value(depth.saturating_add(1))?;
            self.whitespace();
            if self.eat(b']') {
                return Ok(());
            }
            self.require(b',')?;
        }
    }

    /// An object; with `members`, each member's span goes there (the document's own).
    fn object(&mut self, depth: usize, members: Option<&mut Vec<Member>>) -> Result<(), JsonError> {
        self.enter(depth)?;
        self.require(b'{')?;
        // A nested object's members are only kept to see that their names are unique.
        let mut nested = Vec::new();
        let members = members.unwrap_or(&mut nested);
        let first = members.len();
        self.whitespace();
        if !self.eat(b'}') {
            loop {
                self.whitespace();
                let (start, end, escaped) = self.string()?;
                let name = if escaped {
                    let quoted = self.text.get(start..end).unwrap_or_default();
                    match Json(quoted).as_str() {
                        Some(name) => Name::Unescaped(name.into()),
                        None => return Err(self.error("invalid member name")),
                    }
                } else {
                    Name::At(start.saturating_add(1), end.saturating_sub(1))
                };
                self.whitespace();
                self.require(b':')?;
                self.whitespace();
                let value_start = self.pos;
                self.value(depth.saturating_add(1))?;
                members.push(Member {
                    name,
                    value: (value_start, self.pos),
                });
                self.whitespace();
                if self.eat(b'}') {
                    break;
                }
                self.require(b',')?;
            }
        }
        unique(self.text, members.get(first..).unwrap_or_default())
    }
}

/// Where a string's plain run ends in `rest`: the first `"`, `\\` or control character
/// (below 0x20), or `rest.len()`. Eight bytes a turn (`bytes::find_by_words`).
fn string_stop(rest: &[u8]) -> usize {
    use crate::bytes::{below, equal, find_by_words};
    let marks = |x: u64| equal(x, b'"') | equal(x, b'\\') | below(x, 0x20);
    let stops = |b: &u8| matches!(*b, b'"' | b'\\') || *b < 0x20;
    find_by_words(rest, marks, stops).unwrap_or(rest.len())
}

/// Two names' order, as a call: a sort with the slices' comparison inlined into it is 6 KB
/// more of module for a path (more than 16 members) that a token seldom takes.
#[inline(never)]
fn in_order(a: &&[u8], b: &&[u8]) -> std::cmp::Ordering {
    a.cmp(b)
}

/// Refuses a repeated member name (sorting only a long list: quadratic is cheaper for the
/// handful a JWT has, and a long one must not cost quadratic time).
fn unique(text: &str, members: &[Member]) -> Result<(), JsonError> {
    let duplicate = if members.len() <= 16 {
        members.iter().enumerate().find_map(|(i, m)| {
            let name = m.name(text);
            let later = members.get(i.saturating_add(1)..).unwrap_or_default();
            later
                .iter()
                .any(|other| same(other.name(text), name))
                .then_some(name)
        })
    } else {
        let mut names: Vec<&[u8]> = members.iter().map(|m| m.name(text)).collect();
        names.sort_unstable_by(in_order);
        names
            .windows(2)
            .find(|w| w.first() == w.get(1))
            .and_then(|w| w.first().copied())
    };
    match duplicate {
        Some(name) => Err(JsonError(format!(
            "duplicate member name {:?}",
            String::from_utf8_lossy(name)
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `string_stop` is the first `"`, `\\` or control byte, wherever it falls in or
    /// between its words, whatever the bytes around it (non-ASCII ones too).
    #[test]
    fn a_strings_plain_run_ends_where_byte_by_byte_it_would() {
        let naive = |rest: &[u8]| {
            rest.iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(rest.len())
        };
        for len in 0..40 {
            for at in 0..len {
                for stop in (0u8..0x20).chain([b'"', b'\\']) {
                    for filler in [
                        b'a',
                        0x7f,
                        0x80,
                        0xff,
                        b'!',
                        b'#',
                        b'[',
                        b']',
                        0x21,
                        0x1f + 0x40,
                    ] {
                        let mut text = vec![filler; len];
                        text[at] = stop;
                        assert_eq!(string_stop(&text), at, "{text:?}");
                    }
                }
            }
            assert_eq!(string_stop(&vec![b'x'; len]), len);
        }
        let mut next = crate::testing::xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..20_000 {
            let len = (next() % 50) as usize;
            // Mostly ordinary bytes, some of every kind.
            let text = crate::testing::mostly(&mut next, len, 16, |r| 0x20 + (r % 0x60) as u8);
            assert_eq!(string_stop(&text), naive(&text), "{text:?}");
        }
    }

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

    /// What `parse_strict` reads as a JSON object, or `None`.
    fn strict_object(doc: &[u8], depth: usize) -> Option<Value> {
        parse_strict(doc, depth).ok().filter(Value::is_object)
    }

    /// A value read through [`Json`] as serde_json reads it.
    fn same_reading(json: Json<'_>, value: &Value) {
        let what = format!("{json:?} vs {value:?}");
        assert_eq!(json.as_str().as_deref(), value.as_str(), "{what}");
        assert_eq!(json.as_u64(), value.as_u64(), "{what}");
        assert_eq!(json.as_bool(), value.as_bool(), "{what}");
        assert_eq!(json.is_null(), value.is_null(), "{what}");
        assert_eq!(json.is_string(), value.is_string(), "{what}");
        assert_eq!(json.is_number(), value.is_number(), "{what}");
        assert_eq!(json.is_array(), value.is_array(), "{what}");
        let number = value.as_number().map(ToString::to_string);
        assert_eq!(json.number_text(), number, "{what}");
        match (json.items(), value.as_array()) {
            (Some(items), Some(values)) => {
                assert_eq!(items.len(), values.len(), "{what}");
                for (item, v) in items.into_iter().zip(values) {
                    same_reading(item, v);
                }
            }
            (None, None) => {}
            _ => panic!("array or not: {what}"),
        }
        if let Some(map) = value.as_object() {
            for (name, v) in map {
                same_reading(json.get(name).expect(name), v);
            }
            assert_eq!(json.get("no such member"), None, "{what}");
        } else {
            assert_eq!(json.get("a"), None, "{what}");
        }
    }

    /// `Object::parse` takes what `parse_strict` reads as an object, refuses the rest, and
    /// reads every member as it does.
    fn agrees(doc: &[u8], depth: usize) {
        let text = String::from_utf8_lossy(doc);
        match (
            Object::parse(doc.to_vec(), depth),
            strict_object(doc, depth),
        ) {
            (Ok(object), Some(value)) => {
                assert_eq!(object.to_value(), value, "{text}");
                for (name, v) in value.as_object().into_iter().flatten() {
                    same_reading(object.get(name).expect(name), v);
                }
                assert_eq!(object.get("no such member"), None, "{text}");
            }
            (Err(_), None) => {}
            (Ok(_), None) => panic!("taken, but parse_strict refuses it: {text}"),
            (Err(e), Some(_)) => panic!("refused ({e}), but parse_strict takes it: {text}"),
        }
    }

    #[test]
    fn registered_claims_are_found_however_spelt_and_wherever_they_stand() {
        // Escaped, behind 300 other members, and absent.
        let mut members: Vec<String> = (0..300).map(|i| format!("\"m{i}\":{i}")).collect();
        members.push(r#""\u0069ss":"https://idp""#.into());
        members.push(r#""nbf":5"#.into());
        let doc = format!("{{{}}}", members.join(","));
        agrees(doc.as_bytes(), 8);
        let object = Object::parse(doc.into_bytes(), 8).unwrap();
        let iss = object.get("iss").and_then(Json::as_str);
        assert_eq!(iss.as_deref(), Some("https://idp"));
        assert_eq!(object.get("nbf").and_then(Json::as_u64), Some(5));
        assert_eq!(object.get("m299").and_then(Json::as_u64), Some(299));
        assert_eq!(object.get("exp"), None);
        assert_eq!(object.get("client_id"), None);
        // Two spellings of one registered name are one name twice.
        assert!(Object::parse(br#"{"exp":1,"\u0065xp":2}"#.to_vec(), 8).is_err());
    }

    #[test]
    fn an_object_is_read_as_parse_strict_reads_it() {
        let docs: &[&str] = &[
            "{}",
            " { } ",
            "\t{\"a\" :\r\n1 }\n",
            r#"{"iss":"https://idp","exp":1800000000,"aud":["a","b"],"scope":"x y","n":null,"t":true,"f":false}"#,
            r#"{"a":"\u0041\n\"\\\/","b":"é ü","c":"\ud83d\ude00"}"#,
            r#"{"\u0061":1,"b":2}"#,
            r#"{"\u0061":1,"a":2}"#,
            r#"{"a":1,"a":1}"#,
            r#"{"a":{"b":1,"b":2}}"#,
            r#"{"a":[{"x":1},{"x":1,"x":2}]}"#,
            r#"{"a":{"b":{"c":[1,2,{"d":"e"}]}},"r":{"roles":["x"]}}"#,
            r#"{"a":-0,"b":0,"c":-1,"d":1.5e3,"e":1E-2,"f":123456789012345678901234567890}"#,
            r#"{"a":18446744073709551615,"b":18446744073709551616,"c":9223372036854775808}"#,
            r#"{"a":9999999999999999999,"b":1000000000000000000,"c":0,"d":1795943047}"#,
            r#"{"a":1e400}"#,
            r#"{"a":-1e400}"#,
            r#"{"a":1e-400}"#,
            r#"{"a":0.1,"b":2.50,"c":1e5,"d":100000000000000000000000000000000000000000e-30}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":+1}"#,
            r#"{"a":-}"#,
            r#"{"a":1e}"#,
            r#"{"a":1e+}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{"a":truex}"#,
            r#"{"a":true}x"#,
            r#"{"a":1,}"#,
            r#"{,}"#,
            r#"{"a"}"#,
            r#"{"a":}"#,
            r#"{"a" 1}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":[,1]}"#,
            r#"{"a":[1 2]}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":"\ud800\u0041"}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":"\u00e9\u00E9"}"#,
            "{\"a\":\"x\u{1}y\"}",
            "{\"a\":\"x\ty\"}",
            "{\"a\":\"\\",
            "{\"a\":\"",
            "{\"a\":1",
            "{\"a\"",
            "{",
            "",
            " ",
            "[1]",
            "\"x\"",
            "1",
            "null",
            "{} {}",
            "{}}",
            "{\"a\":1}\u{0}",
        ];
        for doc in docs {
            agrees(doc.as_bytes(), 8);
        }
        agrees(b"{\"a\":\"\xe9\"}", 8);
        agrees(b"{\"\xff\":1}", 8);
        // More names than the quadratic check takes: the sorting one finds the repeat.
        let names: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let many = format!("{{{}}}", names.join(","));
        agrees(many.as_bytes(), 8);
        let repeated = format!("{{{},\"k7\":0}}", names.join(","));
        agrees(repeated.as_bytes(), 8);
        assert!(Object::parse(repeated.into_bytes(), 8).is_err());
    }

    #[test]
    fn nesting_is_refused_where_parse_strict_refuses_it() {
        let nested = |levels: usize| {
            // The object itself is the first level.
            format!(
                "{{\"a\":{}1{}}}",
                "[".repeat(levels - 1),
                "]".repeat(levels - 1)
            )
        };
        for max_depth in [4, 5, 32, 126, 127, 128] {
            for levels in [1, 2, 3, 4, 5, 6, 31, 32, 33, 125, 126, 127, 128, 129, 200] {
                agrees(nested(levels).as_bytes(), max_depth);
            }
        }
        assert!(Object::parse(nested(4).into_bytes(), 4).is_ok());
        assert!(Object::parse(nested(5).into_bytes(), 4).is_err());
        assert!(Object::parse(nested(127).into_bytes(), 128).is_ok());
        assert!(Object::parse(nested(128).into_bytes(), 128).is_err());
    }

    /// Documents built at random from JSON's pieces (most of them broken): the verdict and
    /// the reading are parse_strict's, every time.
    #[test]
    fn random_documents_are_read_as_parse_strict_reads_them() {
        let pieces = [
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            " ",
            "\"a\"",
            "\"b\"",
            "\"\\u0061\"",
            "\"\\ud83d\"",
            "\"\\ude00\"",
            "\"é\"",
            "1",
            "0",
            "-",
            ".",
            "5",
            "e",
            "E",
            "+",
            "true",
            "null",
            "false",
            "\"x y\"",
            "\"\\\"\"",
            "\n",
            "1e999",
            "[]",
            "{}",
            "\"a\":",
            "\"b\":",
        ];
        let mut rng = crate::jwt::fixtures::Rng(0x5eed_1234_abcd_0001);
        let mut taken = 0;
        for _ in 0..40_000 {
            let mut doc = String::from("{");
            for _ in 0..rng.below(12) {
                let piece: &&str = rng.pick(&pieces);
                doc.push_str(piece);
            }
            if rng.below(4) > 0 {
                doc.push('}');
            }
            agrees(doc.as_bytes(), 1 + rng.below(5));
            taken += usize::from(strict_object(doc.as_bytes(), 8).is_some());
        }
        // Enough of them are objects for the readings to have been compared.
        assert!(taken > 1_000, "{taken}");
    }

    #[test]
    fn refuses_invalid_utf8_and_trailing_data() {
        assert!(parse_strict(b"\"\xe9\"", 4).is_err());
        assert!(parse_strict(b"{} {}", 4).is_err());
        assert!(parse_strict(b"", 4).is_err());
    }
}
