//! The build settings the deployed artifacts depend on, pinned (docs/cost.md, "Lambda artifact
//! and cold start"): a panic must unwind (fail one request, not kill the Lambda sandbox or
//! `serve`), and `cargo lambda build` must apply the size profile that keeps the zipped arm64
//! bootstrap under 8 MB. `scripts/bench-artifact` measures what these settings give.

use std::collections::BTreeMap;

/// `key = value` lines of each `[section]` of Cargo.toml (enough for these flat sections; a
/// multi-line array is read as its lines).
fn sections() -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("Cargo.toml");
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_string();
            continue;
        }
        out.entry(current.clone())
            .or_default()
            .push(line.replace(' ', ""));
    }
    out
}

/// The lines of `[name]`; a missing section fails the test, naming it.
fn section(name: &str) -> Vec<String> {
    sections()
        .remove(name)
        .unwrap_or_else(|| panic!("Cargo.toml has no [{name}] section"))
}

#[test]
fn release_builds_unwind_on_panic() {
    let release = section("profile.release");
    assert!(
        release.iter().any(|l| l == "panic=\"unwind\""),
        "[profile.release] must say panic = \"unwind\" (cargo lambda adds \"abort\" when it is \
         unset): {release:?}"
    );
}

#[test]
fn the_lambda_build_is_size_optimised() {
    let config = section("package.metadata.lambda.build").join("");
    for setting in [
        "'profile.release.opt-level=\"s\"'",
        "'profile.release.lto=\"fat\"'",
        "'profile.release.codegen-units=1'",
    ] {
        assert!(
            config.contains(setting),
            "[package.metadata.lambda.build] config lacks {setting}: {config}"
        );
    }
    // serve keeps its speed: the size settings are not in the plain release profile.
    let release = section("profile.release").join(" ");
    assert!(!release.contains("opt-level"), "{release}");
}
