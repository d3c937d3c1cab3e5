//! The SAM template (template.yaml) is linted with cfn-lint and with `sam validate --lint`, and
//! checked for what a linter does not know: the function's DynamoDB access is narrow, no secret
//! parameter leaks into the stack outputs, the `Drain` schedule invokes the same function with
//! the settle period set, the managed-Prometheus option (on by default) creates the workspace
//! and the collector layer with least-privilege policies, the webhook secrets reach the function
//! only as a Secrets Manager ARN, and the API throttle holds the documented peak.
//!
//! cfn-lint and the SAM CLI come from the project's virtualenv `.venv`, which
//! `scripts/install-test-deps` creates. The structural checks read the template as cfn-lint's own
//! decoder does (intrinsic functions as `{"Ref": ...}`, `{"Fn::If": [...]}`), through `.venv`'s
//! Python.

use serde_json::{json, Value};
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
    assert!(
        secrets.iter().any(|s| s == "OtlpHeaders"),
        "parameter OtlpHeaders must be NoEcho (found NoEcho: {secrets:?})"
    );
    let outputs = section(&text, "Outputs").join("\n");
    for name in &secrets {
        assert!(
            !outputs.contains(name.as_str()),
            "NoEcho parameter {name} appears in Outputs"
        );
    }
}

// ---------------------------------------------------------------- structure, as cfn-lint reads it

fn venv_tool(name: &str) -> PathBuf {
    let path = repo().join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-deps",
        path.display()
    );
    path
}

/// A YAML file as JSON: the template through cfn-lint's decoder (which knows `!Ref` and the
/// other short forms), anything else through PyYAML's safe loader.
fn yaml_json(rel: &str) -> Value {
    let script = r#"
import json, sys
path = sys.argv[1]
if path.endswith("template.yaml"):
    from cfnlint.decode import decode
    doc, errors = decode(path)
    if errors:
        sys.exit("cannot decode: %s" % errors)
else:
    import yaml
    with open(path) as f:
        doc = yaml.safe_load(f)
print(json.dumps(doc, default=str))
"#;
    let out = Command::new(venv_tool("python3"))
        .args(["-c", script, rel])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "decoding {rel}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn template() -> Value {
    yaml_json("template.yaml")
}

/// Every IAM statement of the template: the function's inline policies and the role policies.
fn statements(t: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (name, r) in t["Resources"].as_object().unwrap() {
        let docs: Vec<&Value> = match r["Type"].as_str().unwrap() {
            "AWS::Serverless::Function" => r["Properties"]["Policies"]
                .as_array()
                .map(|p| p.iter().collect())
                .unwrap_or_default(),
            "AWS::IAM::RolePolicy" | "AWS::IAM::Policy" => vec![&r["Properties"]["PolicyDocument"]],
            _ => vec![],
        };
        for doc in docs {
            for st in doc["Statement"].as_array().unwrap() {
                out.push((name.clone(), st.clone()));
            }
        }
    }
    out
}

fn actions(statement: &Value) -> Vec<String> {
    match &statement["Action"] {
        Value::String(a) => vec![a.clone()],
        Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_string()).collect(),
        other => panic!("Action {other}"),
    }
}

#[test]
fn sam_validate_lint_passes() {
    // `sam validate --lint` needs neither credentials nor a region: it runs the SAM translator
    // and cfn-lint locally. The region is set so no developer profile is consulted.
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(venv_tool("sam"))
        .args(["validate", "--lint", "--template-file", "template.yaml"])
        .current_dir(repo())
        .env(
            "PATH",
            format!(
                "{}:{}",
                repo().join(".venv/bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("HOME", home.path())
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("SAM_CLI_TELEMETRY", "0")
        .env_remove("AWS_PROFILE")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && format!("{stdout}{stderr}").contains("is a valid SAM Template"),
        "sam validate --lint: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
}

#[test]
fn managed_prometheus_is_on_by_default_with_the_collector_layer() {
    let t = template();
    let p = &t["Parameters"];
    assert_eq!(p["ManagedPrometheus"]["Default"], "true");
    assert_eq!(
        t["Conditions"]["UseManagedPrometheus"],
        json!({"Fn::Equals": [{"Ref": "ManagedPrometheus"}, "true"]})
    );
    let r = &t["Resources"];
    assert_eq!(r["PrometheusWorkspace"]["Type"], "AWS::APS::Workspace");
    assert_eq!(
        r["PrometheusWorkspace"]["Condition"],
        "UseManagedPrometheus"
    );

    // The collector layer: the mapping's ADOT layer for the stack's region, or the override,
    // plus the configuration layer.
    let f = &r["ValuestreamFunction"]["Properties"];
    assert_eq!(
        f["Layers"],
        json!({"Fn::If": ["UseManagedPrometheus", [
            {"Fn::If": ["HasCollectorLayerOverride", {"Ref": "CollectorLayerArn"},
                {"Fn::FindInMap": ["AdotCollectorLayer", {"Ref": "AWS::Region"}, "Arm64"]}]},
            {"Ref": "CollectorConfigLayer"}], {"Ref": "AWS::NoValue"}]})
    );
    let mapping = t["Mappings"]["AdotCollectorLayer"].as_object().unwrap();
    assert!(mapping.len() >= 10, "{mapping:?}");
    for (region, arns) in mapping {
        let arn = arns["Arm64"].as_str().unwrap();
        assert!(
            arn.starts_with(&format!(
                "arn:aws:lambda:{region}:901920570463:layer:aws-otel-collector-arm64-ver-"
            )),
            "{region}: {arn}"
        );
    }
    assert_eq!(
        t["Conditions"]["HasCollectorLayerOverride"],
        json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "CollectorLayerArn"}, ""]}]})
    );

    // The function exports to the layer; the layer reads the shipped configuration.
    let env = &f["Environment"]["Variables"];
    assert_eq!(
        env["OTEL_EXPORTER_OTLP_ENDPOINT"],
        json!({"Fn::If": ["UseManagedPrometheus", "http://localhost:4318", {"Ref": "OtlpEndpoint"}]})
    );
    let uri = env["OPENTELEMETRY_COLLECTOR_CONFIG_URI"]["Fn::If"][1]
        .as_str()
        .unwrap();
    let file = uri.strip_prefix("/opt/").expect(uri);
    let config_layer = &r["CollectorConfigLayer"]["Properties"];
    let dir = config_layer["ContentUri"].as_str().unwrap();
    let config = yaml_json(&format!("{dir}{file}"));
    assert_eq!(
        env["AMP_REMOTE_WRITE_URL"]["Fn::If"][1],
        json!({"Fn::Sub": "${PrometheusWorkspace.PrometheusEndpoint}api/v1/remote_write"})
    );
    let rw = &config["exporters"]["prometheusremotewrite"];
    assert_eq!(rw["endpoint"], "${env:AMP_REMOTE_WRITE_URL}");
    assert_eq!(rw["auth"]["authenticator"], "sigv4auth");
    assert_eq!(config["extensions"]["sigv4auth"]["service"], "aps");
    assert_eq!(
        config["service"]["pipelines"]["metrics"]["exporters"],
        json!(["prometheusremotewrite"])
    );
    assert_eq!(
        config["service"]["pipelines"]["traces"]["exporters"],
        json!(["awsxray"])
    );
    assert_eq!(
        config["receivers"]["otlp"]["protocols"]["http"]["endpoint"],
        "localhost:4318"
    );

    // Existing-collector users keep OtlpEndpoint, which is then required.
    let rule = &t["Rules"]["ExistingCollectorNeedsEndpoint"];
    assert_eq!(
        rule["RuleCondition"],
        json!({"Fn::Equals": [{"Ref": "ManagedPrometheus"}, "false"]})
    );
    assert_eq!(
        rule["Assertions"][0]["Assert"],
        json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "OtlpEndpoint"}, ""]}]})
    );

    // Outputs: the workspace and the URLs Grafana and the senders need.
    let o = &t["Outputs"];
    assert_eq!(
        o["PrometheusWorkspaceId"]["Value"],
        json!({"Fn::GetAtt": ["PrometheusWorkspace", "WorkspaceId"]})
    );
    assert_eq!(
        o["PrometheusUrl"]["Value"],
        json!({"Fn::GetAtt": ["PrometheusWorkspace", "PrometheusEndpoint"]})
    );
    assert_eq!(
        o["PrometheusQueryUrl"]["Value"],
        json!({"Fn::Sub": "${PrometheusWorkspace.PrometheusEndpoint}api/v1/query"})
    );
    for name in ["GitHubWebhookUrl", "WebhookSecretArn", "FunctionName"] {
        assert!(
            o[name]["Value"].is_object() || o[name]["Value"].is_string(),
            "output {name}"
        );
    }
}

#[test]
fn policies_are_least_privilege() {
    let t = template();
    let all = statements(&t);
    for (name, st) in &all {
        assert_eq!(st["Effect"], "Allow", "{name}: {st}");
        for a in actions(st) {
            assert!(!a.contains('*'), "{name}: wildcard action {a}");
        }
    }
    let find = |prefix: &str| -> Vec<&(String, Value)> {
        all.iter()
            .filter(|(_, st)| actions(st).iter().any(|a| a.starts_with(prefix)))
            .collect()
    };
    // Prometheus: remote write only, to this stack's workspace only.
    let aps = find("aps:");
    assert_eq!(aps.len(), 1, "{aps:?}");
    assert_eq!(actions(&aps[0].1), ["aps:RemoteWrite"]);
    assert_eq!(
        aps[0].1["Resource"],
        json!({"Fn::GetAtt": ["PrometheusWorkspace", "Arn"]})
    );
    assert_eq!(
        t["Resources"][&aps[0].0]["Condition"],
        "UseManagedPrometheus"
    );
    // X-Ray: the two actions the exporter calls (X-Ray has no resource-level permissions).
    let xray = find("xray:");
    assert_eq!(xray.len(), 1, "{xray:?}");
    assert_eq!(
        actions(&xray[0].1),
        ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    );
    assert_eq!(
        t["Resources"][&xray[0].0]["Condition"],
        "UseManagedPrometheus"
    );
    // Secrets Manager: read this one secret.
    let sm = find("secretsmanager:");
    assert_eq!(sm.len(), 1, "{sm:?}");
    assert_eq!(actions(&sm[0].1), ["secretsmanager:GetSecretValue"]);
    assert_eq!(
        sm[0].1["Resource"],
        json!({"Fn::If": ["CreateWebhookSecret", {"Ref": "WebhookSecret"}, {"Ref": "WebhookSecretArn"}]})
    );
    // Every Resource is a reference to this stack's resources or parameters, except X-Ray's.
    for (name, st) in &all {
        if st["Resource"] == "*" {
            assert!(
                actions(st).iter().all(|a| a.starts_with("xray:")),
                "{name}: {st}"
            );
        }
    }
}

#[test]
fn no_secret_in_the_function_environment() {
    let t = template();
    let env = t["Resources"]["ValuestreamFunction"]["Properties"]["Environment"]["Variables"]
        .as_object()
        .unwrap();
    for var in [
        "VALUESTREAM_GITHUB_SECRET",
        "VALUESTREAM_GITLAB_TOKEN",
        "VALUESTREAM_JENKINS_TOKEN",
        "VALUESTREAM_JIRA_SECRET",
        "VALUESTREAM_PAGERDUTY_SECRET",
        "VALUESTREAM_EVENTS_TOKEN",
    ] {
        assert!(
            !env.contains_key(var),
            "{var} must not be in the environment"
        );
    }
    assert_eq!(
        env["VALUESTREAM_SECRET_ARN"],
        json!({"Fn::If": ["CreateWebhookSecret", {"Ref": "WebhookSecret"}, {"Ref": "WebhookSecretArn"}]})
    );
    assert_eq!(
        env["VALUESTREAM_SECRET_TTL_SECS"],
        json!({"Ref": "SecretTtlSeconds"})
    );
    assert_eq!(t["Parameters"]["SecretTtlSeconds"]["Default"], 300);
    // No environment value is a secret parameter (only OtlpHeaders, for a collector of one's own).
    let text = serde_json::to_string(env).unwrap();
    for p in [
        "GitHubSecret",
        "GitLabToken",
        "JenkinsToken",
        "JiraSecret",
        "PagerDutySecret",
        "EventsToken",
    ] {
        assert!(!text.contains(p), "{p} in the environment");
        assert!(t["Parameters"].get(p).is_none(), "parameter {p} is gone");
    }
    // The created secret has one key per source, all empty (refused) until put.
    let secret = &t["Resources"]["WebhookSecret"];
    assert_eq!(secret["Type"], "AWS::SecretsManager::Secret");
    let initial: Value =
        serde_json::from_str(secret["Properties"]["SecretString"].as_str().unwrap()).unwrap();
    let keys: Vec<&str> = initial
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let want: Vec<&str> = valuestream::secrets::KEYS.iter().map(|(k, _)| *k).collect();
    let mut sorted = want.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted);
    assert!(initial.as_object().unwrap().values().all(|v| v == ""));
}

#[test]
fn throttle_defaults_hold_the_documented_peak() {
    let t = template();
    let p = &t["Parameters"];
    let burst = p["ThrottlingBurstLimit"]["Default"].as_u64().unwrap();
    let rate = p["ThrottlingRateLimit"]["Default"].as_u64().unwrap();
    let reserved = p["ReservedConcurrency"]["Default"].as_u64().unwrap();
    // README "Throttling": a 256-job matrix sends 512 workflow_job deliveries within seconds, and
    // GitHub and GitLab do not retry a 429. The token bucket lets `burst + rate * T` requests
    // through in T seconds: one matrix must pass even all at once (T = 0), two matrices starting
    // together within the 2 s the README's table assumes.
    let accepted = |t_secs: u64| burst + rate * t_secs;
    assert!(
        accepted(0) >= 512,
        "one matrix at once: {} of 512",
        accepted(0)
    );
    assert!(
        accepted(2) >= 1024,
        "two matrices in 2 s: {} of 1024",
        accepted(2)
    );
    // Lambda must not throttle what the API accepted: no reservation (the account's pool, 1000
    // by default), or one at least the burst.
    assert!(
        reserved == 0 || reserved >= burst,
        "reserved {reserved} < burst {burst}"
    );
    assert!(
        burst <= 1000 || reserved >= burst,
        "the account's default pool holds the burst"
    );
    let api = &t["Resources"]["HttpApi"]["Properties"]["DefaultRouteSettings"];
    assert_eq!(
        api["ThrottlingBurstLimit"],
        json!({"Ref": "ThrottlingBurstLimit"})
    );
    assert_eq!(
        api["ThrottlingRateLimit"],
        json!({"Ref": "ThrottlingRateLimit"})
    );
    assert_eq!(
        t["Resources"]["ValuestreamFunction"]["Properties"]["ReservedConcurrentExecutions"],
        json!({"Fn::If": ["HasReservedConcurrency", {"Ref": "ReservedConcurrency"}, {"Ref": "AWS::NoValue"}]})
    );
}

/// The `sam local invoke` recipe (README): `sam local invoke --env-vars sam-local/env.json`
/// passes only variables the function declares in template.yaml (SAM ignores the others
/// silently), and sam-local/local-secrets.json, the secret the recipe creates, holds the local
/// secrets events/ is signed with (scripts/make-events.py), one key per source.
#[test]
fn local_invoke_files_match_the_template() {
    let t = template();
    let declared = t["Resources"]["ValuestreamFunction"]["Properties"]["Environment"]["Variables"]
        .as_object()
        .unwrap();
    let env: Value =
        serde_json::from_slice(&std::fs::read(repo().join("sam-local/env.json")).unwrap()).unwrap();
    let vars = env["ValuestreamFunction"]
        .as_object()
        .expect("keyed by the function's logical ID");
    assert!(vars.contains_key("VALUESTREAM_SECRET_ARN") && vars.contains_key("VALUESTREAM_TABLE"));
    for (k, v) in vars {
        assert!(
            declared.contains_key(k),
            "{k} is not declared in template.yaml, so SAM drops it"
        );
        assert!(v.is_string(), "{k}: SAM passes strings");
    }
    let secrets: Value = serde_json::from_slice(
        &std::fs::read(repo().join("sam-local/local-secrets.json")).unwrap(),
    )
    .unwrap();
    let script = std::fs::read_to_string(repo().join("scripts/make-events.py")).unwrap();
    for (key, _) in valuestream::secrets::KEYS {
        let value = secrets[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} missing"));
        assert!(
            script.contains(&format!("\"{key}\": \"{value}\"")),
            "{key}: events/ is signed with another local secret than {value}"
        );
    }
    // And the service reads it as a secret version.
    let parsed = valuestream::secrets::parse("local", "AWSCURRENT", &secrets.to_string()).unwrap();
    assert_eq!(parsed.len(), valuestream::secrets::KEYS.len());
}
