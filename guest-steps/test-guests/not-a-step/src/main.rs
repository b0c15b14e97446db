//! Test guest: a valid WebAssembly component that is not a braid step.
fn main() {
    println!("I am a command, not a step");
}
