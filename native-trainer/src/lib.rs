//! The trainer as a library, so that cross-crate tests and benchmarks drive the same code as
//! the `trainer` binary.

pub mod align;
pub mod checkpoint;
pub mod conventions;
pub mod embed;
pub mod engine_cli;
pub mod eval;
pub mod fault;
pub mod finetune;
pub mod inspect;
pub mod loss;
pub mod memory;
pub mod net;
pub mod optim;
pub mod paths;
pub mod photos;
pub mod plot;
pub mod probe;
pub mod quantize;
pub mod reconstruct;
pub mod student;
pub mod taylor;
pub mod threshold;
