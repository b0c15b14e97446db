//! `braid-step-reversible`: for steps that can compensate a failure and undo
//! their effect (the `reversible-step-component` world).
//!
//! The imports are shared with [`braid_step`] (same types, same HTTP client);
//! this crate only adds the exports. A reversible step implements [`Step`]
//! (from this crate) and [`Reversible`]:
//!
//! ```ignore
//! struct Claim;
//! impl braid_step_reversible::Step for Claim { fn run(ctx, input) -> Result<String, StepError> { ... } }
//! impl braid_step_reversible::Reversible for Claim {
//!     fn compensate(ctx, input, error) -> Compensation { Compensation::GiveUp }
//!     fn undo(ctx, input, output) -> Result<(), StepError> { ... }
//! }
//! braid_step_reversible::export!(Claim with_types_in braid_step_reversible::bindings);
//! ```

extern crate self as braid_step_reversible;
pub use wit_bindgen;

pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "braid:workflow/reversible-step-component",
        with: {
            "braid:workflow/types@0.1.1": braid_step::bindings::braid::workflow::types,
            "braid:workflow/coordination@0.1.1": braid_step::bindings::braid::workflow::coordination,
            "braid:workflow/telemetry@0.1.1": braid_step::bindings::braid::workflow::telemetry,
            "braid:workflow/invocation@0.1.1": braid_step::bindings::braid::workflow::invocation,
            "wasi:http/types@0.2.12": braid_step::bindings::wasi::http::types,
            "wasi:http/outgoing-handler@0.2.12": braid_step::bindings::wasi::http::outgoing_handler,
            "wasi:io/error@0.2.12": braid_step::bindings::wasi::io::error,
            "wasi:io/poll@0.2.12": braid_step::bindings::wasi::io::poll,
            "wasi:io/streams@0.2.12": braid_step::bindings::wasi::io::streams,
            "wasi:clocks/monotonic-clock@0.2.12": braid_step::bindings::wasi::clocks::monotonic_clock,
        },
        pub_export_macro: true,
        runtime_path: "braid_step_reversible::wit_bindgen::rt",
        default_bindings_module: "braid_step_reversible::bindings",
        type_section_suffix: "reversible",
    });
}

pub use bindings::export;
pub use bindings::exports::braid::workflow::reversible::{Compensation, Guest as Reversible};
pub use bindings::exports::braid::workflow::step::Guest as Step;
