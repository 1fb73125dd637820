//! The rows of every table and their indexes (alternate keys, modifiedon,
//! version, the text of look-up columns), with the undo log a change set
//! rolls back, and a row rendered as the Web API returns it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, SubsecRound, Utc};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Map, Value, json};

use crate::SimOptions;

use super::key::KeySpec;
use super::schema::{TableDef, formatted, table_defs};

#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) values: Map<String, Value>,
    pub(super) version: u64,
    pub(super) modified: DateTime<Utc>,
}

pub(crate) struct Table {
    pub(crate) def: TableDef,
    pub(super) rows: BTreeMap<String, Row>,
    pub(super) by_key: HashMap<String, HashMap<String, String>>,
    /// Per column of `TableDef::indexed`: its text, ASCII-lowercased (a
    /// string `eq` ignores ASCII case), → the ids of the rows holding it.
    pub(super) by_text: HashMap<&'static str, HashMap<String, BTreeSet<String>>>,
    pub(super) by_modified: BTreeSet<(DateTime<Utc>, String)>,
    pub(super) by_version: BTreeMap<u64, String>,
    pub(super) deleted: Vec<(u64, String)>,
}

impl Table {
    pub(super) fn new(def: TableDef) -> Self {
        let by_key = def
            .keys
            .iter()
            .map(|(_, c)| (c.clone(), HashMap::new()))
            .collect();
        let by_text = def.indexed.iter().map(|c| (*c, HashMap::new())).collect();
        Table {
            def,
            rows: BTreeMap::new(),
            by_key,
            by_text,
            by_modified: BTreeSet::new(),
            by_version: BTreeMap::new(),
            deleted: Vec::new(),
        }
    }

    pub(super) fn unindex(&mut self, id: &str) -> Option<Row> {
        let old = self.rows.remove(id)?;
        self.by_modified.remove(&(old.modified, id.to_owned()));
        self.by_version.remove(&old.version);
        for (colname, idx) in self.by_key.iter_mut() {
            if let Some(Value::String(k)) = old.values.get(colname) {
                idx.remove(&k.to_ascii_lowercase());
            }
        }
        for (colname, idx) in self.by_text.iter_mut() {
            if let Some(Value::String(k)) = old.values.get(*colname) {
                let k = k.to_ascii_lowercase();
                if let Some(ids) = idx.get_mut(&k) {
                    ids.remove(id);
                    if ids.is_empty() {
                        idx.remove(&k);
                    }
                }
            }
        }
        Some(old)
    }

    pub(super) fn index(&mut self, id: String, row: Row) {
        self.by_modified.insert((row.modified, id.clone()));
        self.by_version.insert(row.version, id.clone());
        for (colname, idx) in self.by_key.iter_mut() {
            if let Some(Value::String(k)) = row.values.get(colname) {
                idx.insert(k.to_ascii_lowercase(), id.clone());
            }
        }
        for (colname, idx) in self.by_text.iter_mut() {
            if let Some(Value::String(k)) = row.values.get(*colname) {
                idx.entry(k.to_ascii_lowercase())
                    .or_default()
                    .insert(id.clone());
            }
        }
        self.rows.insert(id, row);
    }

    pub(super) fn find_by_key(&self, column: &str, value: &str) -> Option<String> {
        self.by_key
            .get(column)?
            .get(&value.to_ascii_lowercase())
            .cloned()
    }

    /// The ids of the rows whose `column` holds `value` (ASCII case
    /// ignored), in id order; `None` when `column` is not indexed.
    pub(super) fn text_hits(&self, column: &str, value: &str) -> Option<&BTreeSet<String>> {
        static NONE: BTreeSet<String> = BTreeSet::new();
        let idx = self.by_text.get(column)?;
        Some(idx.get(&value.to_ascii_lowercase()).unwrap_or(&NONE))
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Row> {
        self.rows.get(id)
    }
}

/// Undo log of one change set: prior rows, restored in reverse on failure.
#[derive(Default)]
pub(crate) struct Undo {
    pub(super) entries: Vec<(usize, String, Option<Row>)>,
    pub(super) deleted_marks: Vec<(usize, usize)>,
}

pub(crate) struct DvState {
    pub(super) rng: StdRng,
    pub(super) version: u64,
    pub(crate) tables: Vec<Table>,
    pub(super) org_id: String,
    pub(super) user_id: String,
    pub(super) bu_id: String,
}

pub(super) fn fmt_dt(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub(super) fn etag_of(version: u64) -> String {
    format!("W/\"{version}\"")
}

impl DvState {
    pub(crate) fn new(opts: &SimOptions) -> Self {
        let mut rng = StdRng::seed_from_u64(opts.seed ^ 0xd365);
        let mut g = || {
            uuid::Builder::from_random_bytes(rng.random())
                .into_uuid()
                .to_string()
        };
        let (org_id, user_id, bu_id) = (g(), g(), g());
        DvState {
            rng: StdRng::seed_from_u64(opts.seed ^ 0xd366),
            version: 1_000_000,
            tables: table_defs(opts).into_iter().map(Table::new).collect(),
            org_id,
            user_id,
            bu_id,
        }
    }

    pub(crate) fn new_guid(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.random())
            .into_uuid()
            .to_string()
    }

    pub(crate) fn table_index(&self, set: &str) -> Option<usize> {
        self.tables.iter().position(|t| t.def.set == set)
    }

    pub(crate) fn table(&self, set: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.def.set == set)
    }

    pub(crate) fn user_id(&self) -> &str {
        &self.user_id
    }

    /// Writes a row (insert or replace), stamping version and modifiedon.
    pub(crate) fn store(
        &mut self,
        t: usize,
        id: &str,
        mut values: Map<String, Value>,
        now: DateTime<Utc>,
        undo: Option<&mut Undo>,
    ) {
        self.version += 1;
        let version = self.version;
        let modified = now.trunc_subsecs(0);
        let table = &mut self.tables[t];
        let old = table.unindex(id);
        if let Some(u) = undo {
            u.entries.push((t, id.to_owned(), old.clone()));
        }
        let pk = table.def.pk;
        values.insert(pk.to_owned(), json!(id));
        if !values.contains_key("createdon") || old.is_none() {
            let created = old
                .as_ref()
                .and_then(|o| o.values.get("createdon").cloned())
                .unwrap_or_else(|| {
                    values
                        .get("createdon")
                        .cloned()
                        .unwrap_or_else(|| json!(fmt_dt(modified)))
                });
            values.insert("createdon".into(), created);
        }
        let modified = values
            .get("modifiedon")
            .filter(|_| old.is_none())
            .and_then(Value::as_str)
            .and_then(crate::datetime::parse)
            .unwrap_or(modified);
        values.insert("modifiedon".into(), json!(fmt_dt(modified)));
        values.insert("versionnumber".into(), json!(version));
        if table.def.logical == "contact" {
            let full = [values.get("firstname"), values.get("lastname")]
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ");
            values.insert("fullname".into(), json!(full));
        }
        table.index(
            id.to_owned(),
            Row {
                values,
                version,
                modified,
            },
        );
    }

    pub(super) fn delete(&mut self, t: usize, id: &str, undo: Option<&mut Undo>) -> bool {
        self.version += 1;
        let version = self.version;
        let table = &mut self.tables[t];
        let Some(old) = table.unindex(id) else {
            return false;
        };
        if let Some(u) = undo {
            u.deleted_marks.push((t, table.deleted.len()));
            u.entries.push((t, id.to_owned(), Some(old)));
        }
        table.deleted.push((version, id.to_owned()));
        true
    }

    /// Restores every row an undo log recorded (a failed change set).
    pub(crate) fn rollback(&mut self, undo: Undo) {
        for (t, id, old) in undo.entries.into_iter().rev() {
            let table = &mut self.tables[t];
            table.unindex(&id);
            if let Some(row) = old {
                table.index(id, row);
            }
        }
        for (t, len) in undo.deleted_marks.into_iter().rev() {
            self.tables[t].deleted.truncate(len);
        }
    }

    pub(super) fn resolve(&self, t: usize, key: &KeySpec) -> Option<String> {
        let table = &self.tables[t];
        match key {
            KeySpec::Id(id) => table.rows.contains_key(id).then(|| id.clone()),
            KeySpec::Alt(c, v) => table.find_by_key(c, v),
        }
    }

    pub(super) fn render(
        &self,
        t: usize,
        row: &Row,
        select: &Option<Vec<String>>,
        annotations: bool,
    ) -> Value {
        let def = &self.tables[t].def;
        let mut out = Map::new();
        out.insert("@odata.etag".into(), json!(etag_of(row.version)));
        let cols: Vec<&str> = match select {
            Some(s) => s.iter().map(String::as_str).collect(),
            None => def.columns.iter().map(|c| c.name.as_str()).collect(),
        };
        for name in cols {
            let v = row.values.get(name).cloned().unwrap_or(Value::Null);
            if annotations {
                if let Some(f) = formatted(def, name, &v) {
                    out.insert(
                        format!("{name}@OData.Community.Display.V1.FormattedValue"),
                        json!(f),
                    );
                }
                if name.starts_with('_') && !v.is_null() {
                    let target = def
                        .nav
                        .iter()
                        .find(|n| n.column == name)
                        .map(|n| n.target_logical)
                        .unwrap_or("systemuser");
                    let target = if name == "_customerid_value" {
                        row.values
                            .get("_customerid_type")
                            .and_then(Value::as_str)
                            .unwrap_or(target)
                            .to_owned()
                    } else {
                        target.to_owned()
                    };
                    out.insert(
                        format!("{name}@Microsoft.Dynamics.CRM.lookuplogicalname"),
                        json!(target),
                    );
                }
            }
            out.insert(name.to_owned(), v);
        }
        out.insert(
            def.pk.to_owned(),
            row.values.get(def.pk).cloned().unwrap_or(Value::Null),
        );
        Value::Object(out)
    }
}
