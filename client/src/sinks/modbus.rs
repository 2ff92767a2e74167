//! A local Modbus TCP server that serves mirrored points, for an HMI or SCADA that keeps polling
//! a Modbus server on its own network while the data crosses the DMZ through the hub.
//!
//! Mapping of quality (see `docs/modbus.md`):
//! - `bad_quality = "exception"` (default): a read that touches a point whose quality is not
//!   `Good` (stale, bad, or never received) is answered with exception 0x0B, gateway target device
//!   failed to respond.
//! - `bad_quality = "last_value"`: such a read returns the last value (zeros if none) and the HMI
//!   reads the point's `quality_register`, which always answers: the top 16 bits of the OPC UA
//!   status code (0 Good, 0x408F stale with last value, 0x80xx bad).
//!
//! A write to a writable mapped point becomes a write through the hub to the device, and is
//! answered only when the device confirmed it; a refusal or failure maps to an exception:
//! not writable or not granted → 0x02; value out of range → 0x03; device refused → 0x04; no
//! answer, no link → 0x0B.

use crate::Client;
use pointhub_modbus_map::{MapEntry, Mapping, Overlap, RegType, Table};
use pointhub_schemas::{Quality, Value};
use serde::Deserialize;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_modbus::{ExceptionCode, Request, Response};
use tokio_util::sync::CancellationToken;

/// What a read of a point whose quality is not good gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadQuality {
    /// Answer reads of not-good points with exception 0x0B.
    #[default]
    Exception,
    /// Answer with the last value; the quality register tells the truth.
    LastValue,
}

/// `[modbus_server]` in a client's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Where the HMI connects: `0.0.0.0:502`, `127.0.0.1:1502`.
    pub listen: String,
    /// What a read of a point whose quality is not `Good` gets; `exception` by default.
    #[serde(default)]
    pub bad_quality: BadQuality,
    /// How long an HMI's write may wait for the device.
    #[serde(default = "default_write_ms")]
    pub write_timeout_ms: u64,
    /// The points served: each by full name, where it sits, and its optional `quality_register`.
    pub points: Vec<MapEntry>,
}

fn default_write_ms() -> u64 {
    5000
}

/// A `[modbus_server]` section that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ServerConfigError {
    /// `listen` is not an IP address and port; holds what was given.
    #[error("modbus_server.listen: {0:?} is not an address like 127.0.0.1:1502")]
    Listen(String),
    /// A point's name or mapping is not valid, or it sets a key only an edge's map takes
    /// (`deadband`, `group`).
    #[error("modbus_server point {name:?}: {message}")]
    Point {
        /// The point's name as configured.
        name: String,
        /// What is wrong and what to write instead.
        message: String,
    },
    /// Two points, or a point and a quality register, claim the same registers.
    #[error("modbus_server: {0}")]
    Overlap(#[from] Overlap),
}

impl ServerConfig {
    /// Checks the section: the address, every point's mapping, and that no two overlap.
    pub fn validate(&self) -> Result<(), ServerConfigError> {
        self.listen
            .parse::<std::net::SocketAddr>()
            .map_err(|_| ServerConfigError::Listen(self.listen.clone()))?;
        let mut labelled = Vec::new();
        let mut quality = Vec::new();
        for e in &self.points {
            let at = |message: String| ServerConfigError::Point {
                name: e.name.clone(),
                message,
            };
            pointhub_schemas::name::validate_name(&e.name, 256).map_err(|er| at(er.to_string()))?;
            e.validate().map_err(|er| at(er.to_string()))?;
            if e.deadband.is_some() || e.deadband_percent.is_some() || e.group.is_some() {
                return Err(at("deadband and group belong to an edge's map".into()));
            }
            labelled.push((format!("point {:?}", e.name), e.mapping()));
            if let Some(q) = e.quality_register {
                quality.push((
                    format!("quality register of {:?}", e.name),
                    Mapping {
                        table: Table::Holding,
                        address: q,
                        ty: RegType::U16,
                        order: Default::default(),
                        length: None,
                        bit: None,
                        scale: 1.0,
                        offset: 0.0,
                    },
                ));
            }
        }
        let mut all: Vec<(String, &Mapping)> =
            labelled.iter().map(|(l, m)| (l.clone(), m)).collect();
        all.extend(quality.iter().map(|(l, m)| (l.clone(), m)));
        pointhub_modbus_map::check_overlaps(&all)?;
        Ok(())
    }

    /// The names to subscribe to.
    pub fn patterns(&self) -> Vec<String> {
        let mut v: Vec<String> = self.points.iter().map(|p| p.name.clone()).collect();
        v.sort();
        v.dedup();
        v
    }
}

#[derive(Clone)]
struct Service {
    client: Client,
    cfg: Arc<ServerConfig>,
}

type Fut = Pin<Box<dyn Future<Output = Result<Response, ExceptionCode>> + Send>>;

impl tokio_modbus::server::Service for Service {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Fut;

    fn call(&self, req: Self::Request) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.handle(req).await })
    }
}

impl Service {
    fn read(&self, table: Table, addr: u16, cnt: u16) -> Result<Vec<u16>, ExceptionCode> {
        if cnt == 0 || cnt > table.max_read() || u32::from(addr) + u32::from(cnt) > 65536 {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let (lo, hi) = (u32::from(addr), u32::from(addr) + u32::from(cnt) - 1);
        let mut out = vec![0u16; usize::from(cnt)];
        let mut touched = false;
        for e in &self.cfg.points {
            let m = e.mapping();
            if table == Table::Holding {
                if let Some(q) = e.quality_register {
                    if (lo..=hi).contains(&u32::from(q)) {
                        touched = true;
                        let quality = self
                            .client
                            .get(&e.name)
                            .map(|r| r.quality)
                            .unwrap_or(Quality::BadWaitingForInitialData);
                        out[usize::from(q - addr)] = (quality.0 >> 16) as u16;
                    }
                }
            }
            if m.table != table || m.end() < lo || u32::from(m.address) > hi {
                continue;
            }
            touched = true;
            let rec = self.client.get(&e.name);
            let good = rec.as_ref().is_some_and(|r| r.quality.is_good());
            if !good && self.cfg.bad_quality == BadQuality::Exception {
                return Err(ExceptionCode::GatewayTargetDevice);
            }
            let regs = match rec.as_ref().map(|r| &r.value) {
                Some(v) if !v.is_null() => m
                    .encode(v, None)
                    .unwrap_or_else(|_| vec![0; usize::from(m.count())]),
                _ => vec![0; usize::from(m.count())],
            };
            for (i, r) in regs.iter().enumerate() {
                let a = u32::from(m.address) + i as u32;
                if (lo..=hi).contains(&a) {
                    out[(a - lo) as usize] = *r;
                }
            }
        }
        if !touched {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        Ok(out)
    }

    async fn write(&self, table: Table, addr: u16, regs: &[u16]) -> Result<(), ExceptionCode> {
        let (lo, hi) = (u32::from(addr), u32::from(addr) + regs.len() as u32 - 1);
        let targets: Vec<&MapEntry> = self
            .cfg
            .points
            .iter()
            .filter(|e| {
                let m = e.mapping();
                m.table == table && m.end() >= lo && u32::from(m.address) <= hi
            })
            .collect();
        if targets.is_empty() {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let mut values = Vec::new();
        for e in &targets {
            let m = e.mapping();
            // A write must cover each point it touches entirely.
            if u32::from(m.address) < lo || m.end() > hi || !e.writable {
                return Err(ExceptionCode::IllegalDataAddress);
            }
            let off = usize::from(m.address - addr);
            values.push((
                e.name.clone(),
                m.decode_regs(&regs[off..off + usize::from(m.count())]),
            ));
        }
        let timeout = Duration::from_millis(self.cfg.write_timeout_ms);
        for (point, value) in values {
            let outcome = match self.client.write(&point, value, timeout).await {
                Ok(o) => o,
                Err(_) => return Err(ExceptionCode::GatewayTargetDevice),
            };
            if !outcome.is_ok() {
                tracing::warn!(point = %point, status = %outcome.status, message = %outcome.message, "HMI write refused");
                return Err(match outcome.status {
                    Quality::BadTypeMismatch => ExceptionCode::IllegalDataValue,
                    Quality::BadDeviceFailure => ExceptionCode::ServerDeviceFailure,
                    Quality::BadNotWritable
                    | Quality::BadUserAccessDenied
                    | Quality::BadNodeIdUnknown => ExceptionCode::IllegalDataAddress,
                    _ => ExceptionCode::GatewayTargetDevice,
                });
            }
        }
        Ok(())
    }

    async fn handle(&self, req: Request<'static>) -> Result<Response, ExceptionCode> {
        let bits = |v: Vec<u16>| v.into_iter().map(|b| b != 0).collect::<Vec<bool>>();
        match req {
            Request::ReadHoldingRegisters(a, n) => self
                .read(Table::Holding, a, n)
                .map(Response::ReadHoldingRegisters),
            Request::ReadInputRegisters(a, n) => self
                .read(Table::Input, a, n)
                .map(Response::ReadInputRegisters),
            Request::ReadCoils(a, n) => self
                .read(Table::Coil, a, n)
                .map(|v| Response::ReadCoils(bits(v))),
            Request::ReadDiscreteInputs(a, n) => self
                .read(Table::Discrete, a, n)
                .map(|v| Response::ReadDiscreteInputs(bits(v))),
            Request::WriteSingleRegister(a, w) => self
                .write(Table::Holding, a, &[w])
                .await
                .map(|()| Response::WriteSingleRegister(a, w)),
            Request::WriteMultipleRegisters(a, ws) => {
                if ws.is_empty() {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                let n = ws.len() as u16;
                self.write(Table::Holding, a, &ws)
                    .await
                    .map(|()| Response::WriteMultipleRegisters(a, n))
            }
            Request::WriteSingleCoil(a, c) => self
                .write(Table::Coil, a, &[u16::from(c)])
                .await
                .map(|()| Response::WriteSingleCoil(a, c)),
            Request::WriteMultipleCoils(a, cs) => {
                if cs.is_empty() {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                let regs: Vec<u16> = cs.iter().map(|c| u16::from(*c)).collect();
                let n = cs.len() as u16;
                self.write(Table::Coil, a, &regs)
                    .await
                    .map(|()| Response::WriteMultipleCoils(a, n))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

/// Serves `cfg.points` from `client`'s mirror on `listener` until `shutdown` fires.
pub async fn serve(
    client: Client,
    cfg: ServerConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let service = Service {
        client,
        cfg: Arc::new(cfg),
    };
    let server = tokio_modbus::server::tcp::Server::new(listener);
    let new_service = move |_addr| Ok(Some(service.clone()));
    let on_connected = |stream, addr| {
        let new_service = new_service.clone();
        async move { tokio_modbus::server::tcp::accept_tcp_connection(stream, addr, new_service) }
    };
    let on_error = |e: std::io::Error| tracing::debug!(error = %e, "Modbus connection ended");
    tokio::select! {
        r = server.serve(&on_connected, on_error) => r,
        _ = shutdown.cancelled() => Ok(()),
    }
}

/// The Modbus server as a sink: a bound listener and its `[modbus_server]` section. Binding first
/// lets a taken port be reported before the client dials.
pub struct ModbusSink {
    /// The checked section.
    pub cfg: ServerConfig,
    /// Where HMIs connect.
    pub listener: tokio::net::TcpListener,
}

impl super::Sink for ModbusSink {
    fn kind(&self) -> &'static str {
        "modbus server"
    }

    fn patterns(&self) -> Vec<String> {
        self.cfg.patterns()
    }

    fn run(
        self: Box<Self>,
        client: Client,
        mut events: tokio::sync::mpsc::Receiver<crate::client::Event>,
        shutdown: CancellationToken,
    ) -> super::SinkRun {
        use crate::client::Event;
        Box::pin(async move {
            tokio::spawn(async move {
                while let Some(ev) = events.recv().await {
                    match ev {
                        Event::Connected { hub, .. } => eprintln!("connected to {hub}"),
                        Event::Disconnected { reason } => eprintln!(
                            "disconnected: {reason}; Modbus reads answer 0x0B until the hub is back"
                        ),
                        _ => {}
                    }
                }
            });
            serve(client, self.cfg, self.listener, shutdown)
                .await
                .map_err(|source| super::SinkError::Io {
                    sink: "modbus server",
                    source,
                })
        })
    }
}

/// The value a point holds now, for tests and tools.
pub fn value_of(client: &Client, name: &str) -> Option<Value> {
    client.get(name).map(|r| r.value)
}
