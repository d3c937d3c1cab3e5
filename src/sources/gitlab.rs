//! The gitlab source (not built yet: every delivery is refused with 501-style ignore).

use super::{Delivery, Source, SourceError, Translated, Translation};
use crate::config::Config;

pub struct GitLab;

impl Source for GitLab {
    fn name(&self) -> &'static str {
        "gitlab"
    }
    fn authenticate(&self, _d: &Delivery, _c: &Config) -> Result<(), SourceError> {
        Err(SourceError::Unauthorized(
            "gitlab: not supported yet".into(),
        ))
    }
    fn translate(&self, d: &Delivery, _c: &Config) -> Result<Translated, SourceError> {
        Ok(Translated {
            delivery_id: crate::model::ids::short_hash(d.body),
            translation: Translation::Ignored("gitlab: not supported yet".into()),
        })
    }
    fn sign(&self, _body: &[u8], _c: &Config) -> Vec<(String, String)> {
        Vec::new()
    }
}
