//! `where` expressions of forward rules: a small parser and evaluator for conditions on JSON
//! payload fields (`temp < 2 or temp > 8`, `temp not in 2..8`, `exists door`, `state == "open"`).
//! Missing fields, wrong types and non-JSON payloads are reported as `Unknown` to the caller.

use serde_json::Value;

/// A literal on the right of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Num(f64),
    Str(String),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A parsed `where` expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Exists(Vec<String>),
    Cmp(Vec<String>, Op, Lit),
    /// `field in lo..hi` (both ends included).
    In(Vec<String>, f64, f64),
}

/// Evaluation met a missing field, a field of the wrong type, or a non-JSON payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unknown;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Num(f64),
    Str(String),
    Op(Op),
    LParen,
    RParen,
    Range,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i] as char;
        let two = s.get(i..i + 2).unwrap_or("");
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == '(' || c == ')' {
            out.push(if c == '(' { Tok::LParen } else { Tok::RParen });
            i += 1;
        } else if two == ".." {
            out.push(Tok::Range);
            i += 2;
        } else if let Some(op) = match two {
            "==" => Some(Op::Eq),
            "!=" => Some(Op::Ne),
            "<=" => Some(Op::Le),
            ">=" => Some(Op::Ge),
            _ => None,
        } {
            out.push(Tok::Op(op));
            i += 2;
        } else if c == '<' || c == '>' {
            out.push(Tok::Op(if c == '<' { Op::Lt } else { Op::Gt }));
            i += 1;
        } else if c == '"' {
            let end = s[i + 1..]
                .find('"')
                .ok_or(format!("unterminated string at column {}", i + 1))?;
            out.push(Tok::Str(s[i + 1..i + 1 + end].to_string()));
            i += end + 2;
        } else if c.is_ascii_digit() || c == '-' {
            let start = i;
            i += 1;
            while i < b.len() {
                let d = b[i] as char;
                let dot_digit = d == '.' && b.get(i + 1).is_some_and(|n| n.is_ascii_digit());
                if d.is_ascii_digit() || dot_digit || d == 'e' || d == 'E' {
                    i += 1;
                } else {
                    break;
                }
            }
            let n: f64 = s[start..i]
                .parse()
                .map_err(|_| format!("bad number `{}` at column {}", &s[start..i], start + 1))?;
            out.push(Tok::Num(n));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() {
                let d = b[i] as char;
                let dot_ident = d == '.' && b.get(i + 1).is_some_and(|n| *n != b'.');
                if d.is_ascii_alphanumeric() || d == '_' || d == '-' || dot_ident {
                    i += 1;
                } else {
                    break;
                }
            }
            out.push(Tok::Ident(s[start..i].to_string()));
        } else {
            return Err(format!("unexpected `{c}` at column {}", i + 1));
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn keyword(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Ident(w)) if w == kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.keyword("or") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.unary()?;
        while self.keyword("and") {
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }
    fn unary(&mut self) -> Result<Expr, String> {
        if self.keyword("not") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.keyword("exists") {
            return Ok(Expr::Exists(self.path()?));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let e = self.or()?;
            return match self.next() {
                Some(Tok::RParen) => Ok(e),
                _ => Err("missing `)`".into()),
            };
        }
        let path = self.path()?;
        if self.keyword("in") {
            return self.range(path);
        }
        if self.keyword("not") {
            if !self.keyword("in") {
                return Err("expected `in` after `not`".into());
            }
            return Ok(Expr::Not(Box::new(self.range(path)?)));
        }
        let op = match self.next() {
            Some(Tok::Op(op)) => op,
            t => {
                return Err(format!(
                    "expected a comparison after the field, found {t:?}"
                ))
            }
        };
        let lit = match self.next() {
            Some(Tok::Num(n)) => Lit::Num(n),
            Some(Tok::Str(s)) => Lit::Str(s),
            Some(Tok::Ident(w)) if w == "true" || w == "false" => Lit::Bool(w == "true"),
            Some(Tok::Ident(w)) if w == "null" => Lit::Null,
            t => {
                return Err(format!(
                    "expected a number, string, true, false or null, found {t:?}"
                ))
            }
        };
        if !matches!(lit, Lit::Num(_)) && !matches!(op, Op::Eq | Op::Ne) {
            return Err("only numbers can be compared with <, <=, > or >=".into());
        }
        Ok(Expr::Cmp(path, op, lit))
    }
    fn range(&mut self, path: Vec<String>) -> Result<Expr, String> {
        match (self.next(), self.next(), self.next()) {
            (Some(Tok::Num(lo)), Some(Tok::Range), Some(Tok::Num(hi))) if lo <= hi => {
                Ok(Expr::In(path, lo, hi))
            }
            _ => Err("expected a range `low..high` (numbers, low <= high) after `in`".into()),
        }
    }
    fn path(&mut self) -> Result<Vec<String>, String> {
        match self.next() {
            Some(Tok::Ident(w)) if !["and", "or", "not", "in", "exists"].contains(&w.as_str()) => {
                Ok(w.split('.').map(str::to_string).collect())
            }
            t => Err(format!("expected a field name, found {t:?}")),
        }
    }
}

/// Parses a `where` expression; the error says what and where (column or token).
pub fn parse(s: &str) -> Result<Expr, String> {
    let toks = tokenize(s)?;
    if toks.is_empty() {
        return Err("empty expression".into());
    }
    let mut p = Parser { toks, pos: 0 };
    let e = p.or()?;
    match p.peek() {
        None => Ok(e),
        Some(t) => Err(format!("unexpected {t:?} after a complete expression")),
    }
}

/// The value at a dotted path of a JSON document, if any (`null` counts as present).
pub fn lookup<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |v, k| v.as_object()?.get(k))
}

impl Expr {
    /// Evaluates on a parsed payload, left to right with short-circuit; `Err(Unknown)` as soon
    /// as a needed field is missing or has the wrong type (the rule's `on_missing` decides).
    pub fn eval(&self, doc: &Value) -> Result<bool, Unknown> {
        match self {
            Expr::Or(a, b) => Ok(a.eval(doc)? || b.eval(doc)?),
            Expr::And(a, b) => Ok(a.eval(doc)? && b.eval(doc)?),
            Expr::Not(a) => Ok(!a.eval(doc)?),
            Expr::Exists(p) => Ok(lookup(doc, p).is_some()),
            Expr::In(p, lo, hi) => {
                let v = lookup(doc, p).and_then(Value::as_f64).ok_or(Unknown)?;
                Ok(*lo <= v && v <= *hi)
            }
            Expr::Cmp(p, op, lit) => {
                let v = lookup(doc, p).ok_or(Unknown)?;
                match lit {
                    Lit::Num(n) => {
                        let x = v.as_f64().ok_or(Unknown)?;
                        Ok(match op {
                            Op::Eq => x == *n,
                            Op::Ne => x != *n,
                            Op::Lt => x < *n,
                            Op::Le => x <= *n,
                            Op::Gt => x > *n,
                            Op::Ge => x >= *n,
                        })
                    }
                    other => {
                        let same = match other {
                            Lit::Str(s) => v.as_str() == Some(s.as_str()),
                            Lit::Bool(b) => v.as_bool() == Some(*b),
                            _ => v.is_null(),
                        };
                        Ok(if *op == Op::Eq { same } else { !same })
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(e: &str, doc: Value) -> Result<bool, Unknown> {
        parse(e).expect("parses").eval(&doc)
    }

    #[test]
    fn comparisons_ranges_and_logic() {
        let e = "temp < 2 or temp > 8";
        assert_eq!(ev(e, json!({"temp": 1.5})), Ok(true));
        assert_eq!(ev(e, json!({"temp": 5})), Ok(false));
        assert_eq!(ev(e, json!({"temp": 8.01})), Ok(true));
        assert_eq!(ev("temp not in 2..8", json!({"temp": 8})), Ok(false));
        assert_eq!(ev("temp not in 2..8", json!({"temp": -3.5})), Ok(true));
        assert_eq!(ev("t in -1.5..2e1", json!({"t": 20})), Ok(true));
        assert_eq!(
            ev(
                "(a >= 1 and a <= 3) and not b == \"x\"",
                json!({"a": 3, "b": "y"})
            ),
            Ok(true)
        );
        assert_eq!(
            ev("s.door == \"open\"", json!({"s": {"door": "open"}})),
            Ok(true)
        );
        assert_eq!(ev("ok != true", json!({"ok": false})), Ok(true));
        assert_eq!(ev("v == null", json!({"v": null})), Ok(true));
    }

    #[test]
    fn presence_and_missing_fields() {
        assert_eq!(ev("exists alarm", json!({"alarm": 1})), Ok(true));
        assert_eq!(ev("exists alarm", json!({"x": 1})), Ok(false));
        assert_eq!(ev("not exists a.b", json!({"a": {}})), Ok(true));
        assert_eq!(ev("temp > 8", json!({"x": 1})), Err(Unknown));
        assert_eq!(ev("temp > 8", json!({"temp": "hot"})), Err(Unknown));
        assert_eq!(ev("temp > 8", json!([1, 2])), Err(Unknown));
        // Short-circuit: the missing field is not needed.
        assert_eq!(ev("a > 1 or b > 1", json!({"a": 2})), Ok(true));
        assert_eq!(ev("exists temp and temp > 8", json!({})), Ok(false));
    }

    #[test]
    fn bad_expressions_are_refused() {
        for bad in [
            "",
            "temp <",
            "temp < \"x\"",
            "temp in 8..2",
            "temp ~ 3",
            "(a > 1",
            "a > 1 b",
            "and > 1",
            "a not 3",
            "\"open",
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
    }
}
