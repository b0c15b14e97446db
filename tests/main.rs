//! braid's integration tests: one binary, one module per area. They start real
//! processes (the `braid` binary and its bundled sample API) on 127.0.0.1 and
//! run the real guest components from `target/components/` (`make guests`).

mod architecture;
mod bench;
mod budgets;
mod definitions;
mod failures;
mod fencing;
mod forms;
mod hostile;
mod languages;
mod multihost;
mod policies;
mod reference;
mod restart;
mod resume;
mod sandbox;
mod scaffold;
mod serve;
mod stores;
mod support;
mod suspend;
mod viewer;
mod waiting;
