//! What the API and the console change, one function per action, so both
//! do exactly the same thing.

use axum::http::StatusCode;

use super::{Admin, ApiError};
use crate::control::registry::VersionInfo;
use crate::control::{CanaryPlan, Swap};

/// What to do with a version once it is uploaded and validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Then {
    /// Keep it; nothing runs it yet.
    Keep,
    /// Activate it at the next batch boundary, as a canary if one is given
    /// (else the processor's own canary, if its config has one).
    Activate(Option<CanaryPlan>),
    /// Run it as the processor's shadow.
    Shadow,
}

impl Admin {
    /// Validates and keeps `bytes` as a version of `name` (with `config`
    /// or, when `None`, the processor's), then does what `then` says.
    /// Blocking: it compiles and instantiates.
    ///
    /// # Errors
    ///
    /// The upload's refusal (`not-webassembly`, `world-mismatch`,
    /// `init-failed`, ...): nothing changed then.
    pub fn deploy(
        &self,
        name: &str,
        bytes: &[u8],
        config: Option<Vec<(String, String)>>,
        then: Then,
    ) -> Result<VersionInfo, ApiError> {
        let (info, loaded) = self.upload(name, bytes, config)?;
        tracing::info!(processor = %name, version = %info.sha256, size_bytes = info.size_bytes, "version uploaded");
        let m = self.processor(name)?;
        match then {
            Then::Keep => {}
            Then::Activate(plan) => {
                let handler = self.handler(name, m, loaded, info.config.clone())?;
                m.control.request_swap(Swap {
                    handler,
                    reason: "activate".into(),
                    canary: plan.or(m.canary),
                });
            }
            Then::Shadow => {
                let handler = self.handler(name, m, loaded, info.config.clone())?;
                m.control.set_shadow(Some(handler));
            }
        }
        Ok(info)
    }

    /// Goes back to `version`, or to the version active before the current
    /// one; never as a canary. Returns the version's SHA-256. Blocking.
    ///
    /// # Errors
    ///
    /// `no-previous-version` when there is none to go back to; as
    /// [`Admin::activate`].
    pub fn rollback(&self, name: &str, version: Option<String>) -> Result<String, ApiError> {
        self.processor(name)?;
        let target = match version {
            Some(v) => v,
            None => self.registry.previous(name)?.ok_or_else(|| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "no-previous-version",
                    format!("processor {name:?} has no earlier version to go back to (only ones a canary rolled back, or deleted ones): name the version"),
                )
            })?,
        };
        self.activate(name, &target, "rollback", None)
    }

    /// Starts shadowing processor `name` with `version` (replacing any
    /// shadow). Returns the version's SHA-256. Blocking.
    ///
    /// # Errors
    ///
    /// `no-such-processor`, `no-such-version`, `bad-version`, `init-failed`.
    pub fn shadow(&self, name: &str, version: &str) -> Result<String, ApiError> {
        let m = self.processor(name)?;
        let (info, loaded) = self.registry.load(name, version)?;
        let handler = self.handler(name, m, loaded, info.config)?;
        m.control.set_shadow(Some(handler));
        Ok(info.sha256)
    }
}
