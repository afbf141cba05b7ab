//! How the `club` CLI shows things: aligned tables for people, JSON for programs.

use std::io::{IsTerminal, Write};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Where output goes and in which form.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    /// `--json`: listings and views as JSON.
    pub json: bool,
    /// Whether stdout is a terminal that takes ANSI styles.
    pub styled_stdout: bool,
    /// Whether stderr is a terminal that takes ANSI styles.
    pub styled_stderr: bool,
}

impl Ui {
    /// The UI of this process: styles only on terminals, and never with `NO_COLOR` set.
    pub fn detect(json: bool) -> Self {
        let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Self {
            json,
            styled_stdout: color && std::io::stdout().is_terminal(),
            styled_stderr: color && std::io::stderr().is_terminal(),
        }
    }

    /// Prints `value` as pretty JSON on stdout.
    pub fn print_json(&self, value: &impl Serialize) -> Result<(), String> {
        let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}").map_err(|e| e.to_string())
    }

    /// Prints a list as `{"object": "list", "data": [...]}`.
    pub fn print_list<T: Serialize>(&self, data: &[T]) -> Result<(), String> {
        self.print_json(&serde_json::json!({ "object": "list", "data": data }))
    }
}

/// Prints rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> Result<(), String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut out = std::io::stdout().lock();
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            let width = widths.get(i).copied().unwrap_or(0);
            if i + 1 == widths.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.trim_end().to_owned()
    };
    writeln!(out, "{}", line(&mut header.iter().copied())).map_err(|e| e.to_string())?;
    for row in rows {
        writeln!(out, "{}", line(&mut row.iter().map(String::as_str)))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A timestamp to the second, in UTC.
pub fn when(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// `text` on one line, at most `max` characters (with `…` when cut).
pub fn snippet(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    if flat.chars().count() <= max {
        flat.to_owned()
    } else {
        let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// Removes control characters that would move the cursor or restyle the terminal, keeping
/// newlines and tabs: text from the network is printed, never obeyed.
pub fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_are_one_short_line() {
        assert_eq!(snippet("a\nb", 10), "a b");
        assert_eq!(snippet("abcdef", 4), "abc…");
        assert_eq!(printable("x\x1b[2Jy\n"), "x[2Jy\n");
    }
}
