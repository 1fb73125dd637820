//! Reading a mapping file: TOML parsed with serde directly (unknown keys
//! rejected, CRM API names kept exactly), every error with file, line and key.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use toml::Spanned;

use super::error::{MappingError, join_key, line_of};
use super::path::FieldPath;
use super::stages::{StagePattern, StageRules};
use super::transform::{Conversion, Template, toml_to_json};
use super::{
    Constant, ContactMode, EmptyPolicy, FieldDirection, FieldRule, Mapping, Owner, StatusFields,
};

/// A TOML table read in file order.
struct Ordered<T>(Vec<(String, T)>);

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Ordered(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, T>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    object: Spanned<String>,
    external_id: Spanned<String>,
    #[serde(default)]
    sync_flag: Option<Spanned<String>>,
    #[serde(default)]
    error_field: Option<Spanned<String>>,
    #[serde(default)]
    link_field: Option<Spanned<String>>,
    #[serde(default)]
    link_url: Option<Spanned<String>>,
    #[serde(default)]
    fields: Ordered<Spanned<RawRule>>,
    #[serde(default)]
    constants: Ordered<Spanned<toml::Value>>,
    #[serde(default)]
    stages: Option<Spanned<RawStages>>,
    #[serde(default)]
    status: Option<Spanned<RawStatus>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    #[serde(default)]
    answer_by: Option<Spanned<String>>,
    #[serde(default)]
    microsoft_engagement: Option<Spanned<String>>,
    #[serde(default)]
    customer_contact: Option<ContactMode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    crm: Option<Spanned<String>>,
    #[serde(default)]
    direction: Option<FieldDirection>,
    #[serde(default)]
    owner: Option<Owner>,
    #[serde(default)]
    transform: Option<Spanned<toml::Value>>,
    #[serde(default)]
    default: Option<Spanned<toml::Value>>,
    #[serde(default)]
    empty: Option<EmptyPolicy>,
    #[serde(default)]
    create_only: Option<bool>,
}

type RawPattern = Spanned<Ordered<toml::Value>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStages {
    #[serde(default)]
    received: Option<RawPattern>,
    #[serde(default)]
    accepted: Option<RawPattern>,
    #[serde(default)]
    won: Option<RawPattern>,
    #[serde(default)]
    lost: Option<RawPattern>,
    #[serde(default)]
    declined: Option<RawPattern>,
    #[serde(default)]
    expired: Option<RawPattern>,
    #[serde(default)]
    open: Option<RawPattern>,
    #[serde(default)]
    reason_field: Option<Spanned<String>>,
}

struct Ctx<'a> {
    text: &'a str,
    file: &'a str,
}

impl Ctx<'_> {
    fn line<T>(&self, s: &Spanned<T>) -> usize {
        line_of(self.text, s.span().start)
    }

    fn err(&self, line: Option<usize>, key: String, message: impl ToString) -> MappingError {
        MappingError {
            file: self.file.to_owned(),
            line,
            key: Some(key),
            message: message.to_string(),
        }
    }
}

/// Removes serde's backticks: "`a`, `b`" → "a, b".
fn plain(s: &str) -> String {
    s.replace('`', "")
}

/// Turns a serde/toml message into ours, and the key it is about.
fn reword(message: &str, mut key: Vec<String>) -> (Vec<String>, String) {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((name, tail)) = rest.split_once('`')
    {
        if key.last().map(String::as_str) != Some(name) {
            key.push(name.to_owned());
        }
        let expected = tail
            .trim_start_matches(',')
            .trim()
            .strip_prefix("expected one of ")
            .or_else(|| {
                tail.trim_start_matches(',')
                    .trim()
                    .strip_prefix("expected ")
            })
            .map(plain);
        let msg = match expected {
            Some(list) => format!("unknown key; expected one of {list}"),
            None => "unknown key; this table takes no keys".to_owned(),
        };
        return (key, msg);
    }
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some((name, _)) = rest.split_once('`')
    {
        key.push(name.to_owned());
        return (key, "required key is missing".to_owned());
    }
    if let Some(rest) = message.strip_prefix("unknown variant `")
        && let Some((name, tail)) = rest.split_once('`')
    {
        let list = tail
            .trim_start_matches(',')
            .trim()
            .strip_prefix("expected one of ")
            .map(plain);
        return (
            key,
            format!(
                "unknown value {name:?}; expected one of {}",
                list.unwrap_or_default()
            ),
        );
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        return (
            key,
            format!(
                "wrong type: found {}",
                plain(rest).replacen(", expected", "; expected", 1)
            ),
        );
    }
    (key, plain(message))
}

fn path_parts(path: &serde_path_to_error::Path) -> Vec<String> {
    use serde_path_to_error::Segment as S;
    path.iter()
        .filter_map(|s| match s {
            S::Map { key } if key.starts_with("$__serde_spanned_private") => None,
            S::Map { key } => Some(key.clone()),
            S::Seq { index } => Some(index.to_string()),
            S::Enum { variant } => Some(variant.clone()),
            S::Unknown => None,
        })
        .collect()
}

pub(super) fn parse(text: &str, file: &str) -> Result<Mapping, MappingError> {
    let ctx = Ctx { text, file };
    let de = toml::Deserializer::parse(text).map_err(|e| MappingError {
        file: file.to_owned(),
        line: e.span().map(|s| line_of(text, s.start)),
        key: None,
        message: format!("not valid TOML: {}", e.message().trim()),
    })?;
    let raw: RawFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let parts = path_parts(e.path());
        let inner = e.into_inner();
        let (key, message) = reword(inner.message(), parts);
        MappingError {
            file: file.to_owned(),
            line: inner.span().map(|s| line_of(text, s.start)),
            key: (!key.is_empty()).then(|| join_key(&key)),
            message,
        }
    })?;
    build(raw, &ctx)
}

fn build(raw: RawFile, ctx: &Ctx) -> Result<Mapping, MappingError> {
    let mut lines = BTreeMap::new();
    let mut top = |name: &str, v: &Option<Spanned<String>>| -> Option<String> {
        let v = v.as_ref()?;
        lines.insert(name.to_owned(), ctx.line(v));
        Some(v.get_ref().clone())
    };
    let sync_flag = top("sync_flag", &raw.sync_flag);
    let error_field = top("error_field", &raw.error_field);
    let link_field = top("link_field", &raw.link_field);
    lines.insert("object".into(), ctx.line(&raw.object));
    lines.insert("external_id".into(), ctx.line(&raw.external_id));

    let link_url = match &raw.link_url {
        None => None,
        Some(s) => {
            lines.insert("link_url".into(), ctx.line(s));
            Some(
                Template::parse(s.get_ref())
                    .map_err(|m| ctx.err(Some(ctx.line(s)), "link_url".into(), m.to_string()))?,
            )
        }
    };

    let mut fields = Vec::new();
    for (key, rule) in &raw.fields.0 {
        let line = ctx.line(rule);
        let k = |sub: &[&str]| {
            let mut parts = vec!["fields", key.as_str()];
            parts.extend_from_slice(sub);
            join_key(&parts)
        };
        // "path#name": the same path once more, into another CRM field.
        let (path_text, copy) = match key.split_once('#') {
            Some((p, name)) => (p, Some(name.to_owned())),
            None => (key.as_str(), None),
        };
        let path = FieldPath::parse(path_text).map_err(|m| ctx.err(Some(line), k(&[]), m))?;
        let r = rule.get_ref();
        let conversion = match &r.transform {
            None => Conversion::default(),
            Some(t) => Conversion::from_toml(t.get_ref()).map_err(|(sub, m)| MappingError {
                file: ctx.file.to_owned(),
                line: Some(ctx.line(t)),
                key: Some(format!(
                    "{}{}",
                    k(&["transform"]),
                    sub.map(|s| format!(".{s}")).unwrap_or_default()
                )),
                message: m.to_string(),
            })?,
        };
        let default = match &r.default {
            None => None,
            Some(d) => Some(
                scalar_or_list(d.get_ref())
                    .map_err(|m| ctx.err(Some(ctx.line(d)), k(&["default"]), m))?,
            ),
        };
        fields.push(FieldRule {
            path,
            crm: r.crm.as_ref().map(|c| c.get_ref().clone()),
            direction: r.direction.unwrap_or(FieldDirection::Both),
            owner: r.owner,
            conversion,
            default,
            empty: r.empty.unwrap_or(EmptyPolicy::Clear),
            create_only: r.create_only.unwrap_or(false),
            copy,
            line: Some(line),
        });
    }

    let mut constants = Vec::new();
    for (key, value) in &raw.constants.0 {
        let line = ctx.line(value);
        let ck = join_key(&["constants", key.as_str()]);
        let path = FieldPath::parse(key).map_err(|m| ctx.err(Some(line), ck.clone(), m))?;
        let value = scalar_or_list(value.get_ref()).map_err(|m| ctx.err(Some(line), ck, m))?;
        constants.push(Constant {
            path,
            value,
            line: Some(line),
        });
    }

    let mut stages = StageRules::default();
    if let Some(st) = &raw.stages {
        lines.insert("stages".into(), ctx.line(st));
        let st = st.get_ref();
        let slots: [(&str, &Option<RawPattern>, &mut Option<StagePattern>); 7] = [
            ("received", &st.received, &mut stages.received),
            ("accepted", &st.accepted, &mut stages.accepted),
            ("won", &st.won, &mut stages.won),
            ("lost", &st.lost, &mut stages.lost),
            ("declined", &st.declined, &mut stages.declined),
            ("expired", &st.expired, &mut stages.expired),
            ("open", &st.open, &mut stages.open),
        ];
        for (name, rawp, slot) in slots {
            if let Some(p) = rawp {
                let line = ctx.line(p);
                lines.insert(format!("stages.{name}"), line);
                *slot = Some(pattern(p.get_ref()).map_err(|(field, m)| {
                    let key = match field {
                        Some(f) => join_key(&["stages", name, f.as_str()]),
                        None => join_key(&["stages", name]),
                    };
                    ctx.err(Some(line), key, m)
                })?);
            }
        }
        if let Some(r) = &st.reason_field {
            lines.insert("stages.reason_field".into(), ctx.line(r));
            stages.reason_field = Some(r.get_ref().clone());
        }
    }

    let mut status = StatusFields::default();
    if let Some(st) = &raw.status {
        let table_line = ctx.line(st);
        lines.insert("status".into(), table_line);
        let st = st.get_ref();
        if st.customer_contact.is_some() {
            lines.insert("status.customer_contact".into(), table_line);
        }
        for (name, v, slot) in [
            ("answer_by", &st.answer_by, &mut status.answer_by),
            (
                "microsoft_engagement",
                &st.microsoft_engagement,
                &mut status.microsoft_engagement,
            ),
        ] {
            if let Some(v) = v {
                lines.insert(format!("status.{name}"), ctx.line(v));
                *slot = Some(v.get_ref().clone());
            }
        }
        status.customer_contact = st.customer_contact.unwrap_or_default();
    }

    Ok(Mapping {
        file: ctx.file.to_owned(),
        object: raw.object.get_ref().clone(),
        external_id: raw.external_id.get_ref().clone(),
        sync_flag,
        error_field,
        link_field,
        link_url,
        fields,
        constants,
        stages,
        status,
        lines,
    })
}

/// A `default`, constant or stage value in a mapping file that is not a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueSpecError {
    #[error("expected a single value (text, number, true/false) or a list of them, found a table")]
    Table,
    #[error("expected a list of single values, found nested tables or lists")]
    Nested,
    #[error(
        "no CRM values; expected e.g. {{ StageName = \"Closed Won\" }} or {{ statecode = 1, statuscode = 3 }}"
    )]
    NoStageValues,
    #[error("empty list; expected at least one CRM value")]
    EmptyList,
    /// The TOML type found instead of a CRM value.
    #[error("expected a CRM value (text, number, true/false) or a list of them, found {0}")]
    NotACrmValue(&'static str),
}

fn scalar_or_list(v: &toml::Value) -> Result<Value, ValueSpecError> {
    match v {
        toml::Value::Table(_) => Err(ValueSpecError::Table),
        toml::Value::Array(items) if items.iter().any(|i| i.is_table() || i.is_array()) => {
            Err(ValueSpecError::Nested)
        }
        other => Ok(toml_to_json(other)),
    }
}

fn pattern(raw: &Ordered<toml::Value>) -> Result<StagePattern, (Option<String>, ValueSpecError)> {
    let raw = &raw.0;
    if raw.is_empty() {
        return Err((None, ValueSpecError::NoStageValues));
    }
    let mut fields = Vec::new();
    for (field, v) in raw {
        let values = match v {
            toml::Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        if values.is_empty() {
            return Err((Some(field.clone()), ValueSpecError::EmptyList));
        }
        let mut out = Vec::new();
        for item in &values {
            match item {
                toml::Value::String(_)
                | toml::Value::Integer(_)
                | toml::Value::Boolean(_)
                | toml::Value::Float(_) => out.push(toml_to_json(item)),
                other => {
                    return Err((
                        Some(field.clone()),
                        ValueSpecError::NotACrmValue(other.type_str()),
                    ));
                }
            }
        }
        fields.push((field.clone(), out));
    }
    Ok(StagePattern { fields })
}
