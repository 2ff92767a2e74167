//! The Modbus source: one task per device polls its register map and writes back.
//!
//! - Block reads: points of one table and poll group are merged into reads of adjacent addresses
//!   within the protocol's limits (125 registers, 2000 bits), bridging gaps up to `max_gap`.
//! - One task owns the device's connection, so its polls never overlap and writes queue between
//!   polls.
//! - Report by exception: a value goes out only when it moved past its deadband, or its quality
//!   changed.
//! - Failures are per device: a timeout, a refused connection or a broken answer turns every point
//!   of the device `BadCommunicationError`; a Modbus exception turns the points of that read
//!   `BadDeviceFailure`. `$sys/<edge>/modbus/<device>/status` says why; recovery brings `Good`.

use super::{Sample, Source, SourceContext, SourceHandle, SourceWrite};
use crate::config::{ModbusConfig, Transport};
use pointhub_modbus_map::{MapEntry, Mapping, Table};
use pointhub_schemas::sys::SysNamespace;
use pointhub_schemas::{DataType, PointDef, Quality, Timestamp, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::Slave;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// One read of adjacent addresses, and the points it feeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// The table read.
    pub table: Table,
    /// The first address read.
    pub start: u16,
    /// How many addresses are read: registers, or bits of coils and discrete inputs.
    pub count: u16,
    /// The points the read feeds, as indices into the device's `points`.
    pub points: Vec<usize>,
}

/// Merges points (index, mapping) of one table into blocks.
pub fn plan(points: &[(usize, &Mapping)], max_gap: u16) -> Vec<Block> {
    let mut by_table: BTreeMap<Table, Vec<(usize, &Mapping)>> = BTreeMap::new();
    for (i, m) in points {
        by_table.entry(m.table).or_default().push((*i, m));
    }
    let mut blocks = Vec::new();
    for (table, mut pts) in by_table {
        pts.sort_by_key(|(_, m)| m.address);
        let max = u32::from(table.max_read());
        let mut cur: Option<Block> = None;
        for (i, m) in pts {
            let start = u32::from(m.address);
            let end = m.end();
            if let Some(b) = cur.as_mut() {
                let b_end = u32::from(b.start) + u32::from(b.count) - 1;
                let gap = start.saturating_sub(b_end + 1);
                let new_end = end.max(b_end);
                if gap <= u32::from(max_gap) && new_end - u32::from(b.start) < max {
                    b.count = (new_end - u32::from(b.start) + 1) as u16;
                    b.points.push(i);
                    continue;
                }
            }
            // This point starts a new block; the one before it, if any, is complete.
            blocks.extend(cur.replace(Block {
                table,
                start: m.address,
                count: m.count(),
                points: vec![i],
            }));
        }
        blocks.extend(cur);
    }
    blocks
}

struct Point {
    entry: MapEntry,
    mapping: Mapping,
    id: u32,
    /// What was last reported.
    sent: Option<(Value, Quality)>,
}

struct Group {
    period: Duration,
    due: Instant,
    blocks: Vec<Block>,
}

struct Status {
    status: u32,
    polls: u32,
    errors: u32,
    last_error: u32,
}

impl Source for ModbusConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn start(&self, ctx: SourceContext) -> SourceHandle {
        spawn(
            &ctx.edge,
            &ctx.namespace,
            self,
            ctx.base,
            ctx.samples,
            ctx.shutdown,
        )
    }
}

/// Starts the device task; returns its points (data points, then `$sys` status points).
pub fn spawn(
    edge: &str,
    namespace: &str,
    cfg: &ModbusConfig,
    base: u32,
    out: mpsc::Sender<Vec<Sample>>,
    shutdown: CancellationToken,
) -> SourceHandle {
    let mut defs = Vec::new();
    let mut points = Vec::new();
    for (i, e) in cfg.points.iter().enumerate() {
        let e = e.clone();
        let mapping = e.mapping();
        let id = base + i as u32;
        defs.push(PointDef {
            id,
            name: format!("{namespace}/{}/{}", cfg.name, e.name),
            dtype: mapping.dtype(),
            unit: e.unit.clone(),
            description: e.description.clone(),
            writable: e.writable,
        });
        points.push(Point {
            entry: e,
            mapping,
            id,
            sent: None,
        });
    }
    let sys = |k: &str, dtype: DataType, id: u32| PointDef {
        id,
        name: SysNamespace::of(edge).point(&format!("modbus/{}/{k}", cfg.name)),
        dtype,
        unit: None,
        description: None,
        writable: false,
    };
    let n = points.len() as u32;
    let status = Status {
        status: base + n,
        polls: base + n + 1,
        errors: base + n + 2,
        last_error: base + n + 3,
    };
    defs.push(sys("status", DataType::String, status.status));
    defs.push(sys("polls", DataType::UInt, status.polls));
    defs.push(sys("errors", DataType::UInt, status.errors));
    defs.push(sys("last_error", DataType::String, status.last_error));

    let mut groups: BTreeMap<String, Vec<(usize, Mapping)>> = BTreeMap::new();
    for (i, p) in points.iter().enumerate() {
        groups
            .entry(p.entry.group.clone().unwrap_or_else(|| "default".into()))
            .or_default()
            .push((i, p.mapping.clone()));
    }
    let now = Instant::now();
    let groups: Vec<Group> = groups
        .into_iter()
        .map(|(name, pts)| {
            let refs: Vec<(usize, &Mapping)> = pts.iter().map(|(i, m)| (*i, m)).collect();
            let period =
                Duration::from_millis(cfg.groups.get(&name).copied().unwrap_or(cfg.poll_ms));
            Group {
                period,
                due: now,
                blocks: plan(&refs, cfg.max_gap),
            }
        })
        .collect();
    let reads: usize = groups.iter().map(|g| g.blocks.len()).sum();
    info!(device = %cfg.name, points = points.len(), reads_per_cycle = reads, "modbus device planned");
    let (wtx, wrx) = mpsc::channel(64);
    let dev = Device {
        cfg: cfg.clone(),
        points,
        groups,
        status,
        ctx: None,
        out,
        polls: 0,
        errors: 0,
        state: String::new(),
    };
    tokio::spawn(dev.run(wrx, shutdown));
    SourceHandle {
        points: defs,
        writes: wtx,
    }
}

struct Device {
    cfg: ModbusConfig,
    points: Vec<Point>,
    groups: Vec<Group>,
    status: Status,
    ctx: Option<Context>,
    out: mpsc::Sender<Vec<Sample>>,
    polls: u64,
    errors: u64,
    state: String,
}

enum ReadError {
    /// The device answered with a Modbus exception.
    Exception(String),
    /// No answer, a broken answer, or no connection.
    Comm(String),
}

impl Device {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.timeout_ms)
    }

    async fn run(mut self, mut writes: mpsc::Receiver<SourceWrite>, shutdown: CancellationToken) {
        self.set_state("connecting", None).await;
        loop {
            let next = self
                .groups
                .iter()
                .map(|g| g.due)
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                w = writes.recv() => {
                    let Some(w) = w else { return };
                    let result = self.write(w.id, &w.value).await;
                    let _ = w.reply.send(result);
                }
                _ = tokio::time::sleep_until(next) => {
                    let now = Instant::now();
                    for gi in 0..self.groups.len() {
                        if self.groups[gi].due <= now {
                            self.poll_group(gi).await;
                            let g = &mut self.groups[gi];
                            g.due += g.period;
                            if g.due < Instant::now() {
                                g.due = Instant::now() + g.period;
                            }
                        }
                    }
                }
            }
        }
    }

    async fn connect(&mut self) -> Result<(), String> {
        if self.ctx.is_some() {
            return Ok(());
        }
        let slave = Slave(self.cfg.unit);
        let ctx = match self.cfg.transport {
            Transport::Tcp => {
                let host = self.cfg.host.clone().unwrap_or_default();
                let port = self.cfg.port.unwrap_or(502);
                let tcp = tokio::time::timeout(
                    self.timeout(),
                    tokio::net::TcpStream::connect((host.as_str(), port)),
                )
                .await
                .map_err(|_| {
                    format!(
                        "no answer from {host}:{port} within {} ms",
                        self.cfg.timeout_ms
                    )
                })?
                .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
                let _ = tcp.set_nodelay(true);
                tokio_modbus::client::tcp::attach_slave(tcp, slave)
            }
            Transport::Rtu => {
                use tokio_serial::SerialPortBuilderExt;
                let dev = self.cfg.device.clone().unwrap_or_default();
                let parity = match self.cfg.parity.as_deref() {
                    Some("even") => tokio_serial::Parity::Even,
                    Some("odd") => tokio_serial::Parity::Odd,
                    _ => tokio_serial::Parity::None,
                };
                let stop = if self.cfg.stop_bits == Some(2) {
                    tokio_serial::StopBits::Two
                } else {
                    tokio_serial::StopBits::One
                };
                let port = tokio_serial::new(&dev, self.cfg.baud.unwrap_or(9600))
                    .parity(parity)
                    .stop_bits(stop)
                    .data_bits(tokio_serial::DataBits::Eight)
                    .open_native_async()
                    .map_err(|e| format!("cannot open {dev}: {e}"))?;
                tokio_modbus::client::rtu::attach_slave(port, slave)
            }
        };
        self.ctx = Some(ctx);
        Ok(())
    }

    async fn read(&mut self, b: &Block) -> Result<Vec<u16>, ReadError> {
        let t = self.timeout();
        let mut last = String::new();
        for attempt in 0..=self.cfg.retries {
            if let Err(e) = self.connect().await {
                last = e;
                continue;
            }
            let Some(ctx) = self.ctx.as_mut() else {
                continue;
            };
            let r = match b.table {
                Table::Holding => {
                    tokio::time::timeout(t, ctx.read_holding_registers(b.start, b.count)).await
                }
                Table::Input => {
                    tokio::time::timeout(t, ctx.read_input_registers(b.start, b.count)).await
                }
                Table::Coil => {
                    tokio::time::timeout(t, async {
                        ctx.read_coils(b.start, b.count)
                            .await
                            .map(|r| r.map(|v| v.into_iter().map(u16::from).collect()))
                    })
                    .await
                }
                Table::Discrete => {
                    tokio::time::timeout(t, async {
                        ctx.read_discrete_inputs(b.start, b.count)
                            .await
                            .map(|r| r.map(|v| v.into_iter().map(u16::from).collect()))
                    })
                    .await
                }
            };
            match r {
                Ok(Ok(Ok(regs))) if regs.len() >= usize::from(b.count) => return Ok(regs),
                Ok(Ok(Ok(regs))) => {
                    last = format!(
                        "device answered {} items for a read of {}",
                        regs.len(),
                        b.count
                    );
                    self.ctx = None;
                }
                Ok(Ok(Err(exc))) => {
                    return Err(ReadError::Exception(format!(
                        "device exception {exc:?} reading {} {}..{}",
                        b.table.as_str(),
                        b.start,
                        u32::from(b.start) + u32::from(b.count) - 1
                    )))
                }
                Ok(Err(e)) => {
                    last = format!("communication error: {e}");
                    self.ctx = None;
                }
                Err(_) => {
                    last = format!(
                        "no answer within {} ms (attempt {})",
                        self.cfg.timeout_ms,
                        attempt + 1
                    );
                    self.ctx = None;
                }
            }
        }
        Err(ReadError::Comm(last))
    }

    async fn poll_group(&mut self, gi: usize) {
        let blocks = self.groups[gi].blocks.clone();
        let mut samples = Vec::new();
        let mut exception: Option<String> = None;
        for b in &blocks {
            self.polls += 1;
            match self.read(b).await {
                Ok(regs) => {
                    let ts = Timestamp::now();
                    for &pi in &b.points {
                        let p = &self.points[pi];
                        let off = usize::from(p.mapping.address - b.start);
                        let v = p
                            .mapping
                            .decode_regs(&regs[off..off + usize::from(p.mapping.count())]);
                        if let Some(s) = self.report(pi, v, Quality::Good, ts) {
                            samples.push(s);
                        }
                    }
                }
                Err(ReadError::Exception(why)) => {
                    self.errors += 1;
                    let ts = Timestamp::now();
                    for &pi in &b.points {
                        if let Some(s) = self.report_quality(pi, Quality::BadDeviceFailure, ts) {
                            samples.push(s);
                        }
                    }
                    exception = Some(why);
                }
                Err(ReadError::Comm(why)) => {
                    self.errors += 1;
                    let ts = Timestamp::now();
                    for pi in 0..self.points.len() {
                        if let Some(s) = self.report_quality(pi, Quality::BadCommunicationError, ts)
                        {
                            samples.push(s);
                        }
                    }
                    let _ = self.out.send(samples).await;
                    self.set_state(&format!("communication error: {why}"), Some(why))
                        .await;
                    return;
                }
            }
        }
        let _ = self.out.send(samples).await;
        match exception {
            Some(why) => {
                self.set_state(&format!("device exception: {why}"), Some(why))
                    .await
            }
            None => self.set_state("ok", None).await,
        }
    }

    /// A sample if the value moved past the deadband or the quality changed.
    fn report(&mut self, pi: usize, v: Value, q: Quality, ts: Timestamp) -> Option<Sample> {
        let p = &mut self.points[pi];
        let changed = match &p.sent {
            None => true,
            Some((_, oq)) if *oq != q => true,
            Some((ov, _)) => match (ov.as_f64(), v.as_f64(), &v) {
                (Some(a), Some(b), Value::Float(_) | Value::Int(_) | Value::UInt(_)) => {
                    let d = (b - a).abs();
                    let abs = p.entry.deadband.unwrap_or(0.0);
                    let pct = p
                        .entry
                        .deadband_percent
                        .map(|x| x / 100.0 * a.abs())
                        .unwrap_or(0.0);
                    d > abs.max(pct) || (abs == 0.0 && pct == 0.0 && d > 0.0)
                }
                _ => *ov != v,
            },
        };
        if !changed {
            return None;
        }
        p.sent = Some((v.clone(), q));
        Some(Sample {
            id: p.id,
            value: v,
            quality: q,
            ts,
        })
    }

    fn report_quality(&mut self, pi: usize, q: Quality, ts: Timestamp) -> Option<Sample> {
        let v = self.points[pi]
            .sent
            .as_ref()
            .map(|(v, _)| v.clone())
            .unwrap_or(Value::Null);
        match &self.points[pi].sent {
            Some((_, oq)) if *oq == q => None,
            _ => self.report(pi, v, q, ts),
        }
    }

    async fn set_state(&mut self, state: &str, error: Option<String>) {
        let ts = Timestamp::now();
        let mut s = vec![
            Sample {
                id: self.status.polls,
                value: Value::UInt(self.polls),
                quality: Quality::Good,
                ts,
            },
            Sample {
                id: self.status.errors,
                value: Value::UInt(self.errors),
                quality: Quality::Good,
                ts,
            },
        ];
        if state != self.state {
            if state == "ok" {
                info!(device = %self.cfg.name, "device ok");
            } else {
                warn!(device = %self.cfg.name, state = %state, "device state");
            }
            self.state = state.to_string();
            s.push(Sample {
                id: self.status.status,
                value: Value::String(state.into()),
                quality: Quality::Good,
                ts,
            });
            if let Some(e) = error {
                s.push(Sample {
                    id: self.status.last_error,
                    value: Value::String(e),
                    quality: Quality::Good,
                    ts,
                });
            }
        }
        let _ = self.out.send(s).await;
    }

    async fn write(&mut self, id: u32, value: &Value) -> (Quality, String) {
        let Some(pi) = self.points.iter().position(|p| p.id == id) else {
            return (Quality::BadNotWritable, "not a point of this device".into());
        };
        let (m, writable) = (
            self.points[pi].mapping.clone(),
            self.points[pi].entry.writable,
        );
        if !writable {
            return (Quality::BadNotWritable, "point is not writable".into());
        }
        if let Err(e) = self.connect().await {
            return (Quality::BadCommunicationError, e);
        }
        let t = self.timeout();
        let current = if m.ty == pointhub_modbus_map::RegType::Bit {
            let block = Block {
                table: m.table,
                start: m.address,
                count: 1,
                points: vec![],
            };
            match self.read(&block).await {
                Ok(r) => r.first().copied(),
                Err(ReadError::Exception(e) | ReadError::Comm(e)) => {
                    return (Quality::BadCommunicationError, e)
                }
            }
        } else {
            None
        };
        let regs = match m.encode(value, current).map_err(|e| e.to_string()) {
            Ok(r) => r,
            Err(e) => return (Quality::BadTypeMismatch, e),
        };
        let Some(ctx) = self.ctx.as_mut() else {
            return (Quality::BadCommunicationError, "not connected".into());
        };
        let r = match (m.table, regs.len()) {
            (Table::Coil, _) => {
                tokio::time::timeout(t, ctx.write_single_coil(m.address, regs[0] != 0)).await
            }
            (_, 1) => tokio::time::timeout(t, ctx.write_single_register(m.address, regs[0])).await,
            _ => tokio::time::timeout(t, ctx.write_multiple_registers(m.address, &regs)).await,
        };
        let result = match r {
            Ok(Ok(Ok(()))) => (
                Quality::Good,
                format!("written to {} {}", m.table.as_str(), m.address),
            ),
            Ok(Ok(Err(exc))) => (
                Quality::BadDeviceFailure,
                format!("device refused the write: exception {exc:?}"),
            ),
            Ok(Err(e)) => {
                self.ctx = None;
                (
                    Quality::BadCommunicationError,
                    format!("communication error: {e}"),
                )
            }
            Err(_) => {
                self.ctx = None;
                (
                    Quality::BadTimeout,
                    format!("no answer within {} ms", self.cfg.timeout_ms),
                )
            }
        };
        if result.0.is_good() {
            // Read the point back so clients see what the device now holds.
            let block = Block {
                table: m.table,
                start: m.address,
                count: m.count(),
                points: vec![pi],
            };
            if let Ok(regs) = self.read(&block).await {
                let v = m.decode_regs(&regs);
                if let Some(s) = self.report(pi, v, Quality::Good, Timestamp::now()) {
                    let _ = self.out.send(vec![s]).await;
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pointhub_modbus_map::{Order, RegType};

    fn m(table: Table, address: u16, ty: RegType) -> Mapping {
        Mapping {
            table,
            address,
            ty,
            order: Order::ABCD,
            length: None,
            bit: None,
            scale: 1.0,
            offset: 0.0,
        }
    }

    #[test]
    fn blocks_merge_adjacent_bridge_small_gaps_and_respect_limits() {
        let maps: Vec<Mapping> = vec![
            m(Table::Holding, 0, RegType::U16),
            m(Table::Holding, 1, RegType::F32),
            m(Table::Holding, 10, RegType::U16), // gap of 7: bridged with max_gap 8
            m(Table::Holding, 100, RegType::U16), // gap too big
            m(Table::Input, 0, RegType::U16),
            m(Table::Coil, 0, RegType::Bool),
            m(Table::Coil, 1999, RegType::Bool),
            m(Table::Coil, 2000, RegType::Bool), // past 2000 bits from 0
        ];
        let pts: Vec<(usize, &Mapping)> = maps.iter().enumerate().collect();
        let b = plan(&pts, 8);
        let summary: Vec<(Table, u16, u16)> =
            b.iter().map(|b| (b.table, b.start, b.count)).collect();
        assert_eq!(
            summary,
            vec![
                (Table::Coil, 0, 1),
                (Table::Coil, 1999, 2),
                (Table::Holding, 0, 11),
                (Table::Holding, 100, 1),
                (Table::Input, 0, 1),
            ]
        );
        // 10,000 consecutive registers make 80 reads of at most 125.
        let many: Vec<Mapping> = (0..10_000u16)
            .map(|a| m(Table::Holding, a, RegType::U16))
            .collect();
        let pts: Vec<(usize, &Mapping)> = many.iter().enumerate().collect();
        let b = plan(&pts, 0);
        assert_eq!(b.len(), 80);
        assert!(b.iter().all(|b| b.count <= 125));
    }
}
