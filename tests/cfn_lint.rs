//! The SAM template (template.yaml) is linted with cfn-lint and with `sam validate --lint`, and
//! checked for what a linter does not know: the function's DynamoDB access is narrow, no secret
//! parameter leaks into the stack outputs, the `Drain` schedule invokes the same function with
//! the settle period set, the managed-Prometheus option (on by default) creates the workspace
//! and the collector layer with least-privilege policies, the webhook secrets reach the function
//! only as a Secrets Manager ARN, and the API throttle holds the documented peak. The operations
//! side: every alarm the README's runbook names exists on the right metric, a failed drain lands
//! in a queue, the API writes an access log, the log metric filters match lines the code writes,
//! and the optional Managed Grafana workspace (`ManagedGrafana=true`) lints and queries only the
//! stack's Prometheus workspace. Both linters and the SAM transform run with `ManagedGrafana` off
//! (the default) and on.
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
    // The defaults, then the optional parts switched on (cfn-lint evaluates the conditions with
    // deployment parameters).
    for parameters in [
        vec![],
        vec![
            "ManagedGrafana=true",
            "GrafanaAuthenticationProvider=SAML",
            "AlarmEmail=ops@example.com",
            "AlarmTopicArn=arn:aws:sns:us-east-1:123456789012:pager",
            "SyncGithubRepos=my-org/shop,my-org/api",
            "SyncSchedule=rate(5 minutes)",
        ],
    ] {
        let mut cmd = Command::new(&cfn_lint);
        cmd.arg("template.yaml");
        if !parameters.is_empty() {
            cmd.arg("--parameters").args(&parameters);
        }
        let out = cmd
            .current_dir(repo())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", cfn_lint.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.trim().is_empty(),
            "cfn-lint template.yaml {parameters:?}: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            out.status
        );
    }
}

/// The IAM actions the DynamoDB store needs, read from its source: one per operation it sends.
/// A TransactWriteItems call is authorised through its parts (IAM has no TransactWriteItems
/// action): `Put` needs PutItem, `Delete` DeleteItem, `Update` UpdateItem and `ConditionCheck`
/// ConditionCheckItem. `create_table_with` (CreateTable, DescribeTable, the TTL calls) is
/// `valuestream init`'s, run with the operator's credentials, never by the function.
fn dynamodb_actions_the_code_uses() -> std::collections::BTreeSet<String> {
    let src = std::fs::read_to_string(repo().join("src/store/dynamodb.rs")).unwrap();
    let (store, init) = src
        .split_once("pub async fn create_table(")
        .expect("src/store/dynamodb.rs has create_table");
    let init = init.split("#[cfg(test)]").next().unwrap();
    let mut used = std::collections::BTreeSet::new();
    for (call, action) in [
        (".get_item()", "GetItem"),
        (".batch_get_item()", "BatchGetItem"),
        (".query()", "Query"),
        (".scan()", "Scan"),
        (".put_item()", "PutItem"),
        (".delete_item()", "DeleteItem"),
        (".update_item()", "UpdateItem"),
        (".batch_write_item()", "BatchWriteItem"),
        (".transact_get_items()", "GetItem"),
        // the parts of a TransactWriteItems
        ("Put::builder()", "PutItem"),
        ("Delete::builder()", "DeleteItem"),
        ("Update::builder()", "UpdateItem"),
        ("ConditionCheck::builder()", "ConditionCheckItem"),
    ] {
        if store.contains(call) {
            used.insert(format!("dynamodb:{action}"));
        }
    }
    assert!(
        store.contains(".transact_write_items()"),
        "the store commits with TransactWriteItems"
    );
    for call in [
        ".create_table()",
        ".describe_table()",
        ".update_time_to_live()",
    ] {
        assert!(init.contains(call), "{call} belongs to create_table (init)");
        assert!(
            !store.contains(call),
            "{call} outside create_table: grant it"
        );
    }
    used
}

#[test]
fn table_access_is_exactly_what_the_code_calls() {
    let t = template();
    let all = statements(&t);
    let table: Vec<&Statement> = all
        .iter()
        .filter(|s| {
            actions(&s.statement)
                .iter()
                .any(|a| a.starts_with("dynamodb:"))
        })
        .collect();
    assert_eq!(table.len(), 1, "one DynamoDB statement: {table:?}");
    let granted: std::collections::BTreeSet<String> =
        actions(&table[0].statement).into_iter().collect();
    let used = dynamodb_actions_the_code_uses();
    assert_eq!(
        granted, used,
        "the function's DynamoDB actions must be exactly those the store sends"
    );
    // What the code uses today, so that a change to either side is a decision.
    let want: std::collections::BTreeSet<String> = [
        "dynamodb:BatchGetItem",
        "dynamodb:DeleteItem",
        "dynamodb:PutItem",
        "dynamodb:Query",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(used, want);
    assert_eq!(
        table[0].statement["Resource"],
        json!({"Fn::GetAtt": ["StateTable", "Arn"]}),
        "the DynamoDB statement must be limited to the table's ARN"
    );
    let text = template_text();
    for forbidden in ["dynamodb:Scan", "dynamodb:*", "dynamodb:BatchWriteItem"] {
        assert!(
            !text.contains(forbidden),
            "template.yaml must not grant {forbidden}"
        );
    }
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

/// The scheduled sync: a rule of its own, only when SyncGithubRepos names repositories, whose
/// constant input the handler takes as a sync (not a drain), and the repositories reach the
/// function's environment.
#[test]
fn a_second_rule_syncs_only_when_repositories_are_named() {
    let t = template();
    let p = &t["Parameters"];
    assert_eq!(p["SyncSchedule"]["Default"], "rate(15 minutes)");
    assert_eq!(p["SyncGithubRepos"]["Default"], "");
    let named = |p: &str| json!({"Fn::Not": [{"Fn::Equals": [{"Ref": p}, ""]}]});
    assert_eq!(
        t["Conditions"]["HasSyncRepos"],
        json!({"Fn::Or": [
            named("SyncGithubRepos"),
            named("SyncGitlabProjects"),
            named("SyncPagerDutyServices"),
            named("SyncJiraProjects"),
        ]})
    );
    // The other sources' parameters take what the function's settings take.
    for (param, var, ok, bad) in [
        (
            "SyncGitlabProjects",
            "VALUESTREAM_SYNC_GITLAB_PROJECTS",
            "g/p,g/sub/p",
            "g",
        ),
        (
            "SyncPagerDutyServices",
            "VALUESTREAM_SYNC_PAGERDUTY_SERVICES",
            "PIJ90N7,PX",
            "P-1",
        ),
        (
            "SyncJiraProjects",
            "VALUESTREAM_SYNC_JIRA_PROJECTS",
            "SHOP,OPS",
            "SHOP-1",
        ),
    ] {
        assert_eq!(p[param]["Default"], "");
        let re = regex::Regex::new(p[param]["AllowedPattern"].as_str().unwrap()).unwrap();
        assert!(
            re.is_match(ok) && re.is_match("") && !re.is_match(bad),
            "{param}"
        );
        valuestream::sync::SyncSettings::from_lookup(|k| match k {
            "VALUESTREAM_JIRA_API_URL" => Some("https://x.atlassian.net".into()),
            _ => (k == var).then(|| ok.to_string()),
        })
        .unwrap();
    }
    let r = &t["Resources"];
    let rule = &r["SyncRule"];
    assert_eq!(rule["Type"], "AWS::Events::Rule");
    assert_eq!(
        rule["Condition"], "HasSyncRepos",
        "no repositories, no rule"
    );
    assert_eq!(
        rule["Properties"]["ScheduleExpression"],
        json!({"Ref": "SyncSchedule"})
    );
    assert_eq!(rule["Properties"]["State"], "ENABLED");
    let targets = rule["Properties"]["Targets"].as_array().unwrap();
    assert_eq!(targets.len(), 1);
    assert_eq!(
        targets[0]["Arn"],
        json!({"Fn::GetAtt": ["ValuestreamFunction", "Arn"]})
    );
    let input: Value = serde_json::from_str(targets[0]["Input"].as_str().unwrap()).unwrap();
    assert!(
        matches!(
            valuestream::entrypoints::lambda::classify(input.clone()),
            Ok(valuestream::entrypoints::lambda::Invocation::Sync)
        ),
        "the rule's input {input} is a sync for the handler"
    );
    let permission = &r["SyncRulePermission"];
    assert_eq!(permission["Type"], "AWS::Lambda::Permission");
    assert_eq!(permission["Condition"], "HasSyncRepos");
    let pp = &permission["Properties"];
    assert_eq!(pp["Principal"], "events.amazonaws.com");
    assert_eq!(pp["Action"], "lambda:InvokeFunction");
    assert_eq!(pp["FunctionName"], json!({"Ref": "ValuestreamFunction"}));
    assert_eq!(pp["SourceArn"], json!({"Fn::GetAtt": ["SyncRule", "Arn"]}));
    let env = &r["ValuestreamFunction"]["Properties"]["Environment"]["Variables"];
    assert_eq!(
        env["VALUESTREAM_SYNC_GITHUB_REPOS"],
        json!({"Ref": "SyncGithubRepos"})
    );
    assert!(
        env.get("GITHUB_TOKEN").is_none(),
        "the token stays in the secret"
    );
    // The parameter's pattern takes what the function's setting takes.
    let pattern = p["SyncGithubRepos"]["AllowedPattern"].as_str().unwrap();
    let re = regex::Regex::new(pattern).unwrap();
    for ok in ["", "o/r", "my-org/shop,my-org/api.v2"] {
        assert!(re.is_match(ok), "{ok}");
        valuestream::sync::SyncSettings::from_lookup(|k| {
            (k == "VALUESTREAM_SYNC_GITHUB_REPOS").then(|| ok.to_string())
        })
        .unwrap();
    }
    for bad in ["o", "o/r/x", "o/r,", "o/r, a/b"] {
        assert!(!re.is_match(bad), "{bad}");
    }
    // With repositories the transform keeps the rule (and the Drain schedule).
    let on = tempfile::tempdir().unwrap();
    let cfn = transformed(&template_with_defaults(
        on.path(),
        &[("SyncGithubRepos", "my-org/shop")],
    ));
    let r = &cfn["Resources"];
    assert_eq!(r["SyncRule"]["Type"], "AWS::Events::Rule");
    assert_eq!(r["ValuestreamFunctionDrain"]["Type"], "AWS::Events::Rule");
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

/// The regions of ADOT's Lambda layers, as aws-otel.github.io/docs/getting-started/lambda lists
/// them ("Supported Regions", the same on each language page), and as the layer's own repository
/// publishes them: https://github.com/aws-observability/aws-otel-lambda at commit
/// 57474388690ede309017681136025c8b6a56520e (2025-05-30 release), `.github/workflows/release.yml`
/// (the `aws_region` default of the publishing job) and the arm64 collector layer ARNs of
/// `go/sample-apps/aws-sdk/deploy/wrapper/layer_arm64.tf`, all
/// `arn:aws:lambda:<region>:901920570463:layer:aws-otel-collector-arm64-ver-0-117-0:1`.
const ADOT_LAYER_REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "sa-east-1",
    "eu-central-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-north-1",
    "ap-south-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-southeast-1",
    "ap-southeast-2",
];

/// One IAM statement of the template: the resource that holds it and the condition (a resource
/// `Condition` or an `Fn::If` around the policy) under which it exists.
#[derive(Debug)]
struct Statement {
    resource: String,
    condition: Option<String>,
    statement: Value,
}

/// Every IAM statement of the template: the function's inline policies (an `Fn::If` item is
/// counted under its condition), roles' inline policies and separate policy resources.
fn statements(t: &Value) -> Vec<Statement> {
    let mut out = Vec::new();
    for (name, r) in t["Resources"].as_object().unwrap() {
        let resource_condition = r["Condition"].as_str().map(String::from);
        let docs: Vec<(Option<String>, &Value)> = match r["Type"].as_str().unwrap() {
            "AWS::Serverless::Function" => r["Properties"]["Policies"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .filter_map(|doc| match doc.get("Fn::If") {
                            Some(branches) => branches[1]
                                .get("Statement")
                                .map(|_| (branches[0].as_str().map(String::from), &branches[1])),
                            None => Some((resource_condition.clone(), doc)),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            "AWS::IAM::Role" => r["Properties"]["Policies"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .map(|p| (resource_condition.clone(), &p["PolicyDocument"]))
                        .collect()
                })
                .unwrap_or_default(),
            "AWS::IAM::RolePolicy" | "AWS::IAM::Policy" => {
                vec![(
                    resource_condition.clone(),
                    &r["Properties"]["PolicyDocument"],
                )]
            }
            _ => vec![],
        };
        for (condition, doc) in docs {
            for st in doc["Statement"].as_array().unwrap() {
                out.push(Statement {
                    resource: name.clone(),
                    condition: condition.clone(),
                    statement: st.clone(),
                });
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

/// template.yaml with some parameters' defaults changed, written next to nothing else (the linters
/// and the transform do not read CodeUri's directory): `sam validate` takes no parameters.
fn template_with_defaults(dir: &Path, defaults: &[(&str, &str)]) -> PathBuf {
    let mut text = template_text();
    for (name, value) in defaults {
        let block = parameter(&text, name).join("\n");
        let default = block
            .lines()
            .find(|l| l.trim_start().starts_with("Default:"))
            .unwrap_or_else(|| panic!("parameter {name} has a default"));
        let changed = block.replacen(default, &format!("    Default: \"{value}\""), 1);
        text = text.replacen(&block, &changed, 1);
    }
    let path = dir.join("template.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The optional parts on: Managed Grafana, alarm e-mail, and the sync rule.
const GRAFANA_ON: &[(&str, &str)] = &[
    ("ManagedGrafana", "true"),
    ("AlarmEmail", "ops@example.com"),
    ("SyncGithubRepos", "my-org/shop,my-org/api"),
];

#[test]
fn sam_validate_lint_passes() {
    // `sam validate --lint` needs neither credentials nor a region: it runs cfn-lint locally.
    // The region is set so no developer profile is consulted. With ManagedGrafana off (the
    // default) and on.
    let home = tempfile::tempdir().unwrap();
    let on = tempfile::tempdir().unwrap();
    for template in [
        repo().join("template.yaml"),
        template_with_defaults(on.path(), GRAFANA_ON),
    ] {
        let out = Command::new(venv_tool("sam"))
            .args(["validate", "--lint", "--template-file"])
            .arg(&template)
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
            "sam validate --lint {}: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            template.display(),
            out.status
        );
    }
}

/// The CloudFormation template the SAM transform makes of `template` (what `sam deploy` sends),
/// through the SAM CLI's own validator with local paths replaced, as `sam validate` without
/// `--lint` does, but with no AWS call (no managed-policy lookup; the template names none).
fn transformed(template: &Path) -> Value {
    let script = r#"
import json, sys
from samcli.yamlhelper import yaml_parse
from samcli.lib.translate.sam_template_validator import SamTemplateValidator
with open(sys.argv[1]) as f:
    doc = yaml_parse(f.read())
validator = SamTemplateValidator(doc, None, region="us-east-1")
validator._get_managed_policy_map = lambda: {}
out = validator.get_translated_template_if_valid()
print(json.dumps(yaml_parse(out) if isinstance(out, str) else out, default=str))
"#;
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(venv_tool("python3"))
        .args(["-c", script])
        .arg(template)
        .current_dir(repo())
        .env("HOME", home.path())
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("SAM_CLI_TELEMETRY", "0")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the SAM transform refuses {}:\n{}",
        template.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `sam validate --lint` runs cfn-lint only; the transform itself (which `sam deploy` runs in
/// CloudFormation) refused this template once (the /correlations route's AWS_IAM authorizer
/// without `EnableIamAuthorizer`). Run it, with ManagedGrafana off and on, and check what it
/// makes of the drain's failure destination and the access log.
#[test]
fn the_sam_transform_accepts_the_template() {
    let on = tempfile::tempdir().unwrap();
    for template in [
        repo().join("template.yaml"),
        template_with_defaults(on.path(), GRAFANA_ON),
    ] {
        let cfn = transformed(&template);
        let r = &cfn["Resources"];
        // The schedule's target: the dead-letter queue and a retry policy bounded by a minute.
        let targets = r["ValuestreamFunctionDrain"]["Properties"]["Targets"]
            .as_array()
            .unwrap();
        assert_eq!(targets.len(), 1);
        assert_eq!(
            targets[0]["DeadLetterConfig"]["Arn"],
            json!({"Fn::GetAtt": ["DrainFailureQueue", "Arn"]})
        );
        assert_eq!(targets[0]["RetryPolicy"]["MaximumEventAgeInSeconds"], 60);
        // The asynchronous invocation's OnFailure destination, and the role may send to it.
        let invoke = &r["ValuestreamFunctionEventInvokeConfig"]["Properties"];
        assert_eq!(
            invoke["DestinationConfig"]["OnFailure"]["Destination"],
            json!({"Fn::GetAtt": ["DrainFailureQueue", "Arn"]})
        );
        assert_eq!(invoke["MaximumRetryAttempts"], 0);
        let role = serde_json::to_string(&r["ValuestreamFunctionRole"]).unwrap();
        assert!(role.contains("sqs:SendMessage"), "{role}");
        // The HTTP API's stage writes the access log.
        let stage = r
            .as_object()
            .unwrap()
            .values()
            .find(|v| v["Type"] == "AWS::ApiGatewayV2::Stage")
            .expect("the HTTP API's stage");
        assert_eq!(
            stage["Properties"]["AccessLogSettings"]["DestinationArn"],
            json!({"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]})
        );
        // The collector's permissions are in the role the function is created with.
        assert!(role.contains("aps:RemoteWrite") && role.contains("xray:PutTraceSegments"));
    }
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
    // Only regions of ADOT's published list ("Supported Regions" of
    // aws-otel.github.io/docs/getting-started/lambda); ap-northeast-3 is not in it.
    let mut regions: Vec<&str> = mapping.keys().map(String::as_str).collect();
    regions.sort_unstable();
    let mut published = ADOT_LAYER_REGIONS.to_vec();
    published.sort_unstable();
    assert_eq!(
        regions, published,
        "a collector layer region ADOT does not list"
    );
    assert!(template_text().contains("aws-otel.github.io/docs/getting-started/lambda"));
    for (region, arns) in mapping {
        let arn = arns["Arm64"].as_str().unwrap();
        // Exactly the published ARN (layer name and version) of that release.
        assert_eq!(
            arn,
            format!(
                "arn:aws:lambda:{region}:901920570463:layer:aws-otel-collector-arm64-ver-0-117-0:1"
            ),
            "{region}"
        );
    }
    assert!(template_text().contains(
        "github.com/aws-observability/aws-otel-lambda at 57474388690ede309017681136025c8b6a56520e"
    ));
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
    for s in &all {
        assert_eq!(s.statement["Effect"], "Allow", "{s:?}");
        for a in actions(&s.statement) {
            assert!(!a.contains('*'), "{}: wildcard action {a}", s.resource);
        }
    }
    let find = |prefix: &str, resource: &str| -> Vec<&Statement> {
        all.iter()
            .filter(|s| {
                s.resource == resource
                    && actions(&s.statement).iter().any(|a| a.starts_with(prefix))
            })
            .collect()
    };
    let workspace = json!({"Fn::GetAtt": ["PrometheusWorkspace", "Arn"]});
    // The function's Prometheus access: remote write only, to this stack's workspace only.
    let aps = find("aps:", "ValuestreamFunction");
    assert_eq!(aps.len(), 1, "{aps:?}");
    assert_eq!(actions(&aps[0].statement), ["aps:RemoteWrite"]);
    assert_eq!(aps[0].statement["Resource"], workspace);
    assert_eq!(aps[0].condition.as_deref(), Some("UseManagedPrometheus"));
    // X-Ray: the two actions the exporter calls (X-Ray has no resource-level permissions).
    let xray = find("xray:", "ValuestreamFunction");
    assert_eq!(xray.len(), 1, "{xray:?}");
    assert_eq!(
        actions(&xray[0].statement),
        ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    );
    assert_eq!(xray[0].condition.as_deref(), Some("UseManagedPrometheus"));
    // Secrets Manager: read this one secret.
    let sm = find("secretsmanager:", "ValuestreamFunction");
    assert_eq!(sm.len(), 1, "{sm:?}");
    assert_eq!(actions(&sm[0].statement), ["secretsmanager:GetSecretValue"]);
    assert_eq!(
        sm[0].statement["Resource"],
        json!({"Fn::If": ["CreateWebhookSecret", {"Ref": "WebhookSecret"}, {"Ref": "WebhookSecretArn"}]})
    );
    // The Grafana workspace's role: the query actions on this stack's workspace only.
    let grafana = find("aps:", "GrafanaWorkspaceRole");
    let query: Vec<&&Statement> = grafana
        .iter()
        .filter(|s| s.statement["Resource"] != "*")
        .collect();
    assert_eq!(query.len(), 1, "{grafana:?}");
    let mut got = actions(&query[0].statement);
    got.sort();
    assert_eq!(
        got,
        [
            "aps:DescribeWorkspace",
            "aps:GetLabels",
            "aps:GetMetricMetadata",
            "aps:GetSeries",
            "aps:QueryMetrics"
        ]
    );
    assert_eq!(query[0].statement["Resource"], workspace);
    // Every Resource is a reference to this stack's resources or parameters, except X-Ray's and
    // aps:ListWorkspaces (neither has resource-level permissions; listing queries nothing).
    for s in &all {
        if s.statement["Resource"] == "*" {
            assert!(
                actions(&s.statement)
                    .iter()
                    .all(|a| a.starts_with("xray:") || a == "aps:ListWorkspaces"),
                "{s:?}"
            );
        }
    }
    // No statement anywhere else grants aps: (the function's, the workspace role's).
    for s in &all {
        if actions(&s.statement).iter().any(|a| a.starts_with("aps:")) {
            assert!(
                ["ValuestreamFunction", "GrafanaWorkspaceRole"].contains(&s.resource.as_str()),
                "{s:?}"
            );
        }
    }
}

/// The collector's permissions must be in force before the first drain exports. A separate
/// `AWS::IAM::RolePolicy` on the function's role can be created after the function (nothing
/// orders them), so the policies are part of the role the function is created with.
#[test]
fn the_collector_policies_exist_before_the_function_runs() {
    let t = template();
    let r = t["Resources"].as_object().unwrap();
    let function = &r["ValuestreamFunction"];
    let depends: Vec<&str> = match &function["DependsOn"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    for (name, res) in r {
        if matches!(
            res["Type"].as_str(),
            Some("AWS::IAM::RolePolicy" | "AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy")
        ) {
            let text = serde_json::to_string(res).unwrap();
            if text.contains("ValuestreamFunctionRole") {
                assert!(
                    depends.contains(&name.as_str()),
                    "{name} attaches to the function's role but the function does not depend on it"
                );
            }
        }
    }
    let all = statements(&t);
    for action in ["aps:RemoteWrite", "xray:PutTraceSegments"] {
        let holder = all
            .iter()
            .find(|s| actions(&s.statement).iter().any(|a| a == action))
            .unwrap_or_else(|| panic!("nothing grants {action}"));
        assert!(
            holder.resource == "ValuestreamFunction" || depends.contains(&holder.resource.as_str()),
            "{action} is granted by {}, which the function does not wait for",
            holder.resource
        );
    }
}

// ---------------------------------------------------------------- alarms and failure destinations

/// The alarm `name`'s properties, with the checks every alarm shares: missing data is healthy,
/// and it notifies the topic(s) when there is one.
fn alarm<'a>(t: &'a Value, name: &str) -> &'a Value {
    let a = &t["Resources"][name];
    assert_eq!(
        a["Type"], "AWS::CloudWatch::Alarm",
        "alarm {name} is missing"
    );
    assert!(a.get("Condition").is_none(), "{name} is created always");
    let p = &a["Properties"];
    assert_eq!(p["TreatMissingData"], "notBreaching", "{name}");
    let actions = json!({"Fn::If": ["HasAlarmActions", [
        {"Fn::If": ["HasAlarmTopicArn", {"Ref": "AlarmTopicArn"}, {"Ref": "AWS::NoValue"}]},
        {"Fn::If": ["HasAlarmEmail", {"Ref": "AlarmTopic"}, {"Ref": "AWS::NoValue"}]}
    ], {"Ref": "AWS::NoValue"}]});
    assert_eq!(p["AlarmActions"], actions, "{name}");
    assert_eq!(p["OKActions"], actions, "{name}");
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme
            .split("### Alarms")
            .nth(1)
            .and_then(|a| a.split("\n### ").next())
            .is_some_and(|a| a.contains(&format!("`{name}`"))),
        "README's Alarms runbook has no row for {name}"
    );
    p
}

fn metric(p: &Value) -> (Value, &str, Vec<(String, Value)>) {
    let dims = p["Dimensions"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|d| (d["Name"].as_str().unwrap().to_string(), d["Value"].clone()))
                .collect()
        })
        .unwrap_or_default();
    (
        p["Namespace"].clone(),
        p["MetricName"].as_str().unwrap(),
        dims,
    )
}

#[test]
fn alarm_notifications_only_with_a_topic_or_an_email() {
    let t = template();
    let p = &t["Parameters"];
    assert_eq!(p["AlarmEmail"]["Default"], "");
    assert_eq!(p["AlarmTopicArn"]["Default"], "");
    let c = &t["Conditions"];
    assert_eq!(
        c["HasAlarmEmail"],
        json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]})
    );
    assert_eq!(
        c["HasAlarmActions"],
        json!({"Fn::Or": [{"Condition": "HasAlarmEmail"}, {"Condition": "HasAlarmTopicArn"}]})
    );
    let r = &t["Resources"];
    assert_eq!(r["AlarmTopic"]["Type"], "AWS::SNS::Topic");
    assert_eq!(r["AlarmTopic"]["Condition"], "HasAlarmEmail");
    let sub = &r["AlarmEmailSubscription"];
    assert_eq!(sub["Condition"], "HasAlarmEmail");
    assert_eq!(sub["Properties"]["Protocol"], "email");
    assert_eq!(sub["Properties"]["Endpoint"], json!({"Ref": "AlarmEmail"}));
}

#[test]
fn every_alarm_watches_the_right_metric() {
    let t = template();
    let function = json!({"Ref": "ValuestreamFunction"});
    let own = json!({"Fn::Sub": "valuestream/${AWS::StackName}"});
    // Lambda errors and throttles of this function.
    for (name, m) in [
        ("FunctionErrorsAlarm", "Errors"),
        ("FunctionThrottlesAlarm", "Throttles"),
    ] {
        let p = alarm(&t, name);
        assert_eq!(
            metric(p),
            (
                json!("AWS/Lambda"),
                m,
                vec![("FunctionName".into(), function.clone())]
            )
        );
        assert_eq!(p["Threshold"], 1);
    }
    // A failed scheduled drain: its event waits in the queue.
    let p = alarm(&t, "DrainFailuresAlarm");
    assert_eq!(
        metric(p),
        (
            json!("AWS/SQS"),
            "ApproximateNumberOfMessagesVisible",
            vec![(
                "QueueName".into(),
                json!({"Fn::GetAtt": ["DrainFailureQueue", "QueueName"]})
            )]
        )
    );
    // API 5xx: an HTTP API's metric is `5xx` by ApiId; its Average is the rate.
    let p = alarm(&t, "Api5xxAlarm");
    assert_eq!(
        metric(p),
        (
            json!("AWS/ApiGateway"),
            "5xx",
            vec![("ApiId".into(), json!({"Ref": "HttpApi"}))]
        )
    );
    assert_eq!(p["Statistic"], "Average");
    // 401s on the webhook route, every source together, from the access log.
    let p = alarm(&t, "UnauthorizedAlarm");
    assert_eq!(metric(p), (own.clone(), "UnauthorizedRequests", vec![]));
    assert_eq!(p["Threshold"], json!({"Ref": "UnauthorizedAlarmThreshold"}));
    for name in t["Resources"].as_object().unwrap().keys() {
        assert!(
            !name.starts_with("Unauthorized") || name == "UnauthorizedAlarm",
            "{name}: one 401 alarm for every source"
        );
    }
    webhook_route_serves_every_source(&t);
    // DynamoDB: ThrottledRequests and SystemErrors exist per TableName and Operation only, so
    // each alarm sums the operations the function sends.
    let used = dynamodb_actions_the_code_uses();
    for (name, m) in [
        ("TableThrottlesAlarm", "ThrottledRequests"),
        ("TableSystemErrorsAlarm", "SystemErrors"),
    ] {
        let p = alarm(&t, name);
        let queries = p["Metrics"].as_array().expect("metric math");
        let returned: Vec<&Value> = queries.iter().filter(|q| q["ReturnData"] == true).collect();
        assert_eq!(returned.len(), 1);
        let mut ops = std::collections::BTreeSet::new();
        for q in queries.iter().filter(|q| q.get("MetricStat").is_some()) {
            let metric = &q["MetricStat"]["Metric"];
            assert_eq!(metric["Namespace"], "AWS/DynamoDB");
            assert_eq!(metric["MetricName"], m);
            assert_eq!(q["MetricStat"]["Stat"], "Sum");
            let dims = metric["Dimensions"].as_array().unwrap();
            assert_eq!(
                dims[0],
                json!({"Name": "TableName", "Value": {"Ref": "StateTable"}})
            );
            assert_eq!(dims[1]["Name"], "Operation");
            ops.insert(dims[1]["Value"].as_str().unwrap().to_string());
            assert!(
                returned[0]["Expression"]
                    .as_str()
                    .unwrap()
                    .contains(q["Id"].as_str().unwrap()),
                "{name}: the sum leaves out {}",
                q["Id"]
            );
        }
        // Every operation the store sends, TransactWriteItems (which has no IAM action) included.
        let mut want: std::collections::BTreeSet<String> = used
            .iter()
            .map(|a| a.trim_start_matches("dynamodb:").to_string())
            .collect();
        want.insert("TransactWriteItems".into());
        assert_eq!(ops, want, "{name}");
    }
    // valuestream's own lines, through the log metric filters.
    for (name, m) in [
        ("CollectorExportFailuresAlarm", "CollectorExportFailures"),
        ("SettleFailuresAlarm", "SettleFailures"),
        ("SettleBacklogAlarm", "DrainsWithSettleBacklog"),
        ("OutboxBacklogAlarm", "DrainsWithOutboxBacklog"),
    ] {
        let p = alarm(&t, name);
        assert_eq!(metric(p), (own.clone(), m, vec![]), "{name}");
        let filter = t["Resources"]
            .as_object()
            .unwrap()
            .values()
            .find(|r| {
                r["Type"] == "AWS::Logs::MetricFilter"
                    && r["Properties"]["MetricTransformations"][0]["MetricName"] == m
            })
            .unwrap_or_else(|| panic!("no metric filter makes {m}"));
        assert_eq!(
            filter["Properties"]["LogGroupName"],
            json!({"Ref": "ValuestreamLogGroup"})
        );
        assert_eq!(
            filter["Properties"]["MetricTransformations"][0]["MetricNamespace"],
            own
        );
    }
    // A backlog alarm needs a backlog that outlives several drains, not one busy minute.
    for name in ["SettleBacklogAlarm", "OutboxBacklogAlarm"] {
        let p = alarm(&t, name);
        let minutes = p["Period"].as_u64().unwrap() * p["DatapointsToAlarm"].as_u64().unwrap() / 60;
        assert!(minutes >= 15, "{name}: {minutes} minutes");
    }
}

#[test]
fn a_failed_drain_lands_in_the_failure_queue() {
    let t = template();
    let r = &t["Resources"];
    assert_eq!(r["DrainFailureQueue"]["Type"], "AWS::SQS::Queue");
    let f = &r["ValuestreamFunction"]["Properties"];
    let queue = json!({"Fn::GetAtt": ["DrainFailureQueue", "Arn"]});
    // Lambda's asynchronous invocation: a drain that returned an error (or expired).
    assert_eq!(
        f["EventInvokeConfig"]["DestinationConfig"]["OnFailure"],
        json!({"Type": "SQS", "Destination": queue})
    );
    // EventBridge: an event it could not deliver.
    let drain = &f["Events"]["Drain"]["Properties"];
    assert_eq!(drain["DeadLetterConfig"], json!({"Arn": queue}));
    assert!(
        drain["RetryPolicy"]["MaximumEventAgeInSeconds"]
            .as_u64()
            .unwrap()
            <= 60
    );
    // ... which the rule may send, and only this rule.
    let policy = &r["DrainFailureQueuePolicy"]["Properties"];
    assert_eq!(policy["Queues"], json!([{"Ref": "DrainFailureQueue"}]));
    let st = &policy["PolicyDocument"]["Statement"][0];
    assert_eq!(st["Principal"], json!({"Service": "events.amazonaws.com"}));
    assert_eq!(st["Action"], "sqs:SendMessage");
    assert_eq!(
        st["Condition"]["ArnEquals"]["aws:SourceArn"],
        json!({"Fn::GetAtt": ["ValuestreamFunctionDrain", "Arn"]})
    );
}

#[test]
fn the_api_writes_an_access_log_with_the_stack_retention() {
    let t = template();
    let r = &t["Resources"];
    let settings = &r["HttpApi"]["Properties"]["AccessLogSettings"];
    assert_eq!(
        settings["DestinationArn"],
        json!({"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]})
    );
    let format: Value = serde_json::from_str(settings["Format"].as_str().unwrap())
        .expect("the access log format is one JSON object");
    assert_eq!(format["routeKey"], "$context.routeKey");
    assert_eq!(format["status"], "$context.status");
    assert_eq!(format["requestId"], "$context.requestId");
    let group = &r["ApiAccessLogGroup"];
    assert_eq!(group["Type"], "AWS::Logs::LogGroup");
    assert_eq!(
        group["Properties"]["RetentionInDays"],
        json!({"Ref": "LogRetentionDays"})
    );
    assert_eq!(format["path"], "$context.path");
    // The 401 filters read those fields: status is quoted in the format, so it is a string. One
    // metric for all sources (the alarm's), the same by path (which source).
    for (name, dimensions) in [
        ("ApiUnauthorizedMetricFilter", Value::Null),
        (
            "ApiUnauthorizedByPathMetricFilter",
            json!([{"Key": "Path", "Value": "$.path"}]),
        ),
    ] {
        let filter = &r[name]["Properties"];
        assert_eq!(filter["LogGroupName"], json!({"Ref": "ApiAccessLogGroup"}));
        assert_eq!(filter["FilterPattern"], r#"{ $.status = "401" }"#);
        let m = &filter["MetricTransformations"][0];
        assert_eq!(m["MetricName"], "UnauthorizedRequests", "{name}");
        assert_eq!(m["Dimensions"], dimensions, "{name}");
    }
}

/// The function's one webhook route: `POST /webhooks/{source}` takes every registered source
/// (the router answers any other name 404), and no route names a source.
fn webhook_route_serves_every_source(t: &Value) {
    let events = t["Resources"]["ValuestreamFunction"]["Properties"]["Events"]
        .as_object()
        .unwrap();
    let webhooks: Vec<&Value> = events
        .values()
        .filter(|e| {
            e["Properties"]["Path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/webhooks/"))
        })
        .collect();
    assert_eq!(webhooks.len(), 1, "one webhook route: {webhooks:?}");
    let p = &webhooks[0]["Properties"];
    assert_eq!(p["Path"], "/webhooks/{source}");
    assert_eq!(p["Method"], "POST");
    assert_eq!(p["PayloadFormatVersion"], "2.0");
    for e in valuestream::sources::registry::SOURCES {
        assert_eq!(
            e.route,
            format!("/webhooks/{}", e.name),
            "{}: the route takes it",
            e.name
        );
    }
}

/// What a metric filter pattern of the shape `{ (A) && (B) }` / `{ (A) || (B) }` (clauses
/// `$.path = "text"` and `$.path IS TRUE`) says about one JSON log line. CloudWatch's own syntax;
/// only this subset, which is all the template uses.
fn pattern_matches(pattern: &str, line: &Value) -> bool {
    let body = pattern
        .trim()
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .expect("a JSON pattern")
        .trim();
    let clause = |c: &str| -> bool {
        let c = c
            .trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .trim();
        let lookup = |path: &str| -> Value {
            let mut v = line.clone();
            for part in path.trim().trim_start_matches("$.").split('.') {
                v = v[part].clone();
            }
            v
        };
        if let Some(path) = c.strip_suffix("IS TRUE") {
            lookup(path) == Value::Bool(true)
        } else {
            let (path, value) = c.split_once(" = ").expect("an equality");
            let value = value.trim();
            assert!(value.starts_with('"') && value.ends_with('"'), "{c}");
            lookup(path) == Value::String(value.trim_matches('"').to_string())
        }
    };
    if body.contains("||") {
        body.split("||").any(clause)
    } else {
        body.split("&&").all(clause)
    }
}

/// The lines `tracing` writes through the JSON formatter the function uses.
fn json_log_lines(emit: impl FnOnce()) -> Vec<Value> {
    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    // As src/entrypoints/mod.rs init_logging(true) builds it (checked below).
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .json()
        .without_time()
        .finish();
    tracing::subscriber::with_default(subscriber, emit);
    let bytes = buf.0.lock().unwrap().clone();
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The collector-export and backlog alarms count log lines the code writes today (no metrics of
/// valuestream's own are needed). The function logs JSON; each filter matches the line the code
/// writes, as tracing's JSON formatter writes it, and not the other lines.
#[test]
fn log_metric_filters_match_lines_the_code_writes() {
    // The function logs JSON, in tracing-subscriber's default (nested "fields") layout.
    let lambda = std::fs::read_to_string(repo().join("src/entrypoints/lambda.rs")).unwrap();
    assert!(
        lambda.contains("super::init_logging(true)"),
        "the Lambda entry point logs JSON"
    );
    let logging = std::fs::read_to_string(repo().join("src/entrypoints/mod.rs")).unwrap();
    assert!(
        logging.contains("builder.json().without_time()"),
        "{logging}"
    );
    assert!(
        !logging.contains("flatten_event"),
        "fields are no longer under \"fields\""
    );
    // The lines, as the code writes them.
    let outbox = std::fs::read_to_string(repo().join("src/pipeline/export.rs")).unwrap();
    assert!(outbox.contains(
        r#"tracing::warn!(error = %e, signal, count, "exporting {signal} failed; they stay in the outbox");"#
    ));
    assert!(outbox.contains(r#"accepted(result, "metric points", "#));
    let drain = std::fs::read_to_string(repo().join("src/engine/drain.rs")).unwrap();
    assert!(drain.contains(
        r#""settlement failed; the scope is put aside and retried later, the others go on""#
    ));
    assert!(outbox.contains(r#"accepted(result, "spans", "#));
    for field in [
        "remaining = d.remaining,",
        "unsettled = d.unsettled,",
        "\"scheduled drain\"",
    ] {
        assert!(
            lambda.contains(field),
            "the drain summary line lost {field}"
        );
    }
    let lines = json_log_lines(|| {
        for signal in ["spans", "metric points"] {
            let count = 3usize;
            let e = "connection refused";
            tracing::warn!(error = %e, signal, count, "exporting {signal} failed; they stay in the outbox");
        }
        for (remaining, unsettled) in [(true, false), (false, true), (false, false)] {
            tracing::info!(
                exported = 1usize,
                failed = 0usize,
                remaining,
                unsettled,
                unexported = false,
                drains = 1,
                elapsed_ms = 5u64,
                scheduled_at = "2026-11-23T12:00:00Z",
                "scheduled drain"
            );
        }
        tracing::warn!(
            error = "x",
            "removing an exported batch from the outbox failed"
        );
        tracing::error!(
            scope = "repo#a/b",
            error = "stored record x cannot be read",
            failures = 1u32,
            retry_in_secs = 60i64,
            "settlement failed; the scope is put aside and retried later, the others go on"
        );
    });
    assert_eq!(lines.len(), 7, "{lines:?}");
    let r = template()["Resources"].clone();
    let pattern = |name: &str| {
        r[name]["Properties"]["FilterPattern"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let matched = |name: &str| -> Vec<usize> {
        let p = pattern(name);
        (0..lines.len())
            .filter(|i| pattern_matches(&p, &lines[*i]))
            .collect()
    };
    assert_eq!(matched("CollectorExportFailureMetricFilter"), [0, 1]);
    assert_eq!(matched("OutboxBacklogMetricFilter"), [2]);
    assert_eq!(matched("SettleBacklogMetricFilter"), [3]);
    assert_eq!(matched("SettleFailuresMetricFilter"), [6]);
    // And the access log's 401 filter against the access log's own shape.
    let access = |status: &str| json!({"routeKey": "POST /webhooks/{source}", "path": "/webhooks/github", "status": status});
    for filter in [
        "ApiUnauthorizedMetricFilter",
        "ApiUnauthorizedByPathMetricFilter",
    ] {
        assert!(pattern_matches(&pattern(filter), &access("401")));
        assert!(!pattern_matches(&pattern(filter), &access("202")));
    }
}

// ---------------------------------------------------------------- Managed Grafana

#[test]
fn managed_grafana_is_optional_and_queries_only_this_stack() {
    let t = template();
    let p = &t["Parameters"];
    assert_eq!(p["ManagedGrafana"]["Default"], "false");
    assert_eq!(p["GrafanaAuthenticationProvider"]["Default"], "AWS_SSO");
    assert_eq!(
        p["GrafanaAuthenticationProvider"]["AllowedValues"],
        json!(["AWS_SSO", "SAML"])
    );
    assert_eq!(
        t["Conditions"]["CreateManagedGrafana"],
        json!({"Fn::And": [{"Fn::Equals": [{"Ref": "ManagedGrafana"}, "true"]}, {"Condition": "UseManagedPrometheus"}]})
    );
    let r = &t["Resources"];
    let w = &r["GrafanaWorkspace"];
    assert_eq!(w["Type"], "AWS::Grafana::Workspace");
    assert_eq!(w["Condition"], "CreateManagedGrafana");
    let wp = &w["Properties"];
    assert_eq!(wp["AccountAccessType"], "CURRENT_ACCOUNT");
    assert_eq!(wp["PermissionType"], "CUSTOMER_MANAGED");
    assert_eq!(
        wp["AuthenticationProviders"],
        json!([{"Ref": "GrafanaAuthenticationProvider"}])
    );
    assert_eq!(wp["DataSources"], json!(["PROMETHEUS"]));
    assert_eq!(
        wp["RoleArn"],
        json!({"Fn::GetAtt": ["GrafanaWorkspaceRole", "Arn"]})
    );
    let role = &r["GrafanaWorkspaceRole"];
    assert_eq!(role["Type"], "AWS::IAM::Role");
    assert_eq!(role["Condition"], "CreateManagedGrafana");
    let trust = &role["Properties"]["AssumeRolePolicyDocument"]["Statement"];
    assert_eq!(trust.as_array().unwrap().len(), 1);
    assert_eq!(
        trust[0]["Principal"],
        json!({"Service": "grafana.amazonaws.com"})
    );
    assert_eq!(trust[0]["Action"], "sts:AssumeRole");
    assert_eq!(
        trust[0]["Condition"]["StringEquals"]["aws:SourceAccount"],
        json!({"Ref": "AWS::AccountId"})
    );
    // (its AMP access is checked in policies_are_least_privilege)
    let o = &t["Outputs"];
    assert_eq!(o["GrafanaWorkspaceId"]["Condition"], "CreateManagedGrafana");
    assert_eq!(
        o["GrafanaWorkspaceId"]["Value"],
        json!({"Ref": "GrafanaWorkspace"})
    );
    assert_eq!(
        o["GrafanaWorkspaceUrl"]["Condition"],
        "CreateManagedGrafana"
    );
    assert_eq!(
        o["GrafanaWorkspaceUrl"]["Value"],
        json!({"Fn::Sub": "https://${GrafanaWorkspace.Endpoint}"})
    );
    let rule = &t["Rules"]["ManagedGrafanaNeedsManagedPrometheus"];
    assert_eq!(
        rule["Assertions"][0]["Assert"],
        json!({"Fn::Equals": [{"Ref": "ManagedPrometheus"}, "true"]})
    );
}

#[test]
fn no_secret_in_the_function_environment() {
    let t = template();
    let env = t["Resources"]["ValuestreamFunction"]["Properties"]["Environment"]["Variables"]
        .as_object()
        .unwrap();
    for var in valuestream::sources::registry::SOURCES
        .iter()
        .map(|e| e.secret.var)
    {
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
    // The created secret has every key, all empty (refused) until put. It is frozen: CloudFormation
    // writes a changed SecretString over the values put since, so a source added later is not
    // added here (its key is missing, which refuses it like an empty one, until put).
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
    // ... and the sync's API token.
    let want: Vec<&str> = valuestream::secrets::KEYS
        .iter()
        .chain(valuestream::secrets::TOKEN_KEYS.iter())
        .map(|(k, _)| *k)
        .collect();
    for key in &keys {
        assert!(want.contains(key), "{key} is no key of the secret");
    }
    assert_eq!(
        keys,
        [
            "events",
            "github",
            "github_token",
            "gitlab",
            "gitlab_token",
            "jenkins",
            "jira",
            "jira_email",
            "jira_token",
            "pagerduty",
            "pagerduty_token"
        ],
        "the initial secret is frozen (a change overwrites the deployed values)"
    );
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
/// secrets events/ is signed with (both written by scripts/make-events.py), one key per source.
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
    // One key per registered source, in registry order, as scripts/make-events.py writes it
    // (tests/events_files.rs checks the file is what the script writes, and events/ signed with it).
    let keys: Vec<&str> = secrets
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want: Vec<&str> = valuestream::secrets::KEYS.iter().map(|(k, _)| *k).collect();
    want.sort_unstable();
    assert_eq!(
        keys, want,
        "sam-local/local-secrets.json: one key per source; run python3 scripts/make-events.py"
    );
    for (key, var) in valuestream::secrets::KEYS {
        let kind = var.rsplit('_').next().unwrap().to_ascii_lowercase();
        assert_eq!(secrets[key], format!("local-{key}-{kind}"), "{key}");
    }
    // And the service reads it as a secret version.
    let parsed = valuestream::secrets::parse("local", "AWSCURRENT", &secrets.to_string()).unwrap();
    assert_eq!(parsed.len(), valuestream::secrets::KEYS.len());
}
