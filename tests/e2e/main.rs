//! End-to-end tests: real `pointhub` processes on loopback.
#![allow(clippy::expect_used, clippy::unwrap_used, unreachable_pub)] // test code: a failed expectation is the report

mod access;
mod chain;
mod console;
mod durable;
mod foundation;
mod harness;
mod historian;
mod hostile;
mod layout;
mod modbus;
mod mqtt;
mod opcua;
mod outages;
mod path;
mod postgres;
mod probe;
