//! Tests of the data crate: d2l's corpus figures, vocabulary, minibatch schemes, bad input.

mod batches;
mod corpus;
mod download;
mod prepared;
