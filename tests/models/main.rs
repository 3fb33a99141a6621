//! Tests of the model crate on the default backend.

mod bidirectional;
mod burn_nn;
mod burn_nn_record;
mod burn_nn_switch;
mod cells;
mod config;
mod errors;
mod export;
mod fused;
mod generation;
mod gradcheck;
mod import;
mod reference;
mod sampling;
mod shapes;
mod state;
