//! End-to-end tests: real `pointhub` processes on loopback.

mod access;
mod chain;
mod console;
mod foundation;
mod harness;
mod hostile;
mod layout;
mod modbus;
mod probe;
