//! The built-in simulator source: the same one the demo runs.
//!
//! Signal `i` is, by `i % 4`: a sine (`sine`), a ramp (`ramp`), a random walk (`walk`) or an
//! on/off switch (`onoff`); setpoints (`setpoint1…`) are writable floats that hold what was
//! written. Every signal changes on every tick of `rate_hz`.

use super::{Sample, Source, SourceContext, SourceHandle, SourceWrite};
use crate::config::SimConfig;
use pointhub_schemas::{DataType, PointDef, Quality, Timestamp, Value};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

enum Kind {
    Sine,
    Ramp,
    Walk,
    OnOff,
}

impl Source for SimConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn start(&self, ctx: SourceContext) -> SourceHandle {
        spawn(&ctx.namespace, self, ctx.base, ctx.samples, ctx.shutdown)
    }
}

/// Starts the simulator; returns its points (signals, then setpoints).
pub fn spawn(
    namespace: &str,
    cfg: &SimConfig,
    base: u32,
    out: mpsc::Sender<Vec<Sample>>,
    shutdown: CancellationToken,
) -> SourceHandle {
    let mut points = Vec::new();
    let mut kinds = Vec::new();
    for i in 0..cfg.signals {
        let (kind, label, dtype, unit) = match i % 4 {
            0 => (Kind::Sine, "sine", DataType::Float, Some("bar")),
            1 => (Kind::Ramp, "ramp", DataType::Float, Some("%")),
            2 => (Kind::Walk, "walk", DataType::Float, Some("degC")),
            _ => (Kind::OnOff, "onoff", DataType::Bool, None),
        };
        points.push(PointDef {
            id: base + i,
            name: format!("{namespace}/{}/{label}{}", cfg.name, i / 4 + 1),
            dtype,
            unit: unit.map(str::to_string),
            description: Some(format!("simulated {label}")),
            writable: false,
        });
        kinds.push(kind);
    }
    for j in 0..cfg.setpoints {
        points.push(PointDef {
            id: base + cfg.signals + j,
            name: format!("{namespace}/{}/setpoint{}", cfg.name, j + 1),
            dtype: DataType::Float,
            unit: None,
            description: Some("writable setpoint".into()),
            writable: true,
        });
    }
    let tick_id = cfg.tick.then(|| {
        let id = base + cfg.signals + cfg.setpoints;
        points.push(PointDef {
            id,
            name: format!("{namespace}/{}/tick", cfg.name),
            dtype: DataType::UInt,
            unit: None,
            description: Some("steps by one on every tick".into()),
            writable: false,
        });
        id
    });
    let (wtx, wrx) = mpsc::channel(64);
    let signals = cfg.signals;
    let setpoints = cfg.setpoints;
    let period = Duration::from_secs_f64(1.0 / cfg.rate_hz);
    tokio::spawn(run(
        kinds, base, signals, setpoints, tick_id, period, out, wrx, shutdown,
    ));
    SourceHandle {
        points,
        writes: wtx,
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    kinds: Vec<Kind>,
    base: u32,
    signals: u32,
    setpoints: u32,
    tick_id: Option<u32>,
    period: Duration,
    out: mpsc::Sender<Vec<Sample>>,
    mut writes: mpsc::Receiver<SourceWrite>,
    shutdown: CancellationToken,
) {
    let start = Instant::now();
    let mut walk: Vec<f64> = vec![20.0; kinds.len()];
    let mut sp: Vec<f64> = vec![0.0; setpoints as usize];
    let now = Timestamp::now();
    let initial: Vec<Sample> = (0..setpoints)
        .map(|j| Sample {
            id: base + signals + j,
            value: Value::Float(0.0),
            quality: Quality::Good,
            ts: now,
        })
        .collect();
    if !initial.is_empty() && out.send(initial).await.is_err() {
        return;
    }
    let mut ticks: u64 = 0;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            w = writes.recv() => {
                let Some(w) = w else { return };
                let j = w.id.wrapping_sub(base + signals) as usize;
                let result = match (sp.get_mut(j), w.value.as_f64()) {
                    (Some(slot), Some(v)) => {
                        *slot = v;
                        let s = Sample { id: w.id, value: Value::Float(v), quality: Quality::Good, ts: Timestamp::now() };
                        let _ = out.send(vec![s]).await;
                        (Quality::Good, "written".to_string())
                    }
                    (Some(_), None) => (Quality::BadTypeMismatch, format!("{} is not a number", w.value)),
                    (None, _) => (Quality::BadNotWritable, "not a setpoint".to_string()),
                };
                let _ = w.reply.send(result);
            }
            _ = tick.tick() => {
                let t = start.elapsed().as_secs_f64();
                let ts = Timestamp::now();
                let mut batch: Vec<Sample> = kinds
                    .iter()
                    .enumerate()
                    .map(|(i, k)| {
                        let phase = i as f64 * 0.37;
                        let value = match k {
                            Kind::Sine => Value::Float(50.0 + 50.0 * (t / 10.0 * std::f64::consts::TAU + phase).sin()),
                            Kind::Ramp => Value::Float((t * 10.0 + phase * 10.0) % 100.0),
                            Kind::Walk => {
                                walk[i] = (walk[i] + fastrand::f64() - 0.5).clamp(-50.0, 150.0);
                                Value::Float(walk[i])
                            }
                            Kind::OnOff => Value::Bool(((t / 5.0 + phase) as u64) % 2 == 0),
                        };
                        Sample { id: base + i as u32, value, quality: Quality::Good, ts }
                    })
                    .collect();
                if let Some(id) = tick_id {
                    ticks += 1;
                    batch.push(Sample { id, value: Value::UInt(ticks), quality: Quality::Good, ts });
                }
                if !batch.is_empty() && out.send(batch).await.is_err() {
                    return;
                }
            }
        }
    }
}
