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

/// The README's `## Deploy to AWS` section.
fn deploy_section() -> String {
    let readme = read("README.md");
    let start = readme.find("\n## Deploy to AWS").expect("a deploy section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    rest[..end].to_string()
}

/// Every `valuestream grafana install` command of `text`'s sh blocks, continuation lines joined.
fn grafana_install_commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for block in text.split("```sh\n").skip(1) {
        let block = block.split("```").next().unwrap();
        let joined = block.replace("\\\n", " ");
        for line in joined.lines() {
            let line = line.split(" #").next().unwrap().trim();
            if line.starts_with("valuestream grafana install") {
                out.push(line.to_string());
            }
        }
    }
    out
}

#[test]
fn the_deploy_section_gets_the_cli_before_it_runs_grafana_install() {
    let deploy = deploy_section();
    let get = deploy
        .find("cargo install --locked --path .")
        .expect("the deploy section says how to get the valuestream CLI");
    let run = deploy
        .find("valuestream grafana install --workspace-id")
        .expect("the deploy section runs grafana install --workspace-id");
    assert!(get < run, "the CLI is installed before it is run");
}

#[test]
fn every_grafana_install_flag_in_the_readme_exists() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_valuestream"))
        .args(["grafana", "install", "--help"])
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    let commands = grafana_install_commands(&read("README.md"));
    assert!(commands.len() >= 4, "{commands:#?}");
    for c in &commands {
        for flag in c.split_whitespace().filter(|w| w.starts_with("--")) {
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "{flag} in {c:?}"
            );
        }
    }
}
