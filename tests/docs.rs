//! The docs are part of the feature: the README starts with the two commands, CI runs exactly
//! the README's test command, and every environment variable the binary reads is documented.

use std::path::Path;
use valuestream::sources::registry;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn readme_commands() -> Vec<String> {
    let readme = read("README.md");
    let block = readme
        .split("```sh\n")
        .nth(1)
        .expect("README has a first sh block")
        .split("```")
        .next()
        .unwrap();
    block
        .lines()
        .map(|l| l.split('#').next().unwrap().trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn readme_starts_with_the_two_commands() {
    let readme = read("README.md");
    let first_block = readme.find("```sh").unwrap();
    assert!(first_block < 200, "the commands come first");
    assert_eq!(readme_commands(), ["scripts/demo", "scripts/test"]);
    for script in ["scripts/demo", "scripts/test"] {
        assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join(script).exists());
    }
}

#[test]
fn ci_runs_exactly_the_readme_test_command() {
    let ci = read(".ci/run");
    let commands: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with('#') && !l.starts_with("set ") && !l.starts_with("cd ")
        })
        .collect();
    assert_eq!(commands, [readme_commands()[1].as_str()]);
}

#[test]
fn every_environment_variable_is_documented() {
    let readme = read("README.md");
    let mut missing = Vec::new();
    for (name, _) in registry::settings() {
        if !readme.contains(&format!("`{name}`")) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "README's Configuration lacks {missing:?}"
    );
    // And the binary reads nothing the list does not name.
    let mut sources = String::new();
    for entry in walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")) {
        sources.push_str(&std::fs::read_to_string(entry).unwrap());
    }
    assert!(
        readme.contains("VALUESTREAM_RETRY_SECS"),
        "VALUESTREAM_RETRY_SECS is read by the code and must be documented"
    );
    let listed: Vec<&str> = registry::settings().iter().map(|(n, _)| *n).collect();
    let mut read_but_unlisted = Vec::new();
    for cap in sources.match_indices("\"VALUESTREAM_") {
        let rest = &sources[cap.0 + 1..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || *c == '_' || c.is_ascii_digit())
            .collect();
        if !listed.contains(&name.as_str()) && !readme.contains(&name) {
            read_but_unlisted.push(name);
        }
    }
    assert!(
        read_but_unlisted.is_empty(),
        "variables read but not documented: {read_but_unlisted:?}"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}
