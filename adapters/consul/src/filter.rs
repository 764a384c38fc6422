//! Consul's filter expressions (the `go-bexpr` language of `?filter=` and
//! of a resolver's `Subsets.NAME.Filter`), parsed and evaluated on the
//! instances the adapter already reads: pure, no I/O.
//!
//! Served: `or`, `and`, `not`, parentheses; `==`, `!=`, `contains`,
//! `not contains`, `in`, `not in`, `is empty`, `is not empty`; values
//! quoted with `"` or `` ` `` or bare words. Selectors: `Service.Meta.KEY`,
//! `Service.Tags`, `Service.ID`, `Service.Service`, `Service.Address`,
//! `Service.Port`, `Node.Node`, `Node.Address`, `Node.Datacenter`,
//! `Node.Meta.KEY`. Anything else (`matches`, other selectors) is an error
//! that names it: never a guess. A missing meta key is the empty string.
//! Bounded: at most [`MAX_FILTER_BYTES`] of text and [`MAX_DEPTH`] levels
//! of nesting.

use crate::api::ServiceEntry;

/// The longest filter accepted.
pub const MAX_FILTER_BYTES: usize = 4096;
/// The deepest nesting of `not` and parentheses accepted.
pub const MAX_DEPTH: usize = 32;

/// A parsed filter.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// Both.
    And(Box<Expr>, Box<Expr>),
    /// Either.
    Or(Box<Expr>, Box<Expr>),
    /// Not.
    Not(Box<Expr>),
    /// One comparison.
    Match(Selector, Op, String),
}

/// What a comparison looks at.
#[derive(Clone, Debug, PartialEq)]
pub enum Selector {
    /// `Service.Meta.KEY`.
    ServiceMeta(String),
    /// `Service.Tags`.
    ServiceTags,
    /// `Service.ID`.
    ServiceId,
    /// `Service.Service`.
    ServiceName,
    /// `Service.Address`.
    ServiceAddress,
    /// `Service.Port`.
    ServicePort,
    /// `Node.Node`.
    NodeName,
    /// `Node.Address`.
    NodeAddress,
    /// `Node.Datacenter`.
    NodeDatacenter,
    /// `Node.Meta.KEY`.
    NodeMeta(String),
}

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// `==`.
    Equal,
    /// `!=`.
    NotEqual,
    /// `contains`, or `VALUE in SELECTOR`.
    Contains,
    /// `not contains`, or `VALUE not in SELECTOR`.
    NotContains,
    /// `is empty` (the value is unused).
    Empty,
    /// `is not empty`.
    NotEmpty,
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Open,
    Close,
    Word(String),
    Quoted(String),
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '(' => out.push(Token::Open),
            ')' => out.push(Token::Close),
            '"' | '`' => {
                let mut value = String::new();
                let mut closed = false;
                while let Some((_, d)) = chars.next() {
                    match d {
                        '\\' if c == '"' => match chars.next() {
                            Some((_, e)) => value.push(e),
                            None => break,
                        },
                        d if d == c => {
                            closed = true;
                            break;
                        }
                        d => value.push(d),
                    }
                }
                if !closed {
                    return Err(format!("unterminated string at byte {i}"));
                }
                out.push(Token::Quoted(value));
            }
            '=' | '!' => match chars.next() {
                Some((_, '=')) => out.push(Token::Word(format!("{c}="))),
                _ => return Err(format!("unknown operator at byte {i}")),
            },
            _ => {
                let mut word = String::from(c);
                while let Some((_, d)) = chars.peek() {
                    if d.is_whitespace() || matches!(d, '(' | ')' | '"' | '`' | '=' | '!') {
                        break;
                    }
                    word.push(*d);
                    chars.next();
                }
                out.push(Token::Word(word));
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek_word(&self, offset: usize) -> Option<&str> {
        match self.tokens.get(self.at + offset) {
            Some(Token::Word(w)) => Some(w.as_str()),
            _ => None,
        }
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.peek_word(0) == Some("or") {
            self.at += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while self.peek_word(0) == Some("and") {
            self.at += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH}"));
        }
        let e = if self.peek_word(0) == Some("not") {
            self.at += 1;
            Expr::Not(Box::new(self.unary()?))
        } else if self.tokens.get(self.at) == Some(&Token::Open) {
            self.at += 1;
            let e = self.or()?;
            if self.next() != Some(Token::Close) {
                return Err("a ( without its )".into());
            }
            e
        } else {
            self.comparison()?
        };
        self.depth -= 1;
        Ok(e)
    }

    fn value(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Quoted(v)) => Ok(v),
            Some(Token::Word(w)) if !is_keyword(&w) => Ok(w),
            other => Err(format!("expected a value, found {other:?}")),
        }
    }

    fn comparison(&mut self) -> Result<Expr, String> {
        // VALUE [not] in SELECTOR
        let in_form = match (self.peek_word(1), self.peek_word(2)) {
            (Some("in"), _) => Some(1),
            (Some("not"), Some("in")) => Some(2),
            _ => None,
        };
        if let Some(words) = in_form {
            let value = self.value()?;
            self.at += words;
            let selector = self.selector()?;
            let op = if words == 1 {
                Op::Contains
            } else {
                Op::NotContains
            };
            return Ok(Expr::Match(selector, op, value));
        }
        let selector = self.selector()?;
        let op = match (self.peek_word(0), self.peek_word(1), self.peek_word(2)) {
            (Some("=="), _, _) => (Op::Equal, 1),
            (Some("!="), _, _) => (Op::NotEqual, 1),
            (Some("contains"), _, _) => (Op::Contains, 1),
            (Some("not"), Some("contains"), _) => (Op::NotContains, 2),
            (Some("is"), Some("empty"), _) => (Op::Empty, 2),
            (Some("is"), Some("not"), Some("empty")) => (Op::NotEmpty, 3),
            (Some(other), _, _) => return Err(format!("operator {other:?} is not evaluated")),
            (None, _, _) => return Err("expected an operator".into()),
        };
        self.at += op.1;
        let value = match op.0 {
            Op::Empty | Op::NotEmpty => String::new(),
            _ => self.value()?,
        };
        Ok(Expr::Match(selector, op.0, value))
    }

    fn selector(&mut self) -> Result<Selector, String> {
        let Some(Token::Word(w)) = self.next() else {
            return Err("expected a selector".into());
        };
        let parts: Vec<&str> = w.split('.').collect();
        Ok(match parts.as_slice() {
            ["Service", "Meta", key] => Selector::ServiceMeta((*key).to_owned()),
            ["Service", "Tags"] => Selector::ServiceTags,
            ["Service", "ID"] => Selector::ServiceId,
            ["Service", "Service"] => Selector::ServiceName,
            ["Service", "Address"] => Selector::ServiceAddress,
            ["Service", "Port"] => Selector::ServicePort,
            ["Node", "Node"] => Selector::NodeName,
            ["Node", "Address"] => Selector::NodeAddress,
            ["Node", "Datacenter"] => Selector::NodeDatacenter,
            ["Node", "Meta", key] => Selector::NodeMeta((*key).to_owned()),
            _ => return Err(format!("selector {w:?} is not evaluated")),
        })
    }
}

fn is_keyword(w: &str) -> bool {
    matches!(
        w,
        "and" | "or" | "not" | "in" | "is" | "contains" | "==" | "!="
    )
}

/// Parses a filter; the error names what is not understood.
pub fn parse(text: &str) -> Result<Expr, String> {
    if text.len() > MAX_FILTER_BYTES {
        return Err(format!("longer than {MAX_FILTER_BYTES} bytes"));
    }
    let mut p = Parser {
        tokens: tokens(text)?,
        at: 0,
        depth: 0,
    };
    let e = p.or()?;
    if p.at < p.tokens.len() {
        return Err(format!("unexpected {:?}", p.tokens[p.at]));
    }
    Ok(e)
}

enum Value<'a> {
    One(String),
    List(&'a [String]),
}

fn select<'a>(s: &Selector, e: &'a ServiceEntry) -> Value<'a> {
    let meta = |m: &Option<std::collections::BTreeMap<String, String>>, k: &str| {
        m.as_ref()
            .and_then(|m| m.get(k))
            .cloned()
            .unwrap_or_default()
    };
    match s {
        Selector::ServiceMeta(k) => Value::One(meta(&e.service.meta, k)),
        Selector::ServiceTags => Value::List(e.service.tags.as_deref().unwrap_or(&[])),
        Selector::ServiceId => Value::One(e.service.id.clone()),
        Selector::ServiceName => Value::One(e.service.service.clone()),
        Selector::ServiceAddress => Value::One(e.service.address.clone()),
        Selector::ServicePort => Value::One(e.service.port.to_string()),
        Selector::NodeName => Value::One(e.node.node.clone()),
        Selector::NodeAddress => Value::One(e.node.address.clone()),
        Selector::NodeDatacenter => Value::One(e.node.datacenter.clone()),
        Selector::NodeMeta(k) => Value::One(meta(&e.node.meta, k)),
    }
}

/// Whether instance `e` passes the filter.
pub fn eval(expr: &Expr, e: &ServiceEntry) -> bool {
    match expr {
        Expr::And(a, b) => eval(a, e) && eval(b, e),
        Expr::Or(a, b) => eval(a, e) || eval(b, e),
        Expr::Not(a) => !eval(a, e),
        Expr::Match(s, op, v) => {
            let got = select(s, e);
            let contains = || match &got {
                Value::One(s) => s.contains(v.as_str()),
                Value::List(l) => l.iter().any(|t| t == v),
            };
            let empty = || match &got {
                Value::One(s) => s.is_empty(),
                Value::List(l) => l.is_empty(),
            };
            let equal = || match &got {
                Value::One(s) => s == v,
                Value::List(_) => false,
            };
            match op {
                Op::Equal => equal(),
                Op::NotEqual => !equal(),
                Op::Contains => contains(),
                Op::NotContains => !contains(),
                Op::Empty => empty(),
                Op::NotEmpty => !empty(),
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// The label the services side gives the instances that pass subset
/// `subset`'s filter, when the filter is not a plain label selector.
pub fn subset_label(subset: &str) -> String {
    format!("{SUBSET_LABEL_PREFIX}{subset}")
}

/// See [`subset_label`].
pub const SUBSET_LABEL_PREFIX: &str = "consul-subset.sextant.io/";
