//! End-to-end tests: real `pointhub` processes on loopback.

mod foundation;
mod harness;
mod hostile;
