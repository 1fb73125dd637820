//! The SOQL subset the simulator answers:
//! `SELECT f1, f2 FROM Object [WHERE cond] [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], …] [LIMIT n] [OFFSET n]`
//! with AND/OR/NOT, parentheses, `= != <> < <= > >=`, `[NOT] IN (…)`, `LIKE`,
//! quoted strings with backslash escapes, numbers, booleans, NULL, and
//! unquoted date and date-time literals.

use chrono::{DateTime, NaiveDate, Utc};

#[derive(Debug, Clone, PartialEq)]
pub enum SoqlValue {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    DateTime(DateTime<Utc>),
    Date(NaiveDate),
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

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    Cmp {
        field: String,
        op: Op,
        value: SoqlValue,
    },
    In {
        field: String,
        values: Vec<SoqlValue>,
        negated: bool,
    },
    Like {
        field: String,
        pattern: String,
    },
}

impl Cond {
    /// Every (field, value) the condition compares, for type checks.
    pub fn leaves(&self) -> Vec<(&str, Vec<&SoqlValue>)> {
        let mut out = Vec::new();
        self.walk(&mut out);
        out
    }

    fn walk<'a>(&'a self, out: &mut Vec<(&'a str, Vec<&'a SoqlValue>)>) {
        match self {
            Cond::And(a, b) | Cond::Or(a, b) => {
                a.walk(out);
                b.walk(out);
            }
            Cond::Not(a) => a.walk(out),
            Cond::Cmp { field, value, .. } => out.push((field, vec![value])),
            Cond::In { field, values, .. } => out.push((field, values.iter().collect())),
            Cond::Like { field, .. } => out.push((field, Vec::new())),
        }
    }

    /// Top-level AND-ed lower bounds on `field` (to narrow index scans).
    pub fn lower_bound(&self, field: &str) -> Option<DateTime<Utc>> {
        match self {
            Cond::And(a, b) => match (a.lower_bound(field), b.lower_bound(field)) {
                (Some(x), Some(y)) => Some(x.max(y)),
                (x, y) => x.or(y),
            },
            Cond::Cmp {
                field: f,
                op: Op::Gt | Op::Ge | Op::Eq,
                value: SoqlValue::DateTime(t),
            } if f.eq_ignore_ascii_case(field) => Some(*t),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderItem {
    pub field: String,
    pub desc: bool,
    pub nulls_last: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub fields: Vec<String>,
    pub object: String,
    pub filter: Option<Cond>,
    pub order: Vec<OrderItem>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Lit(SoqlValue),
    Op(Op),
    LParen,
    RParen,
    Comma,
}

/// A query outside the subset or not valid SOQL (`MALFORMED_QUERY`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SoqlError(pub String);

fn err<T>(m: impl Into<String>) -> Result<T, SoqlError> {
    Err(SoqlError(m.into()))
}

fn literal(s: &str) -> Result<SoqlValue, SoqlError> {
    if s.contains('T') {
        for fmt in ["%Y-%m-%dT%H:%M:%S%.fZ", "%Y-%m-%dT%H:%M:%SZ"] {
            if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
                return Ok(SoqlValue::DateTime(t.and_utc()));
            }
        }
        for fmt in [
            "%Y-%m-%dT%H:%M:%S%.f%:z",
            "%Y-%m-%dT%H:%M:%S%:z",
            "%Y-%m-%dT%H:%M:%S%.f%z",
            "%Y-%m-%dT%H:%M:%S%z",
        ] {
            if let Ok(t) = DateTime::parse_from_str(s, fmt) {
                return Ok(SoqlValue::DateTime(t.with_timezone(&Utc)));
            }
        }
        return err(format!(
            "line 1: unexpected token: '{s}' is not a valid date-time (use YYYY-MM-DDThh:mm:ssZ)"
        ));
    }
    if s.len() == 10
        && s.as_bytes()[4] == b'-'
        && let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
    {
        return Ok(SoqlValue::Date(d));
    }
    s.parse::<f64>()
        .map(SoqlValue::Number)
        .map_err(|_| SoqlError(format!("unexpected token: '{s}'")))
}

fn lex(input: &str) -> Result<Vec<Tok>, SoqlError> {
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
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '=' => {
                out.push(Tok::Op(Op::Eq));
                i += 1
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Op(Op::Ne));
                i += 2
            }
            '<' => {
                let (op, n) = match chars.get(i + 1) {
                    Some('=') => (Op::Le, 2),
                    Some('>') => (Op::Ne, 2),
                    _ => (Op::Lt, 1),
                };
                out.push(Tok::Op(op));
                i += n
            }
            '>' => {
                let (op, n) = if chars.get(i + 1) == Some(&'=') {
                    (Op::Ge, 2)
                } else {
                    (Op::Gt, 1)
                };
                out.push(Tok::Op(op));
                i += n
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return err("line 1: unterminated string literal"),
                        Some('\\') => {
                            let ch = match chars.get(i + 1).copied() {
                                Some('n') => '\n',
                                Some('r') => '\r',
                                Some('t') => '\t',
                                Some('b') => '\u{8}',
                                Some('f') => '\u{c}',
                                Some(ch @ ('\'' | '"' | '\\')) => ch,
                                Some(ch @ ('%' | '_')) => {
                                    // Kept escaped: only LIKE gives them meaning.
                                    s.push('\\');
                                    ch
                                }
                                _ => {
                                    return err(
                                        "line 1: invalid escape sequence in string literal",
                                    );
                                }
                            };
                            s.push(ch);
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1
                        }
                    }
                }
                out.push(Tok::Str(s));
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || ":.+-".contains(chars[i]))
                {
                    i += 1;
                }
                let s: String = chars[start..i].iter().collect();
                out.push(Tok::Lit(literal(&s)?));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '.')
                {
                    i += 1;
                }
                out.push(Tok::Word(chars[start..i].iter().collect()));
            }
            other => return err(format!("line 1: unexpected character '{other}'")),
        }
    }
    Ok(out)
}

struct P {
    t: Vec<Tok>,
    i: usize,
}

impl P {
    fn peek_kw(&self, kw: &str) -> bool {
        matches!(self.t.get(self.i), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }
    fn kw(&mut self, kw: &str) -> Result<(), SoqlError> {
        if self.peek_kw(kw) {
            self.i += 1;
            Ok(())
        } else {
            err(format!(
                "unexpected token: expected {kw}, found {}",
                self.describe()
            ))
        }
    }
    fn describe(&self) -> String {
        match self.t.get(self.i) {
            None => "end of query".into(),
            Some(Tok::Word(w)) => format!("'{w}'"),
            Some(t) => format!("{t:?}"),
        }
    }
    fn ident(&mut self) -> Result<String, SoqlError> {
        match self.t.get(self.i) {
            Some(Tok::Word(w)) => {
                self.i += 1;
                Ok(w.clone())
            }
            _ => err(format!(
                "unexpected token: expected a field name, found {}",
                self.describe()
            )),
        }
    }
    fn value(&mut self) -> Result<SoqlValue, SoqlError> {
        let v = match self.t.get(self.i).cloned() {
            Some(Tok::Str(s)) => SoqlValue::String(s),
            Some(Tok::Lit(l)) => l,
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("null") => SoqlValue::Null,
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("true") => SoqlValue::Bool(true),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("false") => SoqlValue::Bool(false),
            _ => {
                return err(format!(
                    "unexpected token: expected a value, found {}",
                    self.describe()
                ));
            }
        };
        self.i += 1;
        Ok(v)
    }
    fn or(&mut self) -> Result<Cond, SoqlError> {
        let mut l = self.and()?;
        while self.peek_kw("OR") {
            self.i += 1;
            l = Cond::Or(Box::new(l), Box::new(self.and()?));
        }
        Ok(l)
    }
    fn and(&mut self) -> Result<Cond, SoqlError> {
        let mut l = self.not()?;
        while self.peek_kw("AND") {
            self.i += 1;
            l = Cond::And(Box::new(l), Box::new(self.not()?));
        }
        Ok(l)
    }
    fn not(&mut self) -> Result<Cond, SoqlError> {
        if self.peek_kw("NOT") {
            self.i += 1;
            return Ok(Cond::Not(Box::new(self.not()?)));
        }
        if self.t.get(self.i) == Some(&Tok::LParen) {
            self.i += 1;
            let c = self.or()?;
            if self.t.get(self.i) != Some(&Tok::RParen) {
                return err(format!(
                    "unexpected token: expected ')', found {}",
                    self.describe()
                ));
            }
            self.i += 1;
            return Ok(c);
        }
        let field = self.ident()?;
        if self.peek_kw("LIKE") {
            self.i += 1;
            return match self.value()? {
                SoqlValue::String(pattern) => Ok(Cond::Like { field, pattern }),
                _ => err("LIKE needs a quoted string"),
            };
        }
        let negated = self.peek_kw("NOT");
        if negated {
            self.i += 1;
        }
        if self.peek_kw("IN") {
            self.i += 1;
            if self.t.get(self.i) != Some(&Tok::LParen) {
                return err("unexpected token: IN needs a parenthesized list");
            }
            self.i += 1;
            let mut values = vec![self.value()?];
            while self.t.get(self.i) == Some(&Tok::Comma) {
                self.i += 1;
                values.push(self.value()?);
            }
            if self.t.get(self.i) != Some(&Tok::RParen) {
                return err("unexpected token: expected ')' after the IN list");
            }
            self.i += 1;
            return Ok(Cond::In {
                field,
                values,
                negated,
            });
        }
        if negated {
            return err("unexpected token: NOT must be followed by IN here");
        }
        let op = match self.t.get(self.i) {
            Some(Tok::Op(op)) => *op,
            _ => {
                return err(format!(
                    "unexpected token: expected an operator, found {}",
                    self.describe()
                ));
            }
        };
        self.i += 1;
        let value = self.value()?;
        Ok(Cond::Cmp { field, op, value })
    }
}

/// Parses one query of the subset.
pub fn parse(input: &str) -> Result<Query, SoqlError> {
    let t = lex(input)?;
    let mut p = P { t, i: 0 };
    p.kw("SELECT")?;
    let mut fields = vec![p.ident()?];
    while p.t.get(p.i) == Some(&Tok::Comma) {
        p.i += 1;
        fields.push(p.ident()?);
    }
    p.kw("FROM")?;
    let object = p.ident()?;
    let filter = if p.peek_kw("WHERE") {
        p.i += 1;
        Some(p.or()?)
    } else {
        None
    };
    let mut order = Vec::new();
    if p.peek_kw("ORDER") {
        p.i += 1;
        p.kw("BY")?;
        loop {
            let field = p.ident()?;
            let mut desc = false;
            if p.peek_kw("ASC") {
                p.i += 1;
            } else if p.peek_kw("DESC") {
                p.i += 1;
                desc = true;
            }
            let mut nulls_last = desc;
            if p.peek_kw("NULLS") {
                p.i += 1;
                if p.peek_kw("FIRST") {
                    nulls_last = false;
                } else if p.peek_kw("LAST") {
                    nulls_last = true;
                } else {
                    return err("unexpected token: NULLS needs FIRST or LAST");
                }
                p.i += 1;
            }
            order.push(OrderItem {
                field,
                desc,
                nulls_last,
            });
            if p.t.get(p.i) == Some(&Tok::Comma) {
                p.i += 1;
            } else {
                break;
            }
        }
    }
    let count = |kw: &str, p: &mut P| -> Result<Option<usize>, SoqlError> {
        if p.peek_kw(kw) {
            p.i += 1;
            match p.value()? {
                SoqlValue::Number(n) if n >= 0.0 && n.fract() == 0.0 => Ok(Some(n as usize)),
                _ => err(format!("{kw} needs a non-negative integer")),
            }
        } else {
            Ok(None)
        }
    };
    let limit = count("LIMIT", &mut p)?;
    let offset = count("OFFSET", &mut p)?;
    if p.i < p.t.len() {
        return err(format!("unexpected token: {}", p.describe()));
    }
    Ok(Query {
        fields,
        object,
        filter,
        order,
        limit,
        offset,
    })
}

/// SOQL LIKE: `%` any run, `_` one character, case-insensitive.
pub fn like(value: &str, pattern: &str) -> bool {
    fn go(v: &[char], p: &[char]) -> bool {
        match p.split_first() {
            None => v.is_empty(),
            Some(('\\', rest)) if !rest.is_empty() => {
                v.first() == rest.first() && go(&v[1..], &rest[1..])
            }
            Some(('%', rest)) => (0..=v.len()).any(|i| go(&v[i..], rest)),
            Some(('_', rest)) => !v.is_empty() && go(&v[1..], rest),
            Some((c, rest)) => v.first() == Some(c) && go(&v[1..], rest),
        }
    }
    let v: Vec<char> = value.to_lowercase().chars().collect();
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    go(&v, &p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_adapter_query_parses() {
        let q = parse(
            "SELECT Id, Name, StageName FROM Opportunity WHERE SystemModstamp >= 2025-03-01T00:00:00.000Z AND (Sync_with_Partner_Center__c = true OR Referral_Identifier__c != null) ORDER BY SystemModstamp ASC LIMIT 500",
        )
        .unwrap();
        assert_eq!(q.fields, ["Id", "Name", "StageName"]);
        assert_eq!(q.object, "Opportunity");
        assert_eq!(q.limit, Some(500));
        assert_eq!(q.order[0].field, "SystemModstamp");
        let f = q.filter.unwrap();
        assert_eq!(
            f.lower_bound("SystemModstamp").unwrap().to_rfc3339(),
            "2025-03-01T00:00:00+00:00"
        );
    }

    #[test]
    fn the_account_lookup_parses() {
        let q = parse(
            "SELECT Id, Name, BillingPostalCode, DunsNumber, CreatedDate FROM Account WHERE DunsNumber IN ('123456789') OR Name IN ('Contoso', 'O\\'Brien') ORDER BY CreatedDate ASC",
        )
        .unwrap();
        assert_eq!(q.order[0].field, "CreatedDate");
        match q.filter.unwrap() {
            Cond::Or(a, b) => {
                assert!(
                    matches!(*a, Cond::In { ref field, ref values, negated: false }
                    if field == "DunsNumber" && values.len() == 1)
                );
                assert!(
                    matches!(*b, Cond::In { ref field, ref values, negated: false }
                    if field == "Name" && values[1] == SoqlValue::String("O'Brien".into()))
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(parse("SELECT Id FROM Account WHERE Name IN ('A',)").is_err());
        assert!(parse("SELECT Id FROM Account WHERE Name IN 'A'").is_err());
    }

    #[test]
    fn literals_and_escapes() {
        let q = parse("select Id from Opportunity where Name = 'O\\'Brien \\\\ x' and CloseDate > 2025-01-31 and Amount >= -5.5 and StageName in ('A','B') and StageName not in ('C') and Name like 'Con%'").unwrap();
        let leaves = q.filter.unwrap();
        let vals: Vec<_> = leaves
            .leaves()
            .into_iter()
            .map(|(f, _)| f.to_owned())
            .collect();
        assert_eq!(
            vals,
            [
                "Name",
                "CloseDate",
                "Amount",
                "StageName",
                "StageName",
                "Name"
            ]
        );
        let q = parse("SELECT Id FROM Opportunity WHERE Name = 'O\\'Brien'").unwrap();
        assert_eq!(
            q.filter.unwrap(),
            Cond::Cmp {
                field: "Name".into(),
                op: Op::Eq,
                value: SoqlValue::String("O'Brien".into())
            }
        );
        let q =
            parse("SELECT Id FROM Opportunity WHERE SystemModstamp > 2025-01-01T10:00:00+02:00")
                .unwrap();
        match q.filter.unwrap() {
            Cond::Cmp {
                value: SoqlValue::DateTime(t),
                ..
            } => assert_eq!(t.to_rfc3339(), "2025-01-01T08:00:00+00:00"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn outside_the_subset_is_malformed() {
        for bad in [
            "SELECT FROM Opportunity",
            "SELECT Id Opportunity",
            "SELECT Id FROM Opportunity WHERE",
            "SELECT Id FROM Opportunity WHERE Name = 'x",
            "SELECT Id FROM Opportunity WHERE Name == 'x'",
            "SELECT Id FROM Opportunity GROUP BY Name",
            "SELECT Id FROM Opportunity WHERE SystemModstamp > 2025-13-01T00:00:00Z",
            "DELETE FROM Opportunity",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn like_patterns() {
        assert!(like("Contoso Ltd", "con%"));
        assert!(like("abc", "a_c"));
        assert!(!like("abc", "a_"));
        assert!(like("50%", "50\\%"));
    }
}
