//! The one owner of the host bindings generated from `wit/`.
//!
//! Owns: the `bindgen!` expansions for the two worlds the host runs. The
//! sandbox (linking, instantiating, calling exports) and the capabilities
//! (implementing the imported interfaces) both use these types; neither
//! reaches into the other for them. Must not hold logic: types only.

/// Bindings for the step worlds. The `reversible-step-component` world
/// includes `step-component`, so its export indices serve both kinds of step.
pub mod step {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "braid:workflow/reversible-step-component",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

/// Bindings for the `policy-component` world, sharing the step bindings' types.
pub mod policy {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "braid:workflow/policy-component",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "braid:workflow/types": super::step::braid::workflow::types,
            "braid:workflow/telemetry": super::step::braid::workflow::telemetry,
        },
    });
}
