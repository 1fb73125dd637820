//! The OData `$filter` subset Partner Center and Dataverse accept:
//! comparisons (`eq ne gt ge lt le`), `and`/`or`/`not`, parentheses, the
//! `contains`/`startswith`/`endswith` functions and the `any()` lambda.

use std::cmp::Ordering;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use crate::datetime as api_datetime;

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    DateTime(DateTime<Utc>),
    Date(NaiveDate),
    Guid(String),
}

impl Literal {
    pub fn type_name(&self) -> &'static str {
        match self {
            Literal::Null => "null",
            Literal::Bool(_) => "Edm.Boolean",
            Literal::Number(_) => "Edm.Decimal",
            Literal::String(_) => "Edm.String",
            Literal::DateTime(_) => "Edm.DateTimeOffset",
            Literal::Date(_) => "Edm.Date",
            Literal::Guid(_) => "Edm.Guid",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    fn parse(s: &str) -> Option<CmpOp> {
        Some(match s {
            "eq" => CmpOp::Eq,
            "ne" => CmpOp::Ne,
            "gt" => CmpOp::Gt,
            "ge" => CmpOp::Ge,
            "lt" => CmpOp::Lt,
            "le" => CmpOp::Le,
            _ => return None,
        })
    }

    fn holds(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Eq => ord == Ordering::Equal,
            CmpOp::Ne => ord != Ordering::Equal,
            CmpOp::Gt => ord == Ordering::Greater,
            CmpOp::Ge => ord != Ordering::Less,
            CmpOp::Lt => ord == Ordering::Less,
            CmpOp::Le => ord != Ordering::Greater,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrFunc {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp {
        path: Vec<String>,
        op: CmpOp,
        value: Literal,
    },
    Func {
        func: StrFunc,
        path: Vec<String>,
        value: String,
    },
    /// `collection/any(var: body)`; paths in `body` start with `var`.
    Any {
        collection: Vec<String>,
        var: String,
        body: Box<Expr>,
    },
}

impl Expr {
    /// Every (path, literal) comparison, for schema checks. Paths inside an
    /// `any()` body are reported with the collection path in front.
    pub fn comparisons(&self) -> Vec<(Vec<String>, Option<&Literal>)> {
        let mut out = Vec::new();
        self.walk(&[], &mut out);
        out
    }

    fn walk<'a>(&'a self, prefix: &[String], out: &mut Vec<(Vec<String>, Option<&'a Literal>)>) {
        let full = |p: &[String]| -> Vec<String> {
            if prefix.is_empty() {
                p.to_vec()
            } else {
                prefix.iter().chain(p.iter().skip(1)).cloned().collect()
            }
        };
        match self {
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.walk(prefix, out);
                b.walk(prefix, out);
            }
            Expr::Not(a) => a.walk(prefix, out),
            Expr::Cmp { path, value, .. } => out.push((full(path), Some(value))),
            Expr::Func { path, .. } => out.push((full(path), None)),
            Expr::Any {
                collection, body, ..
            } => {
                let c = full(collection);
                body.walk(&c, out);
            }
        }
    }

    /// Top-level `and`-ed comparisons on `field` (used to narrow index scans).
    pub fn conjunct_bounds(&self, field: &str) -> Vec<(CmpOp, &Literal)> {
        let mut out = Vec::new();
        self.collect_bounds(field, &mut out);
        out
    }

    fn collect_bounds<'a>(&'a self, field: &str, out: &mut Vec<(CmpOp, &'a Literal)>) {
        match self {
            Expr::And(a, b) => {
                a.collect_bounds(field, out);
                b.collect_bounds(field, out);
            }
            Expr::Cmp { path, op, value }
                if path.len() == 1 && path[0].eq_ignore_ascii_case(field) =>
            {
                out.push((*op, value))
            }
            _ => {}
        }
    }
}

/// Where filter paths get their values.
pub trait Resolver {
    /// The value at `path` (Null when absent).
    fn value(&self, path: &[String]) -> Value;
    /// The elements of the collection at `path`.
    fn elements(&self, path: &[String]) -> Vec<Value>;
}

/// Resolves paths inside one JSON document.
pub struct JsonResolver<'a>(pub &'a Value);

fn walk_json<'v>(mut v: &'v Value, path: &[String]) -> Option<&'v Value> {
    for seg in path {
        v = match v {
            Value::Object(m) => m.get(seg.as_str()).or_else(|| {
                m.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(seg))
                    .map(|(_, v)| v)
            })?,
            _ => return None,
        };
    }
    Some(v)
}

impl Resolver for JsonResolver<'_> {
    fn value(&self, path: &[String]) -> Value {
        walk_json(self.0, path).cloned().unwrap_or(Value::Null)
    }
    fn elements(&self, path: &[String]) -> Vec<Value> {
        match walk_json(self.0, path) {
            Some(Value::Array(a)) => a.clone(),
            _ => Vec::new(),
        }
    }
}

/// Evaluates a filter against one row.
pub fn eval(expr: &Expr, row: &dyn Resolver) -> bool {
    match expr {
        Expr::And(a, b) => eval(a, row) && eval(b, row),
        Expr::Or(a, b) => eval(a, row) || eval(b, row),
        Expr::Not(a) => !eval(a, row),
        Expr::Cmp { path, op, value } => compare(&row.value(path), *op, value),
        Expr::Func { func, path, value } => match row.value(path) {
            Value::String(s) => {
                let (s, v) = (s.to_lowercase(), value.to_lowercase());
                match func {
                    StrFunc::Contains => s.contains(&v),
                    StrFunc::StartsWith => s.starts_with(&v),
                    StrFunc::EndsWith => s.ends_with(&v),
                }
            }
            _ => false,
        },
        Expr::Any {
            collection,
            var: _,
            body,
        } => row.elements(collection).iter().any(|el| {
            let wrapped = ElementResolver { element: el };
            eval(body, &wrapped)
        }),
    }
}

struct ElementResolver<'a> {
    element: &'a Value,
}

impl Resolver for ElementResolver<'_> {
    fn value(&self, path: &[String]) -> Value {
        walk_json(self.element, path.get(1..).unwrap_or(&[]))
            .cloned()
            .unwrap_or(Value::Null)
    }
    fn elements(&self, path: &[String]) -> Vec<Value> {
        match walk_json(self.element, path.get(1..).unwrap_or(&[])) {
            Some(Value::Array(a)) => a.clone(),
            _ => Vec::new(),
        }
    }
}

/// Compares a row value with a literal; values of another type never match
/// (except `ne`).
pub fn compare(actual: &Value, op: CmpOp, lit: &Literal) -> bool {
    let ord = match (actual, lit) {
        (Value::Null, Literal::Null) => Some(Ordering::Equal),
        (Value::Null, _) | (_, Literal::Null) => None,
        (Value::Bool(a), Literal::Bool(b)) => Some(a.cmp(b)),
        (Value::Number(a), Literal::Number(b)) => a.as_f64().and_then(|a| a.partial_cmp(b)),
        (Value::String(a), Literal::String(b)) => {
            if matches!(op, CmpOp::Eq | CmpOp::Ne) {
                Some(if a.eq_ignore_ascii_case(b) {
                    Ordering::Equal
                } else {
                    a.cmp(b)
                })
            } else {
                Some(a.as_str().cmp(b.as_str()))
            }
        }
        (Value::String(a), Literal::Guid(b)) => {
            Some(a.to_ascii_lowercase().cmp(&b.to_ascii_lowercase()))
        }
        (Value::String(a), Literal::DateTime(b)) => api_datetime::parse(a).map(|a| a.cmp(b)),
        (Value::String(a), Literal::Date(b)) => {
            NaiveDate::parse_from_str(a.get(..10).unwrap_or(a), "%Y-%m-%d")
                .ok()
                .map(|a| a.cmp(b))
        }
        _ => None,
    };
    match ord {
        Some(o) => op.holds(o),
        None => op == CmpOp::Ne,
    }
}

/// A `$filter` that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(pub String);

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Lit(Literal),
    LParen,
    RParen,
    Slash,
    Colon,
    Comma,
}

fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n)
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn bare_literal(s: &str) -> Result<Literal, FilterError> {
    if is_guid(s) {
        return Ok(Literal::Guid(s.to_owned()));
    }
    if s.len() == 10
        && let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
    {
        return Ok(Literal::Date(d));
    }
    if s.contains('T')
        && let Some(dt) = api_datetime::parse(s)
    {
        return Ok(Literal::DateTime(dt));
    }
    let num = s.trim_end_matches(['m', 'M', 'd', 'D', 'l', 'L', 'f', 'F']);
    if let Ok(n) = num.parse::<f64>() {
        return Ok(Literal::Number(n));
    }
    Err(FilterError(format!(
        "Syntax error: '{s}' is not a valid literal."
    )))
}

fn lex(input: &str) -> Result<Vec<Tok>, FilterError> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            '/' => {
                out.push(Tok::Slash);
                i += 1
            }
            ':' => {
                out.push(Tok::Colon);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(FilterError(
                                "Syntax error: unterminated string literal.".into(),
                            ));
                        }
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Lit(Literal::String(s)));
            }
            c if c.is_ascii_digit() || c == '-' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || ".:+-".contains(chars[i]))
                {
                    i += 1;
                }
                let s: String = chars[start..i].iter().collect();
                out.push(Tok::Lit(bare_literal(&s)?));
            }
            c if c.is_alphabetic() || c == '_' || c == '@' || c == '$' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || "_@$.-".contains(chars[i]))
                {
                    i += 1;
                }
                let s: String = chars[start..i].iter().collect();
                if s.contains('-') {
                    if is_guid(&s) {
                        out.push(Tok::Lit(Literal::Guid(s)));
                    } else {
                        return Err(FilterError(format!("Syntax error at '{s}'.")));
                    }
                } else {
                    match s.as_str() {
                        "null" => out.push(Tok::Lit(Literal::Null)),
                        "true" => out.push(Tok::Lit(Literal::Bool(true))),
                        "false" => out.push(Tok::Lit(Literal::Bool(false))),
                        _ => out.push(Tok::Ident(s)),
                    }
                }
            }
            other => {
                return Err(FilterError(format!(
                    "Syntax error: character '{other}' is not valid."
                )));
            }
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
    fn keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s == kw)
    }
    fn expect(&mut self, t: Tok) -> Result<(), FilterError> {
        match self.next() {
            Some(got) if got == t => Ok(()),
            got => Err(FilterError(format!(
                "Syntax error: expected {t:?}, found {got:?}."
            ))),
        }
    }
    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.pos += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }
    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            self.pos += 1;
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }
    fn unary(&mut self) -> Result<Expr, FilterError> {
        if self.keyword("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let e = self.or()?;
            self.expect(Tok::RParen)?;
            return Ok(e);
        }
        self.primary()
    }
    fn path(&mut self) -> Result<Vec<String>, FilterError> {
        let mut path = Vec::new();
        match self.next() {
            Some(Tok::Ident(s)) => path.push(s),
            got => {
                return Err(FilterError(format!(
                    "Syntax error: expected a property name, found {got:?}."
                )));
            }
        }
        while self.peek() == Some(&Tok::Slash) {
            if matches!(self.toks.get(self.pos + 1), Some(Tok::Ident(s)) if s == "any" || s == "all")
                && self.toks.get(self.pos + 2) == Some(&Tok::LParen)
            {
                break;
            }
            self.pos += 1;
            match self.next() {
                Some(Tok::Ident(s)) => path.push(s),
                got => {
                    return Err(FilterError(format!(
                        "Syntax error: expected a property name, found {got:?}."
                    )));
                }
            }
        }
        Ok(path)
    }
    fn primary(&mut self) -> Result<Expr, FilterError> {
        // Function call: contains(path, 'x').
        if let Some(Tok::Ident(name)) = self.peek().cloned()
            && self.toks.get(self.pos + 1) == Some(&Tok::LParen)
        {
            let func = match name.as_str() {
                "contains" => StrFunc::Contains,
                "startswith" => StrFunc::StartsWith,
                "endswith" => StrFunc::EndsWith,
                other => return Err(FilterError(format!("Unknown function '{other}'."))),
            };
            self.pos += 2;
            let path = self.path()?;
            self.expect(Tok::Comma)?;
            let value = match self.next() {
                Some(Tok::Lit(Literal::String(s))) => s,
                got => {
                    return Err(FilterError(format!(
                        "Syntax error: expected a string, found {got:?}."
                    )));
                }
            };
            self.expect(Tok::RParen)?;
            return Ok(Expr::Func { func, path, value });
        }
        let path = self.path()?;
        if self.peek() == Some(&Tok::Slash) {
            self.pos += 1;
            match self.next() {
                Some(Tok::Ident(s)) if s == "any" => {}
                _ => {
                    return Err(FilterError(
                        "Only the any() lambda operator is supported.".into(),
                    ));
                }
            }
            self.expect(Tok::LParen)?;
            let var = match self.next() {
                Some(Tok::Ident(v)) => v,
                got => {
                    return Err(FilterError(format!(
                        "Syntax error: expected a range variable, found {got:?}."
                    )));
                }
            };
            self.expect(Tok::Colon)?;
            let body = self.or()?;
            self.expect(Tok::RParen)?;
            check_var(&body, &var)?;
            return Ok(Expr::Any {
                collection: path,
                var,
                body: Box::new(body),
            });
        }
        let op = match self.next() {
            Some(Tok::Ident(op)) => {
                CmpOp::parse(&op).ok_or_else(|| FilterError(format!("Unknown operator '{op}'.")))?
            }
            got => {
                return Err(FilterError(format!(
                    "Syntax error: expected an operator, found {got:?}."
                )));
            }
        };
        let value = match self.next() {
            Some(Tok::Lit(l)) => l,
            got => {
                return Err(FilterError(format!(
                    "Syntax error: expected a literal, found {got:?}."
                )));
            }
        };
        Ok(Expr::Cmp { path, op, value })
    }
}

fn check_var(body: &Expr, var: &str) -> Result<(), FilterError> {
    let ok = |p: &[String]| p.first().is_some_and(|f| f == var) && p.len() > 1;
    match body {
        Expr::And(a, b) | Expr::Or(a, b) => {
            check_var(a, var)?;
            check_var(b, var)
        }
        Expr::Not(a) => check_var(a, var),
        Expr::Cmp { path, .. } | Expr::Func { path, .. } if ok(path) => Ok(()),
        Expr::Any { collection, .. } if ok(collection) => Ok(()),
        _ => Err(FilterError(format!(
            "Paths inside any() must start with the range variable '{var}/'."
        ))),
    }
}

/// Parses a `$filter` expression.
pub fn parse_filter(input: &str) -> Result<Expr, FilterError> {
    let toks = lex(input)?;
    if toks.is_empty() {
        return Err(FilterError("The $filter expression is empty.".into()));
    }
    let mut p = Parser { toks, pos: 0 };
    let e = p.or()?;
    if p.pos < p.toks.len() {
        return Err(FilterError(format!(
            "Syntax error at position {}: unexpected {:?}.",
            p.pos, p.toks[p.pos]
        )));
    }
    Ok(e)
}

/// One `$orderby` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderBy {
    pub field: String,
    pub desc: bool,
}

/// Parses `$orderby=a desc, b`.
pub fn parse_orderby(input: &str) -> Result<Vec<OrderBy>, FilterError> {
    let mut out = Vec::new();
    for item in input.split(',') {
        let mut words = item.split_whitespace();
        let field = words
            .next()
            .ok_or_else(|| FilterError("The $orderby expression is empty.".into()))?;
        let desc = match words.next().map(str::to_ascii_lowercase).as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => {
                return Err(FilterError(format!(
                    "Unknown $orderby direction '{other}'."
                )));
            }
        };
        if words.next().is_some() {
            return Err(FilterError(format!("Syntax error in $orderby '{item}'.")));
        }
        out.push(OrderBy {
            field: field.to_owned(),
            desc,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn matches(filter: &str, doc: Value) -> bool {
        eval(&parse_filter(filter).unwrap(), &JsonResolver(&doc))
    }

    #[test]
    fn documented_forms_parse_and_evaluate() {
        let doc = json!({"status": "New", "substatus": "Pending", "direction": "Incoming", "type": "Shared",
            "engagementId": "65edc0b5-1111-2222-3333-444455556666",
            "updatedDateTime": "2025-03-01T10:00:00.1234567Z",
            "customerProfile": {"address": {"country": "US"}},
            "team": [{"email": "a@x.com"}, {"email": "r2d2@contoso.com"}]});
        assert!(matches(
            "status eq 'New' and direction eq 'Incoming'",
            doc.clone()
        ));
        assert!(matches(
            "(type eq 'Shared' and direction eq 'Incoming')",
            doc.clone()
        ));
        assert!(matches(
            "engagementId eq '65edc0b5-1111-2222-3333-444455556666'",
            doc.clone()
        ));
        assert!(matches(
            "engagementId eq 65edc0b5-1111-2222-3333-444455556666",
            doc.clone()
        ));
        assert!(matches(
            "customerProfile/address/country eq 'US'",
            doc.clone()
        ));
        assert!(matches(
            "team/any(t:t/email eq 'r2d2@contoso.com')",
            doc.clone()
        ));
        assert!(!matches(
            "team/any(t:t/email eq 'c3po@contoso.com')",
            doc.clone()
        ));
        assert!(matches(
            "updatedDateTime ge 2025-03-01T10:00:00Z",
            doc.clone()
        ));
        assert!(!matches(
            "updatedDateTime gt 2025-03-01T10:00:00.1234567Z",
            doc.clone()
        ));
        assert!(matches(
            "not (status eq 'Closed') or substatus eq 'Won'",
            doc.clone()
        ));
        assert!(matches("contains(status,'ew')", doc.clone()));
        assert!(matches("missing eq null", doc));
    }

    #[test]
    fn escapes_and_errors() {
        assert!(matches("name eq 'O''Brien'", json!({"name": "O'Brien"})));
        for bad in [
            "status eq",
            "status = 'x'",
            "(status eq 'x'",
            "status eq 'x' and",
            "team/all(t:t/email eq 'x')",
            "x eq 'unterminated",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_orderby("createdDateTime desc, id").unwrap(),
            vec![
                OrderBy {
                    field: "createdDateTime".into(),
                    desc: true
                },
                OrderBy {
                    field: "id".into(),
                    desc: false
                }
            ]
        );
        assert!(parse_orderby("createdDateTime sideways").is_err());
    }

    #[test]
    fn account_lookups_evaluate_each_or_group() {
        let f = "new_dunsnumber eq '1' or (name eq 'Contoso' and address1_postalcode eq '98052') \
                 or (name eq 'Fabrikam' and address1_postalcode eq null)";
        let yes = [
            json!({"name": "x", "new_dunsnumber": "1"}),
            json!({"name": "CONTOSO", "address1_postalcode": "98052"}),
            json!({"name": "fabrikam", "address1_postalcode": null}),
        ];
        for row in yes {
            assert!(matches(f, row.clone()), "{row}");
        }
        let no = [
            json!({"name": "Contoso", "address1_postalcode": "10115"}),
            json!({"name": "Fabrikam", "address1_postalcode": "98052"}),
            json!({"name": "Other", "address1_postalcode": "98052"}),
        ];
        for row in no {
            assert!(!matches(f, row.clone()), "{row}");
        }
        // Functions the simulator does not know are refused, never ignored.
        assert!(
            parse_filter("Microsoft.Dynamics.CRM.In(PropertyName='name',PropertyValues=['A'])")
                .is_err()
        );
    }

    #[test]
    fn bounds_come_from_top_level_conjuncts() {
        let e =
            parse_filter("updatedDateTime ge 2025-01-01T00:00:00Z and status eq 'New'").unwrap();
        assert_eq!(e.conjunct_bounds("updatedDateTime").len(), 1);
        let e = parse_filter("updatedDateTime ge 2025-01-01T00:00:00Z or status eq 'New'").unwrap();
        assert!(e.conjunct_bounds("updatedDateTime").is_empty());
    }
}
