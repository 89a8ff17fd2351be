//! Runs every `fsm/scenarios/*.scn` file and checks its `expect` lines.

use std::path::PathBuf;

#[test]
fn every_scenario_gives_its_expected_verdicts() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "scn"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "expected at least 10 scenarios");
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let outcome = fsm::scenario::run(&text).unwrap();
        assert!(!outcome.expected.is_empty(), "{file:?} has no expect line");
        if outcome.verdicts != outcome.expected || outcome.open_at_end {
            failures.push(format!(
                "{}: expected {:?}, got {:?} (open at end: {})",
                file.display(),
                outcome.expected,
                outcome.verdicts,
                outcome.open_at_end
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bad_lines_are_reported_with_their_number() {
    let err = fsm::scenario::run("host 1 switch sw1\n1000 explode 1\n").unwrap_err();
    assert_eq!(err.line, 2);
    let err = fsm::scenario::run("host x switch sw1\n").unwrap_err();
    assert_eq!(err.line, 1);
}
