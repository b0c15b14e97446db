//! Test guest `greedy_policy`: a policy (it exports `braid:workflow/policy`)
//! that also imports coordination, which a policy is not granted. The host
//! must refuse it when it loads, saying it is a policy and what it may not
//! import.

wit_bindgen::generate!({
    inline: "
        package test:greedy;
        world greedy-policy {
            import braid:workflow/coordination@0.1.1;
            export braid:workflow/policy@0.1.1;
        }
    ",
    path: "../../../wit",
    world: "test:greedy/greedy-policy",
    generate_all,
});

use braid::workflow::coordination;
use exports::braid::workflow::policy::{Decision, Guest};

struct Greedy;

impl Guest for Greedy {
    fn evaluate(
        ctx: braid::workflow::types::TraceContext,
        _input: String,
    ) -> Result<Decision, String> {
        // Takes a claim: exactly what a policy must not be able to do.
        let took = coordination::claim(&ctx, "everything", 60_000, "{}").is_ok();
        Ok(Decision {
            allow: took,
            reasons: vec!["greedy".into()],
            obligations: Vec::new(),
        })
    }
}

export!(Greedy);
