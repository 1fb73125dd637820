//! Value transforms between Partner Center and CRM representations.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Utc};
use serde_json::Value;

use crate::domain::country;
use crate::domain::referral::api_datetime;

use super::schema::FieldType;
use super::value::{number, same, scalar_text};

/// How a country is written in the CRM; Partner Center always uses ISO 3166 alpha-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountryFormat {
    Alpha2,
    Alpha3,
    Name,
}

/// A value table: Partner Center value (as text) ↔ CRM value.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueTable {
    pub entries: Vec<(String, Value)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Literal(String),
    Field(String),
}

/// Text with `{placeholders}` naming fields of the source side; `{{` and `}}` are literal braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub text: String,
    pub parts: Vec<TemplatePart>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// The value as it is (coerced to the Partner Center field's type on the way in).
    Copy,
    /// CRM date-only ↔ Partner Center UTC date-time at midnight.
    Date,
    /// CRM date-time ↔ Partner Center UTC date-time.
    DateTime,
    Decimal,
    /// ISO 4217 code, upper case.
    Currency,
    Country(CountryFormat),
    Values(ValueTable),
    Template(Template),
}

/// A transform plus, for `[*]` paths, the separator joining the list in one CRM text field.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversion {
    pub transform: Transform,
    pub join: Option<String>,
}

impl Default for Conversion {
    fn default() -> Self {
        Conversion {
            transform: Transform::Copy,
            join: None,
        }
    }
}

pub const TRANSFORM_NAMES: &str = "date, datetime, decimal, currency, country";
const TABLE_KEYS: &str = "type, format, values, template, join";

/// A template that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template {0:?} has an unclosed {{")]
    Unclosed(String),
    #[error("template {0:?} has an empty {{}}; expected a field name inside")]
    EmptyField(String),
    #[error("template {0:?} has a lone }}; write }}}} for a brace")]
    LoneBrace(String),
    #[error("template {0:?} names no field; expected e.g. \"{{firstName}} {{lastName}}\"")]
    NoField(String),
}

/// A `transform` in a mapping file that cannot be used. [`Conversion::from_toml`]
/// pairs it with the sub-key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformSpecError {
    #[error("unknown country format {0:?}; expected alpha2, alpha3 or name")]
    UnknownCountryFormat(String),
    #[error(
        "unknown transform {0:?}; expected one of {names}, or a table with values, template or join",
        names = TRANSFORM_NAMES
    )]
    UnknownTransform(String),
    #[error("unknown key; expected one of {keys}", keys = TABLE_KEYS)]
    UnknownKey,
    /// The TOML type found instead of a string.
    #[error("expected a string, found {0}")]
    NotAString(&'static str),
    #[error("give only one of type, values and template")]
    MoreThanOneKind,
    #[error("format applies to type = \"country\" only")]
    FormatWithoutCountry,
    #[error("expected a non-empty separator such as \";\"")]
    EmptySeparator,
    /// The TOML type found instead of a table.
    #[error("expected a table of Partner Center value = CRM value, found {0}")]
    ValuesNotATable(&'static str),
    #[error("the value table is empty")]
    EmptyValueTable,
    /// The TOML type found instead of a single value.
    #[error("expected a single CRM value (text, number or true/false), found {0}")]
    ValueNotScalar(&'static str),
    #[error("a template cannot be joined")]
    JoinedTemplate,
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("empty transform table; expected one of {keys}", keys = TABLE_KEYS)]
    EmptyTable,
    /// The TOML type found instead of a name or a table.
    #[error(
        "expected a transform name ({names}) or a table such as {{ values = {{ ... }} }}, found {0}",
        names = TRANSFORM_NAMES
    )]
    NotATransform(&'static str),
}

/// A value that cannot be converted from one side's representation to the
/// other's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// `value` is the value as written (JSON, or quoted text); `expected` what
    /// it should have been, e.g. "a number".
    #[error("{value} is not {expected}")]
    NotA {
        value: String,
        expected: &'static str,
    },
    /// The value (JSON, or quoted text) is not in the `values` table.
    #[error("{0} has no entry in the value table")]
    NoTableEntry(String),
    /// A converted list element (JSON) that is not text, for a joined field.
    #[error("{0} cannot be joined into text")]
    NotJoinable(String),
}

impl ConvertError {
    fn not_a(value: impl std::fmt::Display, expected: &'static str) -> ConvertError {
        ConvertError::NotA {
            value: value.to_string(),
            expected,
        }
    }

    fn text_not_a(text: &str, expected: &'static str) -> ConvertError {
        ConvertError::not_a(format!("{text:?}"), expected)
    }
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(ch) => name.push(ch),
                            None => return Err(TemplateError::Unclosed(text.to_owned())),
                        }
                    }
                    let name = name.trim().to_owned();
                    if name.is_empty() {
                        return Err(TemplateError::EmptyField(text.to_owned()));
                    }
                    if !lit.is_empty() {
                        parts.push(TemplatePart::Literal(std::mem::take(&mut lit)));
                    }
                    parts.push(TemplatePart::Field(name));
                }
                '}' => {
                    return Err(TemplateError::LoneBrace(text.to_owned()));
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(TemplatePart::Literal(lit));
        }
        if !parts.iter().any(|p| matches!(p, TemplatePart::Field(_))) {
            return Err(TemplateError::NoField(text.to_owned()));
        }
        Ok(Template {
            text: text.to_owned(),
            parts,
        })
    }

    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            TemplatePart::Field(f) => Some(f.as_str()),
            TemplatePart::Literal(_) => None,
        })
    }

    /// Renders the template; `None` when every field it names is empty.
    pub fn render(&self, mut lookup: impl FnMut(&str) -> Option<Value>) -> Option<String> {
        let mut out = String::new();
        let mut any = false;
        for p in &self.parts {
            match p {
                TemplatePart::Literal(l) => out.push_str(l),
                TemplatePart::Field(f) => {
                    if let Some(text) = lookup(f).as_ref().and_then(scalar_text) {
                        any |= !text.trim().is_empty();
                        out.push_str(&text);
                    }
                }
            }
        }
        any.then_some(out)
    }
}

/// Converts a TOML value to JSON (dates become their text).
pub fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => number(*f).unwrap_or(Value::Null),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

fn toml_type(v: &toml::Value) -> &'static str {
    v.type_str()
}

impl Conversion {
    /// Reads `transform = "date"` or `transform = { ... }`. The error names
    /// the sub-key at fault (e.g. `values`) and what was expected.
    pub fn from_toml(v: &toml::Value) -> Result<Conversion, (Option<String>, TransformSpecError)> {
        match v {
            toml::Value::String(name) => Ok(Conversion {
                transform: named(name, None).map_err(|m| (None, m))?,
                join: None,
            }),
            toml::Value::Table(t) => {
                for k in t.keys() {
                    if !["type", "format", "values", "template", "join"].contains(&k.as_str()) {
                        return Err((Some(k.clone()), TransformSpecError::UnknownKey));
                    }
                }
                let text =
                    |key: &str| -> Result<Option<String>, (Option<String>, TransformSpecError)> {
                        match t.get(key) {
                            None => Ok(None),
                            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                            Some(other) => Err((
                                Some(key.into()),
                                TransformSpecError::NotAString(toml_type(other)),
                            )),
                        }
                    };
                let ty = text("type")?;
                let format = text("format")?;
                let template = text("template")?;
                let join = text("join")?;
                let values = t.get("values");
                let chosen = [ty.is_some(), values.is_some(), template.is_some()]
                    .iter()
                    .filter(|b| **b)
                    .count();
                if chosen > 1 {
                    return Err((None, TransformSpecError::MoreThanOneKind));
                }
                if format.is_some() && ty.as_deref() != Some("country") {
                    return Err((
                        Some("format".into()),
                        TransformSpecError::FormatWithoutCountry,
                    ));
                }
                if let Some(j) = &join
                    && j.is_empty()
                {
                    return Err((Some("join".into()), TransformSpecError::EmptySeparator));
                }
                let transform = if let Some(name) = ty {
                    named(&name, format.as_deref()).map_err(|m| (Some("type".into()), m))?
                } else if let Some(values) = values {
                    let toml::Value::Table(entries) = values else {
                        return Err((
                            Some("values".into()),
                            TransformSpecError::ValuesNotATable(toml_type(values)),
                        ));
                    };
                    if entries.is_empty() {
                        return Err((Some("values".into()), TransformSpecError::EmptyValueTable));
                    }
                    let mut out = Vec::new();
                    for (k, v) in entries {
                        if matches!(v, toml::Value::Table(_) | toml::Value::Array(_)) {
                            return Err((
                                Some(format!("values.{}", super::error::key_part(k))),
                                TransformSpecError::ValueNotScalar(toml_type(v)),
                            ));
                        }
                        out.push((k.clone(), toml_to_json(v)));
                    }
                    Transform::Values(ValueTable { entries: out })
                } else if let Some(text) = template {
                    if join.is_some() {
                        return Err((Some("join".into()), TransformSpecError::JoinedTemplate));
                    }
                    Transform::Template(
                        Template::parse(&text).map_err(|m| (Some("template".into()), m.into()))?,
                    )
                } else if join.is_some() {
                    Transform::Copy
                } else {
                    return Err((None, TransformSpecError::EmptyTable));
                };
                Ok(Conversion { transform, join })
            }
            other => Err((None, TransformSpecError::NotATransform(toml_type(other)))),
        }
    }
}

fn named(name: &str, format: Option<&str>) -> Result<Transform, TransformSpecError> {
    Ok(match name {
        "date" => Transform::Date,
        "datetime" => Transform::DateTime,
        "decimal" => Transform::Decimal,
        "currency" => Transform::Currency,
        "country" => Transform::Country(match format {
            None | Some("alpha2") => CountryFormat::Alpha2,
            Some("alpha3") => CountryFormat::Alpha3,
            Some("name") => CountryFormat::Name,
            Some(other) => {
                return Err(TransformSpecError::UnknownCountryFormat(other.to_owned()));
            }
        }),
        other => {
            return Err(TransformSpecError::UnknownTransform(other.to_owned()));
        }
    })
}

/// Parses a date-time the way either side may write it: RFC 3339, Salesforce's
/// `+0000` offsets, no offset (taken as UTC), or a bare date (midnight UTC).
pub fn parse_datetime(s: &str) -> Option<DateTime<FixedOffset>> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt);
    }
    if let Ok(dt) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(dt);
    }
    if let Ok(dt) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(dt.and_utc().fixed_offset());
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d.and_time(NaiveTime::MIN).and_utc().fixed_offset());
    }
    None
}

/// The calendar date a date-time stands for, in the offset it was written in.
/// Partner Center's UI stores a close date as the user's local midnight in
/// UTC, so a time exactly on a quarter hour (every zone offset is a multiple
/// of 15 minutes) from 11:00 on is read as the next day's midnight:
/// `2022-06-29T23:00:00Z` (midnight in UTC+1) is 30 June,
/// `2025-04-05T11:00:00Z` (midnight in UTC+13) is 6 April, and
/// `2025-03-01T10:00:00Z` (midnight in UTC−10) is 1 March — every zone from
/// UTC−10:45 to UTC+13 reads right. Other times are read as the date written
/// (`2025-12-31T23:59:59Z` is 31 December). Never depends on the machine's zone.
pub fn calendar_date(dt: &DateTime<FixedOffset>) -> NaiveDate {
    use chrono::Timelike;
    let local = dt.naive_local();
    let date = local.date();
    let t = local.time();
    let on_quarter = t.second() == 0 && t.nanosecond() == 0 && t.minute().is_multiple_of(15);
    if on_quarter && t.hour() >= 11 {
        date.checked_add_signed(TimeDelta::days(1)).unwrap_or(date)
    } else {
        date
    }
}

/// Midnight UTC of a date, as Partner Center writes date-times.
pub fn midnight_utc(d: NaiveDate) -> String {
    api_datetime::format(&d.and_time(NaiveTime::MIN).and_utc())
}

fn as_text(v: &Value, what: &'static str) -> Result<String, ConvertError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(ConvertError::not_a(other, what)),
    }
}

fn to_number(v: &Value) -> Result<Value, ConvertError> {
    let f = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().replace(',', "").parse::<f64>().ok(),
        _ => None,
    };
    f.and_then(number)
        .ok_or_else(|| ConvertError::not_a(v, "a number"))
}

fn currency(v: &Value) -> Result<Value, ConvertError> {
    let s = as_text(v, "an ISO 4217 currency code")?;
    let code = s.trim().to_ascii_uppercase();
    if code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase()) {
        Ok(Value::String(code))
    } else {
        Err(ConvertError::text_not_a(
            &s,
            "an ISO 4217 currency code such as \"USD\"",
        ))
    }
}

fn parse_dt(v: &Value) -> Result<DateTime<FixedOffset>, ConvertError> {
    let s = as_text(v, "a date")?;
    parse_datetime(&s).ok_or_else(|| ConvertError::text_not_a(&s, "a date or date-time"))
}

fn utc_text(dt: &DateTime<FixedOffset>) -> String {
    api_datetime::format(&dt.with_timezone(&Utc))
}

impl Transform {
    /// Partner Center value → CRM value (one element of a list).
    pub fn to_crm(&self, pc: &Value) -> Result<Value, ConvertError> {
        match self {
            Transform::Copy | Transform::Template(_) => Ok(pc.clone()),
            Transform::Date => Ok(Value::String(
                calendar_date(&parse_dt(pc)?).format("%Y-%m-%d").to_string(),
            )),
            Transform::DateTime => Ok(Value::String(utc_text(&parse_dt(pc)?))),
            Transform::Decimal => to_number(pc),
            Transform::Currency => currency(pc),
            Transform::Country(format) => {
                let s = as_text(pc, "a country")?;
                let a2 = country::to_alpha2(&s)
                    .ok_or_else(|| ConvertError::text_not_a(&s, "an ISO 3166 country"))?;
                let row = country::COUNTRIES.iter().find(|(c, _, _)| *c == a2);
                Ok(Value::String(match (format, row) {
                    (CountryFormat::Alpha3, Some((_, a3, _))) => (*a3).to_owned(),
                    (CountryFormat::Name, Some((_, _, name))) => (*name).to_owned(),
                    _ => a2.to_owned(),
                }))
            }
            Transform::Values(table) => {
                let text =
                    scalar_text(pc).ok_or_else(|| ConvertError::not_a(pc, "a single value"))?;
                table
                    .entries
                    .iter()
                    .find(|(k, _)| *k == text)
                    .or_else(|| {
                        table
                            .entries
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(&text))
                    })
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| ConvertError::NoTableEntry(format!("{text:?}")))
            }
        }
    }

    /// CRM value → Partner Center value of type `ty` (one element of a list).
    pub fn to_pc(&self, crm: &Value, ty: Option<FieldType>) -> Result<Value, ConvertError> {
        let v = match self {
            Transform::Copy | Transform::Template(_) => crm.clone(),
            Transform::Date => Value::String(midnight_utc(calendar_date(&parse_dt(crm)?))),
            Transform::DateTime => Value::String(utc_text(&parse_dt(crm)?)),
            Transform::Decimal => to_number(crm)?,
            Transform::Currency => currency(crm)?,
            Transform::Country(_) => {
                let s = scalar_text(crm).ok_or_else(|| ConvertError::not_a(crm, "a country"))?;
                Value::String(
                    country::to_alpha2(&s)
                        .ok_or_else(|| {
                            ConvertError::text_not_a(&s, "a country name or ISO 3166 code")
                        })?
                        .to_owned(),
                )
            }
            Transform::Values(table) => {
                let crm_text = scalar_text(crm);
                let hit = table
                    .entries
                    .iter()
                    .find(|(_, v)| same(v, crm))
                    .or_else(|| {
                        table
                            .entries
                            .iter()
                            .find(|(_, v)| crm_text.is_some() && scalar_text(v) == crm_text)
                    })
                    .ok_or_else(|| match &crm_text {
                        Some(t) => ConvertError::NoTableEntry(format!("{t:?}")),
                        None => ConvertError::NoTableEntry(crm.to_string()),
                    })?;
                Value::String(hit.0.clone())
            }
        };
        match ty {
            Some(ty) => coerce(&v, ty),
            None => Ok(v),
        }
    }
}

/// Fits a value to a Partner Center field type, or says why it cannot.
pub fn coerce(v: &Value, ty: FieldType) -> Result<Value, ConvertError> {
    match ty {
        FieldType::Text => scalar_text(v)
            .map(Value::String)
            .ok_or_else(|| ConvertError::not_a(v, "text")),
        FieldType::Number => to_number(v),
        FieldType::DateTime => Ok(Value::String(utc_text(&parse_dt(v)?))),
        FieldType::Bool => match v {
            Value::Bool(b) => Ok(Value::Bool(*b)),
            Value::Number(n) if n.as_f64() == Some(1.0) => Ok(Value::Bool(true)),
            Value::Number(n) if n.as_f64() == Some(0.0) => Ok(Value::Bool(false)),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Ok(Value::Bool(true)),
                "false" | "no" | "0" => Ok(Value::Bool(false)),
                _ => Err(ConvertError::text_not_a(s, "true/false")),
            },
            other => Err(ConvertError::not_a(other, "true/false")),
        },
        FieldType::Enum(values) => {
            let s = scalar_text(v).ok_or_else(|| ConvertError::not_a(v, "text"))?;
            let known = values();
            Ok(Value::String(
                known
                    .iter()
                    .find(|k| k.eq_ignore_ascii_case(s.trim()))
                    .map_or(s.clone(), |k| (*k).to_owned()),
            ))
        }
    }
}

impl Conversion {
    /// Partner Center value → CRM value; lists are converted per element and joined.
    pub fn to_crm(&self, pc: &Value) -> Result<Value, ConvertError> {
        match (pc, &self.join) {
            (Value::Array(items), Some(sep)) => {
                let mut parts = Vec::with_capacity(items.len());
                for item in items {
                    let v = self.transform.to_crm(item)?;
                    parts.push(
                        scalar_text(&v).ok_or_else(|| ConvertError::NotJoinable(v.to_string()))?,
                    );
                }
                Ok(if parts.is_empty() {
                    Value::Null
                } else {
                    Value::String(parts.join(sep))
                })
            }
            (Value::Array(items), None) => items
                .iter()
                .map(|i| self.transform.to_crm(i))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            (v, _) => self.transform.to_crm(v),
        }
    }

    /// CRM value → Partner Center value; a joined text is split back into a list.
    pub fn to_pc(&self, crm: &Value, ty: Option<FieldType>) -> Result<Value, ConvertError> {
        match (crm, &self.join) {
            (Value::String(s), Some(sep)) => s
                .split(sep.as_str())
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| self.transform.to_pc(&Value::String(p.to_owned()), ty))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            (Value::Array(items), _) => items
                .iter()
                .map(|i| self.transform.to_pc(i, ty))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            (v, _) => self.transform.to_pc(v, ty),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conv(t: &str) -> Conversion {
        let v: toml::Value = toml::from_str(&format!("t = {t}")).unwrap();
        Conversion::from_toml(&v["t"]).unwrap()
    }

    #[test]
    fn date_only_maps_to_midnight_utc_and_back() {
        let c = conv("\"date\"");
        assert_eq!(
            c.to_pc(&json!("2025-03-01"), Some(FieldType::DateTime))
                .unwrap(),
            json!("2025-03-01T00:00:00Z")
        );
        assert_eq!(
            c.to_crm(&json!("2025-03-01T00:00:00Z")).unwrap(),
            json!("2025-03-01")
        );
        // Local midnights written in UTC, as Partner Center's UI stores them.
        assert_eq!(
            c.to_crm(&json!("2022-06-29T23:00:00Z")).unwrap(),
            json!("2022-06-30")
        );
        assert_eq!(
            c.to_crm(&json!("2025-03-01T05:00:00Z")).unwrap(),
            json!("2025-03-01")
        );
        // Salesforce and Dataverse date-time spellings.
        assert_eq!(
            c.to_pc(&json!("2025-03-01T00:00:00.000+0000"), None)
                .unwrap(),
            json!("2025-03-01T00:00:00Z")
        );
        assert!(c.to_crm(&json!("soon")).is_err());
    }

    #[test]
    fn explicit_offsets_keep_their_calendar_date_across_dst() {
        let c = conv("\"date\"");
        for (input, date) in [
            ("2025-03-30T00:00:00+01:00", "2025-03-30"), // Europe, the night clocks go forward
            ("2025-03-30T00:00:00+02:00", "2025-03-30"),
            ("2025-03-29T23:00:00Z", "2025-03-30"),
            ("2025-03-30T22:00:00Z", "2025-03-31"),
            ("2025-10-26T00:00:00+02:00", "2025-10-26"), // clocks go back
            ("2025-10-26T23:00:00Z", "2025-10-27"),
            ("2025-03-09T00:00:00-05:00", "2025-03-09"), // US spring forward
            ("2025-03-09T08:00:00Z", "2025-03-09"),
            ("2025-11-02T00:00:00-07:00", "2025-11-02"), // US fall back
            ("2025-04-06T00:00:00+13:00", "2025-04-06"), // New Zealand, end of daylight time
            ("2025-04-06T00:00:00+12:00", "2025-04-06"),
            ("2025-04-05T11:00:00Z", "2025-04-06"), // midnight in UTC+13
            ("2025-03-01T10:00:00Z", "2025-03-01"), // midnight in UTC−10 (Hawaii)
            ("2025-12-31T23:59:59.9999999-10:00", "2025-12-31"), // end of day, not a midnight
            ("2025-06-15T14:30:00Z", "2025-06-16"), // midnight in UTC+9:30
            ("2025-06-15T14:31:00Z", "2025-06-15"),
        ] {
            assert_eq!(c.to_crm(&json!(input)).unwrap(), json!(date), "{input}");
        }
    }

    #[test]
    fn datetime_decimal_currency_and_country() {
        assert_eq!(
            conv("\"datetime\"")
                .to_pc(&json!("2025-03-04T10:15:22.000+0100"), None)
                .unwrap(),
            json!("2025-03-04T09:15:22Z")
        );
        assert_eq!(
            conv("\"decimal\"")
                .to_pc(&json!("5000000.0000"), None)
                .unwrap(),
            json!(5000000)
        );
        assert_eq!(
            conv("\"decimal\"").to_crm(&json!(1500.5)).unwrap(),
            json!(1500.5)
        );
        assert_eq!(
            conv("\"currency\"").to_pc(&json!(" eur "), None).unwrap(),
            json!("EUR")
        );
        assert!(conv("\"currency\"").to_pc(&json!("Euro"), None).is_err());
        let c = conv("\"country\"");
        assert_eq!(c.to_pc(&json!("Germany"), None).unwrap(), json!("DE"));
        assert_eq!(c.to_pc(&json!("deu"), None).unwrap(), json!("DE"));
        assert!(c.to_pc(&json!("Atlantis"), None).is_err());
        assert_eq!(
            conv("{ type = \"country\", format = \"name\" }")
                .to_crm(&json!("DE"))
                .unwrap(),
            json!("Germany")
        );
        assert_eq!(
            conv("{ type = \"country\", format = \"alpha3\" }")
                .to_crm(&json!("DE"))
                .unwrap(),
            json!("DEU")
        );
    }

    #[test]
    fn value_tables_work_both_ways_with_typed_crm_values() {
        let c = conv(
            "{ values = { ProofOfConceptOrDemo = 100000002, GeneralOrOther = \"General or other\" } }",
        );
        assert_eq!(
            c.to_crm(&json!("ProofOfConceptOrDemo")).unwrap(),
            json!(100000002)
        );
        assert_eq!(
            c.to_pc(&json!(100000002), None).unwrap(),
            json!("ProofOfConceptOrDemo")
        );
        assert_eq!(
            c.to_pc(&json!("100000002"), None).unwrap(),
            json!("ProofOfConceptOrDemo")
        );
        assert_eq!(
            c.to_pc(&json!("General or other"), None).unwrap(),
            json!("GeneralOrOther")
        );
        assert!(
            c.to_pc(&json!("Other"), None)
                .unwrap_err()
                .to_string()
                .contains("no entry")
        );
        let b = conv("{ values = { \"true\" = \"Visible\", \"false\" = \"Hidden\" } }");
        assert_eq!(
            b.to_pc(&json!("Visible"), Some(FieldType::Bool)).unwrap(),
            json!(true)
        );
        assert_eq!(b.to_crm(&json!(false)).unwrap(), json!("Hidden"));
    }

    #[test]
    fn joined_lists_split_back() {
        let c = conv("{ join = \";\" }");
        assert_eq!(c.to_crm(&json!(["A", "B"])).unwrap(), json!("A;B"));
        assert_eq!(
            c.to_pc(&json!(" A ; B;"), Some(FieldType::Text)).unwrap(),
            json!(["A", "B"])
        );
        assert_eq!(c.to_crm(&json!([])).unwrap(), Value::Null);
    }

    #[test]
    fn templates_render_and_reject_bad_text() {
        let t = Template::parse("{firstName} {lastName} {{x}}").unwrap();
        assert_eq!(
            t.fields().collect::<Vec<_>>(),
            vec!["firstName", "lastName"]
        );
        let r = t.render(|f| (f == "firstName").then(|| json!("Ann")));
        assert_eq!(r.as_deref(), Some("Ann  {x}"));
        assert_eq!(t.render(|_| None), None);
        assert!(Template::parse("no fields").is_err());
        assert!(Template::parse("{open").is_err());
        assert!(Template::parse("a } b").is_err());
    }

    #[test]
    fn coercion_fits_values_to_field_types() {
        assert_eq!(coerce(&json!(42), FieldType::Text).unwrap(), json!("42"));
        assert_eq!(coerce(&json!("Yes"), FieldType::Bool).unwrap(), json!(true));
        assert!(coerce(&json!("maybe"), FieldType::Bool).is_err());
        assert!(coerce(&json!({"a": 1}), FieldType::Text).is_err());
    }

    #[test]
    fn errors_are_typed_and_read_as_before() {
        let err = |t: &str| {
            Conversion::from_toml(&toml::from_str::<toml::Value>(&format!("t = {t}")).unwrap()["t"])
                .unwrap_err()
        };
        assert_eq!(
            err("\"weekday\""),
            (None, TransformSpecError::UnknownTransform("weekday".into()))
        );
        assert_eq!(
            err("\"weekday\"").1.to_string(),
            "unknown transform \"weekday\"; expected one of date, datetime, decimal, currency, country, or a table with values, template or join"
        );
        assert_eq!(
            err("{ typo = 1 }").1.to_string(),
            "unknown key; expected one of type, format, values, template, join"
        );
        assert_eq!(
            err("7").1.to_string(),
            "expected a transform name (date, datetime, decimal, currency, country) or a table such as { values = { ... } }, found integer"
        );
        assert_eq!(
            err("{ template = \"{a\" }"),
            (
                Some("template".into()),
                TransformSpecError::Template(TemplateError::Unclosed("{a".into()))
            )
        );
        assert_eq!(
            err("{ template = \"x } y\" }").1.to_string(),
            "template \"x } y\" has a lone }; write }} for a brace"
        );
        assert_eq!(
            Template::parse("{ }").unwrap_err().to_string(),
            "template \"{ }\" has an empty {}; expected a field name inside"
        );
        assert_eq!(
            Template::parse("none").unwrap_err().to_string(),
            "template \"none\" names no field; expected e.g. \"{firstName} {lastName}\""
        );

        assert_eq!(
            conv("\"currency\"").to_pc(&json!("Euro"), None),
            Err(ConvertError::NotA {
                value: "\"Euro\"".into(),
                expected: "an ISO 4217 currency code such as \"USD\""
            })
        );
        assert_eq!(
            conv("\"currency\"")
                .to_pc(&json!("Euro"), None)
                .unwrap_err()
                .to_string(),
            "\"Euro\" is not an ISO 4217 currency code such as \"USD\""
        );
        assert_eq!(
            conv("\"date\"").to_crm(&json!(5)).unwrap_err().to_string(),
            "5 is not a date"
        );
        assert_eq!(
            coerce(&json!("maybe"), FieldType::Bool)
                .unwrap_err()
                .to_string(),
            "\"maybe\" is not true/false"
        );
        assert_eq!(
            conv("{ values = { A = \"a\" } }")
                .to_crm(&json!("B"))
                .unwrap_err()
                .to_string(),
            "\"B\" has no entry in the value table"
        );
        assert_eq!(
            conv("{ join = \";\" }")
                .to_crm(&json!([{"x": 1}]))
                .unwrap_err()
                .to_string(),
            "{\"x\":1} cannot be joined into text"
        );
    }
}
