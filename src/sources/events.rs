//! The events source (not built yet: every delivery is refused with 501-style ignore).

use super::{Delivery, Source, SourceError, Translated, Translation};
use crate::config::Config;

pub struct Events;

impl Source for Events {
    fn name(&self) -> &'static str {
        "events"
    }
    fn authenticate(&self, _d: &Delivery, _c: &Config) -> Result<(), SourceError> {
        Err(SourceError::Unauthorized(
            "events: not supported yet".into(),
        ))
    }
    fn translate(&self, d: &Delivery, _c: &Config) -> Result<Translated, SourceError> {
        Ok(Translated {
            delivery_id: crate::model::ids::short_hash(d.body),
            translation: Translation::Ignored("events: not supported yet".into()),
        })
    }
    fn sign(&self, _body: &[u8], _c: &Config) -> Vec<(String, String)> {
        Vec::new()
    }
}
