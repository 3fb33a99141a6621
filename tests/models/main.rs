//! Tests of the model crate on the default backend.

mod cells;
mod config;
mod errors;
mod gradcheck;
mod host;
mod host_train;
mod import;
mod reference;
mod sampling;
mod shapes;
mod state;
