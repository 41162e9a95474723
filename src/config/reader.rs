//! Reading a JSON document field by field while remembering where we are, so that every
//! problem is reported with its JSON path and all problems are reported at once.

use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fmt;

/// One problem in the configuration: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Errors (the configuration is refused) and warnings (it loads, but something is ignored).
#[derive(Debug, Default)]
pub struct Problems {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Problems {
    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(Problem {
            path: path.to_owned(),
            message: message.into(),
        });
    }
    pub fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(Problem {
            path: path.to_owned(),
            message: message.into(),
        });
    }
}

/// The path of member `key` below `parent`, in JSONPath notation.
pub fn member(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !key.bytes().next().is_some_and(|b| b.is_ascii_digit());
    if plain {
        format!("{parent}.{key}")
    } else {
        format!("{parent}[{}]", Value::String(key.to_owned()))
    }
}

/// The path of element `index` below `parent`.
pub fn element(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The members of one JSON object, handed out by name; the members nobody asked for are the
/// unknown ones.
pub struct Fields<'a> {
    pub path: String,
    map: &'a Map<String, Value>,
    asked: BTreeSet<&'a str>,
}

impl<'a> Fields<'a> {
    /// `value` as an object, or an error at `path`.
    pub fn of(p: &mut Problems, path: &str, value: &'a Value) -> Option<Fields<'a>> {
        match value {
            Value::Object(map) => Some(Fields {
                path: path.to_owned(),
                map,
                asked: BTreeSet::new(),
            }),
            other => {
                p.error(path, format!("must be an object, not {}", type_name(other)));
                None
            }
        }
    }

    /// The member `key`, if present and not null, with its path.
    pub fn get(&mut self, key: &'static str) -> Option<(String, &'a Value)> {
        let (k, v) = self.map.get_key_value(key)?;
        self.asked.insert(k.as_str());
        if v.is_null() {
            return None;
        }
        Some((member(&self.path, key), v))
    }

    /// The member `key`, which must be present.
    pub fn require(&mut self, p: &mut Problems, key: &'static str) -> Option<(String, &'a Value)> {
        let found = self.get(key);
        if found.is_none() {
            p.error(&member(&self.path, key), "is required");
        }
        found
    }

    /// Marks members that are accepted and deliberately not read (metadata).
    pub fn ignore(&mut self, keys: &[&'static str]) {
        for key in keys {
            if let Some((k, _)) = self.map.get_key_value(*key) {
                self.asked.insert(k.as_str());
            }
        }
    }

    /// Members nobody asked for, with their paths.
    pub fn unknown(&self) -> Vec<String> {
        self.map
            .keys()
            .filter(|k| !self.asked.contains(k.as_str()))
            .map(|k| member(&self.path, k))
            .collect()
    }

    /// Every unknown member is an error.
    pub fn deny_unknown(&self, p: &mut Problems) {
        for path in self.unknown() {
            p.error(&path, "unknown field");
        }
    }

    pub fn str(&mut self, p: &mut Problems, key: &'static str) -> Option<String> {
        let (path, v) = self.get(key)?;
        string(p, &path, v)
    }

    pub fn required_str(&mut self, p: &mut Problems, key: &'static str) -> Option<String> {
        let (path, v) = self.require(p, key)?;
        string(p, &path, v)
    }

    pub fn bool(&mut self, p: &mut Problems, key: &'static str) -> Option<bool> {
        let (path, v) = self.get(key)?;
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                p.error(
                    &path,
                    format!("must be a boolean, not {}", type_name(other)),
                );
                None
            }
        }
    }

    /// A whole number in `min..=max`.
    pub fn uint(&mut self, p: &mut Problems, key: &'static str, min: u64, max: u64) -> Option<u64> {
        let (path, v) = self.get(key)?;
        match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                p.error(&path, format!("{n} is out of range {min}..={max}"));
                None
            }
            None => {
                p.error(
                    &path,
                    format!("must be a whole number, not {}", describe(v)),
                );
                None
            }
        }
    }

    /// An array of non-empty strings.
    pub fn str_list(&mut self, p: &mut Problems, key: &'static str) -> Option<Vec<String>> {
        let (path, v) = self.get(key)?;
        string_list(p, &path, v)
    }

    pub fn required_str_list(
        &mut self,
        p: &mut Problems,
        key: &'static str,
    ) -> Option<Vec<String>> {
        let (path, v) = self.require(p, key)?;
        string_list(p, &path, v)
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Number(n) => format!("{n}"),
        other => type_name(other).to_owned(),
    }
}

/// A non-empty string without control characters.
pub fn string(p: &mut Problems, path: &str, v: &Value) -> Option<String> {
    match v {
        Value::String(s) if s.is_empty() => {
            p.error(path, "must not be empty");
            None
        }
        Value::String(s) if s.chars().any(char::is_control) => {
            p.error(path, "must not contain control characters");
            None
        }
        Value::String(s) => Some(s.clone()),
        other => {
            p.error(path, format!("must be a string, not {}", type_name(other)));
            None
        }
    }
}

pub fn string_list(p: &mut Problems, path: &str, v: &Value) -> Option<Vec<String>> {
    let Value::Array(items) = v else {
        p.error(
            path,
            format!("must be an array of strings, not {}", type_name(v)),
        );
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match string(p, &element(path, i), item) {
            Some(s) => out.push(s),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_quote_members_that_are_not_identifiers() {
        assert_eq!(member("$", "routes"), "$.routes");
        assert_eq!(
            member("$.configs", "openid-connect"),
            "$.configs[\"openid-connect\"]"
        );
        assert_eq!(element("$.strategies", 2), "$.strategies[2]");
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let v = json!({"a": 1, "b": [1, "x"], "c": "", "zz": true});
        let mut p = Problems::default();
        let mut f = Fields::of(&mut p, "$", &v).unwrap();
        assert_eq!(f.str(&mut p, "a"), None);
        assert_eq!(f.str_list(&mut p, "b"), None);
        assert_eq!(f.str(&mut p, "c"), None);
        assert_eq!(f.required_str(&mut p, "d"), None);
        f.deny_unknown(&mut p);
        let got: Vec<String> = p.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            got,
            vec![
                "$.a: must be a string, not a number",
                "$.b[0]: must be a string, not a number",
                "$.c: must not be empty",
                "$.d: is required",
                "$.zz: unknown field",
            ]
        );
    }
}
