//! Reading students' answers as they write them, and judging them: pure text and arithmetic.
//!
//! Numbers: `1089952`, `1,089,952`, `1 089 952`, `1_089_952`, `1.089952e6`, `1.09M`, `3.2 x 10^7`,
//! `-0.119`. Affine ranges: `4i-9 <= m <= 4i+6` (also with `≤`, `<`, spaces, `*`), `[4i-9, 4i+6]`,
//! `4i-9 .. 4i+6`, or `{scale, lo, hi}`.

/// A parsed number, with how it was written (so feedback can say "rounded").
#[derive(Clone, Debug, PartialEq)]
pub struct Number {
    pub value: f64,
    /// Written with a K/M/G suffix or in scientific notation: may be rounded on purpose.
    pub abbreviated: bool,
}

pub const NUMBER_FORMS: &str = "a number such as 1089952, 1,089,952, 1.089952e6 or 1.09M";
pub const RANGE_FORMS: &str = "a range such as \"4i-9 <= m <= 4i+6\", \"[4i-9, 4i+6]\" or {\"scale\": 4, \"lo\": -9, \"hi\": 6}";

pub fn parse_number(v: &serde_json::Value) -> Result<Number, String> {
    match v {
        serde_json::Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(|value| Number { value, abbreviated: false })
            .ok_or_else(|| "not a finite number".into()),
        serde_json::Value::String(s) => parse_number_text(s),
        other => Err(format!("expected {NUMBER_FORMS}, got {}", crate::spec::json::describe(other))),
    }
}

pub fn parse_number_text(raw: &str) -> Result<Number, String> {
    if raw.len() > 100 {
        return Err(format!("the answer is {} characters long; expected {NUMBER_FORMS}", raw.len()));
    }
    let s: String = raw
        .trim()
        .chars()
        .filter(|c| !matches!(c, ',' | '_' | '\'' | ' ' | '\u{2009}' | '\u{202f}' | '\u{a0}'))
        .collect();
    let s = s.replace('−', "-").replace('×', "x").replace("*10^", "x10^");
    let bad = || format!("could not read {raw:?} as {NUMBER_FORMS}");
    if s.is_empty() {
        return Err(bad());
    }
    let (mantissa, multiplier, abbreviated) = if let Some((m, e)) = s.split_once("x10^") {
        let e: i32 = e.trim_start_matches('+').parse().map_err(|_| bad())?;
        (m.to_string(), 10f64.powi(e), true)
    } else {
        let last = s.chars().last().unwrap();
        match last {
            'k' | 'K' => (s[..s.len() - 1].to_string(), 1e3, true),
            'M' => (s[..s.len() - 1].to_string(), 1e6, true),
            'G' | 'B' | 'b' => (s[..s.len() - 1].to_string(), 1e9, true),
            'T' => (s[..s.len() - 1].to_string(), 1e12, true),
            _ => (s.clone(), 1.0, s.contains(['e', 'E'])),
        }
    };
    if mantissa.is_empty()
        || !mantissa
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
    {
        return Err(bad());
    }
    let value: f64 = mantissa.parse().map_err(|_| bad())?;
    let value = value * multiplier;
    if !value.is_finite() {
        return Err(bad());
    }
    Ok(Number { value, abbreviated })
}

/// `scale*index + lo <= var <= scale*index + hi`, with the letters the student used.
#[derive(Clone, Debug, PartialEq)]
pub struct Range {
    pub scale: i64,
    pub lo: i64,
    pub hi: i64,
    /// The output index letter (`i`, `j`), if written.
    pub index: Option<char>,
    /// The input variable letter (`m`, `n`), if written.
    pub var: Option<char>,
}

/// `4i-9` -> (4, -9, Some('i')); `i+2` -> (1, 2, Some('i')); `-3` -> (0, -3, None).
fn linear(expr: &str) -> Option<(i64, i64, Option<char>)> {
    let e: String = expr.chars().filter(|c| !c.is_whitespace() && *c != '*').collect();
    let e = e.replace('−', "-");
    if e.is_empty() {
        return None;
    }
    let letter_pos = e.find(|c: char| c.is_ascii_alphabetic());
    match letter_pos {
        None => e.parse::<i64>().ok().map(|c| (0, c, None)),
        Some(p) => {
            let letter = e[p..].chars().next()?;
            let coef = match &e[..p] {
                "" | "+" => 1,
                "-" => -1,
                c => c.parse::<i64>().ok()?,
            };
            let rest = &e[p + letter.len_utf8()..];
            let constant = if rest.is_empty() {
                0
            } else {
                rest.trim_start_matches('+').parse::<i64>().ok()?
            };
            if rest.starts_with("++") || rest.starts_with("+-") {
                return None;
            }
            Some((coef, constant, Some(letter)))
        }
    }
}

pub fn parse_range(v: &serde_json::Value) -> Result<Range, String> {
    match v {
        serde_json::Value::Object(o) => {
            let get = |k: &str| {
                o.get(k)
                    .and_then(|x| x.as_i64())
                    .ok_or_else(|| format!("expected integer \"scale\", \"lo\" and \"hi\"; {RANGE_FORMS}"))
            };
            Ok(Range {
                scale: get("scale")?,
                lo: get("lo")?,
                hi: get("hi")?,
                index: None,
                var: None,
            })
        }
        serde_json::Value::String(s) => parse_range_text(s),
        other => Err(format!("expected {RANGE_FORMS}, got {}", crate::spec::json::describe(other))),
    }
}

pub fn parse_range_text(raw: &str) -> Result<Range, String> {
    if raw.len() > 200 {
        return Err(format!("the answer is {} characters long; expected {RANGE_FORMS}", raw.len()));
    }
    let bad = || format!("could not read {raw:?} as {RANGE_FORMS}");
    let s = raw.replace('≤', "<=").replace('⩽', "<=").replace('−', "-");
    let parts: Vec<&str> = if s.contains("<=") {
        s.split("<=").collect()
    } else if s.contains('<') {
        s.split('<').collect()
    } else {
        let inner = s.trim().trim_start_matches(['[', '(']).trim_end_matches([']', ')']);
        if inner.contains("..") {
            inner.split("..").collect()
        } else {
            inner.split(',').collect()
        }
    };
    let (lo_e, var, hi_e) = match parts.as_slice() {
        [lo, var, hi] => {
            let v = var.trim();
            if v.chars().count() != 1 || !v.chars().all(|c| c.is_ascii_alphabetic()) {
                return Err(bad());
            }
            (*lo, v.chars().next(), *hi)
        }
        [lo, hi] => (*lo, None, *hi),
        _ => return Err(bad()),
    };
    let (a1, lo, x1) = linear(lo_e).ok_or_else(bad)?;
    let (a2, hi, x2) = linear(hi_e).ok_or_else(bad)?;
    if a1 != a2 || (x1.is_some() && x2.is_some() && x1 != x2) {
        return Err(format!("{raw:?}: both ends must use the same multiple of the same index"));
    }
    Ok(Range {
        scale: a1,
        lo,
        hi,
        index: x1.or(x2),
        var,
    })
}

/// `1089952` -> `1,089,952`.
pub fn thousands(v: f64) -> String {
    if v.fract() != 0.0 || v.abs() >= 1e18 {
        return format!("{v}");
    }
    let s = (v.abs() as u64).to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_in_the_forms_students_write() {
        for (s, v) in [
            ("1089952", 1089952.0),
            ("1,089,952", 1089952.0),
            ("1 089 952", 1089952.0),
            ("1.089952e6", 1089952.0),
            ("1.09M", 1090000.0),
            ("3.2 x 10^7", 3.2e7),
            ("-0.119", -0.119),
            ("12k", 12000.0),
        ] {
            assert_eq!(parse_number_text(s).unwrap().value, v, "{s}");
        }
        assert!(parse_number_text("1.09M").unwrap().abbreviated);
        assert!(!parse_number_text("1,089,952").unwrap().abbreviated);
        for s in ["NaN", "inf", "", "12 apples", "1e999", &"9".repeat(200)] {
            assert!(parse_number_text(s).is_err(), "{s}");
        }
        assert_eq!(parse_number(&json!(42)).unwrap().value, 42.0);
        assert_eq!(thousands(1115684864.0), "1,115,684,864");
    }

    #[test]
    fn ranges_in_the_forms_students_write() {
        let r = parse_range_text("4i-9 <= m <= 4i+6").unwrap();
        assert_eq!((r.scale, r.lo, r.hi, r.index, r.var), (4, -9, 6, Some('i'), Some('m')));
        let r = parse_range_text("4i - 9 ≤ n ≤ 4i + 6").unwrap();
        assert_eq!((r.scale, r.lo, r.hi, r.index, r.var), (4, -9, 6, Some('i'), Some('n')));
        assert_eq!(parse_range_text("[2i-7, 2i+6]").unwrap().lo, -7);
        assert_eq!(parse_range_text("i-2 .. i+2").unwrap().scale, 1);
        assert_eq!(parse_range(&json!({"scale": 4, "lo": -9, "hi": 6})).unwrap().hi, 6);
        assert!(parse_range_text("4i-9 <= m <= 2i+6").is_err());
        assert!(parse_range_text("whatever").is_err());
    }
}
