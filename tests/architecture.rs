//! The architecture, checked: the module graph is a DAG with the arrows docs/ARCHITECTURE.md
//! draws, and the engine spells no attribute key as a string literal.
//!
//! The graph is read from the source text: every `crate::<module>` and `super::<module>` path in
//! the code of `src/**` (comments and `#[cfg(test)] mod tests` blocks left out) is an arrow from
//! the file's module to that module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rs_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rs_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The module path of a file: `src/engine/drain.rs` → `["engine", "drain"]`,
/// `src/engine/mod.rs` → `["engine"]`, `src/lib.rs` → `[]`.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The code of a file: comments removed, the unit-test module cut off.
fn code(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text,
    };
    text.lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with("//") {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_after(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The module names a `use` names inside braces after `prefix::{`: `super::{a, b::c}` → a, b.
fn braced(text: &str) -> Vec<String> {
    let Some(body) = text.strip_prefix('{') else {
        return vec![ident_after(text)];
    };
    let mut depth = 0;
    let mut out = Vec::new();
    let mut start = true;
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => start = true,
            c if start && !c.is_whitespace() => {
                out.push(ident_after(&body[i..]));
                start = false;
            }
            _ => {}
        }
    }
    out
}

/// Arrows between modules at `depth` levels (1: top-level layers), as `from → to`.
struct Graph {
    /// file module path → modules it names (full paths).
    uses: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
}

impl Graph {
    fn read() -> Graph {
        let mut uses: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
        for file in rs_files(&src()) {
            let me = module_of(&file);
            let text = code(&file);
            let set = uses.entry(me.clone()).or_default();
            for (i, _) in text.match_indices("crate::") {
                let rest = &text[i + "crate::".len()..];
                for first in braced(rest) {
                    let mut target = vec![first.clone()];
                    let after = &rest[first.len()..];
                    if let Some(r) = after.strip_prefix("::") {
                        let second = ident_after(r);
                        if !second.is_empty() && second.chars().next().unwrap().is_lowercase() {
                            target.push(second);
                        }
                    }
                    if !first.is_empty() {
                        set.insert(target);
                    }
                }
            }
            // `super::x` from a file of module a::b::c names a::b::x.
            for (i, _) in text.match_indices("super::") {
                if i > 0 && text[..i].ends_with("::") {
                    continue;
                }
                let rest = &text[i + "super::".len()..];
                if me.is_empty() {
                    continue;
                }
                let parent = &me[..me.len() - 1];
                for name in braced(rest) {
                    if name.is_empty() || name == "super" {
                        continue;
                    }
                    let mut target = parent.to_vec();
                    target.push(name);
                    set.insert(target);
                }
            }
        }
        Graph { uses }
    }

    /// Arrows between the top-level modules.
    fn layers(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, tos) in &self.uses {
            let Some(f) = from.first() else { continue };
            for to in tos {
                if to[0] != *f {
                    out.entry(f.clone()).or_default().insert(to[0].clone());
                }
            }
        }
        out
    }

    /// Arrows between the sibling files of one directory module (`engine::drain` →
    /// `engine::facts`), leaving out the arrows to and from the directory's own `mod.rs`.
    fn siblings(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, tos) in &self.uses {
            if from.len() < 2 {
                continue;
            }
            let parent = &from[..from.len() - 1];
            for to in tos {
                if to.len() > parent.len() && to[..parent.len()] == *parent {
                    let sib = &to[..parent.len() + 1];
                    if sib != &from[..] && self.uses.contains_key(sib) {
                        out.entry(from.join("::"))
                            .or_default()
                            .insert(sib.join("::"));
                    }
                }
            }
        }
        out
    }
}

/// A cycle in `graph`, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

/// Arrows that must never exist: (from, to, why).
const FORBIDDEN: &[(&str, &str, &str)] = &[
    (
        "engine",
        "export",
        "the engine yields spans and points; the pipeline exports them",
    ),
    ("engine", "http", "the engine knows nothing of HTTP"),
    ("engine", "sources", "the engine knows no vendor"),
    ("engine", "pipeline", "the pipeline is built on the engine"),
    ("engine", "entrypoints", "hosts sit on top"),
    (
        "engine",
        "analysis",
        "the analysis reads the engine's state",
    ),
    (
        "model",
        "engine",
        "the model is the vocabulary below everything",
    ),
    ("model", "sources", "the model knows no vendor"),
    ("model", "store", "the model is not stored by itself"),
    (
        "sources",
        "engine",
        "a source only translates into the model",
    ),
    ("sources", "store", "a source keeps no state"),
    (
        "sources",
        "export",
        "a source only translates into the model",
    ),
    (
        "sources",
        "pipeline",
        "a source only translates into the model",
    ),
    (
        "sources",
        "http",
        "the router calls sources, not the other way",
    ),
    ("export", "pipeline", "the pipeline calls the exporter"),
    ("export", "http", "exporters know nothing of HTTP"),
    (
        "export",
        "store",
        "exporters read the engine's series, never the store",
    ),
    (
        "store",
        "engine",
        "the store holds records, whatever they mean",
    ),
    ("pipeline", "http", "the router calls the pipeline"),
    (
        "engine",
        "backfill",
        "the engine never knows a delivery came from an API",
    ),
    (
        "sources",
        "backfill",
        "a backfill synthesizes deliveries; sources translate them as any other",
    ),
    (
        "backfill",
        "sources",
        "a backfill only synthesizes deliveries: the router's source translates them",
    ),
    (
        "backfill",
        "engine",
        "a backfill's deliveries reach the engine through the router only",
    ),
    (
        "backfill",
        "store",
        "a backfill writes nothing itself: the router's pipeline does",
    ),
    ("http", "backfill", "hosts run backfills, not the router"),
    (
        "pipeline",
        "backfill",
        "hosts run backfills, not the pipeline",
    ),
    ("pipeline", "entrypoints", "hosts build the pipeline"),
    (
        "sync",
        "http",
        "a sync delivers through a Sink; the host hands it the router",
    ),
    (
        "sync",
        "sources",
        "a sync's deliveries are translated by the router's source",
    ),
    ("sync", "entrypoints", "hosts run syncs"),
    (
        "sync",
        "pipeline",
        "a sync reads and writes its own records; deliveries go through the Sink",
    ),
    (
        "engine",
        "sync",
        "the engine never knows a delivery came from a sync",
    ),
    ("http", "entrypoints", "hosts serve the router"),
];

#[test]
fn no_forbidden_arrow_between_layers() {
    let layers = Graph::read().layers();
    assert!(
        layers.get("engine").is_some_and(|t| t.contains("store")),
        "the graph reader sees engine → store: {layers:?}"
    );
    let mut found = Vec::new();
    for (from, to, why) in FORBIDDEN {
        if layers.get(*from).is_some_and(|t| t.contains(*to)) {
            found.push(format!("{from} → {to} ({why})"));
        }
    }
    assert!(found.is_empty(), "forbidden arrows: {found:#?}");
}

#[test]
fn the_layers_form_a_dag() {
    let layers = Graph::read().layers();
    assert_eq!(find_cycle(&layers), None, "a cycle between layers");
}

#[test]
fn no_module_imports_a_sibling_that_imports_it() {
    let siblings = Graph::read().siblings();
    assert!(
        siblings
            .get("engine::drain")
            .is_some_and(|t| t.contains("engine::facts")),
        "the graph reader sees engine::drain → engine::facts: {siblings:?}"
    );
    assert_eq!(
        find_cycle(&siblings),
        None,
        "a cycle between sibling modules"
    );
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(braced("{a, b::{c, d}, e}"), ["a", "b", "e"]);
}

/// The lines of `src/engine` (comments left out; with `with_tests`, its unit tests too) that
/// `matches`, as `file:line: text`.
fn engine_lines(with_tests: bool, matches: impl Fn(&str) -> bool) -> Vec<String> {
    let files = rs_files(&src().join("engine"));
    assert!(files.len() > 5, "the engine's files are found");
    let mut found = Vec::new();
    for file in files {
        let text = if with_tests {
            std::fs::read_to_string(&file).unwrap()
        } else {
            code(&file)
        };
        for (n, line) in text.lines().enumerate() {
            if !line.trim_start().starts_with("//") && matches(line) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

/// How code reads a value back out of an attribute map.
const ATTRIBUTE_READS: &[&str] = &[
    "attributes.get(",
    "attributes.contains_key(",
    "attributes.remove(",
    "attributes.iter()",
    "attributes.keys()",
    "attrs.get(",
    "attr_str(",
];

/// The typed contract: the engine decides on `WorkEvent`'s typed fields (repository, traits,
/// pipeline, environment, result, times, references), and only ever writes attributes, onto the
/// spans it exports. Reading one back would make an attribute key part of the contract again.
#[test]
fn the_engine_decides_on_typed_fields_never_on_attributes() {
    let found = engine_lines(false, |line| {
        ATTRIBUTE_READS.iter().any(|r| line.contains(r))
    });
    assert!(
        found.is_empty(),
        "the engine reads attributes back; give the value a typed field on WorkEvent:\n{}",
        found.join("\n")
    );
    // The check finds what it looks for: the model reads attributes when it upgrades facts
    // stored before the traits were typed.
    let model = code(&src().join("model").join("mod.rs"));
    assert!(ATTRIBUTE_READS.iter().any(|r| model.contains(r)) || model.contains(".remove(attr::"));
}

/// Prefixes of attribute keys: the project's own and the semantic conventions it uses.
const KEY_PREFIXES: &[&str] = &[
    "\"valuestream.",
    "\"vcs.",
    "\"cicd.",
    "\"deployment.",
    "\"service.",
    "\"url.",
    "\"error.",
    "\"incident.",
];

#[test]
fn the_engine_spells_no_attribute_key() {
    let found = engine_lines(true, |line| KEY_PREFIXES.iter().any(|p| line.contains(p)));
    assert!(
        found.is_empty(),
        "attribute keys belong in src/model/attr.rs, not as literals in the engine:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_architecture_doc_steps_name_the_files_they_touch() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ARCHITECTURE.md"))
            .unwrap();
    let steps = doc
        .split("\n## Add a source in ")
        .nth(1)
        .expect("docs/ARCHITECTURE.md has an \"## Add a source in N steps\" section");
    let n: usize = steps
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .expect("the heading says how many steps");
    let numbered = steps
        .lines()
        .filter(|l| {
            l.split_once(". ")
                .is_some_and(|(k, _)| k.parse::<usize>().is_ok())
        })
        .count();
    assert_eq!(
        numbered, n,
        "the heading's count and the numbered steps agree"
    );
    assert!(
        n <= 4,
        "adding a source takes at most 4 steps, the doc says {n}"
    );
    // The four places, each in its own step, in this order; and nothing else to edit.
    let step = |i: usize| {
        steps
            .split(&format!("\n{i}. "))
            .nth(1)
            .and_then(|s| s.split(&format!("\n{}. ", i + 1)).next())
            .unwrap_or_else(|| panic!("step {i} is missing"))
            .split("\n\n")
            .next()
            .unwrap()
            .to_string()
    };
    for (i, place) in [
        (1, "src/sources/<name>/"),
        (2, "src/sources/mod.rs"),
        (3, "tests/fixtures/<name>/"),
        (4, "README.md"),
    ] {
        assert!(
            step(i).contains(place),
            "step {i} names {place}: {}",
            step(i)
        );
        let on_disk = place.replace("<name>/", "github/");
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(&on_disk)
                .exists(),
            "{on_disk} named by the doc exists"
        );
    }
    assert!(
        step(2).contains("sources! {"),
        "step 2 is the name in the `sources!` line"
    );
    let section = steps.split("\n## ").next().unwrap();
    for derived in [
        "fuzz/Cargo.toml",
        "fuzz_targets/source_",
        "sam-local/local-secrets.json",
        "a 401 alarm per",
        "ENTRIES",
    ] {
        assert!(
            !section.contains(derived),
            "adding a source no longer touches {derived}: the section should not ask for it"
        );
    }
}

/// The exporters and the analysis spell no attribute key either (outside their unit tests,
/// which pin wire names and parse settings text): keys come from `model::attr`. And the
/// exporters read the series from `model`, never from the engine.
#[test]
fn export_and_analysis_spell_no_attribute_key_and_export_reads_no_engine() {
    let mut found = Vec::new();
    let mut files = 0;
    for dir in ["export", "analysis"] {
        for file in rs_files(&src().join(dir)) {
            files += 1;
            for (n, line) in code(&file).lines().enumerate() {
                let line = line.trim();
                if !line.starts_with("//") && KEY_PREFIXES.iter().any(|p| line.contains(p)) {
                    found.push(format!("{}:{}: {line}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        files > 5,
        "the exporters' and the analysis' files are found"
    );
    assert!(
        found.is_empty(),
        "attribute keys belong in src/model/attr.rs, not as literals in export/ or analysis/:\n{}",
        found.join("\n")
    );
    let layers = Graph::read().layers();
    assert!(
        layers.get("export").is_some_and(|t| t.contains("model")),
        "the graph reader sees export → model: {layers:?}"
    );
    assert!(
        !layers.get("export").is_some_and(|t| t.contains("engine")),
        "export imports the engine; Series, Labels and the catalogue are in model::series: {:?}",
        layers.get("export")
    );
}

/// Registry names, and the code of every file of `src/` (comments and unit tests left out).
fn registered_names() -> Vec<&'static str> {
    valuestream::sources::registry::SOURCES
        .iter()
        .map(|e| e.name)
        .collect()
}

/// The registry is the only list of sources: no other file of `src/` spells every registered
/// source's name as a string (a `match` on names, an array of them). A source's own module
/// spells its own name; the registry lists its entries by module.
#[test]
fn the_registry_is_the_only_list_of_sources() {
    let names = registered_names();
    assert!(names.len() >= 2, "{names:?}");
    let mut lists = Vec::new();
    for file in rs_files(&src()) {
        let text = code(&file);
        if names.iter().all(|n| text.contains(&format!("\"{n}\""))) {
            lists.push(file.strip_prefix(src()).unwrap().display().to_string());
        }
    }
    assert!(
        lists.is_empty(),
        "{lists:?} list every registered source by name; derive from \
         sources::registry::SOURCES instead"
    );
    // The one list: the `sources!` line of src/sources/mod.rs names each source once, in
    // registry order (it declares the modules and lists their ENTRY).
    assert_eq!(
        sources_line(),
        names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        "src/sources/mod.rs's `sources! {{ … }}` line lists the registry"
    );
}

/// The names of the `sources! { … }` line of src/sources/mod.rs, in order.
fn sources_line() -> Vec<String> {
    let text = code(&src().join("sources/mod.rs"));
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("sources! {"))
        .collect();
    assert_eq!(lines.len(), 1, "one `sources! {{ … }}` line: {lines:?}");
    let inside = lines[0]
        .trim_start_matches("sources! {")
        .trim_end()
        .trim_end_matches('}');
    inside
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect()
}

/// Files that serve every source alike and so must never list them: the fuzz harness and its
/// targets, the fuzz and local-event scripts, the local secrets, the hostile-input, fuzz-replay
/// and golden tests. What they need comes from the registry (or the `sources!` line, for the
/// scripts). `template.yaml` has one route for every source (`tests/cfn_lint.rs`).
const GENERIC: &[&str] = &[
    "fuzz/Cargo.toml",
    "fuzz/src/lib.rs",
    "fuzz/fuzz_targets",
    "scripts/fuzz",
    "scripts/make-events.py",
    "tests/hostile.rs",
    "tests/fuzz_regressions.rs",
    "tests/golden.rs",
];

#[test]
fn files_for_every_source_list_none() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let names = registered_names();
    let mut files = Vec::new();
    for g in GENERIC {
        let p = root.join(g);
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            files.push(p);
        }
    }
    let mut lists = Vec::new();
    for file in &files {
        let text =
            std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        // A name as a string, a file name or a route: `"jira"`, `source_jira`, `/jira`.
        let named = |n: &str| {
            [format!("\"{n}\""), format!("_{n}"), format!("/{n}")]
                .iter()
                .any(|s| text.contains(s.as_str()))
        };
        if names.iter().all(|n| named(n)) {
            lists.push(file.strip_prefix(root).unwrap().display().to_string());
        }
    }
    assert!(
        lists.is_empty(),
        "{lists:?} list every registered source; derive from sources::registry::SOURCES (or \
         the `sources!` line) instead"
    );
    assert!(files.len() >= GENERIC.len(), "{files:?}");
}

/// Every registered source is fuzzed by one target, `source` (fuzz/fuzz_targets/source.rs): its
/// input's first byte picks the source from the registry (fuzz/src/lib.rs), `fuzz/Cargo.toml`
/// builds it (`scripts/fuzz` runs every target of that manifest) and `scripts/fuzz` seeds it
/// from the fixtures of the sources of the `sources!` line. No target is a source's own.
#[test]
fn one_fuzz_target_fuzzes_every_registered_source() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).unwrap();
    assert!(
        manifest.contains("name = \"source\"\npath = \"fuzz_targets/source.rs\""),
        "fuzz/Cargo.toml builds the source target"
    );
    let target = std::fs::read_to_string(root.join("fuzz/fuzz_targets/source.rs")).unwrap();
    assert!(target.contains("valuestream_fuzz::deliver(data)"));
    let harness = std::fs::read_to_string(root.join("fuzz/src/lib.rs")).unwrap();
    assert!(
        harness.contains("&SOURCES[usize::from(selector) % SOURCES.len()]"),
        "the harness picks the source from the registry"
    );
    for e in std::fs::read_dir(root.join("fuzz/fuzz_targets")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            !name.starts_with("source_"),
            "fuzz target {name}: the `source` target fuzzes every source"
        );
    }
    let script = std::fs::read_to_string(root.join("scripts/fuzz")).unwrap();
    assert!(
        script.contains("r\"^sources! \\{([^}]*)\\}\"") && script.contains("put(\"source\", "),
        "scripts/fuzz seeds the source target from the `sources!` line"
    );
}

/// Most lines a function outside tests may take, from its `fn` line to its closing brace
/// (issue 29: a function a newcomer can read at once; longer ones are cut into named steps).
const MOST_LINES: usize = 80;

/// The functions of `text` (rustfmt's layout: a body closes with `}` at the `fn` line's
/// indentation) that take more than [`MOST_LINES`] lines, as `(name, first line, lines)`.
/// Test modules (from the first `#[cfg(test)]` followed by a `mod`) are left out.
fn long_functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let end = (0..lines.len())
        .find(|&i| {
            lines[i].trim() == "#[cfg(test)]"
                && lines
                    .get(i + 1)
                    .is_some_and(|l| l.trim_start().starts_with("mod "))
        })
        .unwrap_or(lines.len());
    let mut out = Vec::new();
    for i in 0..end {
        let line = lines[i];
        let t = line.trim_start();
        let indent = line.len() - t.len();
        let Some(at) = t.find("fn ") else { continue };
        let head = &t[..at];
        let is_fn = head.split_whitespace().all(|w| {
            matches!(w, "pub" | "async" | "const" | "unsafe" | "extern") || w.starts_with("pub(")
        });
        if !is_fn || t.starts_with("//") {
            continue;
        }
        let name: String = t[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // The signature ends at the first line ending in `{` (a body) or `;` (no body).
        let Some(open) = (i..end).find(|&j| {
            let l = lines[j].trim_end();
            l.ends_with('{') || l.ends_with(';') || l.ends_with('}')
        }) else {
            continue;
        };
        let l = lines[open].trim_end();
        if !l.ends_with('{') {
            continue;
        }
        let close = format!("{}}}", " ".repeat(indent));
        if let Some(last) = (open + 1..end).find(|&j| lines[j].trim_end() == close) {
            let n = last - i + 1;
            if n > MOST_LINES {
                out.push((name, i + 1, n));
            }
        }
    }
    out
}

#[test]
fn no_function_outside_tests_is_over_80_lines() {
    let mut found = Vec::new();
    for file in rs_files(&src()) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (name, line, n) in long_functions(&text) {
            found.push(format!("{}:{line}: fn {name}: {n} lines", file.display()));
        }
    }
    assert!(
        found.is_empty(),
        "cut these into named steps (at most {MOST_LINES} lines each):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_function_length_check_finds_long_functions_and_skips_tests() {
    let body = |n: usize| "    let x = 1;\n".repeat(n);
    let text = format!(
        "pub async fn long(\n    a: u8,\n) -> u8 {{\n{}}}\n\nfn short() {{\n{}}}\n\nfn decl();\n\n\
         #[cfg(test)]\nmod tests {{\n    fn long_test() {{\n{}    }}\n}}\n",
        body(80),
        body(10),
        body(200)
    );
    assert_eq!(long_functions(&text), [("long".to_string(), 1, 84)]);
    let method = format!(
        "impl A {{\n    pub(crate) fn m(&self) {{\n{}    }}\n}}\n",
        body(79)
    );
    assert_eq!(long_functions(&method), [("m".to_string(), 2, 81)]);
}
