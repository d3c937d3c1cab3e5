//! The SAM template (template.yaml) is linted with cfn-lint and checked for what a linter does not
//! know: the function's DynamoDB access is narrow, no secret parameter leaks into the stack
//! outputs, and the `Drain` schedule invokes the same function with the settle period set.
//!
//! cfn-lint comes from the project's virtualenv `.venv`, which `scripts/test` creates.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn template_text() -> String {
    let path = repo().join("template.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The lines of one top-level section (`Parameters:`, `Outputs:`, ...), without its header.
fn section<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let header = format!("{name}:");
    let mut lines = text.lines().skip_while(|l| l.trim_end() != header);
    assert!(
        lines.next().is_some(),
        "template.yaml has no top-level {header} section"
    );
    lines
        .take_while(|l| {
            l.is_empty() || l.starts_with(' ') || l.starts_with('#') || l.starts_with('\t')
        })
        .collect()
}

/// The names of the parameters declared with `NoEcho: true`.
fn no_echo_parameters(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut current: Option<String> = None;
    for line in section(text, "Parameters") {
        // A parameter's name is a key indented by exactly two spaces.
        if line.len() > 2 && line.starts_with("  ") && !line[2..].starts_with(' ') {
            let key = line.trim().trim_end_matches(':');
            current = (!key.starts_with('#')).then(|| key.to_string());
        } else if line.trim() == "NoEcho: true" || line.trim() == "NoEcho: \"true\"" {
            if let Some(name) = &current {
                names.push(name.clone());
            }
        }
    }
    names
}

#[test]
fn cfn_lint_reports_nothing() {
    let cfn_lint: PathBuf = repo().join(".venv").join("bin").join("cfn-lint");
    if !Path::new(&cfn_lint).exists() {
        panic!(
            "{} is missing: run scripts/test (it creates .venv and installs cfn-lint)",
            cfn_lint.display()
        );
    }
    let out = Command::new(&cfn_lint)
        .arg("template.yaml")
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", cfn_lint.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim().is_empty(),
        "cfn-lint template.yaml: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
}

#[test]
fn table_access_is_narrow() {
    let text = template_text();
    for forbidden in ["dynamodb:Scan", "dynamodb:*", "dynamodb:BatchWriteItem"] {
        assert!(
            !text.contains(forbidden),
            "template.yaml must not grant {forbidden}"
        );
    }
    for needed in [
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:ConditionCheckItem",
    ] {
        assert!(text.contains(needed), "template.yaml should grant {needed}");
    }
    assert!(
        text.contains("Resource: !GetAtt StateTable.Arn"),
        "the DynamoDB statement must be limited to the table's ARN"
    );
}

/// The lines of the parameter `name` (its key line and the indented lines below it).
fn parameter<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let key = format!("  {name}:");
    let mut lines = section(text, "Parameters")
        .into_iter()
        .skip_while(|l| l.trim_end() != key);
    let mut out: Vec<&str> = lines.next().into_iter().collect();
    assert!(!out.is_empty(), "template.yaml has no parameter {name}");
    out.extend(lines.take_while(|l| l.starts_with("    ")));
    out
}

#[test]
fn a_schedule_drains_through_the_same_function() {
    let text = template_text();
    // Parameters with the documented defaults.
    let schedule = parameter(&text, "DrainSchedule").join("\n");
    assert!(schedule.contains("Default: rate(1 minute)"), "{schedule}");
    let settle = parameter(&text, "SettleSeconds").join("\n");
    assert!(
        settle.contains("Type: Number") && settle.contains("Default: 120"),
        "{settle}"
    );
    // The function's own events: the webhook routes and the Drain schedule.
    let resources = section(&text, "Resources");
    let function: Vec<&str> = resources
        .iter()
        .skip_while(|l| l.trim_end() != "  ValuestreamFunction:")
        .take_while(|l| {
            l.trim_end() == "  ValuestreamFunction:" || l.starts_with("    ") || l.is_empty()
        })
        .copied()
        .collect();
    let function = function.join("\n");
    assert!(
        function.contains("VALUESTREAM_SETTLE_SECS: !Ref SettleSeconds"),
        "the settle period reaches the function"
    );
    let drain = function
        .split("\n        Drain:\n")
        .nth(1)
        .expect("ValuestreamFunction has a Drain event");
    let drain: Vec<&str> = drain
        .lines()
        .take_while(|l| l.starts_with("          "))
        .collect();
    assert_eq!(
        drain.first().map(|l| l.trim()),
        Some("Type: Schedule"),
        "an EventBridge rule, whose event is the scheduled-event shape of events/scheduled/drain.json"
    );
    assert!(
        drain
            .iter()
            .any(|l| l.trim() == "Schedule: !Ref DrainSchedule"),
        "{drain:?}"
    );
    // A failed drain is not retried on top of the next tick.
    assert!(function.contains("MaximumRetryAttempts: 0"), "{function}");
}

#[test]
fn no_secret_parameter_in_outputs() {
    let text = template_text();
    let secrets = no_echo_parameters(&text);
    for expected in [
        "GitHubSecret",
        "GitLabToken",
        "JenkinsToken",
        "JiraSecret",
        "PagerDutySecret",
        "EventsToken",
        "OtlpHeaders",
    ] {
        assert!(
            secrets.iter().any(|s| s == expected),
            "parameter {expected} must be NoEcho (found NoEcho: {secrets:?})"
        );
    }
    let outputs = section(&text, "Outputs").join("\n");
    for name in &secrets {
        assert!(
            !outputs.contains(name.as_str()),
            "NoEcho parameter {name} appears in Outputs"
        );
    }
}
