//! Printing: JSON documents and lines, aligned tables and `key: value` blocks, times. Writes that
//! hit a closed pipe (`spear logs | head`) end the process quietly.

use std::io::Write;

use serde_json::Value;

/// Write `text` to standard output as is.
pub fn out(text: &str) {
    write_or_exit(&mut std::io::stdout().lock(), text.as_bytes());
}

/// Write raw bytes to standard output.
pub fn out_bytes(bytes: &[u8]) {
    write_or_exit(&mut std::io::stdout().lock(), bytes);
}

/// Write `text` to standard error as is.
pub fn err(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn write_or_exit(w: &mut impl Write, bytes: &[u8]) {
    if let Err(e) = w.write_all(bytes).and_then(|()| w.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("spear: error: cannot write to standard output: {e}");
        std::process::exit(2);
    }
}

/// Print one JSON document (pretty).
pub fn json(v: &Value) {
    out(&format!(
        "{}\n",
        serde_json::to_string_pretty(v).unwrap_or_default()
    ));
}

/// Print one JSON document on one line (a stream's item).
pub fn json_line(v: &Value) {
    out(&format!("{v}\n"));
}

/// A value for a table cell: strings bare, null and empty as `-`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(o) if o.is_empty() => "-".into(),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// Columns aligned under `headers`.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, c) in cells.enumerate() {
            if i + 1 < widths.len() {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            } else {
                s.push_str(c);
            }
        }
        format!("{}\n", s.trim_end())
    };
    let mut text = line(&mut headers.iter().copied());
    for row in rows {
        text.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    text
}

/// `key: value` lines, keys padded to one width.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{:<width$} {v}\n", format!("{k}:")))
        .collect()
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS` UTC; `-` for 0.
pub fn time(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A JSON value holding milliseconds since the epoch, as [`time`].
pub fn time_of(v: &Value) -> String {
    time(v.as_i64().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(time(0), "-");
        assert_eq!(time(1), "1970-01-01 00:00:00");
        assert_eq!(time(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(time(1_700_000_000_123), "2023-11-14 22:13:20");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["ID", "STATE"],
            &[
                vec!["a".into(), "running".into()],
                vec!["long-id".into(), "ok".into()],
            ],
        );
        assert_eq!(t, "ID       STATE\na        running\nlong-id  ok\n");
    }
}
