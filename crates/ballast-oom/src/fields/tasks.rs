//! The task table: its header, and a row's pid, numeric columns and name.

use super::*;

pub(super) fn task_header(body: &[u8]) -> Vec<String> {
    let after = memchr::memchr(b']', body).map_or(body, |at| &body[at + 1..]);
    after
        .split(|b| b.is_ascii_whitespace())
        .filter(|word| !word.is_empty())
        .take(24)
        .map(|word| lossy(word, 32))
        .collect()
}

pub(super) fn is_task_row(body: &[u8]) -> bool {
    let Some(inner) = body.strip_prefix(b"[") else {
        return false;
    };
    let inner = &inner[inner.iter().take_while(|b| **b == b' ').count()..];
    let digits = leading_digits(inner).len();
    digits > 0 && inner[digits..].starts_with(b"]")
}

/// A task row split into its pid, the numeric columns and the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskRow {
    pub pid: u32,
    pub numbers: Vec<i64>,
    pub name: String,
}

/// Reads a row given how many numeric columns follow the pid (`None`: read all numbers).
pub(crate) fn task_row(body: &[u8], numeric_columns: Option<usize>) -> Option<TaskRow> {
    let inner = body.strip_prefix(b"[")?;
    let close = memchr::memchr(b']', inner)?;
    let pid_text = inner[..close].trim_ascii();
    let pid = u32::try_from(parse_u64(pid_text)?).ok()?;
    let mut rest = &inner[close + 1..];
    let mut numbers = Vec::new();
    loop {
        let trimmed = rest.trim_ascii_start();
        if numeric_columns.is_some_and(|wanted| numbers.len() >= wanted) {
            rest = trimmed;
            break;
        }
        let word_len = trimmed
            .iter()
            .take_while(|b| !b.is_ascii_whitespace())
            .count();
        let Some(number) = parse_i64(&trimmed[..word_len]) else {
            rest = trimmed;
            break;
        };
        if numbers.len() >= 24 {
            rest = trimmed;
            break;
        }
        numbers.push(number);
        rest = &trimmed[word_len..];
    }
    Some(TaskRow {
        pid,
        numbers,
        name: lossy(rest, MAX_NAME_BYTES),
    })
}
