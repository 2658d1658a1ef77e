//! A strict reader over `serde_json::Value` that knows where it is.
//!
//! Every request field is read through [`Obj`], so every rejection names the field by its JSON
//! pointer, unknown fields are refused (a typo like `kernal_size` must not silently become a
//! default), and numbers are range-checked before any arithmetic touches them.
use super::error::{child, SpecError, SpecResult};
use serde_json::{Map, Value};
use std::cell::RefCell;

pub fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub struct Obj<'a> {
    map: &'a Map<String, Value>,
    pub pointer: String,
    seen: RefCell<Vec<&'static str>>,
}

impl<'a> Obj<'a> {
    pub fn new(value: &'a Value, pointer: &str) -> SpecResult<Self> {
        match value {
            Value::Object(map) => Ok(Obj {
                map,
                pointer: pointer.to_string(),
                seen: RefCell::new(Vec::new()),
            }),
            other => Err(SpecError::invalid(pointer, format!("expected an object, got {}", describe(other)))),
        }
    }

    pub fn at(&self, key: &str) -> String {
        child(&self.pointer, key)
    }

    /// The raw value of `key`, `None` when absent or null.
    pub fn raw(&self, key: &'static str) -> Option<&'a Value> {
        self.seen.borrow_mut().push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// "is required", pointing out a present key that looks like a misspelling of it.
    pub fn missing(&self, key: &str) -> SpecError {
        let typo = self.map.keys().find(|k| k.as_str() != key && edit_distance(k, key) <= 2);
        match typo {
            Some(k) => SpecError::invalid(
                self.at(key),
                format!("is required (the request has {k:?}: a misspelling of {key:?}?)"),
            ),
            None => SpecError::invalid(self.at(key), "is required"),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    pub fn u64_in(&self, key: &'static str, default: Option<u64>, min: u64, max: u64) -> SpecResult<u64> {
        match self.raw(key) {
            None => default.ok_or_else(|| self.missing(key)),
            Some(v) => uint(v, &self.at(key), min, max),
        }
    }

    pub fn opt_u64(&self, key: &'static str, min: u64, max: u64) -> SpecResult<Option<u64>> {
        self.raw(key).map(|v| uint(v, &self.at(key), min, max)).transpose()
    }

    /// An int or a two-element `[h, w]` list, as `torch.nn` accepts for sizes.
    pub fn pair(&self, key: &'static str, default: Option<[u64; 2]>, min: u64, max: u64) -> SpecResult<[u64; 2]> {
        match self.raw(key) {
            None => default.ok_or_else(|| self.missing(key)),
            Some(v) => pair(v, &self.at(key), min, max),
        }
    }

    /// [`Obj::pair`] for a 2-D layer; for a 1-D one (`one_d`) an int or `[l]` on the length
    /// axis, the height axis being 1 (0 for a `min` of 0: padding).
    pub fn axes(&self, key: &'static str, default: Option<[u64; 2]>, min: u64, max: u64, one_d: bool) -> SpecResult<[u64; 2]> {
        self.sizes(key, default, min, max, one_d)
    }

    /// An int or `N` ints per axis (`[h, w]`, a volume layer's `[d, h, w]`); for a 1-D layer
    /// (`one_d`, N = 2) an int or `[l]` on the length axis, the height axis being 1 (0 for a
    /// `min` of 0: padding).
    pub fn sizes<const N: usize>(
        &self,
        key: &'static str,
        default: Option<[u64; N]>,
        min: u64,
        max: u64,
        one_d: bool,
    ) -> SpecResult<[u64; N]> {
        match (self.raw(key), one_d) {
            (Some(v), true) => {
                let mut out = [min.min(1); N];
                out[N - 1] = length(v, &self.at(key), min, max)?;
                Ok(out)
            }
            (Some(v), false) => sizes(v, &self.at(key), min, max),
            (None, _) => default.ok_or_else(|| self.missing(key)),
        }
    }

    pub fn bool(&self, key: &'static str, default: bool) -> SpecResult<bool> {
        match self.raw(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(SpecError::invalid(
                self.at(key),
                format!("expected true or false, got {}", describe(other)),
            )),
        }
    }

    pub fn f64_in(&self, key: &'static str, default: Option<f64>, min: f64, max: f64) -> SpecResult<f64> {
        match self.raw(key) {
            None => default.ok_or_else(|| self.missing(key)),
            Some(v) => float(v, &self.at(key), min, max),
        }
    }

    pub fn opt_str(&self, key: &'static str) -> SpecResult<Option<&'a str>> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(SpecError::invalid(
                self.at(key),
                format!("expected a string, got {}", describe(other)),
            )),
        }
    }

    /// A free-form string with a default (validated by the caller).
    pub fn str_or(&self, key: &'static str, default: &'a str) -> SpecResult<&'a str> {
        Ok(self.opt_str(key)?.unwrap_or(default))
    }

    /// A string that must be one of `allowed`; returns the matching entry.
    pub fn choice(&self, key: &'static str, default: &'static str, allowed: &[&'static str]) -> SpecResult<&'static str> {
        match self.opt_str(key)? {
            None => Ok(default),
            Some(s) => allowed
                .iter()
                .copied()
                .find(|a| *a == s)
                .ok_or_else(|| SpecError::invalid(self.at(key), format!("unknown value {s:?}; expected one of {}", allowed.join(", ")))),
        }
    }

    pub fn array(&self, key: &'static str) -> SpecResult<Option<&'a Vec<Value>>> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(other) => Err(SpecError::invalid(
                self.at(key),
                format!("expected an array, got {}", describe(other)),
            )),
        }
    }

    /// The keys read so far, in order (tests bind the typed wire form in `ops.rs` to them).
    pub fn consulted(&self) -> Vec<&'static str> {
        self.seen.borrow().clone()
    }

    /// Refuses any key that no reader asked for: catches typos and fields of other layer types.
    pub fn finish(&self, allowed_hint: &str) -> SpecResult<()> {
        let seen = self.seen.borrow();
        for key in self.map.keys() {
            if !seen.contains(&key.as_str()) {
                return Err(SpecError::invalid(
                    self.at(key),
                    format!(
                        "unknown field {key:?}{}",
                        if allowed_hint.is_empty() {
                            String::new()
                        } else {
                            format!("; allowed here: {allowed_hint}")
                        }
                    ),
                ));
            }
        }
        Ok(())
    }
}

pub fn uint(v: &Value, pointer: &str, min: u64, max: u64) -> SpecResult<u64> {
    let n = match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
                .map(|f| f as u64)
        }),
        _ => None,
    };
    match n {
        Some(n) if n >= min && n <= max => Ok(n),
        Some(n) if n < min => Err(SpecError::invalid(pointer, format!("must be at least {min}, got {n}"))),
        Some(n) => Err(SpecError::invalid(pointer, format!("must be at most {max}, got {n}"))),
        None => Err(SpecError::invalid(
            pointer,
            format!("expected a whole number from {min} to {max}, got {}", show(v)),
        )),
    }
}

pub fn float(v: &Value, pointer: &str, min: f64, max: f64) -> SpecResult<f64> {
    match v.as_f64() {
        Some(f) if f.is_finite() && f >= min && f <= max => Ok(f),
        Some(f) if f.is_finite() => Err(SpecError::invalid(pointer, format!("must be between {min} and {max}, got {f}"))),
        _ => Err(SpecError::invalid(pointer, format!("expected a finite number, got {}", show(v)))),
    }
}

pub fn pair(v: &Value, pointer: &str, min: u64, max: u64) -> SpecResult<[u64; 2]> {
    sizes(v, pointer, min, max)
}

/// An int (every axis) or a list of `N` ints: `[h, w]`, or a volume layer's `[d, h, w]`.
pub fn sizes<const N: usize>(v: &Value, pointer: &str, min: u64, max: u64) -> SpecResult<[u64; N]> {
    match v {
        Value::Array(items) if items.len() == N => {
            let mut out = [0; N];
            for (i, item) in items.iter().enumerate() {
                out[i] = uint(item, &child(pointer, i), min, max)?;
            }
            Ok(out)
        }
        Value::Array(items) => Err(SpecError::invalid(
            pointer,
            format!(
                "expected an int or {}, got a list of {} items",
                if N == 3 { "[d, h, w]" } else { "[h, w]" },
                items.len()
            ),
        )),
        other => Ok([uint(other, pointer, min, max)?; N]),
    }
}

/// A 1-D layer's length argument: an int or a one-element list, as `torch.nn.Conv1d` accepts.
pub fn length(v: &Value, pointer: &str, min: u64, max: u64) -> SpecResult<u64> {
    match v {
        Value::Array(items) if items.len() == 1 => uint(&items[0], &child(pointer, 0), min, max),
        Value::Array(items) => Err(SpecError::invalid(
            pointer,
            format!("expected an int or [l] (a 1-D layer), got a list of {} items", items.len()),
        )),
        other => uint(other, pointer, min, max),
    }
}

/// A short rendering of a value for error messages, never echoing megabytes back.
pub fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!("{}...", &s[..s.char_indices().nth(37).map(|(i, _)| i).unwrap_or(s.len())])
    } else {
        s
    }
}

pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
