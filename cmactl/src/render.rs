//! Pure formatting for people: ages, local date-times, tables and colour. Nothing here
//! reads the clock, the time zone or the terminal: callers pass "now", the zone and the
//! [`Style`], so every function is tested with fixed inputs.

use chrono::{TimeZone, Utc};
use std::fmt::Write as _;

/// How output is decorated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Style {
    /// Emit ANSI colours (only on a terminal and without `NO_COLOR`).
    pub color: bool,
}

impl Style {
    /// Colours when stdout is a terminal and `NO_COLOR` is unset or empty
    /// (<https://no-color.org>).
    pub fn decide(stdout_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> Style {
        let no_color = no_color.is_some_and(|v| !v.is_empty());
        Style {
            color: stdout_is_terminal && !no_color,
        }
    }
}

/// What a piece of text means, rendered as a colour when colours are on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tone {
    /// No decoration.
    #[default]
    Plain,
    /// Healthy (green).
    Good,
    /// Needs attention (yellow).
    Warn,
    /// Broken (red).
    Bad,
    /// Secondary information (dim).
    Dim,
    /// Headings (bold).
    Bold,
}

/// `text` wrapped in the tone's ANSI codes when colours are on.
pub fn paint(style: Style, tone: Tone, text: &str) -> String {
    let code = match tone {
        Tone::Plain => return text.to_string(),
        Tone::Good => "32",
        Tone::Warn => "33",
        Tone::Bad => "1;31",
        Tone::Dim => "2",
        Tone::Bold => "1",
    };
    if style.color && !text.is_empty() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// How long ago `at_us` was at `now_us` (both µs since the Unix epoch): `3 s ago`,
/// `2 min ago`, `5 h 3 min ago`, `4 d 2 h ago`; a time in the future (clock skew between
/// nodes) reads `in 3 s`.
pub fn age(now_us: u64, at_us: u64) -> String {
    let (secs, future) = if at_us > now_us {
        ((at_us - now_us) / 1_000_000, true)
    } else {
        ((now_us - at_us) / 1_000_000, false)
    };
    let span = if secs < 60 {
        format!("{secs} s")
    } else if secs < 3600 {
        format!("{} min", secs / 60)
    } else if secs < 86_400 {
        let (h, m) = (secs / 3600, (secs % 3600) / 60);
        if m == 0 {
            format!("{h} h")
        } else {
            format!("{h} h {m} min")
        }
    } else {
        let (d, h) = (secs / 86_400, (secs % 86_400) / 3600);
        if h == 0 {
            format!("{d} d")
        } else {
            format!("{d} d {h} h")
        }
    };
    if future {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// `at_us` as a date-time in zone `tz`: `2026-12-01 19:04:58`.
pub fn date_time<Tz: TimeZone>(at_us: u64, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let Ok(us) = i64::try_from(at_us) else {
        return format!("@{at_us}us");
    };
    match Utc.timestamp_micros(us).single() {
        Some(t) => t.with_timezone(tz).format("%Y-%m-%d %H:%M:%S").to_string(),
        None => format!("@{at_us}us"),
    }
}

/// Date-time and age: `2026-12-01 19:04:58 (3 s ago)`.
pub fn when<Tz: TimeZone>(at_us: u64, now_us: u64, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    format!("{} ({})", date_time(at_us, tz), age(now_us, at_us))
}

/// One table cell: its text and tone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    /// Visible text.
    pub text: String,
    /// Colour when colours are on.
    pub tone: Tone,
}

impl Cell {
    /// A plain cell.
    pub fn plain(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            tone: Tone::Plain,
        }
    }

    /// A coloured cell.
    pub fn toned(text: impl Into<String>, tone: Tone) -> Cell {
        Cell {
            text: text.into(),
            tone,
        }
    }
}

impl<T: Into<String>> From<T> for Cell {
    fn from(text: T) -> Cell {
        Cell::plain(text)
    }
}

/// Rows under headings, rendered with columns padded to their widest cell (counted in
/// characters, before colour codes, so colours never shift columns). The last column is
/// not padded, so lines carry no trailing spaces.
pub fn table(headers: &[&str], rows: &[Vec<Cell>], style: Style) -> String {
    let columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.text.chars().count());
        }
    }
    let mut out = String::new();
    let heading: Vec<Cell> = headers
        .iter()
        .map(|h| Cell::toned(*h, Tone::Bold))
        .collect();
    for row in std::iter::once(&heading).chain(rows.iter()) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(columns) {
            let last = i + 1 == columns.min(row.len());
            let pad = if last {
                0
            } else {
                widths[i] - cell.text.chars().count()
            };
            line.push_str(&paint(style, cell.tone, &cell.text));
            if !last {
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    const NOW: u64 = 1_796_145_793_757_000;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(NOW, NOW), "0 s ago");
        assert_eq!(age(NOW, NOW - 3_400_000), "3 s ago");
        assert_eq!(age(NOW, NOW - 59_999_999), "59 s ago");
        assert_eq!(age(NOW, NOW - 60_000_000), "1 min ago");
        assert_eq!(age(NOW, NOW - 150_000_000), "2 min ago");
        assert_eq!(age(NOW, NOW - 3_600_000_000), "1 h ago");
        assert_eq!(age(NOW, NOW - 3_900_000_000), "1 h 5 min ago");
        assert_eq!(age(NOW, NOW - 86_400_000_000), "1 d ago");
        assert_eq!(age(NOW, NOW - 97_200_000_000), "1 d 3 h ago");
        assert_eq!(age(NOW, NOW + 2_000_000), "in 2 s");
        assert_eq!(age(NOW, 0), "20788 d 17 h ago");
    }

    #[test]
    fn date_times_follow_the_given_zone() {
        // 1796145793.757 s = 2026-12-01 17:23:13 UTC.
        assert_eq!(date_time(NOW, &Utc), "2026-12-01 17:23:13");
        let cet = FixedOffset::east_opt(3600).unwrap();
        assert_eq!(date_time(NOW, &cet), "2026-12-01 18:23:13");
        assert_eq!(
            when(NOW - 5_000_000, NOW, &Utc),
            "2026-12-01 17:23:08 (5 s ago)"
        );
        // Out of chrono's range: still printed, never a panic.
        assert_eq!(date_time(u64::MAX, &Utc), format!("@{}us", u64::MAX));
    }

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let rows = vec![
            vec![Cell::plain("1"), Cell::plain("dead"), Cell::plain("host 5")],
            vec![
                Cell::plain("12"),
                Cell::plain("switch_down"),
                Cell::plain(""),
            ],
        ];
        let text = table(&["ID", "KIND", "SUMMARY"], &rows, Style::default());
        assert_eq!(
            text,
            "ID  KIND         SUMMARY\n\
             1   dead         host 5\n\
             12  switch_down\n"
        );
    }

    #[test]
    fn colours_do_not_shift_columns() {
        let rows = vec![vec![Cell::toned("dead", Tone::Bad), Cell::plain("x")]];
        let plain = table(&["STATUS", "NEXT"], &rows, Style { color: false });
        let colored = table(&["STATUS", "NEXT"], &rows, Style { color: true });
        assert!(!plain.contains('\x1b'));
        assert!(colored.contains("\x1b[1;31mdead\x1b[0m"));
        let strip = |s: &str| {
            let mut out = String::new();
            let mut in_escape = false;
            for c in s.chars() {
                match (in_escape, c) {
                    (false, '\x1b') => in_escape = true,
                    (true, 'm') => in_escape = false,
                    (true, _) => {}
                    (false, c) => out.push(c),
                }
            }
            out
        };
        assert_eq!(strip(&colored), plain);
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(Style::decide(true, None).color);
        assert!(!Style::decide(false, None).color);
        assert!(!Style::decide(true, Some(OsStr::new("1"))).color);
        // An empty NO_COLOR does not disable colours (no-color.org).
        assert!(Style::decide(true, Some(OsStr::new(""))).color);
    }
}
