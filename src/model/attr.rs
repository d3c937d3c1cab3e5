//! Attribute keys the project defines itself (the `valuestream.*` namespace), in one place, so
//! that sources, the engine, the analysis and the tests spell them alike. Keys that follow an
//! OpenTelemetry semantic convention (`vcs.*`, `cicd.*`, `deployment.*`) are written where used.

/// The team that owns the repository (payload label/topic, `VALUESTREAM_TEAMS`, or
/// `VALUESTREAM_REPOSITORY_ATTRIBUTES`).
pub const TEAM: &str = "valuestream.team";
/// The repository's main language (GitHub `repository.language`, or the repository attributes).
pub const LANGUAGE: &str = "valuestream.language";
/// How the repository is deployed: `container`, `mutable`, `image`, … (GitHub topic `deploy-x`,
/// or the repository attributes).
pub const DEPLOYMENT_TYPE: &str = "valuestream.deployment.type";
/// Prefix of the user-defined repository attributes: `valuestream.attr.<key>`.
pub const ATTR_PREFIX: &str = "valuestream.attr.";
/// The repository, lower-case `owner/name`.
pub const REPOSITORY: &str = "valuestream.repository";
/// The source system (`github`, `events`, …).
pub const SOURCE: &str = "valuestream.source";
/// How a work item ended (`merged`, `closed`, `success`, `failure`, …).
pub const RESULT: &str = "valuestream.result";
/// Whether a deployment's environment counts as production.
pub const PRODUCTION: &str = "valuestream.production";
