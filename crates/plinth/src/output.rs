//! Output: tables for people (default), JSON for scripts (`-o json`).

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde_json::Value;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Renders one JSON value as a table cell.
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

/// Looks up a dotted path (`inventory.cpu.model`).
fn pick<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| v.get(k).unwrap_or(&Value::Null))
}

/// Prints a list page's items with `columns`.
pub fn list(format: Format, page: &Value, columns: &[&str]) {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(page).unwrap_or_default());
        return;
    }
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY);
    t.set_header(columns.iter().map(|c| c.rsplit('.').next().unwrap_or(c).to_uppercase()));
    for item in page["items"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        t.add_row(columns.iter().map(|c| cell(pick(item, c))));
    }
    println!("{t}");
    if let Some(c) = page["next_cursor"].as_str() {
        eprintln!("more: add --cursor {c}");
    }
}

/// Prints one object as a two-column table (or JSON).
pub fn object(format: Format, v: &Value) {
    if format == Format::Json || !v.is_object() {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY);
    if let Some(o) = v.as_object() {
        for (k, val) in o {
            let shown = match val {
                Value::Object(_) | Value::Array(_) if cell(val).len() > 100 => {
                    serde_json::to_string_pretty(val).unwrap_or_default()
                }
                _ => cell(val),
            };
            t.add_row(vec![k.clone(), shown]);
        }
    }
    println!("{t}");
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
