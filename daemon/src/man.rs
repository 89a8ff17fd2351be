//! The daemons' man pages, made from their clap definitions (as `cmactl man` makes its
//! own) plus the sections an operator opens a daemon's page for: its files, signals, exit
//! status and environment. `DAEMON --man` prints the page (the packages run it at build
//! time); nothing else about the daemon changes.

use std::io::Write;

/// The sections after OPTIONS, as (title, paragraphs); plain text, one paragraph a string.
pub type Sections<'a> = &'a [(&'a str, &'a [&'a str])];

/// The ENVIRONMENT section every daemon's page has.
pub const ENVIRONMENT: (&str, &[&str]) = (
    "Environment",
    &[
        "RUST_LOG: the log filter (e.g. info, or info,openraft=warn). Logs go to stderr, the \
       journal under systemd; colour escapes only when stderr is a terminal and NO_COLOR is \
       unset.",
    ],
);

/// Whether the only argument is `--man`.
pub fn requested() -> bool {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    args.len() == 1 && args[0] == "--man"
}

/// Writes the page of `command` with `sections` in roff.
pub fn write(
    command: clap::Command,
    sections: Sections<'_>,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let versioned = command.get_version().is_some() || command.get_long_version().is_some();
    let man = clap_mangen::Man::new(command);
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    for (title, paragraphs) in sections {
        writeln!(out, ".SH {}", escape(&title.to_uppercase()))?;
        for (i, p) in paragraphs.iter().enumerate() {
            if i > 0 {
                writeln!(out, ".PP")?;
            }
            writeln!(out, "{}", escape(p))?;
        }
    }
    if versioned {
        man.render_version_section(out)?;
    }
    Ok(())
}

/// Prints the page of `command` to stdout; the exit status to return.
pub fn print(command: clap::Command, sections: Sections<'_>) -> std::process::ExitCode {
    let mut out = std::io::stdout().lock();
    match write(command, sections, &mut out).and_then(|()| out.flush()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("writing the man page: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Text as roff: backslashes doubled, a line never starting with a control character.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .lines()
        .map(|l| match l.chars().next() {
            Some('.') | Some('\'') => format!("\\&{l}"),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_has_its_sections_and_escapes_control_lines() {
        let command = clap::Command::new("demo").about("Does a thing").arg(
            clap::Arg::new("config")
                .long("config")
                .help("The config file"),
        );
        let mut out = Vec::new();
        write(
            command,
            &[(
                "Files",
                &[
                    "/etc/demo.toml",
                    ".hidden starts with a dot",
                    "a \\ backslash",
                ],
            )],
            &mut out,
        )
        .unwrap();
        let page = String::from_utf8(out).unwrap();
        assert!(page.contains(".SH NAME"), "{page}");
        assert!(page.contains("\\-\\-config"), "{page}");
        assert!(
            page.contains(".SH FILES\n/etc/demo.toml\n.PP\n\\&.hidden"),
            "{page}"
        );
        assert!(page.contains("a \\\\ backslash"), "{page}");
    }
}
