//! SQL text and values shared by both engines: queries are written once with `?`
//! placeholders; [`postgres_placeholders`] numbers them for PostgreSQL.

/// A bound parameter. Typed even when null: PostgreSQL checks types of nulls too.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Int(Option<i64>),
    Text(Option<String>),
}

impl Param {
    pub fn int(value: i64) -> Self {
        Param::Int(Some(value))
    }

    pub fn text(value: impl Into<String>) -> Self {
        Param::Text(Some(value.into()))
    }

    /// A KiB figure: u64 on the wire, BIGINT in the database (saturating).
    pub fn kib(value: Option<u64>) -> Self {
        Param::Int(value.map(to_i64))
    }
}

/// One column of a result row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Text(String),
}

/// A query with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub sql: String,
    pub params: Vec<Param>,
}

impl Query {
    pub fn new(sql: impl Into<String>, params: Vec<Param>) -> Self {
        Self {
            sql: sql.into(),
            params,
        }
    }
}

/// Rewrites `?` placeholders as `$1, $2, ...` (our SQL has no `?` in literals).
pub fn postgres_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// Replaces NUL (PostgreSQL text cannot store it; SQLite could, and must match).
pub fn clean(text: &str) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text.to_string()
    }
}

pub fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A row read back, with typed accessors that tolerate what either engine returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Cell>);

impl Row {
    pub fn int(&self, index: usize) -> Option<i64> {
        match self.0.get(index) {
            Some(Cell::Int(value)) => Some(*value),
            Some(Cell::Text(text)) => text.parse().ok(),
            _ => None,
        }
    }

    pub fn int_or_zero(&self, index: usize) -> i64 {
        self.int(index).unwrap_or(0)
    }

    pub fn kib(&self, index: usize) -> Option<u64> {
        self.int(index).and_then(|value| u64::try_from(value).ok())
    }

    pub fn text(&self, index: usize) -> Option<String> {
        match self.0.get(index) {
            Some(Cell::Text(text)) => Some(text.clone()),
            Some(Cell::Int(value)) => Some(value.to_string()),
            _ => None,
        }
    }

    pub fn text_or_empty(&self, index: usize) -> String {
        self.text(index).unwrap_or_default()
    }

    /// A JSON column; null (or unparsable, which we never write) reads as JSON null.
    pub fn json(&self, index: usize) -> serde_json::Value {
        self.text(index)
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(
            postgres_placeholders("SELECT a FROM t WHERE b = ? AND c < ? LIMIT ?"),
            "SELECT a FROM t WHERE b = $1 AND c < $2 LIMIT $3"
        );
    }
}
