//! Step `noop`: the minimal Rust step. Returns its input unchanged and calls
//! no host function, so timing it (`braid bench --mode attempt`) measures what
//! the host spends per attempt: store, instance, call and teardown.

struct Noop;

impl braid_step::Step for Noop {
    fn run(_ctx: braid_step::TraceContext, input: String) -> Result<String, braid_step::StepError> {
        Ok(input)
    }
}

braid_step::export!(Noop with_types_in braid_step::bindings);
