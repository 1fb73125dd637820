//! Addressing a record: `set(guid)`, `set(key='value')` (alternate keys)
//! and what follows the key in a resource path.

use super::schema::TableDef;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum KeySpec {
    Id(String),
    Alt(String, String),
}

/// Splits `opportunities(new_referralid='x')/rest` into set, key and the rest.
pub(super) fn split_resource(path: &str) -> Result<(String, Option<String>, String), String> {
    let seg_end = path.find(['(', '/']).unwrap_or(path.len());
    let head = path[..seg_end].to_owned();
    if path[seg_end..].starts_with('(') {
        let close = find_close(path, seg_end).ok_or_else(|| {
            format!("Bad Request - Error in query syntax: unbalanced parentheses in '{path}'.")
        })?;
        let key = path[seg_end + 1..close].to_owned();
        Ok((
            head,
            Some(key),
            path[close + 1..].trim_start_matches('/').to_owned(),
        ))
    } else {
        Ok((
            head,
            None,
            path[seg_end..].trim_start_matches('/').to_owned(),
        ))
    }
}

pub(super) fn find_close(s: &str, open: usize) -> Option<usize> {
    let mut in_str = false;
    let b = s.as_bytes();
    let mut i = open + 1;
    while i < b.len() {
        match b[i] {
            b'\'' if in_str && b.get(i + 1) == Some(&b'\'') => i += 1,
            b'\'' => in_str = !in_str,
            b')' if !in_str => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

pub(super) fn parse_key(def: &TableDef, raw: &str) -> Result<KeySpec, String> {
    let raw = raw.trim();
    let invalid = || {
        format!(
            "The key in the request URI is not valid for resource 'Microsoft.Dynamics.CRM.{}'. Ensure that the names and number of key properties match the declared or alternate key properties for the resource.",
            def.logical
        )
    };
    if let Some((name, val)) = raw.split_once('=') {
        if raw.contains(',') && !val.trim().starts_with('\'') {
            return Err(invalid());
        }
        let name = name.trim();
        let val = val.trim();
        let v = if let Some(inner) = val.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            inner.replace("''", "'")
        } else {
            val.to_owned()
        };
        if name == def.pk {
            return uuid::Uuid::parse_str(&v)
                .map(|u| KeySpec::Id(u.to_string()))
                .map_err(|_| invalid());
        }
        if def.keys.iter().any(|(_, c)| c == name) {
            return Ok(KeySpec::Alt(name.to_owned(), v));
        }
        return Err(invalid());
    }
    uuid::Uuid::parse_str(raw.trim_matches('\''))
        .map(|u| KeySpec::Id(u.to_string()))
        .map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimOptions;
    use crate::dataverse::schema::table_defs;

    #[test]
    fn resource_paths_split_into_set_key_and_rest() {
        assert_eq!(
            split_resource("opportunities").unwrap(),
            ("opportunities".into(), None, String::new())
        );
        assert_eq!(
            split_resource("opportunities(new_referralid='a(b)''c')").unwrap(),
            (
                "opportunities".into(),
                Some("new_referralid='a(b)''c'".into()),
                String::new()
            )
        );
        assert_eq!(
            split_resource("EntityDefinitions(LogicalName='opportunity')/Keys").unwrap(),
            (
                "EntityDefinitions".into(),
                Some("LogicalName='opportunity'".into()),
                "Keys".into()
            )
        );
        let opts = SimOptions::default();
        let defs = table_defs(&opts);
        assert_eq!(
            parse_key(&defs[0], "new_referralid='x''y'").unwrap(),
            KeySpec::Alt("new_referralid".into(), "x'y".into())
        );
        assert!(parse_key(&defs[0], "name='x'").is_err());
        assert!(matches!(
            parse_key(&defs[0], "00000000-0000-0000-0000-000000000001").unwrap(),
            KeySpec::Id(_)
        ));
    }
}
