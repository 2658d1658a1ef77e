//! Typed request bodies: a body is deserialized into its serde type through
//! `serde_path_to_error`, so a rejection still names the field by its JSON pointer, an unknown
//! key (every request type is `deny_unknown_fields`) gets a "did you mean" hint, and serde's
//! wording is put into the API's own ("expected a number, got a string"). Range checks that
//! serde cannot express are each type's `check`, run before any arithmetic.
use crate::spec::error::child;
use crate::spec::json::edit_distance;
use crate::spec::{SpecError, SpecResult};
use serde::de::{self, DeserializeOwned};
use serde::Deserialize;
use serde_json::Value;

/// A number checked against its range before any arithmetic touches it.
pub fn within(v: f64, pointer: &str, min: f64, max: f64) -> SpecResult<f64> {
    if v >= min && v <= max {
        Ok(v)
    } else {
        Err(SpecError::invalid(pointer, format!("must be between {min} and {max}, got {v}")))
    }
}

/// A whole number checked against its range.
pub fn within_u64(v: u64, pointer: &str, min: u64, max: u64) -> SpecResult<u64> {
    if v >= min && v <= max {
        Ok(v)
    } else {
        Err(SpecError::invalid(pointer, format!("must be from {min} to {max}, got {v}")))
    }
}

/// A float that is a whole number JSON could have written as an integer (`3.0`), exactly.
fn whole(n: &serde_json::Number) -> Option<serde_json::Number> {
    let f = n.as_f64().filter(|_| n.is_f64())?;
    (f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0).then(|| {
        if f < 0.0 {
            serde_json::Number::from(f as i64)
        } else {
            serde_json::Number::from(f as u64)
        }
    })
}

/// `3.0` becomes `3`: a whole number is accepted where an integer is expected, as the hand-read
/// fields always accepted it (a float field reads the integer back exactly). In place and
/// iterative: nesting is bounded by the body extractor, but nothing here recurses.
fn integral(v: &mut Value) {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Number(n) => {
                if let Some(w) = whole(n) {
                    *n = w;
                }
            }
            Value::Array(a) => stack.extend(a.iter_mut()),
            Value::Object(o) => stack.extend(o.values_mut()),
            _ => {}
        }
    }
}

/// Deserializes `body` (found at `at` in the request) into `T`; it takes the body, so that
/// whole floats become integers in place, without a copy of a large body.
pub fn read<T: DeserializeOwned>(mut body: Value, at: &str) -> SpecResult<T> {
    integral(&mut body);
    serde_path_to_error::deserialize(&body).map_err(|e| {
        let mut pointer = at.to_string();
        for segment in e.path().iter() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => pointer = child(&pointer, index),
                serde_path_to_error::Segment::Map { key } => pointer = child(&pointer, key),
                _ => {}
            }
        }
        reword(&e.into_inner().to_string(), pointer)
    })
}

/// A request field that takes several JSON kinds (a number or a list, a list or an object of
/// named tensors, `true` or an object of options). serde's untagged enums would say only "data
/// did not match any variant" at the field; reading by kind keeps the pointer of the very
/// element that is wrong (`/theta0/w/3`). Each method refuses its kind unless overridden.
pub trait ByKind: Sized {
    /// What the field takes, for the message when it gets another kind.
    const EXPECTING: &'static str;
    fn from_number<E: de::Error>(v: f64) -> Result<Self, E> {
        Err(E::invalid_type(number(v), &Self::EXPECTING))
    }
    fn from_bool<E: de::Error>(v: bool) -> Result<Self, E> {
        Err(E::invalid_type(de::Unexpected::Bool(v), &Self::EXPECTING))
    }
    fn from_str<E: de::Error>(v: &str) -> Result<Self, E> {
        Err(E::invalid_type(de::Unexpected::Str(v), &Self::EXPECTING))
    }
    fn from_seq<'de, A: de::SeqAccess<'de>>(_seq: A) -> Result<Self, A::Error> {
        Err(de::Error::invalid_type(de::Unexpected::Seq, &Self::EXPECTING))
    }
    fn from_map<'de, A: de::MapAccess<'de>>(_map: A) -> Result<Self, A::Error> {
        Err(de::Error::invalid_type(de::Unexpected::Map, &Self::EXPECTING))
    }
}

/// A JSON number as serde names it in a message: `-1`, not `-1.0`, when it is whole.
pub fn number(v: f64) -> de::Unexpected<'static> {
    if v.fract() == 0.0 && v.abs() < 9e15 {
        de::Unexpected::Signed(v as i64)
    } else {
        de::Unexpected::Float(v)
    }
}

/// Deserializes a [`ByKind`] type (its `Deserialize` impl is this one line).
pub fn by_kind<'de, D: de::Deserializer<'de>, T: ByKind>(d: D) -> Result<T, D::Error> {
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: ByKind> de::Visitor<'de> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(T::EXPECTING)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
            T::from_number(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            T::from_number(v as f64)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            T::from_number(v as f64)
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
            T::from_bool(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            T::from_str(v)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
            T::from_seq(seq)
        }
        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::from_map(map)
        }
    }
    d.deserialize_any(V(std::marker::PhantomData))
}

/// `impl Deserialize` for [`ByKind`] types: `deserialize_by_kind!(A, B);`.
macro_rules! deserialize_by_kind {
    ($($t:ty),*) => {$(
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::api::typed::by_kind(d)
            }
        }
    )*};
}
pub(crate) use deserialize_by_kind;

/// A list read from a [`ByKind::from_seq`] access, element paths kept.
pub fn seq_of<'de, A: de::SeqAccess<'de>, T: Deserialize<'de>>(seq: A) -> Result<Vec<T>, A::Error> {
    Vec::<T>::deserialize(de::value::SeqAccessDeserializer::new(seq))
}

/// A struct read from a [`ByKind::from_map`] access, field paths kept.
pub fn map_of<'de, A: de::MapAccess<'de>, T: Deserialize<'de>>(map: A) -> Result<T, A::Error> {
    T::deserialize(de::value::MapAccessDeserializer::new(map))
}

/// The words between backticks in serde's messages (`unknown field `x`, expected one of `a`, `b``).
fn quoted(message: &str) -> Vec<&str> {
    message.split('`').skip(1).step_by(2).collect()
}

/// Serde's message in the API's words, at the right pointer.
fn reword(message: &str, pointer: String) -> SpecError {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        // The path already ends at the key.
        let names = quoted(rest);
        let key = names.first().copied().unwrap_or("");
        let allowed = &names[1.min(names.len())..];
        let hint = allowed
            .iter()
            .filter(|a| edit_distance(key, a) <= 2)
            .min_by_key(|a| edit_distance(key, a))
            .map(|a| format!(" (did you mean {a:?}?)"))
            .unwrap_or_default();
        let list = if allowed.is_empty() {
            String::from("; this object takes no fields")
        } else {
            format!("; allowed here: {}", allowed.join(", "))
        };
        return SpecError::invalid(pointer, format!("unknown field {:?}{hint}{list}", short(key)));
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        let key = quoted(rest).first().copied().unwrap_or("").to_string();
        return SpecError::invalid(child(&pointer, key), "is required");
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let names = quoted(rest);
        let got = names.first().copied().unwrap_or("");
        return SpecError::invalid(
            pointer,
            format!(
                "unknown value {:?}; expected one of {}",
                short(got),
                names[1.min(names.len())..].join(", ")
            ),
        );
    }
    let mut text = message.to_string();
    if let Some(rest) = text.strip_prefix("invalid type: ") {
        // "string \"x\", expected f64" -> "expected a number, got a string (\"x\")"
        if let Some((got, want)) = rest.split_once(", expected ") {
            text = format!("expected {}, got {}", plain(want), got_as_words(got));
        }
    } else if let Some(rest) = text.strip_prefix("invalid value: ") {
        if let Some((got, want)) = rest.split_once(", expected ") {
            text = format!("expected {}, got {}", plain(want), got_as_words(got));
        }
    }
    SpecError::invalid(pointer, text)
}

/// serde's name of an expected type in plain words.
fn plain(want: &str) -> String {
    match want {
        "f64" | "f32" => "a number".into(),
        "u64" | "u32" | "usize" => "a whole number".into(),
        "i64" | "i32" => "an integer".into(),
        "a sequence" => "a list".into(),
        "a map" => "an object".into(),
        "struct variant" => "an object".into(),
        w if w.starts_with("struct ") => "an object".into(),
        w => w.to_string(),
    }
}

/// serde's description of the value it got (`string "x"`, `integer `-1``, `map`) in words.
fn got_as_words(got: &str) -> String {
    let got = got.replace('`', "");
    for (prefix, words) in [
        ("string ", "a string "),
        ("integer ", "the integer "),
        ("floating point ", "the number "),
        ("boolean ", "the boolean "),
    ] {
        if let Some(rest) = got.strip_prefix(prefix) {
            return format!("{words}{}", short(rest));
        }
    }
    match got.as_str() {
        "map" => "an object".into(),
        "sequence" => "a list".into(),
        "null" | "unit value" => "null".into(),
        other => other.into(),
    }
}

/// At most 40 characters of a quoted value: messages never echo megabytes back.
fn short(s: &str) -> String {
    match s.char_indices().nth(37) {
        Some((i, _)) if s.len() > 40 => format!("{}...", &s[..i]),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        alpha: f64,
        #[serde(default)]
        steps: Option<u64>,
        #[serde(default)]
        kind: Option<Kind>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        Quadratic,
        Rosenbrock,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        items: Vec<Inner>,
    }

    fn err(v: Value) -> SpecError {
        read::<Outer>(v, "/req").unwrap_err()
    }

    #[test]
    fn rejections_name_the_field_and_say_why_in_plain_words() {
        let e = err(json!({"items": [{"alpha": 1}, {"alpah": 1}]}));
        assert_eq!(e.pointer, "/req/items/1/alpah");
        assert_eq!(
            e.message,
            "unknown field \"alpah\" (did you mean \"alpha\"?); allowed here: alpha, steps, kind"
        );
        let e = err(json!({"items": [{"steps": 3}]}));
        assert_eq!((e.pointer.as_str(), e.message.as_str()), ("/req/items/0/alpha", "is required"));
        let e = err(json!({"items": [{"alpha": "x"}]}));
        assert_eq!(
            (e.pointer.as_str(), e.message.as_str()),
            ("/req/items/0/alpha", "expected a number, got a string \"x\"")
        );
        // a whole float is an integer, as the hand-read fields always took it; a fraction is not
        let ok: Outer = read(json!({"items": [{"alpha": 1.0, "steps": 3.0}]}), "").unwrap();
        assert_eq!((ok.items[0].alpha, ok.items[0].steps), (1.0, Some(3)));
        let e = err(json!({"items": [{"alpha": 1, "steps": 2.5}]}));
        assert_eq!(
            (e.pointer.as_str(), e.message.as_str()),
            ("/req/items/0/steps", "expected a whole number, got the number 2.5")
        );
        let e = err(json!({"items": [{"alpha": 1, "steps": -1}]}));
        assert_eq!(
            (e.pointer.as_str(), e.message.as_str()),
            ("/req/items/0/steps", "expected a whole number, got the integer -1")
        );
        let e = err(json!({"items": [{"alpha": 1, "kind": "cubic"}]}));
        assert_eq!(
            (e.pointer.as_str(), e.message.as_str()),
            (
                "/req/items/0/kind",
                "unknown value \"cubic\"; expected one of quadratic, rosenbrock"
            )
        );
        let e = err(json!({"items": {"a": 1}}));
        assert_eq!(
            (e.pointer.as_str(), e.message.as_str()),
            ("/req/items", "expected a list, got an object")
        );
        let e = err(json!({"items": [{"alpha": 1, "kind": "x".repeat(1000)}]}));
        assert!(e.message.len() < 200, "{}", e.message);
        // Keys with '/' and '~' are escaped as RFC 6901 says.
        let e = err(json!({"items": [{"a/b~": 1}]}));
        assert_eq!(e.pointer, "/req/items/0/a~1b~0");
    }
}
