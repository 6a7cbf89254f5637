//! Reading raw string layers (`inside.toml`, `.env`, environment) into typed
//! values, with errors that name the setting.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use crate::{invalid, DatabaseKind, SettingsError};

pub(crate) struct Raw<'a>(pub &'a HashMap<String, String>);

impl Raw<'_> {
    pub fn optional(&self, name: &str) -> Option<String> {
        self.0
            .get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    pub fn string(&self, name: &str, default: &str) -> String {
        self.optional(name).unwrap_or_else(|| default.to_string())
    }

    pub fn parsed<T: FromStr>(&self, name: &'static str, default: &str) -> Result<T, SettingsError>
    where
        T::Err: std::fmt::Display,
    {
        let v = self.string(name, default);
        v.parse()
            .map_err(|e| invalid(name, format!("cannot parse {v:?}: {e}")))
    }

    pub fn boolean(&self, name: &'static str, default: bool) -> Result<bool, SettingsError> {
        match self.optional(name).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) => match v.as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(invalid(name, format!("expected true or false, got {v:?}"))),
            },
        }
    }

    pub fn ranged<T>(
        &self,
        name: &'static str,
        default: T,
        min: T,
        max: T,
    ) -> Result<T, SettingsError>
    where
        T: FromStr + PartialOrd + std::fmt::Display + Copy,
        T::Err: std::fmt::Display,
    {
        let Some(v) = self.optional(name) else {
            return Ok(default);
        };
        let n: T = v
            .parse()
            .map_err(|e| invalid(name, format!("cannot parse {v:?}: {e}")))?;
        if n < min || n > max {
            return Err(invalid(name, format!("{n} is out of range {min}..={max}")));
        }
        Ok(n)
    }

    pub fn float(
        &self,
        name: &'static str,
        default: f64,
        min: f64,
        max: f64,
    ) -> Result<f64, SettingsError> {
        let n = self.ranged(name, default, min, max)?;
        if !n.is_finite() {
            return Err(invalid(name, "must be a finite number"));
        }
        Ok(n)
    }
}

pub(crate) fn database_kind(url: &str) -> Result<DatabaseKind, SettingsError> {
    match url.split_once(':').map(|(scheme, _)| scheme) {
        Some("sqlite") => Ok(DatabaseKind::Sqlite),
        Some("postgres" | "postgresql") => {
            url::Url::parse(url).map_err(|e| invalid("DATABASE_URL", format!("not a URL: {e}")))?;
            Ok(DatabaseKind::Postgres)
        }
        _ => Err(invalid(
            "DATABASE_URL",
            "expected sqlite://PATH or postgres://USER@HOST/DB",
        )),
    }
}

pub(crate) fn url_opt(
    r: &Raw<'_>,
    name: &'static str,
    schemes: &[&str],
) -> Result<Option<String>, SettingsError> {
    let Some(v) = r.optional(name) else {
        return Ok(None);
    };
    let url = url::Url::parse(&v).map_err(|e| invalid(name, format!("not a URL: {e}")))?;
    if !schemes.contains(&url.scheme()) {
        return Err(invalid(
            name,
            format!(
                "scheme {:?} not one of {}",
                url.scheme(),
                schemes.join(", ")
            ),
        ));
    }
    Ok(Some(v))
}

pub(crate) fn subject_prefix(p: &str) -> Result<String, SettingsError> {
    let ok = !p.is_empty()
        && p.split('.').all(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if ok {
        Ok(p.to_string())
    } else {
        Err(invalid(
            "NATS_SUBJECT_PREFIX",
            "dot-separated tokens of letters, digits, '_' or '-'",
        ))
    }
}

pub(crate) fn toml_layer(path: &Path) -> Result<HashMap<String, String>, SettingsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(file_err(path, e)),
    };
    let table: toml::Table = text.parse().map_err(|e| file_err(path, e))?;
    let mut out = HashMap::new();
    for (k, v) in table {
        let s = match v {
            toml::Value::String(s) => s,
            toml::Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| i.to_string())
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        out.insert(k.to_ascii_uppercase(), s);
    }
    Ok(out)
}

pub(crate) fn dotenv_layer(path: &Path) -> Result<HashMap<String, String>, SettingsError> {
    match dotenvy::from_path_iter(path) {
        Ok(iter) => iter
            .map(|item| item.map_err(|e| file_err(path, e)))
            .collect(),
        Err(dotenvy::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(HashMap::new())
        }
        Err(e) => Err(file_err(path, e)),
    }
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> SettingsError {
    SettingsError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}
