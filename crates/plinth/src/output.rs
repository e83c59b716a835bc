//! Output: tables for people (default); for scripts, the API's document as it came
//! (`-o json`), the same document as YAML (`-o yaml`), or one field of it (`--field
//! runtime.pid`, one value per line for a list).
//!
//! This module is the CLI's one deliberate use of untyped JSON (`serde_json::Value`): the
//! `-o json|yaml|--field` pass-through reads the server's raw document, and the generic
//! table renders any wire type's dotted columns (`inventory.cpu.threads`) from its
//! serialised form. Commands never build or read `Value`s themselves.

use anyhow::{Result, anyhow};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use plinth_api::Page;
use plinth_client::Doc;
use serde::Serialize;
use serde_json::Value;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// How the command's answer is printed: `-o` and `--field`.
#[derive(Clone, Debug)]
pub struct Out {
    pub format: Format,
    pub field: Option<String>,
}

impl Out {
    /// Whether the answer is printed for a program (`-o json|yaml` or `--field`), not as a
    /// table.
    pub fn machine(&self) -> bool {
        self.format != Format::Table || self.field.is_some()
    }

    /// Prints the document as the server sent it (JSON, YAML or one field) and answers
    /// true; answers false, printing nothing, when a table is wanted.
    pub fn document<T>(&self, d: &Doc<T>) -> Result<bool> {
        if !self.machine() {
            return Ok(false);
        }
        let v: Value = if d.raw().is_empty() { Value::Null } else { serde_json::from_str(d.raw())? };
        if let Some(path) = &self.field {
            for line in field(&v, path)? {
                println!("{line}");
            }
            return Ok(true);
        }
        match self.format {
            Format::Yaml => print!("{}", serde_norway::to_string(&v)?),
            _ => println!("{}", serde_json::to_string_pretty(&v)?),
        }
        Ok(true)
    }

    /// Prints a page: its items as a table with `columns` (dotted paths into each item),
    /// or the document.
    pub fn list<T: Serialize>(&self, d: &Doc<Page<T>>, columns: &[&str]) -> Result<()> {
        if self.document(d)? {
            return Ok(());
        }
        let rows = d
            .items
            .iter()
            .map(|item| {
                let v = serde_json::to_value(item)?;
                Ok(columns.iter().map(|c| cell(pick(&v, c))).collect())
            })
            .collect::<Result<Vec<Vec<String>>>>()?;
        table(columns, rows);
        more(&d.next_cursor);
        Ok(())
    }

    /// Prints one object as a two-column table (field, value), or the document.
    pub fn object<T: Serialize>(&self, d: &Doc<T>) -> Result<()> {
        if self.document(d)? {
            return Ok(());
        }
        match serde_json::to_value(&**d)? {
            Value::Object(o) => {
                let mut t = Table::new();
                t.load_style(UTF8_BORDERS_ONLY);
                for (k, val) in &o {
                    let shown = match val {
                        Value::Object(_) | Value::Array(_) if cell(val).len() > 100 => {
                            serde_json::to_string_pretty(val).unwrap_or_default()
                        }
                        _ => cell(val),
                    };
                    t.add_row(vec![k.clone(), shown]);
                }
                println!("{t}");
            }
            other => println!("{}", serde_json::to_string_pretty(&other)?),
        }
        Ok(())
    }
}

/// `outer` with its field `key` replaced by the document `inner`, in both the typed value
/// (by `set`) and the raw document (so `-o json` shows the server's own text of both).
pub fn splice<T, U>(outer: Doc<T>, key: &str, inner: Doc<U>, set: impl FnOnce(&mut T, U)) -> Result<Doc<T>> {
    let mut raw: Value = serde_json::from_str(outer.raw())?;
    raw[key] = serde_json::from_str(inner.raw())?;
    let inner_raw = raw.to_string();
    let mut value = outer.into_inner();
    set(&mut value, inner.into_inner());
    Ok(Doc::new(value, inner_raw))
}

/// Prints rows of display text under `columns` (the header is each column's last dotted
/// part, upper-cased).
pub fn table(columns: &[&str], rows: Vec<Vec<String>>) {
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY);
    t.set_header(columns.iter().map(|c| c.rsplit('.').next().unwrap_or(c).to_uppercase()));
    for r in rows {
        t.add_row(r);
    }
    println!("{t}");
}

/// Says how to get the next page, when there is one.
pub fn more(next_cursor: &Option<String>) {
    if let Some(c) = next_cursor {
        eprintln!("more: add --cursor {c}");
    }
}

/// A table cell of an optional value: `-` when absent.
pub fn opt(v: Option<impl ToString>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// A wire enum's name as the API spells it (`block-new`, `credit_note`).
pub fn wire_name<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).map(|s| s.trim_matches('"').to_string()).unwrap_or_default()
}

/// Renders one serialised value as a table cell.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(o) if o.is_empty() => "-".into(),
        Value::Object(o) => {
            if let Some(k) = o.get("kind").or_else(|| o.get("status")) {
                let mut s = cell(k);
                for (key, val) in o.iter().filter(|(key, _)| *key != "kind" && *key != "status") {
                    s.push_str(&format!(" {key}={}", cell(val)));
                }
                s
            } else {
                o.iter().map(|(k, v)| format!("{k}={}", cell(v))).collect::<Vec<_>>().join(",")
            }
        }
        other => other.to_string(),
    }
}

/// Looks up a dotted path (`inventory.cpu.model`, `gpus.0.class`); null when absent.
fn pick<'a>(v: &'a Value, path: &str) -> &'a Value {
    lookup(v, path).unwrap_or(&Value::Null)
}

fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| match v {
        Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => v.get(k),
    })
}

/// The lines `--field PATH` prints: the field of an object, or of each item of a list (a
/// page's `items`, or an array), one a line. Strings print bare, null as an empty line,
/// arrays of scalars one element a line, objects as compact JSON.
fn field(doc: &Value, path: &str) -> Result<Vec<String>> {
    let first = path.split('.').next().unwrap_or(path);
    let items = match doc {
        Value::Array(a) => Some(a),
        Value::Object(o) if !o.contains_key(first) => o.get("items").and_then(Value::as_array),
        _ => None,
    };
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    match items {
        Some(items) => Ok(items.iter().map(|i| scalar(pick(i, path))).collect()),
        None => match lookup(doc, path) {
            Some(Value::Array(a)) => Ok(a.iter().map(scalar).collect()),
            Some(v) => Ok(vec![scalar(v)]),
            None => Err(anyhow!("the answer has no field {path:?}")),
        },
    }
}

/// Prints an operation's step timings: one row per step, and under a step that waited
/// for a host, one row per phase the host's agent reported.
pub fn timings(steps: &[plinth_api::StepTiming]) {
    if steps.is_empty() {
        return;
    }
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY);
    t.set_header(["STEP", "STARTED", "MS", "OUTCOME"]);
    let at = |d: &chrono::DateTime<chrono::Utc>| d.format("%H:%M:%S%.3f").to_string();
    for s in steps {
        t.add_row(vec![s.step.clone(), at(&s.started_at), format!("{:.1}", s.took_ms), s.outcome.clone()]);
        for p in &s.host {
            t.add_row(vec![
                format!("  host: {}", p.phase),
                at(&p.started_at),
                format!("{:.1}", p.took_ms),
                String::new(),
            ]);
        }
    }
    println!("{t}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_picked_by_dotted_path_one_value_a_line() {
        let one = json!({ "id": "ins_1", "runtime": { "pid": 42, "command_line": ["qemu", "-m"] }, "host_id": null });
        assert_eq!(field(&one, "id").unwrap(), ["ins_1"]);
        assert_eq!(field(&one, "runtime.pid").unwrap(), ["42"]);
        assert_eq!(field(&one, "runtime.command_line").unwrap(), ["qemu", "-m"]);
        assert_eq!(field(&one, "runtime.command_line.1").unwrap(), ["-m"]);
        assert_eq!(field(&one, "host_id").unwrap(), [""]);
        assert!(field(&one, "nope").is_err());
        let page = json!({ "items": [{ "id": "a", "claim": { "tcg": true } }, { "id": "b" }], "next_cursor": null });
        assert_eq!(field(&page, "id").unwrap(), ["a", "b"]);
        assert_eq!(field(&page, "claim.tcg").unwrap(), ["true", ""]);
        assert_eq!(field(&page, "next_cursor").unwrap(), [""]);
        assert_eq!(field(&json!([{ "name": "x" }]), "name").unwrap(), ["x"]);
    }
}
