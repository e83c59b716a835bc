//! A small builder for portable SQL with numbered `$n` placeholders and their values.

use crate::resource::Val;
use crate::store::Backend;
use sqlx::Any;
use sqlx::any::AnyArguments;
use sqlx::query::Query;

/// SQL text and the values for its placeholders, in order.
#[derive(Default)]
pub(crate) struct Sql {
    pub text: String,
    binds: Vec<Val>,
}

impl Sql {
    pub fn new(text: impl Into<String>) -> Sql {
        Sql { text: text.into(), binds: Vec::new() }
    }

    /// Appends raw SQL (never user input).
    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    /// Adds a value and returns its placeholder.
    pub fn arg(&mut self, v: Val) -> String {
        self.binds.push(v);
        format!("${}", self.binds.len())
    }

    /// Appends ` AND <lhs> <placeholder>`, e.g. `cond("tenant_id =", …)`.
    pub fn cond(&mut self, lhs: &str, v: Val) -> &mut Self {
        let p = self.arg(v);
        self.text.push_str(&format!(" AND {lhs} {p}"));
        self
    }

    /// Appends `other` as one more statement (`;`-separated), its placeholders renumbered
    /// to follow ours: one batch for SQLite, which runs every statement of a query in turn
    /// (PostgreSQL takes one statement per query).
    pub fn append(&mut self, other: &Sql) {
        use std::fmt::Write;
        let offset = self.binds.len();
        if !self.text.is_empty() {
            self.text.push_str(";\n");
        }
        // `$` only starts a placeholder here: the text is never user input.
        let mut rest = other.text.as_str();
        while let Some(i) = rest.find('$') {
            self.text.push_str(&rest[..i]);
            let digits = rest[i + 1..].bytes().take_while(u8::is_ascii_digit).count();
            match rest[i + 1..i + 1 + digits].parse::<usize>() {
                Ok(n) => {
                    let _ = write!(self.text, "${}", n + offset);
                }
                Err(_) => self.text.push('$'),
            }
            rest = &rest[i + 1 + digits..];
        }
        self.text.push_str(rest);
        self.binds.extend(other.binds.iter().cloned());
    }

    /// The query with every value bound.
    pub fn query(&self) -> Query<'_, Any, AnyArguments> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(self.text.clone()));
        for v in &self.binds {
            q = match v {
                Val::Text(t) => q.bind(t.clone()),
                Val::Int(i) => q.bind(*i),
            };
        }
        q
    }
}

/// The aggregate that packs many rows into one value: `fields` (SQL text expressions)
/// joined by U+001F, rows by U+001E. On SQLite every row a query returns is a hand-off
/// between threads, so hot reads of many rows return one ([`unpack`] splits it).
pub(crate) fn packed(backend: Backend, fields: &[&str]) -> String {
    let (unit, rec, agg) = match backend {
        Backend::Sqlite => ("char(31)", "char(30)", "group_concat"),
        Backend::Postgres => ("chr(31)", "chr(30)", "string_agg"),
    };
    format!("{agg}({}, {rec})", fields.join(&format!(" || {unit} || ")))
}

/// The rows of a [`packed`] value (None when there were none), each as its fields.
pub(crate) fn unpack(all: Option<&str>) -> impl Iterator<Item = Vec<&str>> {
    all.unwrap_or("").split('\u{1e}').filter(|r| !r.is_empty()).map(|r| r.split('\u{1f}').collect())
}

#[cfg(test)]
mod tests {
    use super::Sql;
    use crate::resource::Val;

    #[test]
    fn appended_statements_number_their_placeholders_after_the_batch() {
        let mut a = Sql::new("INSERT INTO t (a, b) VALUES (");
        let (p1, p2) = (a.arg(Val::text("x")), a.arg(Val::Int(Some(1))));
        a.push(&format!("{p1}, {p2})"));
        let mut b = Sql::new("SELECT json_extract(doc, '$.name') FROM t WHERE a = ");
        let p = b.arg(Val::text("y"));
        b.push(&format!("{p} AND b = {p}"));
        a.append(&b);
        assert_eq!(
            a.text,
            "INSERT INTO t (a, b) VALUES ($1, $2);\nSELECT json_extract(doc, '$.name') FROM t WHERE a = $3 AND b = $3"
        );
        assert_eq!(a.binds.len(), 3);
        let mut empty = Sql::default();
        empty.append(&b);
        assert_eq!(empty.text, b.text, "nothing before: no separator, no renumbering");
    }
}
