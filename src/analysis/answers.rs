//! Reading students' answers as they write them, and judging them: pure text and arithmetic.
//!
//! Numbers: `1089952`, `1,089,952`, `1 089 952`, `1_089_952`, `1.089952e6`, `1.09M`, `3.2 x 10^7`,
//! `-0.119`. Ranges: `4i-9 <= m <= 4i+6` (also with `≤`, `<`, `>=`, spaces, `*`), `[4i-9, 4i+6]`,
//! `4i-9 .. 4i+6`, `{scale, lo, hi}`, and ends with floors (`floor(i/2) <= m <= floor((i+1)/2)`,
//! `ceil`, `⌊⌋`, `//`), read as the set of whole positions they name.

/// A parsed number, with how it was written (so feedback can say "rounded").
#[derive(Clone, Debug, PartialEq)]
pub struct Number {
    pub value: f64,
    /// Written with a K/M/G suffix or in scientific notation: may be rounded on purpose.
    pub abbreviated: bool,
}

/// How a course writes numbers: which character is the decimal mark, and so which ones may
/// separate groups of three digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Locale {
    /// `1,089,952.5` (also `1 089 952.5`, `1_089_952`, `1'089'952`): the default.
    #[default]
    DecimalPoint,
    /// `1.089.952,5` (also `1 089 952,5`): many European courses.
    DecimalComma,
}

pub const NUMBER_FORMS: &str = "a number such as 1089952, 1,089,952, 1.089952e6, 1.09M or 224/1";
pub const RANGE_FORMS: &str = "a range such as \"4i-9 <= m <= 4i+6\", \"4(i-2)-1 <= m <= 4i+6\", \"[4i-9, 4i+6]\", \"floor(i/2) <= m <= floor((i+1)/2)\" or {\"scale\": 4, \"lo\": -9, \"hi\": 6}";

pub fn parse_number(v: &serde_json::Value) -> Result<Number, String> {
    parse_number_in(v, Locale::default())
}

pub fn parse_number_in(v: &serde_json::Value, locale: Locale) -> Result<Number, String> {
    match v {
        serde_json::Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(|value| Number { value, abbreviated: false })
            .ok_or_else(|| "not a finite number".into()),
        serde_json::Value::String(s) => parse_number_text_in(s, locale),
        other => Err(format!("expected {NUMBER_FORMS}, got {}", crate::spec::json::describe(other))),
    }
}

pub fn parse_number_text(raw: &str) -> Result<Number, String> {
    parse_number_text_in(raw, Locale::default())
}

/// Spaces of every width, and the other marks students use between digit groups.
fn is_space(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{2009}' | '\u{202f}' | '\u{a0}')
}

/// Unicode look-alikes as the ASCII a parser expects.
fn ascii_marks(s: &str) -> String {
    s.replace(['−', '–', '‒'], "-").replace(['×', '·', '⋅'], "*")
}

/// A number as written: digit groups checked (a separator must sit between groups of three
/// digits, so `2,24` is not 224), a K/M/G/T suffix, scientific notation (`1.09e6`,
/// `3.2 x 10^7`), or exact arithmetic on numbers (`224/1`, `(3*3*256+1)*128`).
pub fn parse_number_text_in(raw: &str, locale: Locale) -> Result<Number, String> {
    if raw.len() > 100 {
        return Err(format!("the answer is {} characters long; expected {NUMBER_FORMS}", raw.len()));
    }
    let bad = || format!("could not read {raw:?} as {NUMBER_FORMS}");
    let s = ascii_marks(raw.trim());
    if s.is_empty() {
        return Err(bad());
    }
    // scientific notation written out: 3.2 x 10^7, 3.2*10^7
    let compact: String = s.chars().filter(|c| !is_space(*c)).collect();
    let compact = compact.replace("x10^", "*10^");
    if let Some((m, e)) = compact.split_once("*10^") {
        let e: i32 = e.trim_start_matches('+').parse().map_err(|_| bad())?;
        let m = grouped(m, locale, raw)?;
        return finite(m * 10f64.powi(e), true).ok_or_else(bad);
    }
    let (body, multiplier) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1e3),
        Some('M') => (&s[..s.len() - 1], 1e6),
        Some('G' | 'B' | 'b') => (&s[..s.len() - 1], 1e9),
        Some('T') => (&s[..s.len() - 1], 1e12),
        _ => (s.as_str(), 1.0),
    };
    let body = body.trim_end();
    if is_arithmetic(body) {
        // arithmetic on numbers (a fraction, a product): exact, in rationals
        let a = eval_affine(body).map_err(|e| format!("could not read {raw:?}: {e}; expected {NUMBER_FORMS}"))?;
        if a.var.is_some() {
            return Err(format!("{raw:?} has a letter in it; expected {NUMBER_FORMS}"));
        }
        return finite(a.constant.to_f64() * multiplier, multiplier != 1.0).ok_or_else(bad);
    }
    let value = grouped(body, locale, raw)?;
    finite(value * multiplier, multiplier != 1.0 || body.contains(['e', 'E'])).ok_or_else(bad)
}

/// Whether a number is written as arithmetic: an operator other than a leading sign or an
/// exponent's sign.
fn is_arithmetic(body: &str) -> bool {
    let c: Vec<char> = body.chars().filter(|c| !is_space(*c)).collect();
    c.iter().any(|x| matches!(x, '/' | '(' | ')' | '*' | '^'))
        || c.iter()
            .enumerate()
            .skip(1)
            .any(|(k, x)| matches!(x, '+' | '-') && !matches!(c[k - 1], 'e' | 'E'))
}

fn finite(value: f64, abbreviated: bool) -> Option<Number> {
    value.is_finite().then_some(Number { value, abbreviated })
}

/// A plain decimal number with optional digit-group separators and exponent, read under
/// `locale`. Separators must be one kind, between groups of exactly three digits.
fn grouped(text: &str, locale: Locale, raw: &str) -> Result<f64, String> {
    let (decimal, group_marks): (char, &[char]) = match locale {
        Locale::DecimalPoint => ('.', &[',', '_', '\'', ' ']),
        Locale::DecimalComma => (',', &['.', '_', '\'', ' ']),
    };
    let t: String = text.trim().chars().map(|c| if is_space(c) { ' ' } else { c }).collect();
    let bad = || format!("could not read {raw:?} as {NUMBER_FORMS}");
    let (sign, t) = match t.strip_prefix('-') {
        Some(rest) => ("-", rest.to_string()),
        None => ("", t.trim_start_matches('+').to_string()),
    };
    let (mant, exp) = match t.find(['e', 'E']) {
        Some(p) => (t[..p].to_string(), Some(t[p + 1..].to_string())),
        None => (t.clone(), None),
    };
    let (int, frac) = match mant.split_once(decimal) {
        Some((i, f)) => (i.to_string(), Some(f.to_string())),
        None => (mant.clone(), None),
    };
    if frac
        .as_deref()
        .is_some_and(|f| f.contains(decimal) || !f.chars().all(|c| c.is_ascii_digit()))
    {
        let other = if decimal == '.' { "comma" } else { "point" };
        return Err(format!(
            "could not read {raw:?}: the decimal mark here is '{decimal}' (the question's number_locale is decimal_{}, not decimal_{other})",
            if decimal == '.' { "point" } else { "comma" }
        ));
    }
    let seps: Vec<char> = int.chars().filter(|c| group_marks.contains(c)).collect();
    let digits: String = if seps.is_empty() {
        int.clone()
    } else {
        let sep = seps[0];
        let groups: Vec<&str> = int.split(sep).collect();
        let ok = seps.iter().all(|c| *c == sep)
            && (1..=3).contains(&groups[0].len())
            && groups[1..].iter().all(|g| g.len() == 3)
            && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_digit()));
        if !ok {
            return Err(format!(
                "could not read {raw:?}: a '{sep}' may only separate groups of three digits (as in 1{sep}089{sep}952){}",
                if sep == ',' && locale == Locale::DecimalPoint {
                    "; the decimal mark is '.'"
                } else {
                    ""
                }
            ));
        }
        groups.concat()
    };
    if digits.is_empty() && frac.as_deref().unwrap_or("").is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let mut plain = format!("{sign}{}", if digits.is_empty() { "0" } else { &digits });
    if let Some(f) = frac {
        plain += &format!(".{f}");
    }
    if let Some(e) = exp {
        if e.is_empty() || !e.trim_start_matches(['+', '-']).chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        plain += &format!("e{e}");
    }
    plain.parse::<f64>().map_err(|_| bad())
}

/// An exact rational p/q (q > 0, lowest terms) for affine arithmetic on answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ratio {
    pub num: i128,
    pub den: i128,
}

const TOO_BIG: &str = "a number in it is too large";

impl Ratio {
    pub fn int(n: i128) -> Ratio {
        Ratio { num: n, den: 1 }
    }
    fn new(num: i128, den: i128) -> Result<Ratio, String> {
        if den == 0 {
            return Err("it divides by zero".into());
        }
        let g = gcd(num, den).max(1);
        let s = if den < 0 { -1 } else { 1 };
        Ok(Ratio {
            num: s * num / g,
            den: s * den / g,
        })
    }
    fn add(self, o: Ratio) -> Result<Ratio, String> {
        let n = self
            .num
            .checked_mul(o.den)
            .and_then(|a| o.num.checked_mul(self.den).and_then(|b| a.checked_add(b)));
        Ratio::new(n.ok_or(TOO_BIG)?, self.den.checked_mul(o.den).ok_or(TOO_BIG)?)
    }
    fn mul(self, o: Ratio) -> Result<Ratio, String> {
        Ratio::new(
            self.num.checked_mul(o.num).ok_or(TOO_BIG)?,
            self.den.checked_mul(o.den).ok_or(TOO_BIG)?,
        )
    }
    fn div(self, o: Ratio) -> Result<Ratio, String> {
        Ratio::new(
            self.num.checked_mul(o.den).ok_or(TOO_BIG)?,
            self.den.checked_mul(o.num).ok_or(TOO_BIG)?,
        )
    }
    pub fn to_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }
    /// The integer, when it is one.
    pub fn as_int(self) -> Option<i128> {
        (self.den == 1).then_some(self.num)
    }
}

/// `coef * var + constant`, exactly; `var` is None for a plain number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affine {
    pub coef: Ratio,
    pub constant: Ratio,
    pub var: Option<char>,
}

impl Affine {
    fn num(r: Ratio) -> Affine {
        Affine {
            coef: Ratio::int(0),
            constant: r,
            var: None,
        }
    }
    fn is_const(&self) -> bool {
        self.coef.num == 0
    }
    fn add(self, o: Affine) -> Result<Affine, String> {
        let var = match (self.var.filter(|_| !self.is_const()), o.var.filter(|_| !o.is_const())) {
            (Some(a), Some(b)) if a != b => return Err(format!("it mixes the letters {a} and {b}")),
            (a, b) => a.or(b),
        };
        Ok(Affine {
            coef: self.coef.add(o.coef)?,
            constant: self.constant.add(o.constant)?,
            var,
        })
    }
    fn scale(self, k: Ratio) -> Result<Affine, String> {
        Ok(Affine {
            coef: self.coef.mul(k)?,
            constant: self.constant.mul(k)?,
            var: self.var,
        })
    }
}

/// The largest period of floors an answer may write (`floor(i/d)` repeats every d steps).
const MAX_PERIOD: i128 = 10_000;

/// An expression in one letter with floors, exactly: `coef*x + constant + Σ w * floor(f)`.
/// `ceil(f)` is `-floor(-f)`; a floor of a number or of a whole-number expression is folded away.
#[derive(Clone, Debug, PartialEq)]
pub struct Func {
    pub lin: Affine,
    pub floors: Vec<(Ratio, Func)>,
}

fn gcd(a: i128, b: i128) -> i128 {
    if b == 0 {
        a.abs()
    } else {
        gcd(b, a % b)
    }
}

fn lcm(a: i128, b: i128) -> Result<i128, String> {
    let l = (a / gcd(a, b).max(1)).checked_mul(b).ok_or(TOO_BIG)?;
    if l > MAX_PERIOD {
        return Err(format!("its floors repeat only every {l} steps (at most {MAX_PERIOD} are read)"));
    }
    Ok(l)
}

impl Func {
    fn num(r: Ratio) -> Func {
        Func {
            lin: Affine::num(r),
            floors: vec![],
        }
    }
    pub fn int(n: i128) -> Func {
        Func::num(Ratio::int(n))
    }
    /// `coef*x + constant` in whole numbers.
    pub fn line(coef: i64, constant: i64, var: Option<char>) -> Func {
        Func {
            lin: Affine {
                coef: Ratio::int(coef as i128),
                constant: Ratio::int(constant as i128),
                var,
            },
            floors: vec![],
        }
    }
    /// The letter it is written in, if any.
    pub fn var(&self) -> Option<char> {
        self.lin
            .var
            .filter(|_| !self.lin.is_const())
            .or_else(|| self.floors.iter().find_map(|(_, f)| f.var()))
    }
    fn is_const(&self) -> bool {
        self.lin.is_const() && self.floors.is_empty()
    }
    fn add(self, o: Func) -> Result<Func, String> {
        if let (Some(a), Some(b)) = (self.var(), o.var()) {
            if a != b {
                return Err(format!("it mixes the letters {a} and {b}"));
            }
        }
        let mut floors = self.floors;
        floors.extend(o.floors);
        Ok(Func {
            lin: self.lin.add(o.lin)?,
            floors,
        })
    }
    fn scale(self, k: Ratio) -> Result<Func, String> {
        if k.num == 0 {
            return Ok(Func::int(0));
        }
        Ok(Func {
            lin: self.lin.scale(k)?,
            floors: self
                .floors
                .into_iter()
                .map(|(w, f)| Ok((w.mul(k)?, f)))
                .collect::<Result<_, String>>()?,
        })
    }
    fn mul(self, o: Func) -> Result<Func, String> {
        match (self.is_const(), o.is_const()) {
            (true, _) => o.scale(self.lin.constant),
            (_, true) => self.scale(o.lin.constant),
            _ => Err("it multiplies a letter by a letter (not an affine expression)".into()),
        }
    }
    /// Whole numbers at every whole x: whole coefficients, constant and floor weights.
    pub fn integral(&self) -> bool {
        self.lin.coef.den == 1 && self.lin.constant.den == 1 && self.floors.iter().all(|(w, _)| w.den == 1)
    }
    pub fn floor(self) -> Result<Func, String> {
        // whole-valued but for a constant (a number too): floor(g + k) = g + floor(k)
        if self.lin.coef.den == 1 && self.floors.iter().all(|(w, _)| w.den == 1) {
            let k = self.lin.constant;
            return Ok(Func {
                lin: Affine {
                    constant: Ratio::int(k.num.div_euclid(k.den)),
                    ..self.lin
                },
                ..self
            });
        }
        Ok(Func {
            lin: Affine::num(Ratio::int(0)),
            floors: vec![(Ratio::int(1), self)],
        })
    }
    pub fn ceil(self) -> Result<Func, String> {
        self.scale(Ratio::int(-1))?.floor()?.scale(Ratio::int(-1))
    }
    pub fn plus(self, k: i128) -> Result<Func, String> {
        self.add(Func::int(k))
    }
    /// The value at a whole `x`, exactly.
    pub fn at(&self, x: i128) -> Result<Ratio, String> {
        let mut v = self.lin.coef.mul(Ratio::int(x))?.add(self.lin.constant)?;
        for (w, f) in &self.floors {
            let y = f.at(x)?;
            v = v.add(w.mul(Ratio::int(y.num.div_euclid(y.den)))?)?;
        }
        Ok(v)
    }
    /// How much it grows per step of x, on average (exactly, over a period).
    pub fn slope(&self) -> Result<Ratio, String> {
        let mut s = self.lin.coef;
        for (w, f) in &self.floors {
            s = s.add(w.mul(f.slope()?)?)?;
        }
        Ok(s)
    }
    /// A step P with `f(x + P) = f(x) + slope*P` for every whole x: a floor of g repeats once
    /// g's own floors do and g has grown by a whole number.
    pub fn period(&self) -> Result<i128, String> {
        let mut p = 1;
        for (_, f) in &self.floors {
            p = lcm(p, lcm(f.period()?, f.slope()?.den)?)?;
        }
        Ok(p)
    }
    /// `(coef, constant)` when it is `coef*x + constant` in whole numbers.
    pub fn whole_affine(&self) -> Option<(i64, i64)> {
        let whole = |r: Ratio| r.as_int().and_then(|n| i64::try_from(n).ok());
        if !self.floors.is_empty() {
            return None;
        }
        Some((whole(self.lin.coef)?, whole(self.lin.constant)?))
    }
}

/// Reads an expression in one letter with floors: everything `eval_affine` reads, and
/// `floor(...)`, `ceil(...)`, `⌊...⌋`, `⌈...⌉` and `a // b`.
pub fn eval_func(text: &str) -> Result<Func, String> {
    let text = ascii_marks(text)
        .replace('⌊', "floor(")
        .replace('⌈', "ceil(")
        .replace(['⌋', '⌉'], ")");
    let chars: Vec<char> = text.chars().filter(|c| !is_space(*c)).collect();
    if chars.is_empty() {
        return Err("it is empty".into());
    }
    if chars.len() > 200 {
        return Err("it is too long".into());
    }
    let mut p = Parser { c: chars, at: 0, depth: 0 };
    let v = p.expr()?;
    if p.at != p.c.len() {
        return Err(format!("unexpected '{}'", p.c[p.at]));
    }
    Ok(v)
}

/// Reads an affine expression in one letter: `4i-9`, `-9+4i`, `4*i - 9`, `4(i-2)-1`,
/// `2(2i-4) - 1`, `(8i - 18)/2`, `224/1`, `3*3*256*64 + 64`, `10^3`. Implicit multiplication,
/// unary signs, `^` with a whole exponent on numbers; the arithmetic is exact.
pub fn eval_affine(text: &str) -> Result<Affine, String> {
    let f = eval_func(text)?;
    if !f.floors.is_empty() {
        return Err("it takes the floor of a letter (floors are read in ranges only)".into());
    }
    Ok(f.lin)
}

struct Parser {
    c: Vec<char>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.c.get(self.at).copied()
    }
    fn expr(&mut self) -> Result<Func, String> {
        let mut v = self.term()?;
        while let Some(op @ ('+' | '-')) = self.peek() {
            self.at += 1;
            let t = self.term()?;
            v = v.add(if op == '-' { t.scale(Ratio::int(-1))? } else { t })?;
        }
        Ok(v)
    }
    fn term(&mut self) -> Result<Func, String> {
        let mut v = self.unary()?;
        loop {
            match self.peek() {
                Some('*') => {
                    self.at += 1;
                    v = v.mul(self.unary()?)?;
                }
                Some('/') => {
                    self.at += 1;
                    // Python's floor division: a // b = floor(a / b)
                    let floored = self.peek() == Some('/');
                    if floored {
                        self.at += 1;
                    }
                    let d = self.unary()?;
                    if !d.is_const() {
                        return Err("it divides by a letter".into());
                    }
                    v = v.scale(Ratio::int(1).div(d.lin.constant)?)?;
                    if floored {
                        v = v.floor()?;
                    }
                }
                // implicit multiplication: 4i, 4(i-2), (i+1)2, i(3)
                Some(c) if c == '(' || c.is_ascii_alphanumeric() || c == '.' => v = v.mul(self.power()?)?,
                _ => return Ok(v),
            }
        }
    }
    fn unary(&mut self) -> Result<Func, String> {
        match self.peek() {
            Some('-') => {
                self.at += 1;
                Ok(self.unary()?.scale(Ratio::int(-1))?)
            }
            Some('+') => {
                self.at += 1;
                self.unary()
            }
            _ => self.power(),
        }
    }
    fn power(&mut self) -> Result<Func, String> {
        let base = self.primary()?;
        if self.peek() != Some('^') {
            return Ok(base);
        }
        self.at += 1;
        let e = self.unary()?;
        let n = e
            .lin
            .constant
            .as_int()
            .filter(|n| e.is_const() && (0..=40).contains(n))
            .ok_or("an exponent must be a whole number from 0 to 40")?;
        if n == 1 {
            return Ok(base);
        }
        if !base.is_const() {
            return Err("it raises a letter to a power (not an affine expression)".into());
        }
        let mut r = Ratio::int(1);
        for _ in 0..n {
            r = r.mul(base.lin.constant)?;
        }
        Ok(Func::num(r))
    }
    /// `floor`, `ceil` or `ceiling` followed by a bracket, if it starts here.
    fn rounding(&self) -> Option<(&'static str, bool)> {
        ["floor", "ceiling", "ceil"].into_iter().find_map(|w| {
            let n = w.len();
            let word: String = self.c.get(self.at..self.at + n)?.iter().collect();
            (word.eq_ignore_ascii_case(w) && matches!(self.c.get(self.at + n), Some('(' | '['))).then_some((w, w == "floor"))
        })
    }
    fn primary(&mut self) -> Result<Func, String> {
        if let Some((word, down)) = self.rounding() {
            self.at += word.len();
            let v = self.primary()?;
            return if down { v.floor() } else { v.ceil() };
        }
        match self.peek() {
            Some('(' | '[') => {
                let close = if self.peek() == Some('(') { ')' } else { ']' };
                self.depth += 1;
                if self.depth > 20 {
                    return Err("too many parentheses".into());
                }
                self.at += 1;
                let v = self.expr()?;
                if self.peek() != Some(close) {
                    return Err(format!("a '{close}' is missing"));
                }
                self.at += 1;
                self.depth -= 1;
                Ok(v)
            }
            Some(c) if c.is_ascii_digit() || c == '.' => self.number(),
            Some(c) if c.is_ascii_alphabetic() => {
                self.at += 1;
                Ok(Func::line(1, 0, Some(c)))
            }
            Some(c) => Err(format!("unexpected '{c}'")),
            None => Err("it ends too early".into()),
        }
    }
    /// Digits with an optional decimal part and exponent, as an exact ratio.
    fn number(&mut self) -> Result<Func, String> {
        let start = self.at;
        while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '.') {
            self.at += 1;
        }
        let text: String = self.c[start..self.at].iter().collect();
        let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
        if frac.contains('.') || (int.is_empty() && frac.is_empty()) || int.len() + frac.len() > 30 {
            return Err(format!("{text:?} is not a number"));
        }
        let digits: i128 = format!("{int}{frac}").parse().map_err(|_| TOO_BIG.to_string())?;
        let mut r = Ratio::new(digits, 10i128.pow(frac.len() as u32))?;
        // an exponent: e followed by a digit or a signed digit (an `e` alone would be a letter)
        let exp_follows = |at: usize| {
            matches!(self.c.get(at), Some('e' | 'E'))
                && (self.c.get(at + 1).is_some_and(|c| c.is_ascii_digit())
                    || matches!(self.c.get(at + 1), Some('+' | '-')) && self.c.get(at + 2).is_some_and(|c| c.is_ascii_digit()))
        };
        if exp_follows(self.at) {
            self.at += 1;
            let neg = self.peek() == Some('-');
            if matches!(self.peek(), Some('+' | '-')) {
                self.at += 1;
            }
            let s = self.at;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.at += 1;
            }
            let e: u32 = self.c[s..self.at]
                .iter()
                .collect::<String>()
                .parse()
                .map_err(|_| TOO_BIG.to_string())?;
            if e > 30 {
                return Err(TOO_BIG.into());
            }
            let p = Ratio::int(10i128.pow(e));
            r = if neg { r.div(p)? } else { r.mul(p)? };
        }
        Ok(Func::num(r))
    }
}

/// A range as a set of whole input positions for output index `x`: `lo(x) <= var <= hi(x)`,
/// with the letters the student used. The ends are whole-valued: an end written with
/// fractions, or a strict `<`, is read as the whole positions it includes.
#[derive(Clone, Debug, PartialEq)]
pub struct Range {
    pub lo: Func,
    pub hi: Func,
    /// The output index letter (`i`, `j`), if written.
    pub index: Option<char>,
    /// The input variable letter (`m`, `n`), if written.
    pub var: Option<char>,
    /// An end was not whole-valued as written, or a comparison was strict: `lo`/`hi` are the
    /// whole positions it includes (`i/2 - 1/2 <= m` is `ceil((i-1)/2) <= m`; `a < m` is `a+1 <= m`).
    pub rewritten: bool,
}

impl Range {
    /// `(scale, lo, hi)` for `scale*i + lo <= m <= scale*i + hi` in whole numbers.
    pub fn affine(&self) -> Option<(i64, i64, i64)> {
        let (a1, lo) = self.lo.whole_affine()?;
        let (a2, hi) = self.hi.whole_affine()?;
        (a1 == a2).then_some((a1, lo, hi))
    }
}

/// One end of a range, read as the least (`lower`) or greatest whole position it includes.
fn range_end(expr: &str, lower: bool, strict: bool) -> Result<(Func, bool), String> {
    let f = eval_func(expr)?;
    let rewritten = strict || !f.integral();
    // (floor and ceil keep a whole-valued end as it is)
    let end = match (lower, strict) {
        (true, false) => f.ceil()?,
        (true, true) => f.floor()?.plus(1)?,
        (false, false) => f.floor()?,
        (false, true) => f.ceil()?.plus(-1)?,
    };
    Ok((end, rewritten))
}

pub fn parse_range(v: &serde_json::Value) -> Result<Range, String> {
    match v {
        serde_json::Value::Object(o) => {
            let get = |k: &str| {
                o.get(k)
                    .and_then(|x| x.as_i64())
                    .ok_or_else(|| format!("expected integer \"scale\", \"lo\" and \"hi\"; {RANGE_FORMS}"))
            };
            let scale = get("scale")?;
            Ok(Range {
                lo: Func::line(scale, get("lo")?, None),
                hi: Func::line(scale, get("hi")?, None),
                index: None,
                var: None,
                rewritten: false,
            })
        }
        serde_json::Value::String(s) => parse_range_text(s),
        other => Err(format!("expected {RANGE_FORMS}, got {}", crate::spec::json::describe(other))),
    }
}

/// The comparisons of a chain `a <= m < b` (or `b >= m > a`), in order: (start, length, strict,
/// points up).
fn comparisons(s: &str) -> Vec<(usize, usize, bool, bool)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut k = 0;
    while k < b.len() {
        if matches!(b[k], b'<' | b'>') {
            let eq = b.get(k + 1) == Some(&b'=');
            out.push((k, 1 + eq as usize, !eq, b[k] == b'<'));
            k += 1 + eq as usize;
        } else {
            k += 1;
        }
    }
    out
}

pub fn parse_range_text(raw: &str) -> Result<Range, String> {
    if raw.len() > 200 {
        return Err(format!("the answer is {} characters long; expected {RANGE_FORMS}", raw.len()));
    }
    let bad = |why: String| format!("could not read {raw:?} ({why}); expected {RANGE_FORMS}");
    let s = ascii_marks(raw)
        .replace(['≤', '⩽'], "<=")
        .replace(['≥', '⩾'], ">=")
        .replace('∈', " in ");
    let s = s.trim();
    let cmp = comparisons(s);
    // (lower end, its comparison is strict), the letter, (upper end, strict)
    let (lo_e, var, hi_e): ((String, bool), Option<&str>, (String, bool)) = if !cmp.is_empty() {
        if cmp.iter().any(|c| c.3 != cmp[0].3) {
            return Err(bad("its comparisons point both ways".into()));
        }
        let mut parts = Vec::new();
        let mut from = 0;
        for &(at, len, ..) in &cmp {
            parts.push(&s[from..at]);
            from = at + len;
        }
        parts.push(&s[from..]);
        let up = cmp[0].3;
        let strict = |k: usize| cmp[k].2;
        match parts.as_slice() {
            // a <= m <= b, or b >= m >= a
            [a, v, b] if up => ((a.to_string(), strict(0)), Some(*v), (b.to_string(), strict(1))),
            [b, v, a] => ((a.to_string(), strict(1)), Some(*v), (b.to_string(), strict(0))),
            [a, b] if up => ((a.to_string(), strict(0)), None, (b.to_string(), strict(0))),
            [b, a] => ((a.to_string(), strict(0)), None, (b.to_string(), strict(0))),
            _ => return Err(bad("not two ends".into())),
        }
    } else {
        // "m in [a, b]", "[a, b]", "a .. b"; only one enclosing pair of brackets is dropped
        let s = s.split_once(" in ").map(|(_, r)| r.trim()).unwrap_or(s);
        let inner = match (s.chars().next(), s.chars().last()) {
            (Some('[' | '('), Some(']' | ')')) if s.len() >= 2 => &s[1..s.len() - 1],
            _ => s,
        };
        let parts: Vec<&str> = if inner.contains("..") {
            inner.split("..").collect()
        } else {
            inner.split(',').collect()
        };
        match parts.as_slice() {
            [a, b] => ((a.to_string(), false), None, (b.to_string(), false)),
            _ => return Err(bad("not two ends".into())),
        }
    };
    let var = match var.map(str::trim) {
        Some(v) if v.chars().count() != 1 || !v.chars().all(|c| c.is_ascii_alphabetic()) => {
            return Err(bad(format!("{v:?} is not a single letter")))
        }
        v => v.and_then(|v| v.chars().next()),
    };
    let (lo, r1) = range_end(&lo_e.0, true, lo_e.1).map_err(bad)?;
    let (hi, r2) = range_end(&hi_e.0, false, hi_e.1).map_err(bad)?;
    let (x1, x2) = (lo.var(), hi.var());
    if x1.is_some() && x2.is_some() && x1 != x2 {
        return Err(format!("{raw:?}: both ends must use the same index"));
    }
    // (ends that move at different rates are read: grading says which end is off, and a
    // causal token range 1 <= t <= i has one constant end)
    Ok(Range {
        index: x1.or(x2),
        var,
        rewritten: r1 || r2,
        lo,
        hi,
    })
}

/// How a range's end compares with the reference's `a*floor((n*i + c)/d) + e`.
#[derive(Debug, Clone, PartialEq)]
pub enum EndCheck {
    Same,
    /// It moves at another rate per output step (the rate it moves at).
    Slope(Ratio),
    /// It differs first at output index `i`: (i, the answer's value, the reference's).
    At(i64, Ratio, i128),
}

/// Compares an end with the reference end everywhere: both grow by the same amount every
/// period, so equal slopes and one period of equal values decide for every whole index. The
/// first difference is looked for from `first` (the index base).
pub fn check_end(f: &Func, want: &crate::analysis::receptive_field::End, first: i64) -> Result<EndCheck, String> {
    let slope = f.slope()?;
    let (num, den) = want.slope();
    if slope != Ratio::new(num as i128, den as i128)? {
        return Ok(EndCheck::Slope(slope));
    }
    let period = lcm(f.period()?, want.d as i128)?;
    for i in first..first + period as i64 {
        let got = f.at(i as i128)?;
        let w = want.at(i);
        if got != Ratio::int(w) {
            return Ok(EndCheck::At(i, got, w));
        }
    }
    Ok(EndCheck::Same)
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
    fn digit_groups_must_be_groups_of_three() {
        for (s, v) in [
            ("1,089,952", 1089952.0),
            ("1 089 952", 1089952.0),
            ("1\u{202f}089\u{202f}952", 1089952.0),
            ("1_089_952", 1089952.0),
            ("1'089'952", 1089952.0),
            ("224", 224.0),
            ("1,089,952.5", 1089952.5),
            ("-1,000", -1000.0),
        ] {
            assert_eq!(parse_number_text(s).unwrap().value, v, "{s}");
        }
        // a separator anywhere else is a slip, never silently dropped
        for s in ["2,24", "22,4", "1,0899,52", "1,089 952", ",224", "224,", "1.089.952", "3,5"] {
            let e = parse_number_text(s).unwrap_err();
            assert!(e.contains(s), "{s}: {e}");
        }
        assert!(parse_number_text("2,24").unwrap_err().contains("groups of three digits"));
        // the decimal-comma locale
        let eu = |s: &str| parse_number_text_in(s, Locale::DecimalComma).map(|n| n.value);
        assert_eq!(eu("1.089.952").unwrap(), 1089952.0);
        assert_eq!(eu("1 089 952,5").unwrap(), 1089952.5);
        assert_eq!(eu("0,119").unwrap(), 0.119);
        assert!(eu("1,089,952").is_err());
        assert!(eu("2.24").is_err());
    }

    #[test]
    fn fractions_and_arithmetic_are_exact() {
        for (s, v) in [
            ("224/1", 224.0),
            ("448 / 2", 224.0),
            ("3/4", 0.75),
            ("(3*3*256+1)*128", 295040.0),
            ("3·3·64", 576.0),
            ("2^10", 1024.0),
            ("-119/1000", -0.119),
            ("1.5e3", 1500.0),
            ("1.5e-3", 0.0015),
            ("10^3 - 1", 999.0),
        ] {
            assert_eq!(parse_number_text(s).unwrap().value, v, "{s}");
        }
        for s in ["1/0", "2i", "(3*4", "3**4", "2^100", "2^-1", "1/(10^40)"] {
            assert!(parse_number_text(s).is_err(), "{s}");
        }
    }

    #[test]
    fn affine_ends_in_any_equivalent_form() {
        for (s, (a, b)) in [
            ("4i-9", (4, -9)),
            ("-9+4i", (4, -9)),
            ("4*i - 9", (4, -9)),
            ("4(i-2)-1", (4, -9)),
            ("2(2i-4) - 1", (4, -9)),
            ("(8i - 18)/2", (4, -9)),
            ("4 i − 9", (4, -9)),
            ("i", (1, 0)),
            ("-i+3", (-1, 3)),
            ("7", (0, 7)),
            ("(i+1)4", (4, 4)),
        ] {
            assert_eq!(eval_func(s).unwrap().whole_affine(), Some((a, b)), "{s}");
        }
        for s in ["i*i", "i/i", "(i+1", "i+j", "2^i", "floor(i", "floor i", "ceil()"] {
            assert!(eval_func(s).is_err(), "{s}");
        }
        assert_eq!(eval_func("4i/3").unwrap().whole_affine(), None);
        let r = parse_range_text("4(i-2)-1 ≤ m ≤ 4i+6").unwrap();
        assert_eq!((r.affine(), r.index, r.var), (Some((4, -9, 6)), Some('i'), Some('m')));
        let r = parse_range_text("m ∈ [-9+4i, 4(i+1)+2]").unwrap();
        assert_eq!(r.affine(), Some((4, -9, 6)));
        let r = parse_range_text("[4(i-2)-1, 4(i+1)+2]").unwrap();
        assert_eq!(r.affine(), Some((4, -9, 6)));
    }

    /// Hundreds of random affine ranges, each written in several equivalent ways (the ways
    /// students write them), all read back to the same numbers.
    #[test]
    fn random_equivalent_forms_read_the_same() {
        let mut seed: u64 = 0x5eed_1234;
        let mut next = |n: i64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) % (2 * n as u64 + 1)) as i64 - n
        };
        let signed = |v: i64| if v < 0 { format!("-{}", -v) } else { format!("+{v}") };
        for _ in 0..500 {
            let a = next(8).abs().max(1);
            let (lo, hi) = (next(40), next(40));
            let q = next(5);
            let forms = |b: i64| {
                vec![
                    format!("{a}i{}", signed(b)),
                    format!("{b}{}i", signed(a)),
                    format!("{a} * i {} {}", if b < 0 { '-' } else { '+' }, b.abs()),
                    format!("{a}(i{}){}", signed(q), signed(b - a * q)),
                    format!("({}i{})/2", 2 * a, signed(2 * b)),
                    format!("{a}i{}", signed(b)).replace('-', "−"),
                ]
            };
            for (l, h) in forms(lo).iter().zip(forms(hi)) {
                for text in [format!("{l} <= m <= {h}"), format!("[{l}, {h}]"), format!("{l} ≤ m ≤ {h}")] {
                    let r = parse_range_text(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
                    assert_eq!(r.affine(), Some((a, lo, hi)), "{text}");
                    assert!(!r.rewritten, "{text}");
                }
            }
        }
    }

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
        assert_eq!((r.affine(), r.index, r.var), (Some((4, -9, 6)), Some('i'), Some('m')));
        let r = parse_range_text("4i - 9 ≤ n ≤ 4i + 6").unwrap();
        assert_eq!((r.affine(), r.index, r.var), (Some((4, -9, 6)), Some('i'), Some('n')));
        assert_eq!(parse_range_text("[2i-7, 2i+6]").unwrap().affine(), Some((2, -7, 6)));
        assert_eq!(parse_range_text("i-2 .. i+2").unwrap().affine(), Some((1, -2, 2)));
        let r = parse_range(&json!({"scale": 4, "lo": -9, "hi": 6})).unwrap();
        assert_eq!(r.affine(), Some((4, -9, 6)));
        // ends that move at different rates: read, and judged by value
        let r = parse_range_text("4i-9 <= m <= 2i+6").unwrap();
        assert_eq!((r.affine(), r.hi.whole_affine()), (None, Some((2, 6))));
        let r = parse_range_text("1 <= t <= i").unwrap();
        assert_eq!(
            (r.lo.whole_affine(), r.hi.whole_affine(), r.var),
            (Some((0, 1)), Some((1, 0)), Some('t'))
        );
        assert!(parse_range_text("whatever").is_err());
        assert!(parse_range_text("4i-9 <= m >= 4i+6").is_err());
        // the other direction, and strict comparisons as the whole positions they include
        let r = parse_range_text("4i+6 >= m >= 4i-9").unwrap();
        assert_eq!((r.affine(), r.rewritten), (Some((4, -9, 6)), false));
        let r = parse_range_text("4i-10 < m < 4i+7").unwrap();
        assert_eq!((r.affine(), r.rewritten), (Some((4, -9, 6)), true));
        let r = parse_range_text("4i-10 < m <= 4i+6").unwrap();
        assert_eq!(r.affine(), Some((4, -9, 6)));
        // fractional ends: the whole positions between them
        let r = parse_range_text("4i - 9.5 <= m <= 4i + 6.5").unwrap();
        assert_eq!((r.affine(), r.rewritten), (Some((4, -9, 6)), true));
    }

    /// Random expressions with floors and ceilings, written as students write them (`floor`,
    /// `⌊⌋`, `ceil`, `//`, implicit products), evaluated here on their own tree: the reader gives
    /// the same value at every index in a window, and its period claim `f(x+P) = f(x) + slope*P`
    /// holds there, which is what lets one period decide equality for every index.
    #[test]
    fn random_floor_expressions_read_exactly() {
        #[derive(Debug)]
        enum T {
            // (a/b) i + (c/e)
            Lin(i128, i128, i128, i128),
            Floor(Box<T>, u8),
            Ceil(Box<T>, u8),
            Sum(Box<T>, Box<T>),
            Scale(i128, Box<T>),
            FloorDiv(Box<T>, i128),
        }
        fn gcd(a: i128, b: i128) -> i128 {
            if b == 0 {
                a.abs()
            } else {
                gcd(b, a % b)
            }
        }
        fn norm((n, d): (i128, i128)) -> (i128, i128) {
            let g = gcd(n, d).max(1) * d.signum();
            (n / g, d / g)
        }
        fn add(x: (i128, i128), y: (i128, i128)) -> (i128, i128) {
            norm((x.0 * y.1 + y.0 * x.1, x.1 * y.1))
        }
        fn eval(t: &T, i: i128) -> (i128, i128) {
            match t {
                T::Lin(a, b, c, e) => add(norm((a * i, *b)), norm((*c, *e))),
                T::Floor(x, _) | T::FloorDiv(x, 1) => {
                    let (n, d) = eval(x, i);
                    (n.div_euclid(d), 1)
                }
                T::FloorDiv(x, k) => {
                    let (n, d) = eval(x, i);
                    ((n).div_euclid(d * k), 1)
                }
                T::Ceil(x, _) => {
                    let (n, d) = eval(x, i);
                    (-(-n).div_euclid(d), 1)
                }
                T::Sum(x, y) => add(eval(x, i), eval(y, i)),
                T::Scale(k, x) => {
                    let (n, d) = eval(x, i);
                    norm((k * n, d))
                }
            }
        }
        fn text(t: &T) -> String {
            match t {
                T::Lin(a, b, c, e) => format!("({a}i/{b} + {c}/{e})"),
                T::Floor(x, 0) => format!("floor({})", text(x)),
                T::Floor(x, _) => format!("⌊{}⌋", text(x)),
                T::Ceil(x, 0) => format!("ceil({})", text(x)),
                T::Ceil(x, _) => format!("⌈{}⌉", text(x)),
                T::FloorDiv(x, k) => format!("({})//{k}", text(x)),
                T::Sum(x, y) => format!("{} + {}", text(x), text(y)),
                T::Scale(k, x) => format!("{k}({})", text(x)),
            }
        }
        let mut seed: u64 = 0xf100_2026;
        let mut next = |n: i64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) % (2 * n as u64 + 1)) as i64 - n
        };
        fn tree(next: &mut dyn FnMut(i64) -> i64, depth: u32) -> T {
            let pick = if depth == 0 { 0 } else { next(3) + 3 };
            let pos = |v: i64| v.abs().max(1) as i128;
            match pick {
                0 | 1 => T::Lin(next(5) as i128, pos(next(4)), next(7) as i128, pos(next(3))),
                2 => T::Floor(Box::new(tree(next, depth - 1)), next(1).unsigned_abs() as u8),
                3 => T::Ceil(Box::new(tree(next, depth - 1)), next(1).unsigned_abs() as u8),
                4 => T::Sum(Box::new(tree(next, depth - 1)), Box::new(tree(next, depth - 1))),
                5 => T::Scale(next(3) as i128, Box::new(tree(next, depth - 1))),
                _ => T::FloorDiv(Box::new(tree(next, depth - 1)), pos(next(4))),
            }
        }
        let mut read = 0;
        for _ in 0..400 {
            let t = tree(&mut next, 3);
            let written = text(&t);
            let f = eval_func(&written).unwrap_or_else(|e| panic!("{written}: {e}"));
            let Ok(p) = f.period() else { continue };
            let slope = f.slope().unwrap();
            read += 1;
            for i in -150..150 {
                let (n, d) = eval(&t, i);
                assert_eq!(f.at(i).unwrap(), Ratio::new(n, d).unwrap(), "{written} at {i}");
                let shifted = f.at(i).unwrap().add(slope.mul(Ratio::int(p)).unwrap()).unwrap();
                assert_eq!(f.at(i + p).unwrap(), shifted, "{written}: period {p} at {i}");
            }
        }
        assert!(read > 350, "{read}");
    }

    /// Hundreds of random reference ends `a*floor((n*i + c)/d) + e`, written in equivalent ways
    /// (a ceiling, `//`, `⌊⌋`, the whole part of n/d taken out), all judged the same; each
    /// written one off judged different, at an index where it is (checked by evaluating both).
    #[test]
    fn random_floor_ranges_are_judged_by_value() {
        use crate::analysis::receptive_field::End;
        let mut seed: u64 = 0xe9d_2026;
        let mut next = |n: i64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) % (2 * n as u64 + 1)) as i64 - n
        };
        for _ in 0..400 {
            let (a, n, c, d, e) = (next(2).abs() + 1, next(5).abs() + 1, next(6), next(4).abs() + 2, next(9));
            let want = End { a, n, c, d, e };
            let (q, r) = (n / d, n % d);
            let forms = [
                format!("{a}*floor(({n}i + {c})/{d}) + {e}"),
                format!("{a}⌊({n}i{c:+})/{d}⌋{e:+}"),
                format!("{a}*ceil(({n}*i + {})/{d}) + {e}", c - d + 1),
                format!("{a}(({n}i + {c})//{d}) + {e}"),
                format!("-{a}*ceil((-{n}i - {c})/{d}) + {e}"),
                format!("{a}({q}i + floor(({r}i + {c})/{d})) + {e}"),
            ];
            for (k, form) in forms.iter().enumerate() {
                let f = eval_func(form).unwrap_or_else(|err| panic!("{form}: {err}"));
                for first in [0, 1] {
                    assert_eq!(check_end(&f, &want, first).unwrap(), EndCheck::Same, "{form} vs {want:?}");
                }
                // one off at one index per period (or everywhere): never the same
                let off = if k % 2 == 0 {
                    format!("{form} + 1")
                } else {
                    format!("{form} + floor(i/{d}) - floor((i-1)/{d})")
                };
                let g = eval_func(&off).unwrap();
                match check_end(&g, &want, 0).unwrap() {
                    EndCheck::At(i, got, w) => {
                        assert_eq!(got, g.at(i as i128).unwrap(), "{off}");
                        assert_eq!(w, want.at(i), "{off}");
                        assert_ne!(got, Ratio::int(w), "{off}");
                    }
                    other => panic!("{off}: {other:?}"),
                }
            }
            // another slope is another rate
            let f = eval_func(&format!("{a}*floor(({}i + {c})/{d}) + {e}", n + 1)).unwrap();
            assert!(matches!(check_end(&f, &want, 0).unwrap(), EndCheck::Slope(_)));
        }
    }
}
