//! A small builder for portable SQL with numbered `$n` placeholders and their values.

use crate::resource::Val;
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
