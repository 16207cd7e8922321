//! The `ionguide` command line.

fn main() {}
