//! Test guest `compat_010`: a step built against `braid:workflow@0.1.0`, the
//! contract as it was before 0.1.1 added `invocation` (`wit/braid.wit` here
//! is that frozen copy; its WASI deps are the repository's). A host of any
//! later 0.1 version must link and run it unchanged.
//!
//! Output: `{ "built_for": "braid:workflow@0.1.0", "input": INPUT }`, after
//! one log line through the host.

wit_bindgen::generate!({
    path: "wit",
    world: "braid:workflow/step-component@0.1.0",
    generate_all,
});

use braid::workflow::telemetry::{self, Level};
use exports::braid::workflow::step::Guest;

struct Compat;

impl Guest for Compat {
    fn run(
        ctx: braid::workflow::types::TraceContext,
        input: String,
    ) -> Result<String, braid::workflow::types::StepError> {
        if let Err(e) = telemetry::log(&ctx, Level::Info, "a 0.1.0 component, running") {
            return Err(braid::workflow::types::StepError::Fatal(format!(
                "log refused: {e:?}"
            )));
        }
        Ok(format!(
            "{{\"built_for\":\"braid:workflow@0.1.0\",\"input\":{input}}}"
        ))
    }
}

export!(Compat);
