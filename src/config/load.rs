//! Layering: the built-in defaults ← the `--config` file ← the environment,
//! merged by the `config` crate. Every value of the file and of the
//! environment enters the merge tagged with its origin (`path:line`, or
//! `environment variable COSELL_SYNC__…`); after the merge each effective
//! value still carries the origin of the layer that won, which is what
//! [`Settings::origin`] and the error messages name. Unknown keys and
//! secrets written in the file are refused before the merge.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use config::{Map, Value, ValueKind};

use super::secrets::{self, Secrets};
use super::validate::{self, Raw};
use super::{ConfigError, DEFAULT_TOML, ENV_PREFIX, Settings, Sources};

/// Loads, checks and types the settings.
pub fn load(sources: &Sources) -> Result<Settings, ConfigError> {
    let defaults: toml::Table = toml::from_str(DEFAULT_TOML).map_err(|e| ConfigError::Syntax {
        path: PathBuf::from("built-in defaults"),
        message: e.to_string(),
    })?;
    let file = sources
        .file
        .as_deref()
        .map(|path| file_layer(path, &defaults))
        .transpose()?;
    let (env, env_secrets) = env_layer(&sources.env, &defaults)?;

    // The built-in defaults carry no origin: a value without one is a default.
    let mut builder = config::Config::builder().add_source(config::File::from_str(
        DEFAULT_TOML,
        config::FileFormat::Toml,
    ));
    if let Some(file) = file {
        builder = builder.add_source(file);
    }
    let merged = builder
        .add_source(env)
        .build()
        .map_err(|e| ConfigError::Invalid {
            key: String::new(),
            origin: "configuration".into(),
            message: e.to_string(),
        })?;
    let origins = origins(&merged, &defaults);
    let raw: Raw = merged.try_deserialize().map_err(|e| match e {
        config::ConfigError::Type {
            origin,
            unexpected,
            expected,
            key,
        } => ConfigError::Invalid {
            key: key.unwrap_or_default(),
            origin: origin.unwrap_or_else(|| "built-in defaults".into()),
            message: format!("expected {expected}, found {unexpected}"),
        },
        other => ConfigError::Invalid {
            key: String::new(),
            origin: "built-in defaults".into(),
            message: other.to_string(),
        },
    })?;

    let secrets = Secrets {
        env: env_secrets,
        credentials_dir: sources.credentials_dir.clone(),
    };
    let config_dir = sources.file.as_ref().map(|f| {
        f.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    });
    validate::typed(raw, origins, &secrets, config_dir)
}

/// One layer of the merge: values by section and key, each tagged with its
/// origin.
#[derive(Debug, Clone, Default)]
struct Layer(Map<String, Value>);

impl Layer {
    fn set(&mut self, section: &str, key: &str, value: Value) {
        let table = self
            .0
            .entry(section.to_owned())
            .or_insert_with(|| Value::new(None, Map::<String, Value>::new()));
        if let ValueKind::Table(t) = &mut table.kind {
            t.insert(key.to_owned(), value);
        }
    }
}

impl config::Source for Layer {
    fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, config::ConfigError> {
        Ok(self.0.clone())
    }
}

/// Where each effective value that is not a built-in default came from, by
/// `section.key`, as the merge recorded it.
fn origins(merged: &config::Config, defaults: &toml::Table) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for section in defaults.keys() {
        let Ok(table) = merged.get_table(section) else {
            continue;
        };
        for (key, value) in table {
            if let Some(origin) = value.origin() {
                out.insert(format!("{section}.{key}"), origin.to_owned());
            }
        }
    }
    out
}

/// The `--config` file: syntax, unknown keys and secrets are checked here,
/// and each value is tagged `path:line`.
fn file_layer(path: &Path, defaults: &toml::Table) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let lines = key_lines(&text);
    let shown = path.display().to_string();
    let at = |key: &str| match lines.get(key) {
        Some(l) => format!("{shown}:{l}"),
        None => shown.clone(),
    };
    let mut layer = Layer::default();
    for (section, value) in &table {
        let Some(default_section) = defaults.get(section).and_then(|v| v.as_table()) else {
            return Err(ConfigError::UnknownKey {
                key: section.clone(),
                origin: at(section),
                hint: suggest(section, defaults.keys()),
            });
        };
        let Some(keys) = value.as_table() else {
            return Err(ConfigError::Invalid {
                key: section.clone(),
                origin: shown.clone(),
                message: "expected a [section] table".into(),
            });
        };
        for (key, value) in keys {
            let origin = at(&format!("{section}.{key}"));
            if secrets::is_secret(section, key) {
                return Err(secrets::written_in_file(section, key, origin));
            }
            if !default_section.contains_key(key) {
                return Err(ConfigError::UnknownKey {
                    key: format!("{section}.{key}"),
                    origin,
                    hint: suggest(key, default_section.keys()),
                });
            }
            layer.set(section, key, tagged(value, &origin));
        }
    }
    Ok(layer)
}

/// The environment: every `COSELL_SYNC__` variable must name a known key.
/// Settings become a layer, each value tagged with its variable; secrets are
/// returned apart, by `section.key`, and never enter the merge.
fn env_layer(
    env: &BTreeMap<String, String>,
    defaults: &toml::Table,
) -> Result<(Layer, BTreeMap<String, String>), ConfigError> {
    let mut layer = Layer::default();
    let mut env_secrets = BTreeMap::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(&format!("{ENV_PREFIX}__")) else {
            continue;
        };
        let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        let origin = format!("environment variable {name}");
        let [section, key] = parts.as_slice() else {
            return Err(ConfigError::UnknownKey {
                key: parts.join("."),
                origin,
                hint: "; expected COSELL_SYNC__<SECTION>__<KEY>".into(),
            });
        };
        if secrets::is_secret(section, key) {
            env_secrets.insert(format!("{section}.{key}"), value.clone());
            continue;
        }
        let default_section = defaults.get(section.as_str()).and_then(|v| v.as_table());
        if !default_section.is_some_and(|t| t.contains_key(key.as_str())) {
            let hint = match default_section {
                Some(t) => suggest(key, t.keys()),
                None => suggest(section, defaults.keys()),
            };
            return Err(ConfigError::UnknownKey {
                key: format!("{section}.{key}"),
                origin,
                hint,
            });
        }
        layer.set(
            section,
            key,
            Value::new(Some(&origin), ValueKind::String(value.clone())),
        );
    }
    Ok((layer, env_secrets))
}

/// A TOML value for the merge, tagged with its origin (as the `config`
/// crate's own TOML reading converts it: date-times become strings).
fn tagged(value: &toml::Value, origin: &String) -> Value {
    let kind = match value {
        toml::Value::String(s) => ValueKind::String(s.clone()),
        toml::Value::Integer(n) => ValueKind::I64(*n),
        toml::Value::Float(f) => ValueKind::Float(*f),
        toml::Value::Boolean(b) => ValueKind::Boolean(*b),
        toml::Value::Datetime(d) => ValueKind::String(d.to_string()),
        toml::Value::Array(items) => {
            ValueKind::Array(items.iter().map(|v| tagged(v, origin)).collect())
        }
        toml::Value::Table(t) => ValueKind::Table(
            t.iter()
                .map(|(k, v)| (k.clone(), tagged(v, origin)))
                .collect(),
        ),
    };
    Value::new(Some(origin), kind)
}

/// The 1-based line of each `section` and `section.key` of a TOML text, from
/// the parser's spans.
fn key_lines(text: &str) -> BTreeMap<String, usize> {
    let line = |span: std::ops::Range<usize>| {
        text.get(..span.start)
            .map(|before| before.matches('\n').count() + 1)
    };
    let mut out = BTreeMap::new();
    let Ok(doc) = toml::de::DeTable::parse(text) else {
        return out;
    };
    for (section, value) in doc.get_ref() {
        let name: &str = section.get_ref();
        if let Some(l) = line(section.span()) {
            out.insert(name.to_owned(), l);
        }
        if let toml::de::DeValue::Table(keys) = value.get_ref() {
            for key in keys.keys() {
                let key_name: &str = key.get_ref();
                if let Some(l) = line(key.span()) {
                    out.insert(format!("{name}.{key_name}"), l);
                }
            }
        }
    }
    out
}

fn suggest<'a>(unknown: &str, known: impl Iterator<Item = &'a String>) -> String {
    let known: Vec<&String> = known.collect();
    let close = known
        .iter()
        .find(|k| strsim_close(unknown, k))
        .map(|k| format!("; did you mean `{k}`?"));
    close.unwrap_or_else(|| {
        format!(
            "; expected one of {}",
            known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// A small edit distance check (≤ 2) for "did you mean".
fn strsim_close(a: &str, b: &str) -> bool {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > 2 {
        return false;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()] <= 2
}
