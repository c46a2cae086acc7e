//! How the admin commands print an answer: the API's JSON (pretty, for
//! scripts) or a table for people, chosen by `--output` and by default by
//! whether stdout is a terminal. A table never hides a field: a list shows
//! its chosen columns, an object every field, one per row.

use std::io::{IsTerminal, Write};

use serde_json::Value;

use super::args::Output;

/// Which shape to draw a reply as.
#[derive(Clone, Copy, Debug)]
pub enum View {
    /// The array in field `list`, one row per item, these columns.
    List { list: &'static str, columns: &'static [&'static str] },
    /// One row per field.
    Object,
}

impl View {
    pub const KEYS: View = View::List {
        list: "keys",
        columns: &["keyId", "keyset", "algorithm", "state", "backend", "activatedAt", "retiredAt", "revokedAt"],
    };
    pub const API_KEYS: View =
        View::List { list: "data", columns: &["id", "name", "prefix", "scopes", "revoked", "createdAt", "expiresAt"] };
}

/// `--output`, or table on a terminal and json otherwise.
pub fn resolve(output: Option<Output>) -> Output {
    output.unwrap_or_else(|| if std::io::stdout().is_terminal() { Output::Table } else { Output::Json })
}

pub fn print(reply: &Value, output: Option<Output>, view: View) -> anyhow::Result<()> {
    let text = match resolve(output) {
        Output::Json => serde_json::to_string_pretty(reply)?,
        Output::Table => table(reply, view),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    Ok(())
}

fn table(reply: &Value, view: View) -> String {
    match (view, reply) {
        (View::List { list, columns }, Value::Object(fields)) if fields.get(list).is_some_and(Value::is_array) => {
            let items = fields.get(list).and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
            let mut rows = vec![columns.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>()];
            rows.extend(items.iter().map(|item| columns.iter().map(|c| cell(&item[*c])).collect()));
            let mut text = grid(&rows);
            for (name, value) in fields.iter().filter(|(name, _)| name.as_str() != list) {
                text.push_str(&format!("\n{name}: {}", cell(value)));
            }
            text
        }
        (_, Value::Object(fields)) => {
            let rows: Vec<Vec<String>> = fields.iter().map(|(k, v)| vec![k.clone(), cell(v)]).collect();
            grid(&rows)
        }
        (_, other) => cell(other),
    }
}

/// A value in one cell: strings bare, lists of strings comma-joined, `-`
/// for nothing, anything else as compact JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")
        }
        other => other.to_string(),
    }
}

/// Left-aligned columns, two spaces apart, no trailing blanks.
fn grid(rows: &[Vec<String>]) -> String {
    let width = |i: usize| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0);
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns).map(width).collect();
    let lines: Vec<String> = rows
        .iter()
        .map(|r| {
            let cells: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect();
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_list_is_drawn_as_aligned_columns_with_the_other_fields_below() {
        let reply = json!({
            "data": [
                { "id": "ak_1", "name": "ci", "prefix": "rak_abc", "scopes": ["a:b:c", "d:e:f"], "revoked": false,
                  "createdAt": "2026-01-01T00:00:00.000Z", "expiresAt": null },
                { "id": "ak_22", "name": "deploy", "prefix": "rak_def", "scopes": [], "revoked": true,
                  "createdAt": "2026-01-02T00:00:00.000Z" }
            ],
            "pagination": { "hasMore": false }
        });
        let t = table(&reply, View::API_KEYS);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "id     name    prefix   scopes       revoked  createdAt                 expiresAt");
        assert_eq!(lines[1], "ak_1   ci      rak_abc  a:b:c,d:e:f  false    2026-01-01T00:00:00.000Z  -");
        assert_eq!(lines[2], "ak_22  deploy  rak_def               true     2026-01-02T00:00:00.000Z  -");
        assert_eq!(lines[3], r#"pagination: {"hasMore":false}"#);
    }

    #[test]
    fn an_object_is_drawn_one_field_per_row() {
        let t = table(&json!({ "newKeyId": "k2", "oldKeyId": null, "immediate": true }), View::Object);
        assert_eq!(t, "immediate  true\nnewKeyId   k2\noldKeyId   -");
        assert_eq!(table(&json!({ "x": 1 }), View::KEYS), "x  1", "a list view of an answer without the list");
    }
}
